"""UAMP over WebSocket against the real server (PROTOCOLS.md §1)."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import orjson
import pytest
import trio
import trio_websocket

from trioagents import Agent, BuiltinModel, CallTool, Config, ModelRequest, Reply, tool, uamp
from trioagents.agent import TextChunk
from trioagents.client import open_uamp_client
from trioagents.server import AgentServer, serve
from trioagents.testing import open_test_server


class GateModel(BuiltinModel):
    """Streams 'one two' then blocks until ``gate`` is set when the user text says 'block'."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.started = 0
        self.blocked = trio.Event()

    async def stream(self, request: ModelRequest) -> AsyncIterator[Any]:  # type: ignore[override]
        last = request.messages[-1].text
        if "block" in last:
            self.started += 1
            yield TextChunk("one")
            yield TextChunk(" two")
            self.blocked.set()
            await self.gate.wait()
        async for ev in BuiltinModel().stream(request):
            yield ev


async def drop_closed_client(ws: trio_websocket.WebSocketConnection) -> None:
    """Close the TCP stream of a client whose server closed the WebSocket.

    trio-websocket's client waits for the server's TCP close after a server-initiated close
    handshake, and leaving ``open_websocket_url`` before it arrives leaves the socket for the
    garbage collector (a ResourceWarning). Closing it ourselves is what a careful client does.
    """
    await ws._stream.aclose()


def dumps(obj: Any) -> str:
    """JSON text (a text frame; bytes would be a binary frame)."""
    return orjson.dumps(obj).decode()


async def raw_events(ws: trio_websocket.WebSocketConnection, until: Any) -> list[dict[str, Any]]:
    """Read frames until ``until(event)`` is true; return them all."""
    out = []
    while True:
        ev = orjson.loads(await ws.get_message())
        out.append(ev)
        if until(ev):
            return out


async def test_fifty_sessions_stream_and_cancel_independently() -> None:
    model = GateModel()
    agent = Agent("mux", model=model)
    with trio.fail_after(20):
        async with (
            open_test_server(agent) as srv,
            open_uamp_client(srv.agent_ws_url("mux")) as client,
        ):
            sessions = [await client.create_session() for _ in range(50)]
            assert len({s.id for s in sessions}) == 50
            results: dict[int, Any] = {}

            async def run(i: int) -> None:
                s = sessions[i]
                if i % 5 == 0:  # ten sessions block mid-stream and are cancelled
                    await s.input_text(f"block {i}")
                    streamed = ""
                    rid = None
                    events = []
                    async for ev in s.events:
                        events.append(ev)
                        if ev.type == "response.created":
                            rid = ev.response_id
                        if ev.type == "response.delta":
                            # Deltas may arrive merged while the client is behind.
                            streamed += ev.delta.text
                            if streamed == "one two":
                                await s.cancel(rid)
                        if ev.type in uamp.TERMINAL_TYPES:
                            break
                    results[i] = events
                else:
                    await s.input_text(f"hello {i}")
                    results[i] = (await s.collect()).events

            async with trio.open_nursery() as n:
                for i in range(50):
                    n.start_soon(run, i)

            for i, events in results.items():
                kinds = Counter(e.type for e in events)
                terminals = [e for e in events if e.type in uamp.TERMINAL_TYPES]
                assert kinds["response.created"] == 1, i
                assert len(terminals) == 1, (i, kinds)
                assert all(e.session_id == sessions[i].id for e in events)
                if i % 5 == 0:
                    assert terminals[0].type == "response.cancelled"
                    assert terminals[0].partial_output == [uamp.TextContent("one two")]
                else:
                    text = "".join(e.delta.text for e in events if e.type == "response.delta")
                    assert text == f"You said: hello {i}"
                    assert terminals[0].type == "response.done"
            # The cancelled sessions are still usable afterwards.
            assert await sessions[0].ask("again") == "You said: again"
            assert srv.server.runtime.stats.responses_cancelled == 10
        # Socket closed: every session and response of it has unwound.
        stats = srv.server.runtime.stats
        assert stats.sessions_open == 0
        assert stats.connections_open == 0


