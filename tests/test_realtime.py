"""OpenAI Realtime over WebSocket against the real server (PROTOCOLS.md §7).

The real ``openai`` SDK (GA ``client.realtime`` and beta ``client.beta.realtime``) runs in a
subprocess (``tests/realtime_client_script.py``) and reports the exact event types it received;
raw trio-websocket clients check exact error codes, close codes and cancellation.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio_websocket

from trioagents import Agent, BuiltinModel, CallTool, Config, ModelRequest, Reply, hook, uamp
from trioagents.agent import TextChunk
from trioagents.server import AgentServer, serve as serve_server
from trioagents.testing import TestServer, open_test_server
from trioagents.transports import DEFAULT_TRANSPORTS
from trioagents.transports.realtime import RealtimeTransport

SCRIPT = Path(__file__).with_name("realtime_client_script.py")


class GateModel(BuiltinModel):
    """Streams 'one two', then blocks until cancelled; records the stream's life."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked = trio.Event()
        self.closed = trio.Event()

    async def stream(self, request: ModelRequest) -> AsyncGenerator[Any, None]:
        self.calls.append(request)
        try:
            yield TextChunk("one")
            yield TextChunk(" two")
            self.blocked.set()
            await trio.sleep_forever()
        finally:
            self.closed.set()


class FinalizeWatch(Agent):
    """An agent whose ``finalize`` hook reports every response's end."""

    def __init__(self, name: str, model: Any) -> None:
        super().__init__(name, model=model)
        self.finalized = trio.Event()

    @hook("finalize")
    def _done(self, ctx: Any) -> None:
        self.finalized.set()


def make_server(*agents: Agent, **overrides: Any) -> AgentServer:
    cfg = Config(host="127.0.0.1", port=0, gc_freeze=False, gc_gen0_threshold=None)
    return AgentServer(
        list(agents),
        config=cfg.replace(**overrides),
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        transports=(*DEFAULT_TRANSPORTS, RealtimeTransport),
    )


@asynccontextmanager
async def serve(*agents: Agent, **overrides: Any) -> AsyncIterator[TestServer]:
    async with open_test_server(make_server(*agents, **overrides)) as srv:
        yield srv


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


