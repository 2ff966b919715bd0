"""Connection agents (Cloudflare-style, PROTOCOLS.md §4) over real WebSockets."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.lowlevel
import trio_websocket

from trioagents import Agent, Config, uamp
from trioagents.connections import (
    Connection,
    ConnectionAgent,
    ConnectionHost,
    MemoryStateStore,
    SqliteStateStore,
    StateChangeRejected,
    current_connection,
    kebab_case,
    rpc,
)
from trioagents.connections._protocol import (
    BadFrame,
    RpcCancel,
    RpcRequest,
    StateUpdate,
    parse_client_frame,
    valid_instance_name,
)
from trioagents.server import AgentServer
from trioagents.testing import TestServer, open_test_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def make_server(
    *classes: type[ConnectionAgent], agents: list[Agent] | None = None, **config: Any
) -> AgentServer:
    cfg = Config(
        host="127.0.0.1", port=0, gc_freeze=False, gc_gen0_threshold=None, graceful_timeout=5.0
    ).replace(**config)
    return AgentServer(
        agents or [],
        config=cfg,
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        connection_agents=classes,
    )


@asynccontextmanager
async def serving(*classes: type[ConnectionAgent], **kw: Any) -> AsyncIterator[TestServer]:
    async with open_test_server(make_server(*classes, **kw)) as srv:
        yield srv


@asynccontextmanager
async def connect(
    srv: TestServer, path: str, headers: list[tuple[str, str]] | None = None
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    async with trio_websocket.open_websocket_url(
        srv.ws_url + path, extra_headers=headers or []
    ) as ws:
        try:
            yield ws
        finally:
            if ws.closed is not None:
                # The server closed first: trio-websocket would wait for the TCP close.
                await ws._stream.aclose()


async def recv(ws: trio_websocket.WebSocketConnection) -> Any:
    msg = await ws.get_message()
    return orjson.loads(msg) if isinstance(msg, str) and msg.startswith("{") else msg


def j(obj: Any) -> str:
    return orjson.dumps(obj).decode()


async def closed_with(ws: trio_websocket.WebSocketConnection) -> tuple[int, str | None]:
    with pytest.raises(trio_websocket.ConnectionClosed) as info:
        while True:
            await ws.get_message()
    return info.value.reason.code, info.value.reason.reason


# --------------------------------------------------------------------------------------------
# The sans-I/O part
# --------------------------------------------------------------------------------------------


def test_kebab_case_and_instance_names() -> None:
    assert kebab_case("ChatAgent") == "chat-agent"
    assert kebab_case("HTTPBot") == "http-bot"
    assert kebab_case("my_agent") == "my-agent"
    assert kebab_case("chat-agent") == "chat-agent"
    assert valid_instance_name("room-1.a_b")
    for bad in ("uamp", "chat", ".well-known", "v1", "", "-x", "a" * 129, "a/b"):
        assert not valid_instance_name(bad), bad


def test_parse_client_frame() -> None:
    assert parse_client_frame("hello") is None
    assert parse_client_frame(b'{"type":"rpc"}') is None  # binary is always the agent's
    assert parse_client_frame('{"type":"chat","text":"rpc"}') is None
    assert parse_client_frame("{not json") is None
    assert parse_client_frame('{"type":"cf_agent_state","state":{"a":1}}') == StateUpdate({"a": 1})
    assert parse_client_frame('{"type":"rpc","id":"1","method":"m","args":[1]}') == RpcRequest(
        "1", "m", [1]
    )
    assert parse_client_frame('{"type":"rpc","id":7,"method":"m"}') == RpcRequest("7", "m", [])
    assert parse_client_frame('{"type":"rpc","id":"1","cancel":true}') == RpcCancel("1")
    bad = parse_client_frame('{"type":"rpc","id":"1","method":"m","args":{}}')
    assert isinstance(bad, BadFrame) and bad.reply is not None
    assert orjson.loads(bad.reply)["success"] is False
    assert isinstance(parse_client_frame('{"type":"rpc"}'), BadFrame)
    assert isinstance(parse_client_frame('{"type":"cf_agent_state"}'), BadFrame)


def test_host_rejects_bad_classes() -> None:
    class A(ConnectionAgent):
        agent_name = "same"

    class B(ConnectionAgent):
        agent_name = "same"

    with pytest.raises(ValueError, match="both answer"):
        make_server(A, B)
    with pytest.raises(TypeError):
        make_server(Agent)  # type: ignore[arg-type]


async def test_stores_round_trip(tmp_path: Path) -> None:
    for store in (MemoryStateStore(), SqliteStateStore(tmp_path / "s.db")):
        await store.open()
        assert await store.load("a", "x") is None
        await store.save("a", "x", {"n": [1, 2]}, 3)
        await store.save("a", "y", "other", 1)
        assert await store.load("a", "x") == ({"n": [1, 2]}, 3)
        with pytest.raises(TypeError):
            await store.save("a", "x", {1, 2}, 4)
        assert await store.load("a", "x") == ({"n": [1, 2]}, 3)
        await store.aclose()
        await store.aclose()


# --------------------------------------------------------------------------------------------
# Connecting, addressing, auth
# --------------------------------------------------------------------------------------------


class Log:
    """What the agents of one test saw, plus events to wait on."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.closed = trio.Event()
        self.changed = trio.Event()

    def add(self, *item: Any) -> None:
        self.events.append(item)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, pred: Any) -> None:
        while not pred(self.events):
            await self.changed.wait()


