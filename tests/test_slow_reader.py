"""A client that stops reading never hangs its connection or the server's shutdown.

Hypercorn writes under an unbounded shielded scope; the server's patched send bounds it: a
peer that takes no bytes for ``send_timeout + 3 * cleanup_timeout`` has its connection
aborted (reset), so the connection's tasks end and a graceful shutdown returns. The raw
clients here shrink their receive buffer and never read, so the server's writes stall within
a few kilobytes.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from trioagents import Agent, BuiltinModel, Reply
from trioagents.client import open_uamp_client
from trioagents.server._serve import _TLS_CHUNK, _write_or_stall
from trioagents.testing import TestServer, open_test_server

TIMEOUT = 15
LONG = " ".join(f"w{i}" for i in range(100_000))  # ~690 kB: far beyond the socket buffers
ABORT_MESSAGE = "peer took no bytes"


class _AbortLog(logging.Handler):
    """Counts the server's "aborting the connection" records and signals the first."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.aborted = trio.Event()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(ABORT_MESSAGE):
            self.count += 1
            self.aborted.set()


@contextmanager
def _abort_log() -> Iterator[_AbortLog]:
    logger = logging.getLogger("trioagents.server")
    handler = _AbortLog()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _flood_agent() -> tuple[Agent, trio.Event]:
    """An agent that answers with ``LONG``, and an event set when a response ends."""
    agent = Agent("flood", model=BuiltinModel(lambda request: Reply(LONG)))
    finalized = trio.Event()
    agent.add_hook("finalize", lambda ctx: finalized.set())
    return agent, finalized


async def _connect_slow(srv: TestServer) -> trio.SocketStream:
    """A TCP connection whose receive buffer is as small as the kernel allows."""
    host, port = srv.url.removeprefix("http://").split(":")
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    await sock.connect((host, int(port)))
    return trio.SocketStream(sock)


async def _read_rest(stream: trio.SocketStream) -> tuple[bytes, str]:
    """Everything the client can still read, and how the connection ended."""
    chunks = []
    try:
        while data := await stream.receive_some(65536):
            chunks.append(data)
    except trio.BrokenResourceError:
        return b"".join(chunks), "reset"
    finally:
        await stream.aclose()
    return b"".join(chunks), "eof"


def _ws_events(ws: WSConnection, data: bytes) -> list[dict[str, Any]]:
    """The complete UAMP events in ``data`` (a cut-off last frame is ignored)."""
    ws.receive_data(data)
    events, parts = [], []
    for ev in ws.events():
        if isinstance(ev, TextMessage):
            parts.append(ev.data)
            if ev.message_finished:
                events.append(orjson.loads("".join(parts)))
                parts = []
    return events


async def test_uamp_client_that_never_reads_is_aborted_and_shutdown_returns() -> None:
    agent, finalized = _flood_agent()
    with trio.fail_after(TIMEOUT), _abort_log() as log:
        # graceful_timeout far above the test's bound: only the write bound can end this.
        async with open_test_server(
            agent, send_timeout=0.3, cleanup_timeout=0.2, graceful_timeout=60
        ) as srv:
            stream = await _connect_slow(srv)
            ws = WSConnection(ConnectionType.CLIENT)
            await stream.send_all(ws.send(Request(host="127.0.0.1", target="/agents/flood/uamp")))
            while not any(isinstance(ev, AcceptConnection) for ev in ws.events()):
                data = await stream.receive_some(1)  # byte by byte: no frame is consumed
                ws.receive_data(data)
            await stream.send_all(
                ws.send(TextMessage('{"type":"session.create"}'))
                + ws.send(TextMessage('{"type":"input.text","text":"go"}'))
            )
            # From here on the client reads nothing.
            await log.aborted.wait()
            await finalized.wait()  # the response ended without any shutdown
        stats = srv.server.runtime.stats
        assert stats.connections_open == 0
        assert stats.sessions_open == 0
    assert log.count == 1  # once per connection, however many writes fail afterwards
    data, ending = await _read_rest(stream)
    assert ending in {"reset", "eof"}
    kinds = [e["type"] for e in _ws_events(ws, data)]
    assert "response.done" not in kinds


async def test_completions_stream_that_is_never_read_ends_and_shutdown_returns() -> None:
    agent, finalized = _flood_agent()
    body = orjson.dumps(
        {"model": "flood", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    )
    request = (
        b"POST /agents/flood/v1/chat/completions HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    with trio.fail_after(TIMEOUT), _abort_log() as log:
        async with open_test_server(
            agent, send_timeout=0.3, cleanup_timeout=0.2, graceful_timeout=60
        ) as srv:
            stream = await _connect_slow(srv)
            await stream.send_all(request)  # and never read
            await log.aborted.wait()
            await finalized.wait()  # the disconnect cancelled the response
            assert srv.server.runtime.stats.responses_cancelled == 1
    assert log.count == 1
    data, ending = await _read_rest(stream)
    assert ending in {"reset", "eof"}
    assert data == b"" or data.startswith(b"HTTP/1.1 200")
    assert b"[DONE]" not in data


async def test_fast_clients_get_the_whole_long_reply() -> None:
    agent, _ = _flood_agent()
    with trio.fail_after(TIMEOUT), _abort_log() as log:
        async with open_test_server(agent, send_timeout=0.3, cleanup_timeout=0.2) as srv:
            async with open_uamp_client(srv.agent_ws_url("flood")) as client:
                session = await client.create_session()
                assert await session.ask("go") == LONG
            texts = []
            async with (
                httpx.AsyncClient(timeout=TIMEOUT) as http,
                http.stream(
                    "POST",
                    srv.agent_url("flood", "/v1/chat/completions"),
                    json={"stream": True, "messages": [{"role": "user", "content": "go"}]},
                ) as response,
            ):
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        delta = orjson.loads(line[6:])["choices"][0]["delta"]
                        texts.append(delta.get("content") or "")
                    elif line == "data: [DONE]":
                        texts.append("[DONE]")
            assert texts[-1] == "[DONE]"
            assert "".join(texts[:-1]) == LONG
    assert log.count == 0


async def test_stream_without_socket_is_bounded_per_chunk(autojump_clock: Any) -> None:
    # TLS streams have no socket: their writes go through send_all in chunks, each of which
    # must be taken within the bound. A lockstep stream blocks send_all until it is read.
    size = 3 * _TLS_CHUNK
    with trio.fail_after(TIMEOUT):
        send, _receive = trio.testing.lockstep_stream_one_way_pair()
        assert not await _write_or_stall(send, b"x" * size, 1.0)  # nobody reads
        assert trio.current_time() == pytest.approx(1.0)

        send, receive = trio.testing.lockstep_stream_one_way_pair()
        got = []

        async def slow_reader() -> None:
            while sum(map(len, got)) < size:
                await trio.sleep(0.8)  # 2.4 s in all, but never 1 s without progress
                got.append(await receive.receive_some())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_reader)
            assert await _write_or_stall(send, b"x" * size, 1.0)
        assert b"".join(got) == b"x" * size


def test_accept_backlog_holds_a_thousand_clients_connecting_at_once() -> None:
    from trioagents.config import Config
    from trioagents.server._serve import hypercorn_config

    assert hypercorn_config(Config()).backlog == 2048  # Hypercorn's default is 100
