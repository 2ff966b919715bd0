"""ACP end to end (PROTOCOLS.md §8).

* The real ``agent-client-protocol`` SDK (asyncio, in a subprocess: ``acp_client_script.py``)
  over stdio (``python -m trioagents.transports.acp``), Streamable HTTP and WebSocket against
  the real server on 127.0.0.1:0: prompts, tool calls, thoughts, failures, a busy session and a
  cancel mid-prompt.
* The engine in-process over memory streams (``serve_acp_stdio``): bad input, seed methods,
  ordering around ``session/cancel``, ``session/close``, end of input.
* Raw httpx / trio-websocket for the exact HTTP rules (§8.2) and the seed methods (§8.3).
"""

from __future__ import annotations

import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import httpx
import orjson
import pytest
import trio
import trio.testing
import trio_websocket

from tests.acp_agents import SLOW_WORDS, make_agent
from trioagents import Agent, BuiltinModel, Config, uamp
from trioagents.protocols.acp import LineDecoder
from trioagents.server import AgentServer
from trioagents.testing import TestServer, open_test_server
from trioagents.transports import DEFAULT_TRANSPORTS
from trioagents.transports.acp import ACPTransport, serve_acp_stdio

TIMEOUT = 20
HERE = Path(__file__).parent
SCRIPT = str(HERE / "acp_client_script.py")
AGENTS = f"{HERE / 'acp_agents.py'}:agent"
JSON = {"content-type": "application/json"}
SSE = {"accept": "text/event-stream"}


@asynccontextmanager
async def acp_server(agent: Agent | None = None, **config: Any) -> AsyncIterator[TestServer]:
    cfg = Config(host="127.0.0.1", port=0, gc_freeze=False, graceful_timeout=5.0, **config)
    server = AgentServer(
        agent or make_agent(),
        config=cfg,
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        transports=(*DEFAULT_TRANSPORTS, ACPTransport),
    )
    async with open_test_server(server) as srv:
        yield srv