class Client:
    """A raw Realtime client: send dicts, receive dicts."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, **event: Any) -> None:
        await self.ws.send_message(dumps(event))

    async def recv(self) -> dict[str, Any]:
        ev: dict[str, Any] = orjson.loads(await self.ws.get_message())
        return ev

    async def until(self, kind: str) -> list[dict[str, Any]]:
        out = []
        while True:
            ev = await self.recv()
            out.append(ev)
            if ev["type"] == kind:
                return out

    async def error(self) -> dict[str, Any]:
        ev = await self.recv()
        assert ev["type"] == "error", ev
        err: dict[str, Any] = ev["error"]
        return err


@asynccontextmanager
async def connect(
    url: str, headers: list[tuple[bytes, bytes]] | None = None
) -> AsyncIterator[tuple[Client, dict[str, Any]]]:
    async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
        client = Client(ws)
        first = await client.recv()
        yield client, first


def user_item(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
        **extra,
    }


async def drop_closed_client(ws: trio_websocket.WebSocketConnection) -> None:
    """Close the TCP stream of a client whose server closed the WebSocket (see test_uamp)."""
    await ws._stream.aclose()


# --------------------------------------------------------------------------------------------
# The real openai SDK
# --------------------------------------------------------------------------------------------

GA_TEXT = [
    "session.created",
    "conversation.item.added",
    "conversation.item.done",
    "response.created",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta*",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.done",
]
GA_CALL = [
    "conversation.item.added",
    "conversation.item.done",
    "response.created",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "response.done",
]
GA_CANCEL = [
    "session.created",
    "conversation.item.added",
    "conversation.item.done",
    "response.created",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta*",
    "response.output_item.done",
    "response.done",
]


def beta(types: list[str]) -> list[str]:
    """The beta names of a GA sequence."""
    out = []
    for t in types:
        if t == "conversation.item.added":
            t = "conversation.item.created"
        elif t == "conversation.item.done":
            continue
        out.append(t.replace("response.output_text.", "response.text."))
    return out


async def test_openai_sdk_ga_and_beta_text_function_call_and_cancel() -> None:
    gate = GateModel()
    with trio.fail_after(30):
        async with serve(Agent("echo"), Agent("gate", model=gate)) as srv:
            proc = await trio.run_process(
                [sys.executable, str(SCRIPT), srv.url],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr.decode()[-3000:]
            result = json.loads(proc.stdout)
            stats = srv.server.runtime.stats
    assert set(result) == {"ga", "ga_agent", "beta"}
    for name in ("ga", "ga_agent", "beta"):
        r = result[name]
        expect = (lambda t: t) if name.startswith("ga") else beta
        assert r["invalid"] == [], r["invalid"]  # strict pydantic validation of every event
        assert r["session"]["type"] == "session.created"
        assert r["session"]["model"] == "echo"
        assert r["text_types"] == expect(GA_TEXT), name
        assert (r["text"], r["text_status"]) == ("You said: hello there", "completed")
        part = "output_text" if name.startswith("ga") else "text"
        assert r["text_output"] == [["message", "assistant", [[part, "You said: hello there"]]]]
        assert r["usage_total"] and r["usage_total"] > 0
        if name == "ga_agent":
            continue
        assert r["session_tools"] == ["get_weather"]
        assert r["call_types"] == expect(GA_CALL), name
        assert r["call_status"] == "completed"
        assert r["call"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
        assert r["call_item"] == [["function_call", "get_weather", True]]
        assert r["result_types"] == expect(GA_TEXT[1:]), name
        assert r["result_text"] == "get_weather returned: sunny, 21 C"
        assert r["cancel_types"] == expect(GA_CANCEL), name
        assert r["cancel_status"] == "cancelled"
        assert r["cancel_details"] == {"type": "cancelled", "reason": "client_cancelled"}
        assert r["cancel_item_status"] == ["incomplete"]
        assert r["cancel_again"] == ["response_cancel_not_active", "evt_client_2"]
    assert stats.responses_cancelled == 2
    assert gate.closed.is_set()


# --------------------------------------------------------------------------------------------
# Raw clients: sessions, items, errors
# --------------------------------------------------------------------------------------------


async def test_session_update_returns_the_full_session_and_reaches_the_model() -> None:
    model = BuiltinModel()
    with trio.fail_after(10):
        async with (
            serve(Agent("echo", "Agent prompt.", model=model)) as srv,
            connect(srv.ws_url + "/v1/realtime?model=echo") as (c, created),
        ):
            assert created["type"] == "session.created"
            assert created["session"]["audio"]["input"]["turn_detection"] is None
            await c.send(
                type="session.update",
                event_id="evt_u1",
                session={
                    "type": "realtime",
                    "instructions": "Answer in French.",
                    "audio": {"input": {"turn_detection": {"type": "server_vad"}}},
                    "tools": [{"type": "function", "name": "lookup", "parameters": {}}],
                },
            )
            updated = await c.recv()
            s = updated["session"]
            assert updated["type"] == "session.updated"
            assert s["id"] == created["session"]["id"]
            assert (s["type"], s["model"], s["instructions"]) == (
                "realtime",
                "echo",
                "Answer in French.",
            )
            assert s["audio"]["input"]["turn_detection"] is None  # no server VAD, ever
            assert [t["name"] for t in s["tools"]] == ["lookup"]
            await c.send(type="conversation.item.create", item=user_item("bonjour"))
            await c.until("conversation.item.done")
            await c.send(type="response.create", response={"instructions": "Just this once."})
            events = await c.until("response.done")
            assert events[-1]["response"]["status"] == "completed"
    request = model.calls[-1]
    system = request.messages[0]
    assert system.role == "system"
    assert system.text == "Agent prompt.\n\nAnswer in French.\n\nJust this once."
    assert [t["function"]["name"] for t in request.tools] == ["lookup"]


async def test_bad_session_update_and_tool_name_conflicts_are_refused() -> None:
    def secret() -> str:
        """An agent tool."""
        return "s"

    with trio.fail_after(10):
        async with (
            serve(Agent("echo", tools=[secret])) as srv,
            connect(srv.agent_ws_url("echo", "/v1/realtime?model=echo")) as (c, _),
        ):
            await c.send(type="session.update", event_id="e1", session={"tools": "nope"})
            err = await c.error()
            assert (err["code"], err["param"], err["event_id"]) == (
                "invalid_type",
                "session.tools",
                "e1",
            )
            await c.send(
                type="session.update",
                event_id="e2",
                session={"instructions": "x", "tools": [{"type": "function", "name": "secret"}]},
            )
            err = await c.error()
            assert (err["code"], err["param"]) == ("invalid_value", "session.tools")
            await c.send(type="session.update", session={})
            s = (await c.recv())["session"]
            assert (s["instructions"], s["tools"]) == ("", [])  # nothing of the refused updates


async def test_conversation_items_create_retrieve_delete_truncate() -> None:
    with trio.fail_after(10):
        async with (
            serve(Agent("echo")) as srv,
            connect(srv.ws_url + "/v1/realtime?model=echo") as (c, _),
        ):
            await c.send(type="conversation.item.create", item=user_item("first", id="item_a"))
            added, done = await c.recv(), await c.recv()
            assert [added["type"], done["type"]] == [
                "conversation.item.added",
                "conversation.item.done",
            ]
            assert added["item"]["id"] == "item_a" and added["previous_item_id"] is None
            assert added["item"]["status"] == "completed"
            await c.send(type="conversation.item.create", item=user_item("second"))
            second = (await c.until("conversation.item.done"))[0]
            new_id = second["item"]["id"]
            assert new_id.startswith("item_") and second["previous_item_id"] == "item_a"
            await c.send(
                type="conversation.item.create", previous_item_id="root", item=user_item("zero")
            )
            root = (await c.until("conversation.item.done"))[0]
            assert root["previous_item_id"] is None
            await c.send(type="conversation.item.retrieve", item_id="item_a")
            got = await c.recv()
            assert got["type"] == "conversation.item.retrieved"
            assert got["item"]["content"] == [{"type": "input_text", "text": "first"}]
            await c.send(type="conversation.item.delete", item_id="item_a")
            deleted = await c.recv()
            assert (deleted["type"], deleted["item_id"]) == ("conversation.item.deleted", "item_a")
            await c.send(type="conversation.item.retrieve", event_id="r2", item_id="item_a")
            err = await c.error()
            assert (err["code"], err["param"], err["event_id"]) == (
                "item_not_found",
                "item_id",
                "r2",
            )
            await c.send(type="conversation.item.create", item=user_item("dup", id=new_id))
            assert (await c.error())["code"] == "item_already_exists"
            await c.send(
                type="conversation.item.create",
                previous_item_id="item_gone",
                item=user_item("x"),
            )
            err = await c.error()
            assert (err["code"], err["param"]) == ("item_not_found", "previous_item_id")
            await c.send(
                type="conversation.item.create",
                item={"type": "function_call_output", "call_id": "call_nope", "output": "1"},
            )
            err = await c.error()
            assert (err["code"], err["param"]) == ("invalid_value", "item.call_id")
            # A response sees the conversation as it is now: "zero", "second" (not "first").
            await c.send(type="response.create")
            events = await c.until("response.done")
            assert events[-1]["response"]["output"][0]["content"][0]["text"] == "You said: second"
            answer_id = events[-1]["response"]["output"][0]["id"]
            await c.send(
                type="conversation.item.truncate",
                item_id=answer_id,
                content_index=0,
                audio_end_ms=1500,
            )
            trunc = await c.recv()
            assert (trunc["type"], trunc["item_id"], trunc["audio_end_ms"]) == (
                "conversation.item.truncated",
                answer_id,
                1500,
            )
            await c.send(
                type="conversation.item.truncate", item_id=new_id, content_index=0, audio_end_ms=1
            )
            assert (await c.error())["code"] == "invalid_value"  # a user item


async def test_errors_leave_the_socket_open() -> None:
    with trio.fail_after(10):
        async with (
            serve(Agent("echo")) as srv,
            connect(srv.ws_url + "/v1/realtime?model=echo") as (c, _),
        ):
            await c.send(type="voice.start", event_id="evt_c1")
            ev = await c.recv()
            assert ev["type"] == "error" and ev["event_id"].startswith("evt_")
            assert ev["error"] == {
                "type": "invalid_request_error",
                "code": "unknown_event",
                "message": "unknown event type 'voice.start'",
                "param": "type",
                "event_id": "evt_c1",
            }
            await c.ws.send_message("{not json")
            assert (await c.error())["code"] == "invalid_json"
            await c.ws.send_message(b"\x00\x01")
            assert (await c.error())["code"] == "unsupported_frame"
            await c.send(type="conversation.item.create", item={"type": "message", "role": "bot"})
            err = await c.error()
            assert (err["code"], err["param"]) == ("invalid_value", "item.role")
            await c.send(type="payment.submit", payment={"scheme": "token", "token": "tok"})
            await c.send(type="response.cancel", event_id="evt_c2")
            err = await c.error()
            assert (err["code"], err["event_id"]) == ("response_cancel_not_active", "evt_c2")
            # still serving
            await c.send(type="conversation.item.create", item=user_item("still there?"))
            await c.send(type="response.create")
            events = await c.until("response.done")
            assert events[-1]["response"]["status"] == "completed"


async def test_input_audio_buffer() -> None:
    with trio.fail_after(10):
        async with (
            serve(Agent("echo")) as srv,
            connect(srv.ws_url + "/v1/realtime?model=echo") as (c, _),
        ):
            await c.send(type="input_audio_buffer.commit", event_id="a1")
            err = await c.error()
            assert (err["code"], err["event_id"]) == ("input_audio_buffer_commit_empty", "a1")
            await c.send(type="input_audio_buffer.append", audio="AAAAAAAA")
            await c.send(type="input_audio_buffer.commit", event_id="a2")
            err = await c.error()
            assert (err["code"], err["event_id"]) == ("audio_not_supported", "a2")
            await c.send(type="input_audio_buffer.commit")  # the buffer was dropped
            assert (await c.error())["code"] == "input_audio_buffer_commit_empty"
            await c.send(type="input_audio_buffer.append", audio="%%%")
            assert (await c.error())["code"] == "invalid_value"
            await c.send(type="input_audio_buffer.append", audio="AAAA")
            await c.send(type="input_audio_buffer.clear")
            assert (await c.recv())["type"] == "input_audio_buffer.cleared"
            await c.send(type="input_audio_buffer.commit")
            assert (await c.error())["code"] == "input_audio_buffer_commit_empty"


async def test_audio_buffer_bound() -> None:
    class SmallBuffer(RealtimeTransport):
        def __init__(self) -> None:
            super().__init__(max_audio_buffer=4)

    agent = Agent("echo", skills=[SmallBuffer()])
    with trio.fail_after(10):
        async with (
            serve(agent) as srv,
            connect(srv.ws_url + "/agents/echo/v1/realtime") as (c, _),
        ):
            await c.send(type="input_audio_buffer.append", audio="AAAA")  # 3 bytes
            await c.send(type="input_audio_buffer.append", audio="AAAA")  # 6 > 4
            assert (await c.error())["code"] == "input_audio_buffer_full"


async def test_one_active_response_and_cancel() -> None:
    gate = GateModel()
    with trio.fail_after(10):
        async with (
            serve(Agent("gate", model=gate)) as srv,
            connect(srv.ws_url + "/v1/realtime?model=gate") as (c, _),
        ):
            await c.send(type="conversation.item.create", item=user_item("go"))
            await c.send(type="response.create")
            await c.send(type="response.create", event_id="evt_second")  # same batch
            # The refusal (a reply of the reader) and the first delta (from the response task)
            # may come in either order.
            events: list[dict[str, Any]] = []
            while not (
                any(e["type"] == "error" for e in events)
                and any(e["type"] == "response.output_text.delta" for e in events)
            ):
                events.append(await c.recv())
            errors = [e["error"] for e in events if e["type"] == "error"]
            assert [(e["code"], e["event_id"]) for e in errors] == [
                ("conversation_already_has_active_response", "evt_second")
            ]
            rid = next(e for e in events if e["type"] == "response.created")["response"]["id"]
            await gate.blocked.wait()
            await c.send(type="response.cancel", response_id="resp_other")
            assert (await c.error())["code"] == "response_cancel_not_active"
            await c.send(type="response.cancel", response_id=rid)
            done = (await c.until("response.done"))[-1]
            assert (done["response"]["id"], done["response"]["status"]) == (rid, "cancelled")
            assert done["response"]["output"][0]["content"] == [
                {"type": "output_text", "text": "one two"}
            ]
            await gate.closed.wait()  # the model stream was closed
            # the partial answer stays in the conversation; a new response may start
            await c.send(type="response.create")
            created = (await c.until("response.created"))[-1]
            assert created["response"]["id"] != rid
            await c.send(type="response.cancel")
            assert (await c.until("response.done"))[-1]["response"]["status"] == "cancelled"
    assert [m.role for m in gate.calls[-1].messages] == ["user", "assistant"]
    assert gate.calls[-1].messages[1].text == "one two"


async def test_client_disconnect_cancels_the_active_response() -> None:
    gate = GateModel()
    agent = FinalizeWatch("gate", gate)
    with trio.fail_after(10):
        async with serve(agent) as srv:
            async with connect(srv.ws_url + "/v1/realtime?model=gate") as (c, _):
                await c.send(type="conversation.item.create", item=user_item("go"))
                await c.send(type="response.create")
                await c.until("response.output_text.delta")
                await gate.blocked.wait()
            # leaving the block closed the socket mid-response
            await agent.finalized.wait()
            await gate.closed.wait()
            stats = srv.server.runtime.stats
            assert (stats.responses, stats.responses_cancelled) == (1, 1)


async def test_failed_response() -> None:
    with trio.fail_after(10):
        async with (
            serve(Agent("echo")) as srv,
            connect(srv.ws_url + "/v1/realtime?model=echo") as (c, _),
        ):
            await c.send(type="conversation.item.create", item=user_item("/fail boom"))
            await c.send(type="response.create")
            done = (await c.until("response.done"))[-1]["response"]
            assert done["status"] == "failed"
            assert done["status_details"] == {
                "type": "failed",
                "error": {"type": "server_error", "code": "agent_error", "message": "boom"},
            }


# --------------------------------------------------------------------------------------------
# Routes, flavours, limits
# --------------------------------------------------------------------------------------------


async def _handshake_status(srv: TestServer, target: str) -> bytes:
    host, port = srv.url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n".encode()
            + b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        data = b""
        while b"\r\n\r\n" not in data or b"}" not in data:
            chunk = await stream.receive_some(4096)
            assert chunk, data
            data += chunk
    return data


async def test_server_route_refuses_unknown_model_with_404() -> None:
    with trio.fail_after(10):
        async with serve(Agent("a"), Agent("b")) as srv:
            data = await _handshake_status(srv, "/v1/realtime?model=unknown")
            assert data.startswith(b"HTTP/1.1 404")
            assert b'"code":"model_not_found"' in data
            data = await _handshake_status(srv, "/v1/realtime")
            assert data.startswith(b"HTTP/1.1 400")
            async with connect(srv.ws_url + "/v1/realtime?model=b") as (_, created):
                assert created["session"]["model"] == "b"


@pytest.mark.parametrize("query", ["model=echo&call_id=rtc_1", "model=echo&intent=transcription"])
async def test_calls_and_transcription_sessions_are_refused_with_1008(query: str) -> None:
    with trio.fail_after(10):
        async with (
            serve(Agent("echo")) as srv,
            trio_websocket.open_websocket_url(srv.ws_url + "/v1/realtime?" + query) as ws,
        ):
            ev = orjson.loads(await ws.get_message())
            assert ev["type"] == "error"
            assert ev["error"]["code"] == "unsupported_session"
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None and info.value.reason.code == 1008
            await drop_closed_client(ws)


@pytest.mark.parametrize(
    ("path", "headers", "added"),
    [
        ("/agents/echo/realtime", None, "conversation.item.created"),  # seed client
        ("/agents/echo/realtime?model=echo", None, "conversation.item.added"),
        ("/agents/echo/v1/realtime?flavor=beta", None, "conversation.item.created"),
        (
            "/v1/realtime?model=echo",
            [(b"OpenAI-Beta", b"realtime=v1")],
            "conversation.item.created",
        ),
        ("/v1/realtime?model=echo&flavor=ga", None, "conversation.item.added"),
    ],
)
async def test_flavour_per_connection(
    path: str, headers: list[tuple[bytes, bytes]] | None, added: str
) -> None:
    with trio.fail_after(10):
        async with (
            serve(Agent("echo")) as srv,
            connect(srv.ws_url + path, headers) as (c, created),
        ):
            is_beta = added == "conversation.item.created"
            assert ("modalities" in created["session"]) is is_beta
            await c.send(type="conversation.item.create", item=user_item("hi"))
            assert (await c.recv())["type"] == added
            await c.send(type="response.create")
            types = [e["type"] for e in await c.until("response.done")]
            delta = "response.text.delta" if is_beta else "response.output_text.delta"
            assert delta in types


async def test_frame_too_large_closes_with_1009() -> None:
    with trio.fail_after(10):
        async with (
            serve(Agent("echo"), max_message_size=1000) as srv,
            connect(srv.ws_url + "/v1/realtime?model=echo") as (c, _),
        ):
            await c.send(type="input_audio_buffer.append", audio="A" * 2000)
            assert (await c.error())["code"] == "message_too_large"
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await c.ws.get_message()
            assert info.value.reason is not None and info.value.reason.code == 1009
            await drop_closed_client(c.ws)


async def test_graceful_shutdown_cancels_the_response_and_closes_1001() -> None:
    gate = GateModel()
    server = make_server(Agent("bye", model=gate))
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve_server, server, shutdown_trigger=stop.wait))
            ws_url = "ws" + urls[0][4:] + "/v1/realtime?model=bye"
            async with connect(ws_url) as (c, _):
                await c.send(type="conversation.item.create", item=user_item("go"))
                await c.send(type="response.create")
                await gate.blocked.wait()
                stop.set()
                done = (await c.until("response.done"))[-1]
                assert done["response"]["status"] == "cancelled"
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await c.ws.get_message()
                assert info.value.reason is not None and info.value.reason.code == 1001
                await drop_closed_client(c.ws)


async def test_agent_tools_run_server_side_and_stay_in_the_history() -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    model = BuiltinModel([CallTool("add", {"a": 2, "b": 3}, id="call_add"), Reply("It is 5.")])
    with trio.fail_after(10):
        async with (
            serve(Agent("calc", model=model, tools=[add])) as srv,
            connect(srv.ws_url + "/v1/realtime?model=calc") as (c, _),
        ):
            await c.send(type="conversation.item.create", item=user_item("2+3?"))
            await c.send(type="response.create")
            events = await c.until("response.done")
            assert "response.function_call_arguments.done" not in [e["type"] for e in events]
            output = events[-1]["response"]["output"]
            assert [(i["type"], i["content"][0]["text"]) for i in output] == [
                ("message", "It is 5.")
            ]
            await c.send(type="conversation.item.create", item=user_item("thanks"))
            await c.send(type="response.create")
            await c.until("response.done")
    history = model.calls[-1].messages
    assert [m.role for m in history] == ["user", "assistant", "tool", "assistant", "user"]
    assert [c.id for c in history[1].tool_calls] == ["call_add"]
    assert (history[2].tool_call_id, history[2].text) == ("call_add", "5")
    assert history[3].text == "It is 5."


# --------------------------------------------------------------------------------------------
# Audio input through a transcribe hook
# --------------------------------------------------------------------------------------------


class Ears(Agent):
    """Transcribes audio by reading the bytes as UTF-8 ("fail" raises, "pass" declines).

    With ``gated`` the hook waits for :attr:`gate` and records whether it was cancelled.
    """

    def __init__(self, name: str, model: Any = None, *, gated: bool = False) -> None:
        super().__init__(name, model=model)
        self.heard: list[tuple[str, str, bytes]] = []
        self.gated = gated
        self.gate = trio.Event()
        self.waiting = trio.Event()
        self.cancelled = trio.Event()

    @hook("transcribe")
    async def _stt(self, session: Any, audio: bytes, format: str) -> str | None:
        self.heard.append((session.id, format, audio))
        if self.gated:
            self.waiting.set()
            try:
                await self.gate.wait()
            except trio.Cancelled:
                self.cancelled.set()
                raise
        text = audio.decode()
        if text == "fail":
            raise RuntimeError("unintelligible")
        return None if text == "pass" else text


def b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def realtime_adapter(beta: bool) -> Any:
    import pydantic
    from openai.types.beta.realtime.realtime_server_event import (
        RealtimeServerEvent as BetaServerEvent,
    )
    from openai.types.realtime.realtime_server_event import RealtimeServerEvent as GAEvent

    return pydantic.TypeAdapter(BetaServerEvent if beta else GAEvent)


async def test_audio_commit_is_transcribed_and_answered_ga() -> None:
    agent = Ears("ears")
    adapter = realtime_adapter(beta=False)
    with trio.fail_after(10):
        async with (
            serve(agent) as srv,
            connect(srv.ws_url + "/v1/realtime?model=ears") as (c, first),
        ):
            await c.send(type="conversation.item.create", item=user_item("first"))
            text_item = (await c.until("conversation.item.done"))[-1]["item"]["id"]
            await c.send(type="input_audio_buffer.append", audio=b64(b"hello "))
            await c.send(type="input_audio_buffer.append", audio=b64(b"world"))
            await c.send(type="input_audio_buffer.commit", event_id="c1")
            events = await c.until("conversation.item.input_audio_transcription.completed")
            for ev in events:
                adapter.validate_python(ev)
            assert [e["type"] for e in events] == [
                "input_audio_buffer.committed",
                "conversation.item.added",
                "conversation.item.done",
                "conversation.item.input_audio_transcription.completed",
            ]
            committed, added, _, completed = events
            item_id = committed["item_id"]
            assert committed["previous_item_id"] == text_item
            assert added["previous_item_id"] == text_item
            assert added["item"] == {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_audio", "transcript": None}],
            }
            assert (completed["item_id"], completed["content_index"]) == (item_id, 0)
            assert completed["transcript"] == "hello world"
            assert completed["usage"] == {"type": "duration", "seconds": 11 / 48000}
            # The buffer was consumed; the transcript is the item's user text.
            await c.send(type="input_audio_buffer.commit")
            assert (await c.error())["code"] == "input_audio_buffer_commit_empty"
            await c.send(type="conversation.item.retrieve", item_id=item_id)
            got = await c.recv()
            assert got["item"]["content"] == [{"type": "input_audio", "transcript": "hello world"}]
            await c.send(type="response.create")
            events = await c.until("response.done")
            for ev in events:
                adapter.validate_python(ev)
            done = events[-1]["response"]
            assert done["status"] == "completed"
            assert done["output"][0]["content"] == [
                {"type": "output_text", "text": "You said: hello world"}
            ]
    assert agent.heard == [(first["session"]["id"], "pcm16", b"hello world")]
    assert [m.role for m in agent.model.calls[-1].messages] == ["user", "user"]
    assert [m.text for m in agent.model.calls[-1].messages] == ["first", "hello world"]


async def test_audio_transcription_failures_beta() -> None:
    adapter = realtime_adapter(beta=True)
    with trio.fail_after(10):
        async with (
            serve(Ears("ears")) as srv,
            connect(srv.ws_url + "/agents/ears/realtime") as (c, _),  # seed path: beta
        ):
            await c.send(type="session.update", session={"input_audio_format": "g711_ulaw"})
            await c.until("session.updated")
            codes = []
            for spoken in (b"fail", b"pass"):
                await c.send(type="input_audio_buffer.append", audio=b64(spoken))
                await c.send(type="input_audio_buffer.commit")
                events = await c.until("conversation.item.input_audio_transcription.failed")
                for ev in events:
                    adapter.validate_python(ev)
                assert [e["type"] for e in events] == [
                    "input_audio_buffer.committed",
                    "conversation.item.created",
                    "conversation.item.input_audio_transcription.failed",
                ]
                failed = events[-1]
                assert (failed["item_id"], failed["content_index"]) == (events[0]["item_id"], 0)
                assert failed["error"]["type"] == "transcription_error"
                codes.append(failed["error"]["code"])
            assert codes == ["transcription_failed", "audio_not_supported"]
            # The socket still works: a good utterance is transcribed with the session's format.
            await c.send(type="input_audio_buffer.append", audio=b64(b"ok then"))
            await c.send(type="input_audio_buffer.commit")
            ev = (await c.until("conversation.item.input_audio_transcription.completed"))[-1]
            assert ev["transcript"] == "ok then"
            assert ev["usage"]["seconds"] == 7 / 8000  # G.711: 8,000 bytes a second
            stats = srv.server.runtime.stats
            assert stats.errors == 2


async def test_response_waits_for_the_transcription_and_cancel_while_waiting() -> None:
    agent = Ears("ears", gated=True)
    with trio.fail_after(10):
        async with (
            serve(agent) as srv,
            connect(srv.ws_url + "/v1/realtime?model=ears") as (c, _),
        ):
            # response.create right after the commit: the model must hear the transcript.
            await c.send(type="input_audio_buffer.append", audio=b64(b"slow words"))
            await c.send(type="input_audio_buffer.commit")
            await c.send(type="response.create")
            await agent.waiting.wait()
            await c.send(type="response.create", event_id="again")  # the slot is taken
            head = await c.until("error")
            assert head[-1]["error"]["code"] == "conversation_already_has_active_response"
            agent.gate.set()
            events = await c.until("response.done")
            types = [e["type"] for e in events]
            assert types[:2] == [
                "conversation.item.input_audio_transcription.completed",
                "response.created",
            ]
            assert events[-1]["response"]["output"][0]["content"] == [
                {"type": "output_text", "text": "You said: slow words"}
            ]
            # response.cancel while the response still waits for a transcription: the client
            # still gets response.created + response.done{cancelled}; the transcript arrives.
            agent.gate = trio.Event()
            agent.waiting = trio.Event()
            await c.send(type="input_audio_buffer.append", audio=b64(b"never answered"))
            await c.send(type="input_audio_buffer.commit")
            await c.send(type="response.create")
            await agent.waiting.wait()
            await c.send(type="response.cancel")
            events = await c.until("response.done")
            assert [e["type"] for e in events][-2:] == ["response.created", "response.done"]
            assert events[-1]["response"]["status"] == "cancelled"
            assert events[-1]["response"]["output"] == []
            agent.gate.set()
            ev = (await c.until("conversation.item.input_audio_transcription.completed"))[-1]
            assert ev["transcript"] == "never answered"
            # Closing the socket cancels a running transcription.
            agent.gate = trio.Event()
            await c.send(type="input_audio_buffer.append", audio=b64(b"cut off"))
            await c.send(type="input_audio_buffer.commit")
            await c.until("conversation.item.done")
        await agent.cancelled.wait()


async def test_openai_sdk_audio_through_the_transcribe_hook() -> None:
    with trio.fail_after(30):
        async with serve(Ears("ears")) as srv:
            proc = await trio.run_process(
                [sys.executable, str(SCRIPT), srv.url, "audio"],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    result = json.loads(proc.stdout)
    ga_types = [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.completed",
    ]
    beta_types = [
        "input_audio_buffer.committed",
        "conversation.item.created",
        "conversation.item.input_audio_transcription.completed",
    ]
    for name, types in (("ga", ga_types), ("beta", beta_types)):
        r = result[name]
        assert r["invalid"] == [], r["invalid"]  # strict pydantic validation of every event
        assert r["audio_types"] == types, name
        assert r["transcript"] == ["spoken words", 0, "duration"]
        assert r["audio_answer"] == "You said: spoken words"
