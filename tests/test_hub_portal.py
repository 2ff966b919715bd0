"""Daemon ↔ hub ↔ caller, end to end on 127.0.0.1 (PROTOCOLS.md §2)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import trio
from hub_helpers import gate_agent, open_hub, portal_cfg

from trioagents import Agent, BuiltinModel, Reply, tool, uamp
from trioagents.client import open_uamp_client
from trioagents.hub import AgentRecord, MemoryHubStore, SQLiteHubStore
from trioagents.portal import (
    DialSocket,
    PortalAuthError,
    PortalConnect,
    dial_websocket,
    open_portal,
)
from trioagents.server import AgentServer
from trioagents.testing import open_test_server
from trioagents.transports import CompletionsTransport


async def tokens(store: Any, **by_agent: str) -> Any:
    for agent, token in by_agent.items():
        await store.add_token(token, agent)
    return store


def sse_data(body: str) -> list[Any]:
    out = []
    for line in body.splitlines():
        if line.startswith("data: "):
            payload = line[6:]
            out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


async def test_callers_reach_daemon_agents_over_uamp_completions_and_openai() -> None:
    store = await tokens(MemoryHubStore(), alpha="tok-a", beta="tok-b")
    beta = Agent("beta", model=BuiltinModel([Reply("Hello from beta")]))
    with trio.fail_after(20):
        async with (
            open_hub(store) as h,
            open_portal(
                portal_cfg(h.portal_url, ("alpha", "tok-a"), ("beta", "tok-b")),
                [Agent("alpha"), beta],
            ) as portal,
        ):
            await portal.wait_registered()
            assert set(portal.registered) == {"alpha", "beta"}
            assert portal.stats.connects == 1
            await h.hub.wait_online("beta")

            async with open_uamp_client(h.agent_ws_url("alpha")) as client:
                session = await client.create_session()
                assert session.agent == "alpha"
                assert await session.ask("hello hub") == "You said: hello hub"
                # The conversation is the caller's: the second turn carries the history.
                assert await session.ask("again") == "You said: again"

            def with_openai() -> dict[str, Any]:
                client = openai.OpenAI(
                    base_url=h.agent_url("beta", "/v1"), api_key="unused", max_retries=0
                )
                reply = client.chat.completions.create(
                    model="beta", messages=[{"role": "user", "content": "hi"}]
                )
                stream = client.chat.completions.create(
                    model="beta",
                    messages=[{"role": "user", "content": "hi"}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
                chunks = list(stream)
                client.close()
                return {
                    "text": reply.choices[0].message.content,
                    "finish": reply.choices[0].finish_reason,
                    "stream": "".join(
                        c.choices[0].delta.content or "" for c in chunks if c.choices
                    ),
                    "usage": chunks[-1].usage.total_tokens if chunks[-1].usage else None,
                }

            got = await trio.to_thread.run_sync(with_openai)
            assert got["text"] == "Hello from beta"  # the script's one Reply went to the first call
            assert got["finish"] == "stop"
            assert got["stream"] == "You said: hi"
            assert got["usage"] and got["usage"] > 0

            async with httpx.AsyncClient() as http:
                # The server-level route takes the agent from `model`.
                r = await http.post(
                    h.url + "/v1/chat/completions",
                    json={"model": "alpha", "messages": [{"role": "user", "content": "x"}]},
                )
                assert r.json()["choices"][0]["message"]["content"] == "You said: x"
                r = await http.get(h.url + "/agents")
                listed = {a["name"]: a for a in r.json()["agents"]}
                assert listed["alpha"]["online"] and listed["alpha"]["via"] == "portal"
    # The first Completions call got the scripted reply.
    assert beta.model.calls[0].messages[-1].text == "hi"  # type: ignore[attr-defined]


async def test_several_agents_share_one_daemon_socket_concurrently() -> None:
    names = [f"agent{i}" for i in range(4)]
    store = await tokens(MemoryHubStore(), **{n: f"tok-{n}" for n in names})
    gated, gate_model = gate_agent("agent0")
    agents = [gated] + [Agent(n, model=BuiltinModel(word_delay=0.001)) for n in names[1:]]
    with trio.fail_after(20):
        async with (
            open_hub(store) as h,
            open_portal(
                portal_cfg(h.portal_url, *[(n, f"tok-{n}") for n in names]), agents
            ) as portal,
        ):
            await portal.wait_registered()
            results: dict[str, str] = {}
            async with trio.open_nursery() as nursery:

                async def blocked_caller() -> None:
                    async with open_uamp_client(h.agent_ws_url("agent0")) as c:
                        s = await c.create_session()
                        results["agent0"] = await s.ask("block please")

                nursery.start_soon(blocked_caller)
                await gate_model.started.wait()

                async def caller(name: str, i: int) -> None:
                    async with open_uamp_client(h.agent_ws_url(name)) as c:
                        s = await c.create_session()
                        results[f"{name}/{i}"] = await s.ask(f"message {i} for {name}")

                # agent0 is stuck mid-stream; every other agent still answers, twice each.
                async with trio.open_nursery() as callers:
                    for name in names[1:]:
                        for i in range(2):
                            callers.start_soon(caller, name, i)
                assert "agent0" not in results
                gate_model.gate.set()
            assert results["agent0"] == "partial done"
            for name in names[1:]:
                for i in range(2):
                    assert results[f"{name}/{i}"] == f"You said: message {i} for {name}"
            assert portal.stats.connects == 1


async def test_caller_cancel_and_disconnect_reach_the_daemon_model() -> None:
    store = await tokens(MemoryHubStore(), slow="tok-s")
    with trio.fail_after(20):
        async with open_hub(store) as h:
            # UAMP caller: response.cancel
            agent, model = gate_agent("slow")
            async with open_portal(portal_cfg(h.portal_url, ("slow", "tok-s")), agent) as portal:
                await portal.wait_registered()
                async with open_uamp_client(h.agent_ws_url("slow")) as client:
                    session = await client.create_session()
                    await session.input_text("block")
                    seen = []
                    async for ev in session.events:  # until "partial" reached the caller
                        if ev.type.startswith("response."):
                            seen.append(ev)
                        if ev.type == "response.delta":
                            break
                    await session.cancel()
                    result = await session.collect(seen[0].response_id)
                    assert [e.type for e in seen] == ["response.created", "response.delta"]
                    assert result.terminal.type == "response.cancelled"
                    assert result.terminal.partial_output == [uamp.TextContent("partial")]
                    await model.cancelled.wait()
                    # The agent is free again: the next turn is answered.
                    assert await session.ask("next") == "You said: next"

            # Completions caller that disconnects mid-stream
            agent, model = gate_agent("slow")
            async with open_portal(portal_cfg(h.portal_url, ("slow", "tok-s")), agent) as portal:
                await portal.wait_registered(connects=1)
                await h.hub.wait_online("slow")
                async with (
                    httpx.AsyncClient() as http,
                    http.stream(
                        "POST",
                        h.agent_url("slow", "/chat/completions"),
                        json={"stream": True, "messages": [{"role": "user", "content": "block"}]},
                    ) as resp,
                ):
                    assert resp.status_code == 200
                    # Cancel the blocked read (not ``break``): httpx's nested body generators
                    # unwind instead of being left to the garbage collector.
                    with trio.CancelScope() as reading:
                        async for line in resp.aiter_lines():
                            if "partial" in line:
                                reading.cancel()
                # The client hung up: the daemon's model stream is cancelled.
                await model.cancelled.wait()


@asynccontextmanager
async def severable_dial() -> AsyncIterator[tuple[Any, list[Any]]]:
    """A trio-websocket dialer that remembers its sockets so a test can cut the TCP stream."""
    inner = dial_websocket(cleanup_timeout=1.0)
    sockets: list[Any] = []

    @asynccontextmanager
    async def dial(url: str, headers: Sequence[tuple[str, str]]) -> AsyncIterator[DialSocket]:
        async with inner(url, headers) as sock:
            sockets.append(sock)
            yield sock

    yield dial, sockets


async def test_daemon_gone_mid_stream_gives_callers_agent_offline() -> None:
    store = await tokens(MemoryHubStore(), slow="tok-s")
    with trio.fail_after(20):
        async with open_hub(store) as h:
            # 1. The daemon stops (its nursery is cancelled) while a UAMP caller streams.
            agent, model = gate_agent("slow")
            async with open_uamp_client(h.agent_ws_url("slow")) as client:
                session = await client.create_session()
                with trio.CancelScope() as daemon_scope:
                    async with open_portal(
                        portal_cfg(h.portal_url, ("slow", "tok-s")), agent
                    ) as portal:
                        await portal.wait_registered()
                        await session.input_text("block")
                        async for ev in session.events:  # "partial" reached the caller
                            if ev.type == "response.delta":
                                break
                        daemon_scope.cancel()
                result = await session.collect(ev.response_id)
                assert result.terminal.type == "response.error"
                assert result.terminal.error.code == "agent_offline"
                assert result.terminal.response_id == ev.response_id
                await model.cancelled.wait()
                await h.hub.wait_online("slow", online=False)
                # With no daemon, new turns fail at once with the same code.
                await session.input_text("again")
                again = await session.collect()
                assert again.terminal.error.code == "agent_offline"

            # 2. The daemon's TCP stream is cut (no close frame) during a Completions stream.
            agent, model = gate_agent("slow")
            async with (
                severable_dial() as (dial, sockets),
                open_portal(
                    {**portal_cfg(h.portal_url, ("slow", "tok-s")), "reconnect_delay": 60.0},
                    agent,
                    dial=dial,
                ) as portal,
            ):
                await portal.wait_registered()
                async with (
                    httpx.AsyncClient() as http,
                    http.stream(
                        "POST",
                        h.agent_url("slow", "/v1/chat/completions"),
                        json={
                            "stream": True,
                            "messages": [{"role": "user", "content": "block"}],
                        },
                    ) as resp,
                ):
                    body = ""
                    async with aclosing(resp.aiter_text()) as texts:  # read to the end
                        async for text in texts:
                            body += text
                            if "partial" in body and sockets:
                                await sockets[0]._ws._stream.aclose()
                                sockets.clear()
                events = sse_data(body)
                assert events[-1] == "[DONE]"
                assert events[-2]["error"]["code"] == "agent_offline"
                assert (
                    "".join(
                        e["choices"][0]["delta"].get("content", "")
                        for e in events[:-2]
                        if isinstance(e, dict) and e.get("choices")
                    )
                    == "partial"
                )
                await model.cancelled.wait()
                await portal.wait_state("backoff")  # and it will dial again later
                assert portal.stats.failures == 1


async def test_hub_restart_daemon_reconnects_and_reregisters(tmp_path: Path) -> None:
    db = tmp_path / "hub.db"
    store = SQLiteHubStore(db)
    await tokens(store, alpha="tok-a")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            async with open_hub(store) as h:
                port = int(h.url.rsplit(":", 1)[1])
                portal = PortalConnect(portal_cfg(h.portal_url, ("alpha", "tok-a")), Agent("alpha"))
                nursery.start_soon(portal.run)
                await portal.wait_registered()
                first_sid = portal.registered["alpha"]
            # The hub is down (it closed our socket with 1001): the daemon backs off and retries.
            await portal.wait_state("backoff")
            assert "alpha" not in portal.registered
            # The hub comes back on the same port with the same database.
            async with open_hub(SQLiteHubStore(db), port=port) as h2:
                await portal.wait_registered(connects=2)
                assert portal.stats.reconnects >= 1
                assert portal.stats.last_close_code == 1001
                assert portal.stats.registrations == 2  # one session.create per connect
                assert first_sid == "sess_000000000000000000000001"
                async with open_uamp_client(h2.agent_ws_url("alpha")) as client:
                    session = await client.create_session()
                    assert await session.ask("back?") == "You said: back?"
                nursery.cancel_scope.cancel()


async def test_bad_tokens_are_refused() -> None:
    store = await tokens(MemoryHubStore(), alpha="tok-a", beta="tok-b")
    with trio.fail_after(20):
        async with open_hub(store) as h:
            # Unknown connection token: the handshake is refused with 401, which is terminal.
            with pytest.raises(PortalAuthError):
                async with open_portal(
                    portal_cfg(h.portal_url, ("alpha", "nope")), Agent("alpha")
                ) as portal:
                    await trio.sleep_forever()
            # A valid socket, but beta's entry carries alpha's token: only beta is refused.
            async with open_portal(
                portal_cfg(h.portal_url, ("alpha", "tok-a"), ("beta", "tok-a")),
                [Agent("alpha"), Agent("beta")],
            ) as portal:
                await portal.wait_registered()
                assert set(portal.registered) == {"alpha"}
                assert portal.disabled == {"beta"}
                async with httpx.AsyncClient() as http:
                    r = await http.post(
                        h.agent_url("beta", "/v1/chat/completions"),
                        json={"messages": [{"role": "user", "content": "x"}]},
                    )
                    assert r.status_code == 503
                    assert r.json()["error"]["code"] == "agent_offline"
                    r = await http.post(
                        h.agent_url("nobody", "/v1/chat/completions"),
                        json={"messages": [{"role": "user", "content": "x"}]},
                    )
                    assert r.status_code == 404
                    assert r.json()["error"]["code"] == "model_not_found"
                    r = await http.get(h.url + "/agents")
                    assert {a["name"]: a["online"] for a in r.json()["agents"]} == {
                        "alpha": True,
                        "beta": False,
                    }
            # Every entry refused: terminal too.
            with pytest.raises(PortalAuthError):
                async with open_portal(
                    {**portal_cfg(h.portal_url, ("beta", "tok-a")), "token": "tok-b"},
                    Agent("beta"),
                ) as portal:
                    await trio.sleep_forever()


async def test_newer_daemon_replaces_older_and_agent_errors_pass_through() -> None:
    store = await tokens(MemoryHubStore(), alpha="tok-a")

    @tool
    def explode() -> str:
        """Always fails."""
        raise RuntimeError("boom")

    first = Agent("alpha", model=BuiltinModel([Reply("from first")]))
    second = Agent("alpha", model=BuiltinModel(lambda req: Reply("from second")))
    with trio.fail_after(20):
        async with (
            open_hub(store) as h,
            open_portal(portal_cfg(h.portal_url, ("alpha", "tok-a")), first) as p1,
        ):
            await p1.wait_registered()
            async with open_portal(portal_cfg(h.portal_url, ("alpha", "tok-a")), second) as p2:
                await p2.wait_registered()
                # The older registration was ended with reason "replaced".
                while "alpha" in p1.registered:
                    await p1._changed.wait()
                async with open_uamp_client(h.agent_ws_url("alpha")) as client:
                    session = await client.create_session()
                    assert await session.ask("who?") == "from second"

    failing = Agent("alpha", model=BuiltinModel([Fail_("model broke")]))
    with trio.fail_after(20):
        async with (
            open_hub(store) as h,
            open_portal(portal_cfg(h.portal_url, ("alpha", "tok-a")), failing) as p,
        ):
            await p.wait_registered()
            async with open_uamp_client(h.agent_ws_url("alpha")) as client:
                session = await client.create_session()
                await session.input_text("hi")
                result = await session.collect()
                assert result.terminal.type == "response.error"
                assert result.terminal.error.code == "agent_error"
                assert "model broke" in result.terminal.error.message


def Fail_(message: str) -> Any:
    from trioagents import Fail

    return Fail(message)


async def test_agent_url_fallback_outbound_uamp_then_http() -> None:
    store = MemoryHubStore()
    direct = Agent("direct", model=BuiltinModel(lambda req: Reply("direct answer")))
    http_only = Agent("httponly", model=BuiltinModel(lambda req: Reply("http answer")))
    server = AgentServer(
        [http_only],
        config=__import__("trioagents").Config(host="127.0.0.1", port=0, gc_freeze=False),
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        transports=(CompletionsTransport,),
    )
    with trio.fail_after(20):
        async with (
            open_test_server(direct) as srv,
            open_test_server(server) as srv2,
            open_hub(store) as h,
        ):
            await store.put_agent(AgentRecord("direct", agent_url=srv.agent_url("direct")))
            await store.put_agent(AgentRecord("httponly", agent_url=srv2.agent_url("httponly")))
            async with open_uamp_client(h.agent_ws_url("direct")) as client:
                session = await client.create_session()
                assert await session.ask("hi") == "direct answer"
            assert srv.server.runtime.stats.connections >= 1  # it went over UAMP
            async with httpx.AsyncClient() as http:
                r = await http.post(
                    h.agent_url("httponly", "/v1/chat/completions"),
                    json={"messages": [{"role": "user", "content": "x"}]},
                )
                assert r.status_code == 200, r.text
                assert r.json()["choices"][0]["message"]["content"] == "http answer"
