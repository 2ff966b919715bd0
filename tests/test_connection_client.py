"""The trio connection-agent client: addressing, listeners, state, RPC, reconnect and timers."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trio_websocket

from tests.test_connections import load_example, make_server
from trioagents.client.connection import (
    AgentClient,
    AgentClientClosed,
    CloseInfo,
    RpcError,
    SendQueueFull,
    _split_host,
    backoff_delay,
    open_agent_client,
)
from trioagents.connections import Connection, ConnectionAgent, rpc
from trioagents.testing import open_test_server


class Room(ConnectionAgent):
    """Echo + auth + counter state + RPC, for the client tests."""

    db = ":memory:"
    initial_state = {"count": 0}

    async def on_connect(self, connection: Connection, ctx: Any) -> None:
        token = ctx.request.query.get("token")
        if token == "policy":
            connection.close(1008, "policy")
        elif token != "ok" and ctx.request.headers.get("x-token") != "ok":
            connection.close(4000, "Unauthorized")

    async def on_message(self, connection: Connection, message: str | bytes) -> None:
        await connection.send(message)

    async def validate_state_change(self, state: Any, connection: Connection) -> None:
        if not isinstance(state.get("count"), int):
            raise ValueError("count must be an integer")

    @rpc
    async def add(self, n: int) -> int:
        new = await self.update_state(lambda s: {"count": s["count"] + n})
        return int(new["count"])

    @rpc
    async def countdown(self, n: int) -> AsyncIterator[int]:
        for i in range(n, 0, -1):
            yield i

    @rpc
    async def forever(self) -> AsyncIterator[str]:
        try:
            yield "tick"
            await trio.sleep_forever()
        finally:
            self.stopped = True

    @rpc
    async def fail(self) -> None:
        raise LookupError("nothing here")


def host_of(url: str) -> str:
    return url.split("://", 1)[1]


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------


def test_backoff_follows_the_spec() -> None:
    assert [backoff_delay(n, 1.0, 60.0, 1.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff_delay(3, 1.0, 60.0, 0.0) == 2.0  # * U(0.5, 1): the lower end
    assert backoff_delay(1, 0.5, 60.0, 0.5) == 0.375


def test_host_splitting() -> None:
    assert _split_host("127.0.0.1:8000", False) == ("127.0.0.1", 8000, "127.0.0.1:8000")
    assert _split_host("example.com", True) == ("example.com", 443, "example.com")
    assert _split_host("[::1]:9000", False) == ("::1", 9000, "[::1]:9000")


async def test_url_kebab_prefix_and_fresh_query_per_connect() -> None:
    tokens = iter(["a", "b"])
    client = AgentClient(
        "ChatAgent", "room 1", host="h:1", prefix="/x/", query=lambda: {"token": next(tokens)}
    )
    assert await client.url() == "ws://h:1/x/chat-agent/room%201?token=a"
    assert await client.url() == "ws://h:1/x/chat-agent/room%201?token=b"

    async def async_query() -> dict[str, str]:
        return {"t": "1"}

    client = AgentClient("chat-agent", host="h", protocol="wss", query=async_query)
    assert await client.url() == "wss://h/agents/chat-agent/default?t=1"


# --------------------------------------------------------------------------------------------
# Against the real server
# --------------------------------------------------------------------------------------------


async def test_messages_state_and_rpc() -> None:
    with trio.fail_after(10):
        async with open_test_server(make_server(Room)) as srv:
            host = host_of(srv.ws_url)
            opened: list[str] = []
            states: list[tuple[Any, str]] = []
            errors: list[str] = []
            async with (
                open_agent_client("Room", "r1", host=host, query={"token": "ok"}) as a,
                open_agent_client("room", "r1", host=host, headers={"X-Token": "ok"}) as b,
                a.messages() as inbox,
            ):
                a.add_listener("open", lambda: opened.append("a"))
                a.add_listener("state", lambda s, src: states.append((s, src)))
                a.add_listener("state_error", errors.append)
                await a.wait_connected()
                await b.wait_connected()
                await a.send("hello")
                await a.send({"json": True})
                assert await inbox.receive() == "hello"
                assert await inbox.receive() == '{"json":true}'
                assert a.identity == {"type": "cf_agent_identity", "name": "r1", "agent": "room"}
                await a.wait_state(lambda s: s == {"count": 0})

                assert await b.call("add", 5) == 5
                assert await a.wait_state(lambda s: s["count"] == 5) == {"count": 5}
                assert a.state_version == 1

                await a.set_state({"count": 40})
                assert await b.wait_state(lambda s: s["count"] == 40) == {"count": 40}
                await a.set_state({"count": "bad"})
                with trio.fail_after(5):
                    while not errors:
                        await a.call("add", 0)  # a round trip: the error came before its result
                assert errors == ["count must be an integer"]

                chunks: list[int] = []
                assert await a.call("countdown", 3, on_chunk=chunks.append) is None
                assert chunks == [3, 2, 1]
                async with a.stream("countdown", 2) as stream:
                    assert [c async for c in stream] == [2, 1]
                async with a.stream("forever") as stream:
                    assert await stream.__anext__() == "tick"
                # Leaving the block cancelled the call on the server.
                instance = srv.server.connections.instance("room", "r1")
                with trio.fail_after(5):
                    while not getattr(instance, "stopped", False):
                        await a.call("add", 0)
                with pytest.raises(RpcError, match="nothing here"):
                    await a.call("fail")
                with pytest.raises(RpcError, match="unknown method"):
                    await a.call("missing")
            assert a.close_info == CloseInfo(1000, "client closed", True)
            assert a.connects == 1
            with pytest.raises(AgentClientClosed):
                await a.send("too late")


@pytest.mark.parametrize(
    ("query", "code"), [({"token": "nope"}, 4000), ({"token": "policy"}, 1008)]
)
async def test_terminal_close_codes_are_surfaced_and_never_retried(
    query: dict[str, str], code: int
) -> None:
    with trio.fail_after(10):
        async with open_test_server(make_server(Room)) as srv:
            closes: list[CloseInfo] = []
            async with open_agent_client(
                "room", "r", host=host_of(srv.ws_url), query=query, backoff_base=0.001
            ) as client:
                client.add_listener("close", closes.append)
                info = await client.wait_closed()
                assert info.code == code and info.terminal
                with pytest.raises(AgentClientClosed):
                    await client.wait_connected()
                with pytest.raises(AgentClientClosed):
                    await client.send("x")
            assert closes == [CloseInfo(code, "Unauthorized" if code == 4000 else "policy", True)]
            assert client.connects == 1


async def test_unknown_agent_is_terminal() -> None:
    with trio.fail_after(10):
        async with (
            open_test_server(make_server(Room)) as srv,
            open_agent_client("nobody", host=host_of(srv.ws_url)) as client,
        ):
            assert (await client.wait_closed()).code == 4004
            with pytest.raises(AgentClientClosed):
                await client.wait_connected()


async def test_reconnect_after_a_server_restart_keeps_the_state(tmp_path: Path) -> None:
    class Durable(Room):
        db = str(tmp_path / "state.db")

    queries = 0

    def query() -> dict[str, str]:
        nonlocal queries
        queries += 1
        return {"token": "ok"}

    closes: list[CloseInfo] = []
    gone = trio.Event()
    with trio.fail_after(20):
        # The client outlives both servers; port 9 refuses until the first server is up.
        async with open_agent_client(
            "Durable", "keep", host="127.0.0.1:9", query=query, backoff_base=0.01, backoff_max=0.05
        ) as client:
            client.add_listener("close", closes.append)
            client.add_listener("close", lambda info: gone.set())
            async with open_test_server(make_server(Durable)) as srv:
                client.host = host_of(srv.ws_url)
                port = int(srv.url.rsplit(":", 1)[1])
                await client.wait_connected()
                assert await client.call("add", 7) == 7
            await gone.wait()
            assert not client.connected
            assert closes == [CloseInfo(1001, "server shutting down", False)]
            # Disconnected: sends wait in the bounded queue.
            await client.send("queued while away")
            for i in range(99):
                await client.send(f"filler {i}")
            with pytest.raises(SendQueueFull):
                await client.send("one too many")
            async with (
                client.messages() as inbox,
                open_test_server(make_server(Durable, port=port)),
            ):
                await client.wait_connected()
                assert await inbox.receive() == "queued while away"
                for i in range(99):
                    assert await inbox.receive() == f"filler {i}"
                await client.wait_state(lambda s: s == {"count": 7})
                assert client.state_version == 1
                assert await client.call("add", 1) == 8
                assert client.connects == 2 and queries >= 3


# --------------------------------------------------------------------------------------------
# Timers, on memory streams with a virtual clock
# --------------------------------------------------------------------------------------------


async def test_backoff_schedule_with_jitter(autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[float] = []
    tenth = trio.Event()
    rnd = itertools.chain([1.0, 0.0], itertools.repeat(1.0))

    async def refuse(host: str, port: int, secure: bool) -> trio.abc.Stream:
        attempts.append(trio.current_time())
        if len(attempts) == 10:
            tenth.set()
        raise OSError("connection refused")

    with trio.fail_after(1000):
        async with open_agent_client("a", open_stream=refuse, random=lambda: next(rnd)) as client:
            await tenth.wait()
            assert not client.connected
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(attempts)]
    assert gaps == [1.0, 1.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


class Freezable(trio.abc.Stream):
    """A stream that, once frozen, stops moving bytes in both directions (a silent peer)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.frozen = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.frozen.is_set():
            await trio.sleep_forever()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.frozen.is_set():
            await trio.sleep_forever()
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()  # type: ignore[attr-defined]

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_pings_keep_a_quiet_connection_and_silence_reconnects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    servers: list[Freezable] = []
    connected_at: list[float] = []

    async with trio.open_nursery() as nursery:

        async def serve_ws(stream: Freezable) -> None:
            async with trio.open_nursery() as inner:
                request = await trio_websocket.wrap_server_stream(inner, stream)  # type: ignore[arg-type]
                ws = await request.accept()
                try:
                    while True:
                        await ws.get_message()
                except trio_websocket.ConnectionClosed:
                    pass
                inner.cancel_scope.cancel()

        async def open_memory(host: str, port: int, secure: bool) -> trio.abc.Stream:
            client_side, server_side = trio.testing.memory_stream_pair()
            server = Freezable(server_side)
            servers.append(server)
            connected_at.append(trio.current_time())
            nursery.start_soon(serve_ws, server)
            return client_side

        with trio.fail_after(1000):
            async with open_agent_client(
                "a", open_stream=open_memory, random=lambda: 0.0, close_timeout=1.0
            ) as client:
                await client.wait_connected()
                start = trio.current_time()
                await trio.sleep(200)  # virtual: pings every 30 s keep it alive
                assert client.connects == 1
                servers[0].frozen.set()
                frozen_at = trio.current_time()
                reopened = trio.Event()
                client.add_listener("open", reopened.set)
                await reopened.wait()
                # Silence is noticed within 40 s of the last pong, then backoff 1 s * 0.5.
                assert frozen_at - start == 200
                assert 0 < connected_at[1] - frozen_at <= 40.5
        nursery.cancel_scope.cancel()