async def test_blocked_session_does_not_block_others_or_ping() -> None:
    model = GateModel()
    agent = Agent("mux", model=model)
    with trio.fail_after(10):
        async with (
            open_test_server(agent) as srv,
            open_uamp_client(srv.agent_ws_url("mux")) as client,
        ):
            a = await client.create_session()
            b = await client.create_session()
            await a.input_text("block please")
            await model.blocked.wait()
            pong = await client.ping()
            assert pong.type == "pong"
            assert await b.ask("still here?") == "You said: still here?"
            model.gate.set()
            result = await a.collect()
            assert result.status == "completed"
            assert result.text == "one twoYou said: block please"


async def test_client_tool_pauses_and_resumes_same_response() -> None:
    model = BuiltinModel([CallTool("lookup", {"q": "trio"}, id="call_1"), Reply("found it")])
    agent = Agent("tools", model=model)
    lookup = {
        "type": "function",
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    with trio.fail_after(10):
        async with (
            open_test_server(agent) as srv,
            open_uamp_client(srv.agent_ws_url("tools")) as client,
        ):
            s = await client.create_session(tools=[lookup])
            await s.input_text("look it up")
            events = []
            async for ev in s.events:
                if ev.type == "capabilities":
                    continue
                events.append(ev)
                if ev.type == "tool.call":
                    assert (ev.name, ev.arguments) == ("lookup", '{"q":"trio"}')
                    await s.tool_result(ev.call_id, '{"hits": 3}')
                if ev.type in uamp.TERMINAL_TYPES:
                    break
            kinds = [e.type for e in events]
            assert kinds.count("response.created") == 1
            assert kinds[-1] == "response.done"
            assert len({e.response_id for e in events}) == 1
            # The model saw the client's result as the tool message.
            tool_msgs = [m for m in model.calls[-1].messages if m.role == "tool"]
            assert [(m.tool_call_id, m.text) for m in tool_msgs] == [("call_1", '{"hits": 3}')]


async def test_client_tool_timeout_is_a_response_error() -> None:
    agent = Agent("tools", model=BuiltinModel([CallTool("lookup", {}, id="call_1")]))
    with trio.fail_after(10):
        async with (
            open_test_server(agent, tool_result_timeout=0.05) as srv,
            open_uamp_client(srv.agent_ws_url("tools")) as client,
        ):
            s = await client.create_session(tools=[{"type": "function", "name": "lookup"}])
            await s.input_text("go")
            result = await s.collect()
            assert result.terminal.type == "response.error"
            assert result.terminal.error.code == "tool_timeout"
            # A late result for the finished call is unknown now.
            await s.tool_result("call_1", "late")
            err = await s.events.receive()
            assert (err.type, err.error.code) == ("error", "unknown_call_id")


async def test_agent_tools_run_concurrently_and_stream_results() -> None:
    both_running = trio.Event()
    running = 0

    @tool
    async def wait_for_peer(name: str) -> str:
        """Returns once both calls are running (proves concurrency)."""
        nonlocal running
        running += 1
        if running == 2:
            both_running.set()
        await both_running.wait()
        return f"hi {name}"

    model = BuiltinModel(
        [[CallTool("wait_for_peer", {"name": "a"}), CallTool("wait_for_peer", {"name": "b"})]]
    )
    agent = Agent("par", model=model, tools=[wait_for_peer])
    with trio.fail_after(10):
        async with (
            open_test_server(agent) as srv,
            open_uamp_client(srv.agent_ws_url("par")) as client,
        ):
            s = await client.create_session()
            result = await s.collect() if await s.input_text("go") else None
            assert result is not None
            kinds = [e.type for e in result.events]
            assert kinds.count("tool.call_done") == 2
            assert "tool.call" not in kinds  # agent tools are deltas only
            results = sorted(
                e.delta.tool_result.result
                for e in result.events
                if e.type == "response.delta" and e.delta.type == "tool_result"
            )
            assert results == ["hi a", "hi b"]
            assert result.text == "wait_for_peer returned: hi a. wait_for_peer returned: hi b"


async def test_input_then_response_create_gives_one_response() -> None:
    agent = Agent("bind")
    with trio.fail_after(10):
        async with (
            open_test_server(agent) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("bind")) as ws,
        ):
            await ws.send_message('{"type":"session.create","event_id":"c1"}')
            await raw_events(ws, lambda e: e["type"] == "capabilities")
            await ws.send_message('{"type":"input.text","text":"hi","event_id":"i1"}')
            await ws.send_message('{"type":"response.create","event_id":"r1"}')
            events = await raw_events(ws, lambda e: e["type"] == "response.done")
            created = [e for e in events if e["type"] == "response.created"]
            assert len(created) == 1 and created[0]["reply_to"] == "i1"
            # A response.create with nothing new starts a fresh response on the conversation.
            await ws.send_message('{"type":"response.create","event_id":"r2"}')
            events = await raw_events(ws, lambda e: e["type"] == "response.done")
            assert next(e["type"] for e in events) == "response.created"
            assert events[0]["reply_to"] == "r2"


