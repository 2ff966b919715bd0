"""The raw UAMP floor: the fewest layers Trio needs to stream the benchmark's UAMP frames.

Usage::

    python benchmarks/floor_ws.py --port 8300 [--words 20] [--mode burst|paced] [--delay 0.05]

A bare ``trio`` + ``wsproto`` WebSocket server (no ASGI, no framework, any path) that speaks
just enough UAMP for the benchmark: ``session.create`` → ``session.created`` (a new
``session_id`` each time, many per connection), ``input.text`` → ``response.created``, one
``response.delta`` per word of the reply (``w0 w1 …``), ``response.done`` — all carrying the
``session_id`` and ``response_id``, built per response as a server would. ``ping`` →
``pong``. In ``burst`` mode every frame of a response is queued at once; in ``paced`` mode a
task per response sleeps ``--delay`` seconds between words (like the built-in model's
``word_delay``). One writer per connection sends everything queued in one socket write
(combined writes, as trioagents' writer does). The defaults come from the environment variables
``benchmarks/_harness.py`` sets (``TRIOAGENTS_BENCH_WORDS``/``_MODE``/``_DELAY``). Prints
``floor listening on http://127.0.0.1:PORT``. It is not an agent server: results against it
read as what Trio itself can do on this machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import count
from pathlib import Path

import orjson
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serving import add_server_arguments, serve_trio

_ids = count(1)


def reply_words(words: int) -> list[str]:
    """The reply's deltas: ``w0``, `` w1``, … (they concatenate to ``w0 w1 …``)."""
    return [f"w{i}" if i == 0 else f" w{i}" for i in range(words)]


def _frame(body: dict[str, object]) -> dict[str, object]:
    return {"event_id": f"evt_{next(_ids):024x}", "timestamp": int(time.time() * 1000), **body}


def _delta(sid: str, rid: str, word: str) -> dict[str, object]:
    return {
        "type": "response.delta",
        "session_id": sid,
        "response_id": rid,
        "delta": {"type": "text", "text": word},
    }


class Connection:
    """One WebSocket: a reader (this task) and one writer draining ``pending``."""

    def __init__(self, stream: trio.SocketStream, args: argparse.Namespace) -> None:
        self.stream = stream
        self.args = args
        self.ws = WSConnection(ConnectionType.SERVER)
        self.pending: list[bytes] = []
        self.wake = trio.Event()
        self.closed = False
        self.sessions: set[str] = set()
        self.words = reply_words(args.words)

    def send(self, body: dict[str, object]) -> None:
        if self.ws.state is not ConnectionState.OPEN:
            return  # closing: a paced response's remaining frames are dropped
        self.pending.append(self.ws.send(TextMessage(data=orjson.dumps(_frame(body)).decode())))
        self.wake.set()

    def send_raw(self, data: bytes) -> None:
        self.pending.append(data)
        self.wake.set()

    async def writer(self) -> None:
        while not self.closed:
            await self.wake.wait()
            self.wake = trio.Event()
            if self.pending:
                data = b"".join(self.pending)
                self.pending.clear()
                await self.stream.send_all(data)

    def respond_burst(self, sid: str) -> None:
        rid = f"resp_{next(_ids):024x}"
        self.send({"type": "response.created", "session_id": sid, "response_id": rid})
        for w in self.words:
            self.send(_delta(sid, rid, w))
        self._done(sid, rid)

    async def respond_paced(self, sid: str) -> None:
        rid = f"resp_{next(_ids):024x}"
        self.send({"type": "response.created", "session_id": sid, "response_id": rid})
        for i, w in enumerate(self.words):
            if i:
                await trio.sleep(self.args.delay)
            self.send(_delta(sid, rid, w))
        self._done(sid, rid)

    def _done(self, sid: str, rid: str) -> None:
        text = "".join(self.words)
        self.send(
            {
                "type": "response.done",
                "session_id": sid,
                "response_id": rid,
                "response": {
                    "id": rid,
                    "status": "completed",
                    "output": [{"type": "text", "text": text}],
                },
            }
        )

    def handle(self, ev: dict[str, object], nursery: trio.Nursery) -> None:
        kind = ev.get("type")
        if kind == "session.create":
            sid = f"sess_{next(_ids):024x}"
            self.sessions.add(sid)
            self.send(
                {
                    "type": "session.created",
                    "uamp_version": "1.0",
                    "session_id": sid,
                    "agent": "bench",
                    "reply_to": ev.get("event_id"),
                    "session": {"id": sid, "status": "active"},
                }
            )
        elif kind == "input.text":
            sid = ev.get("session_id")
            if not isinstance(sid, str) and len(self.sessions) == 1:
                sid = next(iter(self.sessions))
            if sid not in self.sessions:
                self.send({"type": "error", "error": {"code": "unknown_session", "message": ""}})
            elif self.args.mode == "paced":
                nursery.start_soon(self.respond_paced, sid)
            else:
                self.respond_burst(str(sid))
        elif kind == "ping":
            self.send({"type": "pong"})

    async def serve(self) -> None:
        parts: list[str] = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.writer)
                while True:
                    data = await self.stream.receive_some(65536)
                    self.ws.receive_data(data or None)
                    for event in self.ws.events():
                        if isinstance(event, Request):
                            self.send_raw(self.ws.send(AcceptConnection()))
                        elif isinstance(event, TextMessage):
                            parts.append(event.data)
                            if event.message_finished:
                                msg, parts = "".join(parts), []
                                self.handle(orjson.loads(msg), nursery)
                        elif isinstance(event, Ping):
                            self.send_raw(self.ws.send(event.response()))
                        elif isinstance(event, CloseConnection):
                            self.send_raw(self.ws.send(event.response()))
                            await trio.lowlevel.checkpoint()  # let the writer flush the close frame
                            nursery.cancel_scope.cancel()
                        elif isinstance(event, RejectConnection):
                            nursery.cancel_scope.cancel()
                    if not data:
                        nursery.cancel_scope.cancel()
                        break
        except (trio.BrokenResourceError, trio.ClosedResourceError, orjson.JSONDecodeError):
            pass
        except Exception as exc:  # wsproto's protocol errors: drop the connection
            if type(exc).__module__.startswith("wsproto"):
                return
            raise
        finally:
            self.closed = True
            with trio.move_on_after(1, shield=True):
                await self.stream.aclose()


async def serve(args: argparse.Namespace) -> None:
    """Listen and serve until SIGINT/SIGTERM."""

    async def handler(stream: trio.SocketStream) -> None:
        await Connection(stream, args).serve()

    await serve_trio(handler, args.host, args.port, "floor")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until SIGINT."""
    p = argparse.ArgumentParser(description="trio + wsproto UAMP floor for the benchmarks")
    add_server_arguments(p, words=20)
    args = p.parse_args(argv)
    trio.run(serve, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