async def run_client(*args: str) -> dict[str, Any]:
    """Run the SDK client script; its stdout is one JSON object."""
    proc = await trio.run_process(
        [sys.executable, SCRIPT, *args], capture_stdout=True, capture_stderr=True, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    result: dict[str, Any] = orjson.loads(proc.stdout)
    return result


def check_sdk_conversation(r: dict[str, Any]) -> None:
    """What the SDK saw is the same on every carrier."""
    init = r["init"]
    assert init["protocolVersion"] == 1
    assert init["agentInfo"]["name"] == "slowpoke"
    assert init["agentCapabilities"]["loadSession"] is False
    assert init["agentCapabilities"]["promptCapabilities"] == {
        "image": True,
        "audio": True,
        "embeddedContext": True,
    }
    sid = r["session_id"]
    hello = r["hello"]
    assert (hello["stop"], hello["text"]) == ("end_turn", "You said: hello world")
    assert {u["session"] for u in hello["updates"]} == {sid}
    usage = hello["usage"]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"] > 0
    tool = r["tool"]
    kinds = [u["sessionUpdate"] for u in tool["updates"]]
    assert kinds[:2] == ["tool_call", "tool_call_update"]
    assert set(kinds[2:]) == {"agent_message_chunk"}
    call, done = tool["updates"][:2]
    assert (call["toolCallId"], call["title"], call["kind"], call["status"]) == (
        "call_add",
        "add",
        "other",
        "in_progress",
    )
    assert call["rawInput"] == {"a": 2, "b": 3}
    assert done["status"] == "completed"
    assert done["content"] == [{"type": "content", "content": {"type": "text", "text": "5"}}]
    assert (tool["stop"], tool["text"]) == ("end_turn", "add returned: 5")
    think = r["think"]
    assert think["updates"][0] == {
        "session": sid,
        "sessionUpdate": "agent_thought_chunk",
        "content": {"type": "text", "text": "pondering"},
    }
    assert think["text"] == "thought done"
    assert (r["fail"]["error"], r["fail"]["message"]) == (-32603, "boom")
    assert r["busy"] == {"error": -32600}
    assert r["cancel"]["stop"] == "cancelled"
    assert 1 <= r["cancel"]["chunks"] < SLOW_WORDS
    assert r["after"] == {"stop": "end_turn", "text": "You said: after"}
    other = r["other"]
    assert (other["stop"], other["text"]) == ("end_turn", "You said: second session")
    assert {u["session"] for u in other["updates"]} != {sid}


async def test_sdk_over_stdio() -> None:
    with trio.fail_after(TIMEOUT):
        r = await run_client("stdio", AGENTS)
    check_sdk_conversation(r["stdio"])
    assert r["stdio"]["exit_code"] == 0  # exited when its stdin closed, no SIGTERM needed


async def test_sdk_over_http_and_websocket() -> None:
    with trio.fail_after(TIMEOUT):
        async with acp_server() as srv:
            r = await run_client(
                "http",
                srv.agent_url("slowpoke", "/acp"),
                "ws",
                srv.agent_ws_url("slowpoke", "/acp"),
            )
            registry = srv.server.runtime.services["acp"]
            assert registry.connections == {}  # the SDK's close() DELETEd its connection
    check_sdk_conversation(r["http"])
    check_sdk_conversation(r["ws"])


# --------------------------------------------------------------------------------------------
# The engine over memory streams
# --------------------------------------------------------------------------------------------


class Peer:
    """The client end of ``serve_acp_stdio`` on memory streams."""

    def __init__(self, send: trio.abc.SendStream, recv: trio.abc.ReceiveStream) -> None:
        self._send = send
        self._recv = recv
        self._decoder = LineDecoder(1 << 20)
        self._lines: list[Any] = []

    async def send(self, *messages: Any) -> None:
        await self._send.send_all(
            b"".join(m if isinstance(m, bytes) else orjson.dumps(m) + b"\n" for m in messages)
        )

    async def request(self, id: Any, method: str, params: Any = None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            msg["params"] = params
        await self.send(msg)

    async def recv(self) -> dict[str, Any]:
        while not self._lines:
            data = await self._recv.receive_some()
            assert data, "the agent closed stdout"
            self._lines.extend(self._decoder.feed(data))
        line = self._lines.pop(0)
        assert isinstance(line, bytes)
        msg: dict[str, Any] = orjson.loads(line)
        return msg

    async def until_response(self, id: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(notifications before it, the response with ``id``)."""
        before = []
        while True:
            msg = await self.recv()
            if msg.get("id") == id and "method" not in msg:
                return before, msg
            before.append(msg)

    async def call(self, id: Any, method: str, params: Any = None) -> dict[str, Any]:
        await self.request(id, method, params)
        return (await self.until_response(id))[1]

    async def close(self) -> None:
        await self._send.aclose()


@asynccontextmanager
async def stdio_peer(agent: Agent | None = None, **config: Any) -> AsyncIterator[Peer]:
    to_agent_send, to_agent_recv = trio.testing.memory_stream_one_way_pair()
    to_client_send, to_client_recv = trio.testing.memory_stream_one_way_pair()
    cfg = Config(**config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: serve_acp_stdio(
                agent or make_agent(), stdin=to_agent_recv, stdout=to_client_send, config=cfg
            )
        )
        peer = Peer(to_agent_send, to_client_recv)
        yield peer
        await peer.close()  # end of input: the agent returns on its own


def text_of(updates: list[dict[str, Any]]) -> str:
    return "".join(
        u["params"]["update"]["content"]["text"]
        for u in updates
        if u["params"]["update"]["sessionUpdate"] == "agent_message_chunk"
    )


def prompt(sid: str, text: str) -> dict[str, Any]:
    return {"sessionId": sid, "prompt": [{"type": "text", "text": text}]}


async def new_session(peer: Peer, id: Any = "n") -> str:
    reply = await peer.call(id, "session/new", {"cwd": "/tmp", "mcpServers": []})
    sid: str = reply["result"]["sessionId"]
    return sid


async def test_bad_input_gets_json_rpc_errors_and_the_connection_survives() -> None:
    with trio.fail_after(TIMEOUT):
        async with stdio_peer(max_body_size=200) as peer:
            await peer.send(b"not json\n")
            assert (await peer.recv())["error"]["code"] == -32700
            await peer.send(b"[1, 2]\n")
            assert (await peer.recv()) == {
                "jsonrpc": "2.0",
                "id": None,
                "error": {"code": -32600, "message": "Invalid Request: expected a JSON object"},
            }
            await peer.send(
                b'{"jsonrpc":"2.0","id":1,"method":"x","params":"' + b"a" * 300 + b'"}\n'
            )
            too_big = await peer.recv()
            assert (too_big["id"], too_big["error"]["code"]) == (None, -32600)
            assert "exceeds" in too_big["error"]["message"]
            reply = await peer.call(2, "no/such/method")
            assert reply == {
                "jsonrpc": "2.0",
                "id": 2,
                "error": {"code": -32601, "message": "Method not found: no/such/method"},
            }
            for i, method in enumerate(["fs/read_text_file", "terminal/create", "session/load"]):
                reply = await peer.call(10 + i, method, {"sessionId": "s", "path": "/etc/passwd"})
                assert reply["error"]["code"] == -32601, method
            assert (await peer.call(3, "session/new", {"mcpServers": []}))["error"]["code"] == (
                -32602
            )
            reply = await peer.call(4, "session/prompt", prompt("sess_nope", "hi"))
            assert reply["error"] == {
                "code": -32602,
                "message": "Invalid params: unknown sessionId 'sess_nope'",
            }
            sid = await new_session(peer)
            bad = {"sessionId": sid, "prompt": [{"type": "video"}]}
            assert (await peer.call(5, "session/prompt", bad))["error"]["code"] == -32602
            assert (await peer.call(6, "initialize", {"protocolVersion": "x"}))["error"][
                "code"
            ] == -32602
            # Notifications never get answers, even unknown ones; the next request still does.
            await peer.send({"jsonrpc": "2.0", "method": "whatever"})
            init = await peer.call(7, "initialize", {"protocolVersion": "1"})
            assert init["result"]["protocolVersion"] == 1
            assert (await peer.call(8, "authenticate", {"methodId": "none"}))["result"] == {}
            await peer.request(9, "session/prompt", prompt(sid, "ok"))
            before, done = await peer.until_response(9)
            assert text_of(list(before)) == "You said: ok"
            assert done["result"]["stopReason"] == "end_turn"


async def test_cancel_resolves_cancelled_with_no_update_after(autojump_clock: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with stdio_peer() as peer:
            sid = await new_session(peer)
            await peer.request("p1", "session/prompt", prompt(sid, "slow"))
            first = await peer.recv()
            assert first["params"]["update"]["sessionUpdate"] == "agent_message_chunk"
            # One prompt at a time per session.
            busy = await peer.call("p2", "session/prompt", prompt(sid, "again"))
            assert busy["error"]["code"] == -32600
            await peer.send(
                {"jsonrpc": "2.0", "method": "session/cancel", "params": {"sessionId": sid}}
            )
            before, done = await peer.until_response("p1")
            assert done["result"] == {"stopReason": "cancelled"}
            assert all(m["method"] == "session/update" for m in before)
            assert len(before) + 1 < SLOW_WORDS
            # Everything after the answer belongs to the next prompt.
            await peer.request("p3", "session/prompt", prompt(sid, "next"))
            before, done = await peer.until_response("p3")
            assert text_of(list(before)) == "You said: next"
            assert done["result"]["stopReason"] == "end_turn"


async def test_session_close_and_end_of_input_cancel_prompts(autojump_clock: Any) -> None:
    with trio.fail_after(TIMEOUT):
        async with stdio_peer() as peer:
            sid = await new_session(peer)
            other = await new_session(peer, "n2")
            await peer.request("p", "session/prompt", prompt(sid, "slow"))
            await peer.recv()
            closed = await peer.call("c", "session/close", {"sessionId": sid})
            assert closed["result"] == {}
            _, done = await peer.until_response("p")
            assert done["result"] == {"stopReason": "cancelled"}
            gone = await peer.call("q", "session/prompt", prompt(sid, "hi"))
            assert gone["error"]["code"] == -32602
            # A prompt still running when stdin closes is cancelled and the engine returns
            # (the stdio_peer nursery would hang otherwise).
            await peer.request("r", "session/prompt", prompt(other, "slow"))
            await peer.recv()


async def test_content_blocks_reach_the_model() -> None:
    model = BuiltinModel()
    agent = Agent("eyes", model=model)
    blocks = [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "mimeType": "image/png", "data": "iVBORw0KGgo="},
        {"type": "resource", "resource": {"uri": "file:///a.txt", "text": "hello"}},
        {"type": "resource_link", "uri": "file:///b.md", "name": "b.md"},
    ]
    with trio.fail_after(TIMEOUT):
        async with stdio_peer(agent) as peer:
            sid = await new_session(peer)
            reply = await peer.call("p", "session/prompt", {"sessionId": sid, "prompt": blocks})
            assert reply["result"]["stopReason"] == "end_turn"
    content = model.calls[0].messages[-1].content
    assert content == [
        uamp.TextContent("what is this?"),
        uamp.ImageContent(image="iVBORw0KGgo=", format="png"),
        uamp.TextContent('\n<resource uri="file:///a.txt">\nhello\n</resource>'),
        uamp.TextContent("\n[b.md](file:///b.md)"),
    ]


async def test_seed_methods_over_stdio() -> None:
    with trio.fail_after(TIMEOUT):
        async with stdio_peer() as peer:
            init = await peer.call(1, "initialize", {})
            assert init["result"] == {
                "protocolVersion": "1.0",
                "serverInfo": {
                    "name": "slowpoke",
                    "version": init["result"]["serverInfo"]["version"],
                },
                "capabilities": {"streaming": True, "tools": True},
            }
            tools = (await peer.call(2, "tools/list"))["result"]["tools"]
            assert [t["name"] for t in tools] == ["add", "explode"]
            assert tools[0]["inputSchema"] == tools[0]["parameters"]
            assert tools[0]["inputSchema"]["required"] == ["a", "b"]
            ok = await peer.call(3, "tools/call", {"name": "add", "arguments": {"a": 2, "b": 40}})
            assert ok["result"] == {
                "result": "42",
                "content": [{"type": "text", "text": "42"}],
                "isError": False,
            }
            failed = await peer.call(4, "tools/call", {"name": "explode"})
            assert failed["result"]["isError"] is True
            assert failed["result"]["result"] == "error: RuntimeError: kaboom"
            bad_args = await peer.call(5, "tools/call", {"name": "add", "arguments": {"a": 1}})
            assert bad_args["result"]["isError"] is True
            unknown = await peer.call(6, "tools/call", {"name": "nope"})
            assert unknown["error"]["code"] == -32602
            messages = [{"role": "user", "content": "hi there"}]
            await peer.request(7, "chat/submit", {"messages": messages})
            before, done = await peer.until_response(7)
            assert before[0]["method"] == "prompt/started"
            rid = before[0]["params"]["requestId"]
            progress = before[1:]
            assert {m["method"] for m in progress} == {"prompt/progress"}
            assert all(
                m["params"]["role"] == "assistant" and m["params"]["requestId"] == rid
                for m in progress
            )
            assert "".join(m["params"]["content"] for m in progress) == "You said: hi there"
            assert done["result"] == {"status": "complete", "content": "You said: hi there"}
            failed_turn = await peer.call(
                8, "prompt/submit", {"messages": [{"role": "user", "content": "/fail"}]}
            )
            assert failed_turn["error"]["code"] == -32603
            bad = await peer.call(9, "prompt/submit", {"messages": [{"role": "robot"}]})
            assert bad["error"]["code"] == -32602


# --------------------------------------------------------------------------------------------
# Streamable HTTP rules (§8.2) with raw httpx
# --------------------------------------------------------------------------------------------


def rpc_msg(id: Any, method: str, params: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        msg["id"] = id
    if params is not None:
        msg["params"] = params
    return msg


class SseStream:
    """A raw HTTP/1.1 SSE request over a socket (h11), so leaving early leaks nothing."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._h11 = h11.Connection(h11.CLIENT)
        self._text = ""
        self._ended = False
        self.status = 0
        self.headers: dict[str, str] = {}

    async def _send(self, event: Any) -> None:
        data = self._h11.send(event)
        if data:
            await self._stream.send_all(data)

    async def _event(self) -> Any:
        while True:
            event = self._h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self._h11.receive_data(await self._stream.receive_some())

    async def start(self, method: str, url: str, headers: dict[str, str], body: bytes) -> None:
        u = httpx.URL(url)
        hs = [("host", f"{u.host}:{u.port}"), ("content-length", str(len(body))), *headers.items()]
        await self._send(h11.Request(method=method, target=u.raw_path, headers=hs))
        await self._send(h11.Data(data=body))
        await self._send(h11.EndOfMessage())
        response = await self._event()
        self.status = response.status_code
        self.headers = {k.decode(): v.decode() for k, v in response.headers}

    def __aiter__(self) -> SseStream:
        return self

    async def __anext__(self) -> dict[str, Any]:
        """The next ``data:`` payload; the iteration ends with the response body."""
        while True:
            while "\n\n" in self._text:
                block, self._text = self._text.split("\n\n", 1)
                data = [line[6:] for line in block.split("\n") if line.startswith("data: ")]
                if data:
                    msg: dict[str, Any] = orjson.loads("\n".join(data))
                    return msg
            if self._ended:
                raise StopAsyncIteration
            event = await self._event()
            if isinstance(event, h11.Data):
                self._text += bytes(event.data).decode()
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self._ended = True


@asynccontextmanager
async def sse(
    method: str, url: str, *, headers: dict[str, str], json: Any = None
) -> AsyncIterator[SseStream]:
    """An SSE request; the socket closes when the block ends."""
    u = httpx.URL(url)
    async with await trio.open_tcp_stream(u.host, u.port) as stream:
        s = SseStream(stream)
        body = orjson.dumps(json) if json is not None else b""
        await s.start(method, url, {"content-type": "application/json", **headers}, body)
        yield s


async def initialize(client: httpx.AsyncClient, url: str) -> str:
    r = await client.post(url, json=rpc_msg(0, "initialize", {"protocolVersion": 1}))
    assert r.status_code == 200
    assert r.json()["result"]["agentInfo"]["name"] == "slowpoke"
    conn_id = r.headers["acp-connection-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", conn_id)
    return conn_id


async def test_http_rules() -> None:
    with trio.fail_after(TIMEOUT):
        async with acp_server() as srv, httpx.AsyncClient() as client:
            url = srv.agent_url("slowpoke", "/acp")
            r = await client.post(url, content=b"{}", headers={"content-type": "text/plain"})
            assert r.status_code == 415
            r = await client.post(url, content=b"[]", headers=JSON)
            assert r.status_code == 501
            r = await client.post(url, content=b"{oops", headers=JSON)
            assert (r.status_code, r.json()["error"]["code"]) == (400, -32700)
            r = await client.post(url, json={"id": 1, "method": "initialize"})
            assert (r.status_code, r.json()["error"]["code"]) == (400, -32600)
            r = await client.post(url, json=rpc_msg(1, "session/new", {"cwd": "/"}))
            assert (r.status_code, r.json()["id"]) == (400, 1)
            r = await client.post(
                url,
                json=rpc_msg(1, "session/new", {"cwd": "/"}),
                headers={"acp-connection-id": "f" * 32},
            )
            assert r.status_code == 404
            conn = await initialize(client, url)
            h = {"acp-connection-id": conn}
            prompt_msg = rpc_msg(2, "session/prompt", prompt("sess_x", "hi"))
            r = await client.post(url, json=prompt_msg, headers=h)
            assert r.status_code == 400  # no Acp-Session-Id
            r = await client.post(url, json=prompt_msg, headers={**h, "acp-session-id": "sess_x"})
            assert r.status_code == 404
            r = await client.get(url, headers={**h, "accept": "application/json"})
            assert r.status_code == 406
            r = await client.get(url, headers=SSE)
            assert r.status_code == 400
            r = await client.get(url, headers={**SSE, "acp-connection-id": "0" * 32})
            assert r.status_code == 404
            r = await client.get(url, headers={**SSE, **h, "acp-session-id": "sess_x"})
            assert r.status_code == 404
            r = await client.delete(url)
            assert r.status_code == 400
            r = await client.delete(url, headers=h)
            assert r.status_code == 202
            r = await client.post(url, json=rpc_msg(3, "session/new", {"cwd": "/"}), headers=h)
            assert r.status_code == 404
            r = await client.delete(url, headers=h)
            assert r.status_code == 404


async def test_http_buffer_then_stream_prompt_and_cancel() -> None:
    with trio.fail_after(TIMEOUT):
        async with acp_server() as srv, httpx.AsyncClient(timeout=TIMEOUT) as client:
            url = srv.agent_url("slowpoke", "/acp")
            conn = await initialize(client, url)
            h = {"acp-connection-id": conn}
            # No stream yet: the answers are buffered, in order.
            for i in (1, 2):
                r = await client.post(url, json=rpc_msg(i, "session/new", {"cwd": "/"}), headers=h)
                assert (r.status_code, r.content) == (202, b"")
            r = await client.post(url, json=rpc_msg(3, "fs/read_text_file", {}), headers=h)
            assert r.status_code == 202
            async with sse("GET", url, headers={**h, **SSE}) as messages:
                stream = messages
                assert stream.status == 200
                assert stream.headers["content-type"].startswith("text/event-stream")
                first, second, third = [await anext(messages) for _ in range(3)]
                assert [first["id"], second["id"], third["id"]] == [1, 2, 3]
                assert third["error"]["code"] == -32601
                sid = first["result"]["sessionId"]
                sh = {**h, "acp-session-id": sid}
                r = await client.post(
                    url, json=rpc_msg(4, "session/prompt", prompt(sid, "hello")), headers=sh
                )
                assert r.status_code == 202
                updates = []
                while (msg := await anext(messages)).get("id") != 4:
                    updates.append(msg)
                assert text_of(updates) == "You said: hello"
                assert msg["result"]["stopReason"] == "end_turn"
                r = await client.post(
                    url, json=rpc_msg(5, "session/prompt", prompt(sid, "slow")), headers=sh
                )
                assert r.status_code == 202
                assert (await anext(messages))["method"] == "session/update"
                r = await client.post(
                    url, json=rpc_msg(None, "session/cancel", {"sessionId": sid}), headers=sh
                )
                assert r.status_code == 202
                while (msg := await anext(messages)).get("id") != 5:
                    assert msg["method"] == "session/update"
                assert msg["result"] == {"stopReason": "cancelled"}
                # DELETE ends the connection and its open stream.
                r = await client.delete(url, headers=h)
                assert r.status_code == 202
                rest = [m async for m in messages]
                assert rest == []


async def test_http_session_stream_and_connection_stream_replacement() -> None:
    with trio.fail_after(TIMEOUT):
        async with acp_server() as srv, httpx.AsyncClient(timeout=TIMEOUT) as client:
            url = srv.agent_url("slowpoke", "/acp")
            conn = await initialize(client, url)
            h = {"acp-connection-id": conn}
            await client.post(url, json=rpc_msg(1, "session/new", {"cwd": "/"}), headers=h)
            async with sse("GET", url, headers={**h, **SSE}) as messages:
                sid = (await anext(messages))["result"]["sessionId"]
            sh = {**h, "acp-session-id": sid}
            # With only a session stream open, that session's messages go there.
            async with sse("GET", url, headers={**sh, **SSE}) as messages:
                await client.post(
                    url, json=rpc_msg(2, "session/prompt", prompt(sid, "hi")), headers=sh
                )
                updates = []
                while (msg := await anext(messages)).get("id") != 2:
                    updates.append(msg)
                assert text_of(updates) == "You said: hi"


async def test_http_idle_connection_and_buffer_overflow_close() -> None:
    agent = make_agent()
    transport = ACPTransport(idle_timeout=0.3, buffer_size=2)
    agent.add_skill(transport)
    with trio.fail_after(TIMEOUT):
        async with acp_server(agent) as srv, httpx.AsyncClient() as client:
            url = srv.agent_url("slowpoke", "/acp")
            registry = srv.server.runtime.services["acp"]
            idle = await initialize(client, url)
            await registry.connections[idle].engine.finished.wait()  # closed after 0.3 s idle
            r = await client.post(
                url,
                json=rpc_msg(1, "session/new", {"cwd": "/"}),
                headers={"acp-connection-id": idle},
            )
            assert r.status_code == 404
            full = await initialize(client, url)
            engine = registry.connections[full].engine
            h = {"acp-connection-id": full}
            for i in range(3):  # the third buffered answer overflows a buffer of 2
                r = await client.post(url, json=rpc_msg(i, "no/such/method"), headers=h)
                assert r.status_code == 202
            await engine.finished.wait()
            r = await client.post(url, json=rpc_msg(9, "session/new", {"cwd": "/"}), headers=h)
            assert r.status_code == 404


async def test_http_seed_methods_json_and_sse() -> None:
    with trio.fail_after(TIMEOUT):
        async with acp_server() as srv, httpx.AsyncClient(timeout=TIMEOUT) as client:
            url = srv.agent_url("slowpoke", "/acp")
            r = await client.post(url, json=rpc_msg(1, "initialize", {}))
            assert r.status_code == 200
            assert "acp-connection-id" not in r.headers
            assert r.json()["result"]["protocolVersion"] == "1.0"
            messages = [{"role": "user", "content": "hey"}]
            r = await client.post(url, json=rpc_msg(2, "prompt/submit", {"messages": messages}))
            assert r.status_code == 200
            assert r.json() == {
                "jsonrpc": "2.0",
                "id": 2,
                "result": {"status": "complete", "content": "You said: hey"},
            }
            body = rpc_msg(3, "chat/submit", {"messages": messages})
            async with sse("POST", url, json=body, headers=SSE) as data:
                assert data.headers["content-type"].startswith("text/event-stream")
                got = [m async for m in data]
            assert got[0]["method"] == "prompt/started"
            assert "".join(m["params"]["content"] for m in got[1:-1]) == "You said: hey"
            assert got[-1] == {
                "jsonrpc": "2.0",
                "id": 3,
                "result": {"status": "complete", "content": "You said: hey"},
            }
            r = await client.post(url, json=rpc_msg(4, "tools/list"))
            assert [t["name"] for t in r.json()["result"]["tools"]] == ["add", "explode"]
            r = await client.post(
                url, json=rpc_msg(5, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}})
            )
            assert r.json()["result"]["result"] == "3"
            r = await client.post(url, json=rpc_msg(6, "tools/call", {"name": "ghost"}))
            assert (r.status_code, r.json()["error"]["code"]) == (200, -32602)
            r = await client.post(url, json=rpc_msg(7, "tools/call", {"name": "explode"}))
            assert r.json()["result"]["isError"] is True


# --------------------------------------------------------------------------------------------
# WebSocket (raw)
# --------------------------------------------------------------------------------------------


async def test_websocket_raw_frames_and_seed_methods() -> None:
    with trio.fail_after(TIMEOUT):
        async with acp_server() as srv:
            for path in ("/acp", "/acp/stream"):
                async with trio_websocket.open_websocket_url(
                    srv.agent_ws_url("slowpoke", path)
                ) as ws:
                    headers = dict(ws.handshake_headers)
                    assert re.fullmatch(rb"[0-9a-f]{32}", headers[b"acp-connection-id"])
                    await ws.send_message(b"\x00binary")
                    err = orjson.loads(await ws.get_message())
                    assert (err["id"], err["error"]["code"]) == (None, -32600)
                    await ws.send_message("nope")
                    assert orjson.loads(await ws.get_message())["error"]["code"] == -32700
                    await ws.send_message(
                        orjson.dumps(
                            rpc_msg(1, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 1}})
                        ).decode()
                    )
                    assert orjson.loads(await ws.get_message())["result"]["result"] == "2"
                    await ws.send_message(
                        orjson.dumps(
                            rpc_msg(
                                2,
                                "prompt/submit",
                                {"messages": [{"role": "user", "content": "yo"}]},
                            )
                        ).decode()
                    )
                    got = []
                    while "id" not in (msg := orjson.loads(await ws.get_message())):
                        got.append(msg)
                    assert got[0]["method"] == "prompt/started"
                    assert msg["result"] == {"status": "complete", "content": "You said: yo"}