async def test_response_create_while_running_is_refused() -> None:
    model = GateModel()
    with trio.fail_after(10):
        async with (
            open_test_server(Agent("busy", model=model)) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("busy")) as ws,
        ):
            await ws.send_message('{"type":"session.create"}')
            await raw_events(ws, lambda e: e["type"] == "capabilities")
            await ws.send_message('{"type":"input.text","text":"block"}')
            await model.blocked.wait()
            await ws.send_message(
                '{"type":"response.create","event_id":"x"}'
            )  # bound to the running one
            await ws.send_message('{"type":"response.create","event_id":"y"}')
            events = await raw_events(ws, lambda e: e["type"] == "error")
            assert events[-1]["error"]["code"] == "response_in_progress"
            assert events[-1]["reply_to"] == "y"
            model.gate.set()
            events = await raw_events(ws, lambda e: e["type"] in uamp.TERMINAL_TYPES)
            assert events[-1]["type"] == "response.done"


async def test_session_end_cancels_then_confirms() -> None:
    model = GateModel()
    with trio.fail_after(10):
        async with (
            open_test_server(Agent("end", model=model)) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("end")) as ws,
        ):
            await ws.send_message('{"type":"session.create"}')
            created = (await raw_events(ws, lambda e: e["type"] == "session.created"))[-1]
            sid = created["session_id"]
            await ws.send_message(dumps({"type": "input.text", "text": "block", "session_id": sid}))
            await model.blocked.wait()
            await ws.send_message(dumps({"type": "session.end", "session_id": sid}))
            events = await raw_events(ws, lambda e: e["type"] == "session.end")
            kinds = [e["type"] for e in events]
            assert kinds.index("response.cancelled") < kinds.index("session.end")
            assert events[-1]["reason"] == "client_request"
            await ws.send_message(dumps({"type": "input.text", "text": "x", "session_id": sid}))
            err = (await raw_events(ws, lambda e: e["type"] == "error"))[-1]
            assert err["error"]["code"] == "unknown_session"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"no_type": 1}', "invalid_event"),
        ('{"type": "tool.result", "event_id": "e1"}', "invalid_event"),
        ('{"type": "voice.start"}', "unsupported_event"),
        ('{"type": "made.up"}', "unsupported_event"),
        ('{"type": "input.text", "text": "hi"}', "session_required"),
        (b"\x00\x01binary", "unsupported_frame"),
    ],
)
async def test_bad_frames_get_errors_and_socket_stays_open(frame: str | bytes, code: str) -> None:
    with trio.fail_after(10):
        async with (
            open_test_server(Agent("bad")) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("bad")) as ws,
        ):
            await ws.send_message(frame)
            err = orjson.loads(await ws.get_message())
            assert err["type"] == "error"
            assert err["error"]["code"] == code
            assert err["error"]["message"]
            assert err["event_id"].startswith("evt_") and isinstance(err["timestamp"], int)
            if code == "invalid_event" and "e1" in str(frame):
                assert err["reply_to"] == "e1"
                assert "call_id" in err["error"]["message"]
            # Still usable.
            await ws.send_message('{"type":"ping","event_id":"p"}')
            pong = orjson.loads(await ws.get_message())
            assert (pong["type"], pong["reply_to"]) == ("pong", "p")