def echo_class(log: Log, **attrs: Any) -> type[ConnectionAgent]:
    class EchoAgent(ConnectionAgent):
        db = ":memory:"

        async def on_connect(self, connection: Connection, ctx: Any) -> None:
            req = ctx.request
            log.add("connect", connection.id, self.name)
            if (
                req.headers.get("AUTHORIZATION") != "Bearer good"
                and req.query.get("token") != "good"
            ):
                log.add("reject", connection.id)
                await connection.close(4000, "Unauthorized")
                return
            connection.data["who"] = req.cookies.get("who")
            await connection.send(j({"url": req.url, "who": req.cookies.get("who")}))

        async def on_message(self, connection: Connection, message: str | bytes) -> None:
            assert current_connection() is connection
            log.add("message", connection.id, message)
            await connection.send(message)

        async def on_close(
            self, connection: Connection, code: int, reason: str, was_clean: bool
        ) -> None:
            log.add("close", connection.id, code)
            log.closed.set()

    for k, v in attrs.items():
        setattr(EchoAgent, k, v)
    return EchoAgent


async def test_echo_identity_headers_cookies_and_addressing() -> None:
    log = Log()
    cls = echo_class(log)
    with trio.fail_after(10):
        async with serving(cls) as srv:
            auth = [("Authorization", "Bearer good"), ("Cookie", "who=ann; x=1")]
            ids = set()
            for path, instance in (
                ("/agents/echo-agent/room-1", "room-1"),
                ("/agents/EchoAgent/room-1", "room-1"),
                ("/agents/echo-agent", "default"),
                ("/agents/echo-agent/room.2?x=1", "room.2"),
            ):
                async with connect(srv, path, auth) as ws:
                    hello = await recv(ws)
                    assert hello == {"url": srv.ws_url + path, "who": "ann"}
                    assert await recv(ws) == {
                        "type": "cf_agent_identity",
                        "name": instance,
                        "agent": "echo-agent",
                    }
                    await ws.send_message("ping")
                    await ws.send_message(b"\x00bin")
                    assert await recv(ws) == "ping"
                    assert await recv(ws) == b"\x00bin"
                ids.add(log.events[-1][1])
            await log.wait_for(lambda ev: sum(e[0] == "close" for e in ev) == 4)
            # Same class name and kebab-case reach the same instance; every connection has its id.
            assert len({e[1] for e in log.events if e[0] == "connect"}) == 4
            host: ConnectionHost = srv.server.connections
            assert host.instance("echo-agent", "room-1") is host.instance("EchoAgent", "room-1")
            assert host.instance("echo-agent", "default") is not None