async def test_draining_ends_open_streams_and_sockets() -> None:
    with trio.fail_after(TIMEOUT):
        async with acp_server() as srv, httpx.AsyncClient(timeout=TIMEOUT) as client:
            url = srv.agent_url("slowpoke", "/acp")
            conn = await initialize(client, url)
            async with trio_websocket.open_websocket_url(
                srv.agent_ws_url("slowpoke", "/acp")
            ) as ws:
                headers = {"acp-connection-id": conn, **SSE}
                async with sse("GET", url, headers=headers) as data:
                    srv.server.runtime.start_draining()  # what a graceful shutdown does first
                    assert [m async for m in data] == []  # the stream ends
                with pytest.raises(trio_websocket.ConnectionClosed) as info:
                    await ws.get_message()
                assert info.value.reason.code == 1001
                # trio-websocket leaves the TCP close of a server-closed socket to the GC.
                await ws._stream.aclose()


async def test_stdio_command_picks_one_agent() -> None:
    target = f"{HERE / 'acp_agents.py'}:both"
    base = [sys.executable, "-m", "trioagents.transports.acp", target]
    init = orjson.dumps(rpc_msg(1, "initialize", {"protocolVersion": 1})) + b"\n"
    with trio.fail_after(TIMEOUT):
        several = await trio.run_process(
            base, capture_stdout=True, capture_stderr=True, check=False
        )
        assert several.returncode == 2
        assert b"several agents (slowpoke, other); pick one with --agent" in several.stderr
        assert several.stdout == b""
        # stdout carries only the protocol; the process ends at the end of stdin.
        picked = await trio.run_process(
            [*base, "--agent", "other"], stdin=init, capture_stdout=True, capture_stderr=True
        )
    lines = picked.stdout.splitlines()
    assert len(lines) == 1
    assert orjson.loads(lines[0])["result"]["agentInfo"]["name"] == "other"