async def test_session_level_errors() -> None:
    model = GateModel()
    with trio.fail_after(10):
        async with (
            open_test_server(Agent("errs", model=model), max_sessions_per_socket=2) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("errs")) as ws,
        ):

            async def send(d: dict[str, Any]) -> None:
                await ws.send_message(dumps(d))

            async def next_of(kind: str) -> dict[str, Any]:
                return (await raw_events(ws, lambda e: e["type"] == kind))[-1]

            await send({"type": "session.create", "uamp_version": "2.0"})
            e = await next_of("session.error")
            assert e["error"]["code"] == "version_mismatch"
            assert e["error"]["details"] == {"supported": ["1.0"]}
            await send({"type": "session.create", "agent": "someone-else"})
            assert (await next_of("session.error"))["error"]["code"] == "agent_not_found"
            await send({"type": "session.create", "session": {"agent": "errs"}})
            s1 = (await next_of("session.created"))["session_id"]
            await send({"type": "response.cancel"})
            assert (await next_of("error"))["error"]["code"] == "no_active_response"
            await send({"type": "tool.result", "call_id": "nope", "result": "x"})
            assert (await next_of("error"))["error"]["code"] == "unknown_call_id"
            await send({"type": "session.create", "uamp_version": "1.3"})
            s2 = (await next_of("session.created"))["session_id"]
            assert s1 != s2
            await send({"type": "session.create"})
            assert (await next_of("session.error"))["error"]["code"] == "too_many_sessions"
            await send({"type": "input.text", "text": "which?"})
            assert (await next_of("error"))["error"]["code"] == "session_id_required"
            await send({"type": "input.text", "text": "x", "session_id": "sess_missing"})
            assert (await next_of("error"))["error"]["code"] == "unknown_session"
            await send({"type": "input.audio", "audio": "AAAA", "session_id": s2})
            err = await next_of("response.error")
            assert err["error"]["code"] == "unsupported_modality"
            await send({"type": "input.text", "text": "fine", "session_id": s1})
            done = await next_of("response.done")
            assert done["session_id"] == s1


async def test_oversized_frame_closes_with_1009() -> None:
    with trio.fail_after(10):
        async with (
            open_test_server(Agent("big"), max_message_size=1000) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("big")) as ws,
        ):
            await ws.send_message('{"type":"input.text","text":"' + "x" * 2000 + '"}')
            err = orjson.loads(await ws.get_message())
            assert err["error"]["code"] == "message_too_large"
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 1009
            await drop_closed_client(ws)