# --------------------------------------------------------------------------------------------
# The example
# --------------------------------------------------------------------------------------------


async def test_example_chat_room(tmp_path: Path) -> None:
    example = load_example()

    class ChatRoom(example.ChatRoom):  # type: ignore[name-defined,misc]
        db = str(tmp_path / "rooms.db")

    with trio.fail_after(10):
        async with open_test_server(make_server(ChatRoom, agents=[example.agent])) as srv:
            host = host_of(srv.ws_url)
            async with (
                open_agent_client("chat-room", "lobby", host=host, query={"name": "ann"}) as ann,
                ann.messages() as ann_inbox,
            ):
                # The handshake comes before on_connect; the state frame means "accepted".
                await ann.wait_state(lambda s: s is not None)
                async with open_agent_client(
                    "chat-room", "lobby", host=host, query={"name": "bob"}
                ) as bob:
                    await bob.wait_state(lambda s: s is not None)
                    assert await ann_inbox.receive() == '{"type":"joined","name":"bob"}'
                    assert sorted(await bob.call("members")) == ["ann", "bob"]
                    await bob.send("hi all")
                    assert (
                        await ann_inbox.receive() == '{"type":"said","name":"bob","text":"hi all"}'
                    )
                    await ann.wait_state(lambda s: s["messages"] == 1)
                    chunks: list[int] = []
                    await bob.call("countdown", 3, on_chunk=chunks.append)
                    assert chunks == [3, 2, 1]
                assert await ann_inbox.receive() == '{"type":"left","name":"bob"}'
            async with open_agent_client("chat-room", "lobby", host=host) as anon:
                info = await anon.wait_closed()
                assert (info.code, info.reason) == (4000, "Unauthorized: add ?name=YOUR_NAME")
