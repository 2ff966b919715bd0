"""A fake OpenAI-compatible upstream that streams forever and timestamps every disconnect.

Usage::

    python -m benchmarks.upstream_fake [--port 0] [--interval 0.05]

A bare ``trio`` + ``h11`` HTTP/1.1 server, run in its own process by the cancellation
benchmark (``benchmarks/cancel.py``):

* ``POST …/chat/completions`` answers ``200 text/event-stream`` and streams one
  ``chat.completion.chunk`` with one word of content at once, then one every ``--interval``
  seconds, **forever** (it never sends ``[DONE]``): only the client going away ends it. The
  request id is the text of the last message of the request body (the benchmark sends a unique
  prompt per turn, so it crosses the agent server unchanged). A reader task waits on the
  socket; the instant it sees end-of-file (or a reset, or a failed write) the stream is
  recorded as closed with ``time.monotonic()`` (CLOCK_MONOTONIC, which is system-wide on Linux,
  so it compares with the load generator's abort instant in another process).
* ``GET /stats`` answers JSON: ``connections_open`` (TCP connections open now, this one
  included), ``streams_open``, ``streams_total``, ``opened`` and ``closed`` (request id →
  monotonic seconds). ``GET /stats?ids=PREFIX`` limits ``opened``/``closed`` to ids starting
  with ``PREFIX``.
* ``GET /health`` answers ``ok``.

Prints ``upstream listening on http://127.0.0.1:PORT`` once it accepts, like the agent servers.
Stops on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from urllib.parse import parse_qs, urlsplit

import attrs
import h11
import orjson
import trio

from benchmarks._serving import add_server_arguments, serve_trio

_MAX_REQUEST = 1 << 20


@attrs.define
class Stats:
    """What the upstream has seen (times are ``time.monotonic()`` seconds)."""

    connections_open: int = 0
    streams_open: int = 0
    streams_total: int = 0
    opened: dict[str, float] = attrs.field(factory=dict)
    closed: dict[str, float] = attrs.field(factory=dict)

    def as_json(self, prefix: str | None) -> bytes:
        """The ``/stats`` body."""

        def pick(d: dict[str, float]) -> dict[str, float]:
            return d if prefix is None else {k: v for k, v in d.items() if k.startswith(prefix)}

        return orjson.dumps(
            {
                "connections_open": self.connections_open,
                "streams_open": self.streams_open,
                "streams_total": self.streams_total,
                "opened": pick(self.opened),
                "closed": pick(self.closed),
            }
        )


def request_id(body: bytes) -> str:
    """The text of the last message of a Chat Completions body ("" if there is none)."""
    try:
        data = orjson.loads(body)
        content = data["messages"][-1]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return ""
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _chunk(n: int) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "fake",
        "choices": [{"index": 0, "delta": {"content": f"w{n} "}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def _send(stream: trio.SocketStream, conn: h11.Connection, event: h11.Event) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


async def _stream_forever(
    stream: trio.SocketStream, conn: h11.Connection, rid: str, interval: float, stats: Stats
) -> None:
    """Stream chunks until the client goes away; record the instant it did."""
    stats.streams_open += 1
    stats.streams_total += 1
    stats.opened[rid] = time.monotonic()

    def closed() -> None:
        stats.closed.setdefault(rid, time.monotonic())

    try:
        async with trio.open_nursery() as nursery:

            async def watch_eof() -> None:
                try:
                    while await stream.receive_some(65536):
                        pass  # a client sends nothing more while it reads a stream
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                closed()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_eof)
            try:
                await _send(
                    stream,
                    conn,
                    h11.Response(
                        status_code=200,
                        headers=[
                            ("content-type", "text/event-stream"),
                            ("cache-control", "no-store"),
                        ],
                    ),
                )
                n = 0
                while True:
                    await _send(stream, conn, h11.Data(data=_chunk(n)))
                    n += 1
                    await trio.sleep(interval)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                closed()  # the write failed (a reset) before the reader saw it
                nursery.cancel_scope.cancel()
    finally:
        stats.streams_open -= 1


async def handle(stream: trio.SocketStream, *, interval: float, stats: Stats) -> None:
    """Serve one connection (keep-alive; a stream ends the connection when it ends)."""
    stats.connections_open += 1
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST)
    try:
        while True:
            request: h11.Request | None = None
            body = bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    conn.receive_data(data)
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                    if len(body) > _MAX_REQUEST:
                        return
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            if request is None:
                return  # the client closed an idle connection
            target = urlsplit(request.target.decode())
            if request.method == b"POST" and target.path.endswith("/chat/completions"):
                await _stream_forever(stream, conn, request_id(bytes(body)), interval, stats)
                return
            if target.path == "/stats":
                prefix = parse_qs(target.query).get("ids", [None])[0]
                payload, ctype = stats.as_json(prefix), "application/json"
            elif target.path == "/health":
                payload, ctype = b"ok", "text/plain"
            else:
                payload, ctype = b'{"error": {"message": "not found"}}', "application/json"
            status = 404 if ctype == "application/json" and payload.startswith(b'{"error') else 200
            await _send(
                stream,
                conn,
                h11.Response(
                    status_code=status,
                    headers=[("content-type", ctype), ("content-length", str(len(payload)))],
                ),
            )
            await _send(stream, conn, h11.Data(data=payload))
            await _send(stream, conn, h11.EndOfMessage())
            if conn.our_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
        pass
    finally:
        stats.connections_open -= 1
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            await stream.aclose()


async def serve(host: str, port: int, interval: float) -> None:
    """Listen on ``host:port`` until SIGINT/SIGTERM."""
    stats = Stats()
    await serve_trio(partial(handle, interval=interval, stats=stats), host, port, "upstream")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve."""
    p = argparse.ArgumentParser(description="fake OpenAI-compatible upstream (streams forever)")
    add_server_arguments(p)
    p.add_argument("--interval", type=float, default=0.05, help="seconds between chunks")
    args = p.parse_args(argv)
    trio.run(serve, args.host, args.port, args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