async def test_unknown_agent_websocket_is_refused_with_404() -> None:
    with trio.fail_after(10):
        async with open_test_server(Agent("known")) as srv:
            host, port = srv.url.removeprefix("http://").split(":")
            # A raw upgrade request: the handshake is refused with an HTTP status (§0.4).
            stream = await trio.open_tcp_stream(host, int(port))
            async with stream:
                await stream.send_all(
                    b"GET /agents/unknown/uamp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                data = b""
                while b"agent_not_found" not in data:
                    chunk = await stream.receive_some(4096)
                    assert chunk, data
                    data += chunk
            assert data.startswith(b"HTTP/1.1 404")


async def test_server_level_uamp_routes_sessions_to_agents() -> None:
    a, b = Agent("alpha"), Agent("beta.two")
    with trio.fail_after(10):
        async with (
            open_test_server([a, b]) as srv,
            open_uamp_client(srv.ws_url + "/uamp") as client,
        ):
            sa = await client.create_session(agent="alpha")
            sb = await client.create_session(agent="beta.two")
            assert (sa.agent, sb.agent) == ("alpha", "beta.two")
            assert await sb.ask("dots") == "You said: dots"


async def test_graceful_shutdown_ends_sessions_and_closes_1001() -> None:
    model = GateModel()
    server = AgentServer(
        Agent("bye", model=model), config=Config(host="127.0.0.1", port=0, gc_freeze=False)
    )
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(partial(serve, server, shutdown_trigger=stop.wait))
            ws_url = "ws" + urls[0][4:] + "/agents/bye/uamp"
            async with trio_websocket.open_websocket_url(ws_url) as ws:
                await ws.send_message('{"type":"session.create"}')
                await raw_events(ws, lambda e: e["type"] == "capabilities")
                await ws.send_message('{"type":"input.text","text":"block"}')
                await model.blocked.wait()
                stop.set()
                events = await raw_events(ws, lambda e: e["type"] == "session.end")
                kinds = [e["type"] for e in events]
                assert "response.cancelled" in kinds
                assert events[-1]["reason"] == "shutdown"
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason.code == 1001
                await drop_closed_client(ws)
        # serve() returned: the nursery exited, and nothing of ours is left running.
        assert server.runtime.stats.connections_open == 0


async def test_socket_close_mid_stream_closes_upstream_model_stream() -> None:
    from tests.upstream import SSEReply, chunk, open_upstream
    from trioagents import OpenAIModel

    never = trio.Event()
    reply = SSEReply(
        [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello"}), never],
        done=False,
    )
    finalized: list[str] = []
    with trio.fail_after(10):
        async with open_upstream([reply]) as upstream:
            agent = Agent("proxy", model=OpenAIModel("fake", base_url=upstream.url, api_key="k"))
            agent.add_hook("finalize", lambda ctx: finalized.append(ctx.output_text))
            async with open_test_server(agent) as srv:
                async with open_uamp_client(srv.agent_ws_url("proxy")) as client:
                    s = await client.create_session()
                    await s.input_text("hi")
                    async for ev in s.events:
                        if ev.type == "response.delta":
                            assert ev.delta.text == "Hello"
                            break
                # The socket is closed: the response is cancelled and the upstream HTTP stream
                # to the model is closed, which the upstream server observes.
                await upstream.disconnected.wait()
                assert upstream.completed == 0
                assert srv.server.runtime.stats.responses_cancelled == 1
    assert finalized == ["Hello"]


async def test_client_that_stops_reading_is_closed_1013_without_hurting_others() -> None:
    # A reply far larger than the socket buffers, and a client that does not read it: the
    # writer blocks, the bounded queue fills, the producer waits send_timeout, and only that
    # connection is closed (1013). Another client is served meanwhile.
    words = " ".join(["x" * 1000] * 20_000)
    model = BuiltinModel(
        lambda req: Reply(words) if "flood" in req.messages[-1].text else Reply("ok")
    )
    agent = Agent("flood", model=model)
    gave_up = trio.Event()
    agent.add_hook("finalize", lambda ctx: gave_up.set() if ctx.output_text != "ok" else None)
    with trio.fail_after(20):
        async with (
            open_test_server(
                agent, outbound_queue_size=4, send_timeout=0.2, cleanup_timeout=0.5
            ) as srv,
            trio_websocket.open_websocket_url(
                srv.agent_ws_url("flood"), max_message_size=1 << 24
            ) as slow,
        ):
            await slow.send_message('{"type":"session.create"}')
            await raw_events(slow, lambda e: e["type"] == "capabilities")
            await slow.send_message('{"type":"input.text","text":"flood"}')
            async with open_uamp_client(srv.agent_ws_url("flood")) as other:
                s = await other.create_session()
                assert await s.ask("hello") == "ok"
            await gave_up.wait()  # the flooding response was cancelled by the stuck close
            received = []
            with pytest.raises(trio_websocket.ConnectionClosed) as info:
                while True:
                    received.append(orjson.loads(await slow.get_message()))
            assert info.value.reason.code == 1013
            kinds = {e["type"] for e in received}
            assert "response.done" not in kinds
            await drop_closed_client(slow)


async def test_replies_never_wait_behind_a_full_queue() -> None:
    # A tiny queue kept full by ten streaming sessions: pings and new sessions are still
    # answered (control lane), and nothing is closed for being slow.
    words = " ".join(f"w{i}" for i in range(500))
    agent = Agent("busy", model=BuiltinModel(lambda req: Reply(words)))
    with trio.fail_after(20):
        async with (
            open_test_server(agent, outbound_queue_size=4) as srv,
            open_uamp_client(srv.agent_ws_url("busy")) as client,
        ):
            sessions = [await client.create_session() for _ in range(10)]
            texts: list[str] = []

            async def stream(s: Any) -> None:
                texts.append((await s.collect()).text if await s.input_text("go") else "")

            async with trio.open_nursery() as nursery:
                for s in sessions:
                    nursery.start_soon(stream, s)
                for _ in range(20):
                    assert (await client.ping()).type == "pong"
                late = await client.create_session()
            assert texts == [words] * 10
            assert await late.ask("and me") == words


async def test_response_create_options_apply_to_that_response_only() -> None:
    model = BuiltinModel()
    agent = Agent("opts", "Base.", model=model)
    with trio.fail_after(10):
        async with (
            open_test_server(agent) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("opts")) as ws,
        ):
            await ws.send_message(
                dumps(
                    {"type": "session.create", "session": {"extensions": {"auto_respond": False}}}
                )
            )
            await raw_events(ws, lambda e: e["type"] == "capabilities")
            await ws.send_message(dumps({"type": "input.text", "text": "hi"}))
            await ws.send_message(
                dumps({"type": "response.create", "response": {"instructions": "Be brief."}})
            )
            await raw_events(ws, lambda e: e["type"] == "response.done")
            assert model.calls[-1].messages[0].text == "Base.\n\nBe brief."
            assert model.calls[-1].messages[-1].text == "hi"
            await ws.send_message(dumps({"type": "response.create"}))
            await raw_events(ws, lambda e: e["type"] == "response.done")
            assert model.calls[-1].messages[0].text == "Base."


# --------------------------------------------------------------------------------------------
# Audio input through a transcribe hook
# --------------------------------------------------------------------------------------------

import base64  # noqa: E402  (this section's own imports)

from trioagents import hook  # noqa: E402
from trioagents.transports.uamp import UampTransport  # noqa: E402


class Ears(Agent):
    """Transcribes audio by reading the bytes as UTF-8 ("fail" raises, "pass" declines).

    With ``gated`` the hook waits for :attr:`gate` and records whether it was cancelled.
    """

    def __init__(self, name: str, *, gated: bool = False, **kw: Any) -> None:
        super().__init__(name, model=BuiltinModel(), **kw)
        self.heard: list[tuple[str, str, bytes]] = []
        self.gated = gated
        self.gate = trio.Event()
        self.waiting = trio.Event()
        self.cancelled = trio.Event()

    @hook("transcribe")
    def _stt(self, session: Any, audio: bytes, format: str) -> Any:
        self.heard.append((session.id, format, audio))
        if self.gated:
            return self._gated(audio)
        return self._text(audio)

    async def _gated(self, audio: bytes) -> str | None:
        self.waiting.set()
        try:
            await self.gate.wait()
        except trio.Cancelled:
            self.cancelled.set()
            raise
        return self._text(audio)

    @staticmethod
    def _text(audio: bytes) -> str | None:
        text = audio.decode()
        if text == "fail":
            raise RuntimeError("unintelligible")
        return None if text == "pass" else text


def audio_event(data: bytes, **fields: Any) -> str:
    return dumps({"type": "input.audio", "audio": base64.b64encode(data).decode(), **fields})


async def test_input_audio_is_transcribed_then_answered() -> None:
    agent = Ears("ears")
    with trio.fail_after(10):
        async with (
            open_test_server(agent) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("ears")) as ws,
        ):
            await ws.send_message(dumps({"type": "session.create"}))
            sid = (await raw_events(ws, lambda e: e["type"] == "capabilities"))[0]["session_id"]
            await ws.send_message(dumps({"type": "input.image", "image": {"url": "http://i/1"}}))
            await ws.send_message(audio_event(b"hello ", format="wav", is_final=False))
            await ws.send_message(audio_event(b"world", event_id="a2", content_id="c9"))
            await ws.send_message(dumps({"type": "response.create", "event_id": "r1"}))  # bound
            events = await raw_events(ws, lambda e: e["type"] == "response.done")
            types = [e["type"] for e in events]
            assert types[:2] == ["response.created", "transcript.done"]
            assert types[-1] == "response.done" and types.count("response.created") == 1
            created, transcript = events[0], events[1]
            rid = created["response_id"]
            assert created["reply_to"] == "a2"
            assert {k: v for k, v in transcript.items() if k not in ("event_id", "timestamp")} == {
                "type": "transcript.done",
                "session_id": sid,
                "response_id": rid,
                "transcript": "hello world",
                "role": "user",
                "content_id": "c9",
            }
            assert events[-1]["response"]["output"] == [
                {"type": "text", "text": "You said: hello world"}
            ]
            # A second utterance starts from an empty buffer; the format defaults to pcm16.
            await ws.send_message(audio_event(b"again"))
            events = await raw_events(ws, lambda e: e["type"] == "response.done")
            assert events[1]["transcript"] == "again"
    assert agent.heard == [(sid, "wav", b"hello world"), (sid, "pcm16", b"again")]
    first = agent.model.calls[0].messages[-1]
    assert first.role == "user"
    assert first.content == [
        uamp.ImageContent(image={"url": "http://i/1"}),
        uamp.TextContent("hello world"),
    ]
    assert [m.role for m in agent.model.calls[1].messages[-3:]] == ["user", "assistant", "user"]