async def test_unauthorized_close_4000_reaches_the_client_and_on_close_is_not_called() -> None:
    log = Log()
    with trio.fail_after(10):
        async with serving(echo_class(log)) as srv:
            async with connect(srv, "/agents/echo-agent/r") as ws:
                await ws.send_message("sneaky")
                assert await closed_with(ws) == (4000, "Unauthorized")
            # Query-string auth (browsers cannot set headers on a WebSocket).
            async with connect(srv, "/agents/echo-agent/r?token=good") as ws:
                assert (await recv(ws))["who"] is None
                assert (await recv(ws))["type"] == "cf_agent_identity"
    kinds = [e[0] for e in log.events]
    assert kinds == ["connect", "reject", "connect", "close"]
    assert not any(e[0] == "message" for e in log.events)  # the rejected client's frame


async def test_unknown_agent_and_reserved_segments_are_refused_with_404() -> None:
    log = Log()
    with trio.fail_after(10):
        async with serving(echo_class(log)) as srv:
            for path in ("/agents/nobody/x", "/agents/echo-agent/uamp", "/agents/echo-agent/chat"):
                status, body = await handshake(srv, path)
                assert status == 404, path
                assert orjson.loads(body)["error"]["code"] in ("agent_not_found", "route_not_found")


async def handshake(srv: TestServer, path: str) -> tuple[int, bytes]:
    """A raw WebSocket upgrade request; the status and body of a refusal.

    (trio-websocket leaves the socket of a rejected handshake to the garbage collector.)
    """
    port = int(srv.url.rsplit(":", 1)[1])
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some()
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(
            next(
                (
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                b"0",
            )
        )
        while len(body) < length:
            body += await stream.receive_some()
        return int(head.split()[1]), body


async def test_agent_routes_win_over_instances() -> None:
    """A regular agent's /uamp is never taken for an instance of a same-named class."""

    class Echo(ConnectionAgent):
        db = ":memory:"

    with trio.fail_after(10):
        async with serving(Echo, agents=[Agent("echo")]) as srv:
            async with connect(srv, "/agents/echo/uamp") as ws:
                await ws.send_message(j({"type": "ping", "event_id": "p1"}))
                assert (await recv(ws))["type"] == "pong"
            async with connect(srv, "/agents/echo/room") as ws:
                assert (await recv(ws))["type"] == "cf_agent_identity"


# --------------------------------------------------------------------------------------------
# Lifecycle rules
# --------------------------------------------------------------------------------------------


async def test_on_message_never_runs_before_on_connect_returns_and_keeps_order() -> None:
    log = Log()
    gate = trio.Event()

    class Slow(ConnectionAgent):
        db = ":memory:"

        async def on_connect(self, connection: Connection, ctx: Any) -> None:
            log.add("connect-start")
            await gate.wait()
            log.add("connect-end")

        async def on_message(self, connection: Connection, message: str | bytes) -> None:
            log.add("message", message)
            await (
                trio.lowlevel.checkpoint()
            )  # a checkpoint: the next message still waits for this one
            log.add("message-end", message)

    with trio.fail_after(10):
        async with serving(Slow) as srv, connect(srv, "/agents/slow/x") as ws:
            await log.wait_for(lambda ev: ("connect-start",) in ev)
            for i in range(20):
                await ws.send_message(f"m{i}")
            await ws.send_message(j({"type": "rpc", "id": "1", "method": "nope"}))
            gate.set()
            assert (await recv(ws))["type"] == "cf_agent_identity"
            assert (await recv(ws))["error"] == "unknown method 'nope'"
            await log.wait_for(lambda ev: ("message-end", "m19") in ev)
    expected: list[tuple[Any, ...]] = [("connect-start",), ("connect-end",)]
    for i in range(20):
        expected += [("message", f"m{i}"), ("message-end", f"m{i}")]
    assert log.events == expected


async def test_a_running_handler_is_cancelled_when_the_client_leaves() -> None:
    log = Log()

    class Busy(ConnectionAgent):
        db = ":memory:"

        async def on_message(self, connection: Connection, message: str | bytes) -> None:
            log.add("start", message)
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                log.add("cancelled", message)
                raise

        async def on_close(
            self, connection: Connection, code: int, reason: str, was_clean: bool
        ) -> None:
            log.add("close")
            log.closed.set()

    with trio.fail_after(10):
        async with serving(Busy) as srv:
            async with connect(srv, "/agents/busy/x") as ws:
                await ws.send_message("work")
                await ws.send_message("never delivered")
                await log.wait_for(lambda ev: ("start", "work") in ev)
            await log.closed.wait()
            assert srv.server.connections.instance("busy", "x").get_connections() == []
    assert log.events == [("start", "work"), ("cancelled", "work"), ("close",)]


async def test_on_error_keeps_the_connection_open_and_failures_stay_on_their_connection() -> None:
    log = Log()

    class Fragile(ConnectionAgent):
        db = ":memory:"

        async def on_message(self, connection: Connection, message: str | bytes) -> None:
            if message == "boom":
                raise ValueError("boom!")
            if message == "fatal":
                raise KeyError("fatal")
            await connection.send(f"ok {message}")

        async def on_error(self, connection: Connection, error: BaseException) -> None:
            log.add("error", connection.id, repr(error))
            if isinstance(error, KeyError):
                raise RuntimeError("cannot handle this")

    with trio.fail_after(10):
        async with (
            serving(Fragile) as srv,
            connect(srv, "/agents/fragile/x") as a,
            connect(srv, "/agents/fragile/x") as b,
        ):
            for ws in (a, b):
                assert (await recv(ws))["type"] == "cf_agent_identity"
            await a.send_message("boom")
            await a.send_message("still here")
            assert await recv(a) == "ok still here"
            await a.send_message("fatal")
            await a.send_message("after fatal")
            assert await closed_with(a) == (1011, "internal error")
            await b.send_message("fine")
            assert await recv(b) == "ok fine"
    assert [e[2] for e in log.events] == ["ValueError('boom!')", "KeyError('fatal')"]


async def test_close_from_a_handler_flushes_sends_then_closes_with_the_code() -> None:
    class Bye(ConnectionAgent):
        db = ":memory:"

        async def on_message(self, connection: Connection, message: str | bytes) -> None:
            await connection.send("one")
            connection.close(4001, "bye now")
            await connection.send("dropped: closing")

    with trio.fail_after(10):
        async with serving(Bye) as srv, connect(srv, "/agents/bye/x") as ws:
            assert (await recv(ws))["type"] == "cf_agent_identity"
            await ws.send_message("hi")
            await ws.send_message("not delivered")
            assert await recv(ws) == "one"
            assert await closed_with(ws) == (4001, "bye now")


async def test_server_shutdown_closes_with_1001_and_calls_on_close() -> None:
    log = Log()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with serving(echo_class(log)) as srv:
                ws = await trio_websocket.connect_websocket_url(
                    nursery, srv.ws_url + "/agents/echo-agent/x?token=good"
                )
                assert (await recv(ws))["who"] is None
            # The server has stopped: it closed the socket with 1001 first.
            assert await closed_with(ws) == (1001, "server shutting down")
            await ws._stream.aclose()
    assert log.events[-1][0] == "close" and log.events[-1][2] == 1001


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


def counter_class(log: Log, db: str = ":memory:") -> type[ConnectionAgent]:
    class Counter(ConnectionAgent):
        initial_state = {"count": 0}

        async def on_message(self, connection: Connection, message: str | bytes) -> None:
            if message == "inc":
                await self.update_state(lambda s: {"count": s["count"] + 1})

        async def validate_state_change(self, state: Any, connection: Connection) -> None:
            if not isinstance(state, dict) or not isinstance(state.get("count"), int):
                raise StateChangeRejected("count must be an integer")

        async def on_state_update(self, state: Any, source: Any) -> None:
            log.add("update", state["count"], source if source == "server" else source.id)

        @rpc
        async def add(self, n: int) -> int:
            new = await self.update_state(lambda s: {"count": s["count"] + n})
            return int(new["count"])

    Counter.db = db
    return Counter


async def test_state_changes_reach_every_connection_in_one_order() -> None:
    log = Log()
    with trio.fail_after(15):
        async with (
            serving(counter_class(log)) as srv,
            connect(srv, "/agents/counter/r") as a,
            connect(srv, "/agents/counter/r") as b,
            connect(srv, "/agents/counter/r") as c,
        ):
            clients = [a, b, c]
            for ws in clients:
                assert (await recv(ws))["type"] == "cf_agent_identity"
                assert await recv(ws) == {
                    "type": "cf_agent_state",
                    "state": {"count": 0},
                    "version": 0,
                }

            async def hammer(ws: trio_websocket.WebSocketConnection, n: int) -> None:
                for i in range(n):
                    await ws.send_message("inc")
                    await ws.send_message(
                        j({"type": "rpc", "id": f"r{i}", "method": "add", "args": [10]})
                    )

            async with trio.open_nursery() as nursery:
                for ws in clients:
                    nursery.start_soon(hammer, ws, 10)
            total = 3 * 10 * 2
            seen: list[list[tuple[int, int]]] = []
            for ws in clients:
                states = []
                while len(states) < total:
                    frame = await recv(ws)
                    if frame["type"] == "cf_agent_state":
                        states.append((frame["version"], frame["state"]["count"]))
                seen.append(states)
            assert seen[0] == seen[1] == seen[2]
            assert [v for v, _ in seen[0]] == list(range(1, total + 1))
            assert seen[0][-1][1] == 3 * 10 * 11
            inst = srv.server.connections.instance("counter", "r")
            assert inst.state == {"count": 330} and inst.state_version == total


async def test_client_state_goes_to_the_others_and_refusals_to_the_sender_only() -> None:
    log = Log()
    with trio.fail_after(10):
        async with (
            serving(counter_class(log)) as srv,
            connect(srv, "/agents/counter/r") as a,
            connect(srv, "/agents/counter/r") as b,
        ):
            for ws in (a, b):
                assert (await recv(ws))["type"] == "cf_agent_identity"
                assert (await recv(ws))["version"] == 0
            await a.send_message(j({"type": "cf_agent_state", "state": {"count": "many"}}))
            assert await recv(a) == {
                "type": "cf_agent_state_error",
                "error": "count must be an integer",
            }
            await a.send_message(j({"type": "cf_agent_state", "state": {"count": 41}}))
            assert await recv(b) == {"type": "cf_agent_state", "state": {"count": 41}, "version": 1}
            await b.send_message("inc")
            # The sender of a state change is not echoed; the next change reaches everyone.
            assert await recv(a) == {"type": "cf_agent_state", "state": {"count": 42}, "version": 2}
            assert await recv(b) == {"type": "cf_agent_state", "state": {"count": 42}, "version": 2}
    sender = log.events[0][2]
    assert log.events == [("update", 41, sender), ("update", 42, "server")]


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    log = Log()
    db = str(tmp_path / "state.db")
    with trio.fail_after(15):
        async with (
            serving(counter_class(log, db)) as srv,
            connect(srv, "/agents/counter/keep") as ws,
        ):
            await ws.send_message(j({"type": "rpc", "id": "1", "method": "add", "args": [5]}))
            await ws.send_message(j({"type": "rpc", "id": "2", "method": "add", "args": [2]}))
            frames = [await recv(ws) for _ in range(6)]
            assert [f for f in frames if f["type"] == "rpc"][-1]["result"] == 7
        async with serving(counter_class(log, db)) as srv:
            async with connect(srv, "/agents/counter/keep") as ws:
                assert (await recv(ws))["type"] == "cf_agent_identity"
                assert await recv(ws) == {
                    "type": "cf_agent_state",
                    "state": {"count": 7},
                    "version": 2,
                }
            async with connect(srv, "/agents/counter/other") as ws:
                assert (await recv(ws))["type"] == "cf_agent_identity"
                assert (await recv(ws))["state"] == {"count": 0}


async def test_protocol_messages_can_be_suppressed() -> None:
    class Quiet(ConnectionAgent):
        db = ":memory:"
        initial_state = {"x": 1}

        def should_send_protocol_messages(self, connection: Connection, ctx: Any) -> bool:
            return ctx.request.query.get("protocol") != "off"

        async def on_message(self, connection: Connection, message: str | bytes) -> None:
            await self.set_state({"x": 2})
            await self.broadcast({"said": message})

    with trio.fail_after(10):
        async with (
            serving(Quiet) as srv,
            connect(srv, "/agents/quiet/q?protocol=off") as quiet,
            connect(srv, "/agents/quiet/q") as loud,
        ):
            assert (await recv(loud))["type"] == "cf_agent_identity"
            assert (await recv(loud))["state"] == {"x": 1}
            await quiet.send_message("hi")
            assert await recv(loud) == {"type": "cf_agent_state", "state": {"x": 2}, "version": 1}
            assert await recv(loud) == {"said": "hi"}
            assert await recv(quiet) == {"said": "hi"}


# --------------------------------------------------------------------------------------------
# RPC
# --------------------------------------------------------------------------------------------


async def test_rpc_results_streams_errors_and_cancel() -> None:
    log = Log()

    class Tools(ConnectionAgent):
        db = ":memory:"

        @rpc
        async def add(self, a: int, b: int) -> int:
            return a + b

        @rpc(name="whoami")
        def who(self) -> str:
            return current_connection().id

        @rpc
        async def count(self, n: int) -> AsyncIterator[int]:
            for i in range(n):
                yield i

        @rpc
        async def forever(self) -> AsyncIterator[str]:
            try:
                yield "started"
                await trio.sleep_forever()
            finally:
                log.add("forever ended")
                yield_ok = True  # noqa: F841

        @rpc
        async def fail(self) -> None:
            raise ValueError("no good")

        async def not_exposed(self) -> str:
            return "secret"

    def call(rid: str, method: str, *args: Any) -> str:
        return j({"type": "rpc", "id": rid, "method": method, "args": list(args)})

    with trio.fail_after(10):
        async with serving(Tools) as srv, connect(srv, "/agents/tools/t") as ws:
            assert (await recv(ws))["type"] == "cf_agent_identity"
            await ws.send_message(call("f", "forever"))
            assert await recv(ws) == {
                "type": "rpc",
                "id": "f",
                "success": True,
                "result": "started",
                "done": False,
            }
            await ws.send_message(call("a", "add", 2, 3))
            assert await recv(ws) == {
                "type": "rpc",
                "id": "a",
                "success": True,
                "result": 5,
                "done": True,
            }
            await ws.send_message(call("w", "whoami"))
            assert (await recv(ws))["result"].startswith("conn_")
            await ws.send_message(call("c", "count", 3))
            frames = [await recv(ws) for _ in range(4)]
            assert [(f["result"], f["done"]) for f in frames] == [
                (0, False),
                (1, False),
                (2, False),
                (None, True),
            ]
            for rid, method, args, error in (
                ("e1", "fail", [], "no good"),
                ("e2", "not_exposed", [], "unknown method 'not_exposed'"),
                ("e3", "add", [1], None),  # wrong arity: a TypeError's text
            ):
                await ws.send_message(call(rid, method, *args))
                frame = await recv(ws)
                assert frame["id"] == rid and frame["success"] is False and frame["done"] is True
                if error:
                    assert frame["error"] == error
            await ws.send_message(j({"type": "rpc", "id": "f", "cancel": True}))
            assert await recv(ws) == {
                "type": "rpc",
                "id": "f",
                "success": False,
                "error": "cancelled",
                "done": True,
                "cancelled": True,
            }
            assert ("forever ended",) in log.events


# --------------------------------------------------------------------------------------------
# The example
# --------------------------------------------------------------------------------------------


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location(
        "example_connection_agent", EXAMPLES / "connection_agent.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
