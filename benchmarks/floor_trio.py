"""The raw floor: the fewest layers Trio needs to stream the benchmark's Chat Completions SSE.

Usage::

    python benchmarks/floor_trio.py --port 8200 [--words 200] [--mode burst|paced] [--coalesce]

A bare ``trio`` + ``h11`` HTTP/1.1 server (keep-alive, chunked bodies, no ASGI, no framework)
that answers ``POST /v1/chat/completions`` (any body) with the same SSE events, byte for byte
in shape, as ``trioagents serve`` streaming the benchmark reply: a role chunk, one content
chunk per word, a finish chunk and ``data: [DONE]``. ``burst`` (default): no delay, one socket
write per event, or all of a response's events in one write with ``--coalesce`` (what the
suite uses: the best Trio can do when the model produces everything at once); ``paced``:
``--delay`` seconds between words, one write per event. ``GET /health`` answers ``ok``.
Defaults come from ``TRIOAGENTS_BENCH_WORDS``/``_MODE``/``_DELAY``. Prints ``floor listening
on http://127.0.0.1:PORT``. Results against it read as what Trio itself can do on this
machine; it is not an agent server.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import h11
import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serving import add_server_arguments, serve_trio

_MAX_REQUEST = 1 << 20


def reply_text(words: int) -> str:
    """The fixed reply: ``words`` short words (the same text as ``uamp_sessions.reply_text``)."""
    return " ".join(f"w{i}" for i in range(words))


def _event(chunk_id: str, created: int, delta: dict[str, str], finish: str | None) -> bytes:
    body = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": "bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def sse_events(words: int, n: int) -> list[bytes]:
    """The SSE events of the ``n``-th response (each built per request, as a server would)."""
    chunk_id = f"chatcmpl-{n:024x}"
    created = int(time.time())
    pieces = reply_text(words).split(" ")
    out = [_event(chunk_id, created, {"role": "assistant", "content": ""}, None)]
    for i, w in enumerate(pieces):
        out.append(_event(chunk_id, created, {"content": w if i == 0 else " " + w}, None))
    out.append(_event(chunk_id, created, {}, "stop"))
    out.append(b"data: [DONE]\n\n")
    return out


class _Counter:
    n = 0


async def handle(
    stream: trio.SocketStream,
    *,
    words: int,
    counter: _Counter,
    delay: float = 0.0,
    coalesce: bool = False,
) -> None:
    """Serve one connection: requests in turn until the client closes it."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST)

    async def send(event: h11.Event) -> None:
        data = conn.send(event)
        if data:
            await stream.send_all(data)

    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return
            if not isinstance(event, h11.Request):
                continue
            while True:  # the request body is not read: drain it to its end
                body_event = conn.next_event()
                if body_event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(body_event, h11.EndOfMessage):
                    break
                elif isinstance(body_event, h11.ConnectionClosed):
                    return
            if event.method == b"POST" and event.target == b"/v1/chat/completions":
                counter.n += 1
                headers = [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"transfer-encoding", b"chunked"),
                ]
                await send(h11.Response(status_code=200, headers=headers))
                events = sse_events(words, counter.n)
                if coalesce and not delay:
                    await send(h11.Data(data=b"".join(events)))
                else:
                    for i, chunk in enumerate(events):
                        if delay and 1 < i < len(events) - 2:  # between two words
                            await trio.sleep(delay)
                        await send(h11.Data(data=chunk))
                await send(h11.EndOfMessage())
            else:
                status, body = (200, b"ok") if event.target == b"/health" else (404, b"")
                headers = [(b"content-length", str(len(body)).encode())]
                await send(h11.Response(status_code=status, headers=headers))
                await send(h11.Data(data=body))
                await send(h11.EndOfMessage())
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
        return
    finally:
        await stream.aclose()


async def serve(
    host: str, port: int, words: int, delay: float = 0.0, coalesce: bool = False
) -> None:
    """Listen on ``host:port`` and serve until SIGINT/SIGTERM."""
    counter = _Counter()
    handler = partial(handle, words=words, counter=counter, delay=delay, coalesce=coalesce)
    await serve_trio(handler, host, port, "floor")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until SIGINT."""
    p = argparse.ArgumentParser(description="trio + h11 floor for the trioagents benchmarks")
    add_server_arguments(p, words=200)
    p.add_argument("--coalesce", action="store_true", help="burst: one write per response")
    args = p.parse_args(argv)
    delay = args.delay if args.mode == "paced" else 0.0
    trio.run(serve, args.host, args.port, args.words, delay, args.coalesce)
    return 0


if __name__ == "__main__":
    sys.exit(main())