async def test_input_audio_without_auto_respond_and_session_format() -> None:
    agent = Ears("ears")
    with trio.fail_after(10):
        async with (
            open_test_server(agent) as srv,
            open_uamp_client(srv.agent_ws_url("ears")) as client,
        ):
            s = await client.create_session(
                extensions={"auto_respond": False}, input_audio_format="g711_ulaw"
            )
            assert (await s.events.receive()).type == "capabilities"
            await client.send_raw(audio_event(b"note this", session_id=s.id))
            ev = await s.events.receive()
            assert ev.type == "transcript.done"
            assert (ev.transcript, ev.role, ev.response_id) == ("note this", "user", None)
            await s.input_text("and reply")
            await s.send(uamp.ResponseCreate())
            assert (await s.collect()).text == "You said: and reply"
    assert agent.heard[0][1] == "g711_ulaw"
    assert [m.text for m in agent.model.calls[-1].messages[-2:]] == ["note this", "and reply"]


async def test_input_audio_errors_and_bound() -> None:
    agent = Ears("ears", skills=[UampTransport(max_input_audio=8)])
    with trio.fail_after(10):
        async with (
            open_test_server(agent) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("ears")) as ws,
        ):

            async def next_of(kind: str) -> dict[str, Any]:
                return (await raw_events(ws, lambda e: e["type"] == kind))[-1]

            await ws.send_message(dumps({"type": "session.create"}))
            await next_of("capabilities")
            await ws.send_message(dumps({"type": "input.audio", "audio": "%%%", "event_id": "b"}))
            err = await next_of("error")
            assert (err["error"]["code"], err["reply_to"]) == ("invalid_event", "b")
            await ws.send_message(audio_event(b"12345", is_final=False))
            await ws.send_message(audio_event(b"6789", is_final=False, event_id="big"))
            err = await next_of("error")
            assert (err["error"]["code"], err["reply_to"]) == ("invalid_event", "big")
            assert err["error"]["details"] == {"reason": "audio_too_large", "limit": 8}
            await ws.send_message(audio_event(b"", event_id="empty"))  # the buffer was dropped
            err = await next_of("error")
            assert (err["error"]["code"], err["reply_to"]) == ("invalid_event", "empty")
            for spoken, code in ((b"fail", "agent_error"), (b"pass", "unsupported_modality")):
                await ws.send_message(audio_event(spoken, event_id=spoken.decode()))
                events = await raw_events(ws, lambda e: e["type"].startswith("response."))
                events += await raw_events(ws, lambda e: e["type"].startswith("response."))
                assert [e["type"] for e in events] == ["response.created", "response.error"]
                assert events[0]["reply_to"] == spoken.decode()
                assert events[1]["error"]["code"] == code
            await ws.send_message(audio_event(b"fine"))
            done = await next_of("response.done")
            assert done["response"]["output"] == [{"type": "text", "text": "You said: fine"}]


async def test_transcription_runs_in_the_session_task() -> None:
    agent = Ears("ears", gated=True)
    with trio.fail_after(10):
        async with (
            open_test_server(agent) as srv,
            open_uamp_client(srv.agent_ws_url("ears")) as client,
        ):
            slow = await client.create_session()
            other = await client.create_session()
            await client.send_raw(audio_event(b"slow", session_id=slow.id))
            await agent.waiting.wait()
            # The reader and the other session are not blocked; the slow session keeps order:
            # its next input waits behind the transcription.
            assert (await client.ping()).type == "pong"
            assert await other.ask("hi") == "You said: hi"
            await slow.input_text("after")
            agent.gate.set()
            first = await slow.collect()
            assert first.text == "You said: slow"
            second = await slow.collect()
            assert second.text == "You said: after"
            # session.end cancels a running transcription.
            agent.gate = trio.Event()
            agent.waiting = trio.Event()
            await client.send_raw(audio_event(b"cut", session_id=slow.id))
            await agent.waiting.wait()
            await slow.end()
            await agent.cancelled.wait()


async def test_a_hook_that_replaces_emit_sees_every_text_delta() -> None:
    """UAMP streams text through a sink without event objects, except when a hook has
    replaced ``ctx.emit``: then every text delta goes through the hook's emit, as an event."""
    seen: list[str] = []
    agent = Agent("loud", model=BuiltinModel(lambda request: Reply("quiet words here")))

    def before_llm(ctx: Any, request: ModelRequest) -> None:
        emit = ctx.emit

        async def shout(event: Any) -> None:
            if type(event) is uamp.ResponseDelta and type(event.delta) is uamp.TextDelta:
                seen.append(event.delta.text)
                event = uamp.ResponseDelta(
                    response_id=event.response_id,
                    session_id=event.session_id,
                    delta=uamp.TextDelta(event.delta.text.upper()),
                )
            await emit(event)

        ctx.emit = shout

    agent.add_hook("before_llm", before_llm)
    with trio.fail_after(10):
        async with (
            open_test_server(agent) as srv,
            open_uamp_client(srv.agent_ws_url("loud")) as client,
        ):
            session = await client.create_session()
            assert await session.ask("hi") == "QUIET WORDS HERE"
    assert seen == ["quiet", " words", " here"]
