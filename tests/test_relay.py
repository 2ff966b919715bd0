"""Relay (PROTOCOLS.md §3): the agent connector and the hub's agent/app sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import trio
import trio.testing
import trio_websocket
from hub_helpers import gate_agent, open_hub
from portal_fakes import FakeNetwork

from trioagents import Agent, BuiltinModel, Fail, uamp
from trioagents.hub import MemoryHubStore
from trioagents.portal import HandshakeRejected, dial_websocket
from trioagents.protocols import relay as rp
from trioagents.relay import RelayAuthError, RelayConfig, RelayConnector, open_relay

AGENT_TOKEN = "rla_athena_k9x2p"
APP_TOKEN = "rlk_portal_123"


async def relay_store() -> MemoryHubStore:
    store = MemoryHubStore()
    await store.add_token(AGENT_TOKEN, "athena", kind="relay_agent")
    await store.add_token("rla_klyve_1", "klyve", kind="relay_agent")
    await store.add_token(APP_TOKEN, "portal", kind="relay_app")
    await store.add_token("rlk_other_1", "other", kind="relay_app")
    await store.allow("athena", "portal")
    await store.allow("klyve", "portal")
    return store


class App:
    """A raw Relay app client."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, obj: dict[str, Any]) -> None:
        await self.ws.send_message(orjson.dumps(obj).decode())

    async def recv(self) -> dict[str, Any]:
        data: dict[str, Any] = orjson.loads(await self.ws.get_message())
        return data

    async def until(self, kinds: set[str]) -> list[dict[str, Any]]:
        out = []
        while True:
            ev = await self.recv()
            out.append(ev)
            if ev["type"] in kinds:
                return out


@asynccontextmanager
async def open_app(url: str, token: str) -> AsyncIterator[App]:
    async with trio_websocket.open_websocket_url(f"{url}/v1/ws/app?token={token}") as ws:
        yield App(ws)


def connector_cfg(url: str, token: str = AGENT_TOKEN, **kw: Any) -> RelayConfig:
    return RelayConfig(token=token, url=url + "/v1/ws/agent", reconnect_delay=0.05, **kw)


async def test_event_tokens_reply_conversation_discover_and_allowlist() -> None:
    store = await relay_store()
    athena = Agent("athena", model=BuiltinModel(word_delay=0.0))
    klyve = Agent("klyve", model=BuiltinModel([Fail("klyve is broken")]))
    with trio.fail_after(20):
        async with (
            open_hub(store) as h,
            open_relay(
                [
                    (athena, connector_cfg(h.ws_url)),
                    (klyve, connector_cfg(h.ws_url, "rla_klyve_1")),
                ],
                ids=uamp.SequentialIds(),
            ) as connectors,
        ):
            for c in connectors:
                await c.wait_connected()
            await h.hub.wait_online("athena")
            await h.hub.wait_online("klyve")
            async with open_app(h.ws_url, APP_TOKEN) as app:
                await app.send(
                    {
                        "type": "event",
                        "agent_id": "athena",
                        "thread_id": "task-1",
                        "payload": {"event": "comment.mention", "message": "summarize this"},
                    }
                )
                evs = await app.until({"reply", "error"})
                accepted = evs[0]
                assert accepted["type"] == "accepted" and accepted["status"] == "accepted"
                assert accepted["session_key"] == "relay:athena:portal:task-1"
                tokens = [e["token"] for e in evs if e["type"] == "token"]
                assert "".join(tokens) == "You said: summarize this"
                final = evs[-1]
                assert final["type"] == "reply" and final["reply"] == "You said: summarize this"
                assert final["event_id"] == accepted["event_id"]
                assert final["thread_id"] == "task-1"
                assert final["payload"]["event"] == "comment.mention"
                assert final["metadata"]["session_key"] == "relay:athena:portal:task-1"
                assert final["metadata"]["model"] == "trioagents-builtin"
                # Same thread: the agent keeps the conversation (session_key state).
                await app.send(
                    {
                        "type": "event",
                        "agent_id": "athena",
                        "thread_id": "task-1",
                        "payload": {"message": "and again"},
                    }
                )
                await app.until({"reply"})
                assert [m.text for m in athena.model.calls[-1].messages] == [  # type: ignore[attr-defined]
                    "summarize this",
                    "You said: summarize this",
                    "and again",
                ]
                # An agent failure → error with the agent's code.
                await app.send(
                    {
                        "type": "event",
                        "agent_id": "klyve",
                        "thread_id": "x",
                        "payload": {"message": "hi"},
                    }
                )
                err = (await app.until({"reply", "error"}))[-1]
                assert err["type"] == "error" and err["code"] == "AGENT_ERROR"
                assert "klyve is broken" in err["error"]
                # discover lists the agents this app may reach.
                await app.send({"type": "discover"})
                listed = (await app.until({"agents"}))[-1]["agents"]
                assert listed == [
                    {"agent_id": "athena", "name": "athena", "online": True},
                    {"agent_id": "klyve", "name": "klyve", "online": True},
                ]
                await app.send(
                    {"type": "event", "agent_id": "nobody", "thread_id": "x", "payload": {}}
                )
                assert (await app.recv())["code"] == "AGENT_NOT_FOUND"
                await app.send({"type": "event", "agent_id": "athena", "payload": {}})
                assert (await app.recv())["code"] == "INVALID_MESSAGE"
                await app.send(
                    {
                        "type": "event",
                        "agent_id": "athena",
                        "thread_id": "t",
                        "payload": {"message": "x" * (70 * 1024)},
                    }
                )
                assert (await app.recv())["code"] == "PAYLOAD_TOO_LARGE"
                await app.send({"type": "ping"})
                assert (await app.recv())["type"] == "pong"
            # Another app is not on athena's allowlist.
            async with open_app(h.ws_url, "rlk_other_1") as other:
                await other.send(
                    {
                        "type": "event",
                        "agent_id": "athena",
                        "thread_id": "t",
                        "payload": {"message": "let me in"},
                    }
                )
                refused = await other.recv()
                assert refused["type"] == "error" and refused["code"] == "NOT_ALLOWED"
    assert len(athena.model.calls) == 2  # type: ignore[attr-defined]


async def test_bad_tokens_are_refused() -> None:
    store = await relay_store()
    with trio.fail_after(20):
        async with open_hub(store) as h:
            # An agent token the hub does not know: header refused, ?token= refused → terminal.
            connector = RelayConnector(Agent("athena"), connector_cfg(h.ws_url, "rla_unknown"))
            with pytest.raises(RelayAuthError):
                await connector.run()
            assert connector.use_query  # it did retry with ?token=
            # An agent token on the app socket (wrong prefix), an app token on the agent socket.
            # (Our dialer: trio-websocket's own client leaks the socket of a refused handshake.)
            dial = dial_websocket()
            for path, token in (("/v1/ws/app", AGENT_TOKEN), ("/v1/ws/agent", APP_TOKEN)):
                with pytest.raises(HandshakeRejected) as info:
                    async with dial(f"{h.ws_url}{path}?token={token}", []):
                        pass
                assert info.value.status == 401


async def test_agent_dropping_fails_in_flight_events_agent_offline() -> None:
    store = await relay_store()
    agent, gate = gate_agent("athena")
    with trio.fail_after(20):
        async with open_hub(store) as h, open_app(h.ws_url, APP_TOKEN) as app:
            with trio.CancelScope() as agent_scope:
                async with open_relay([(agent, connector_cfg(h.ws_url))]) as (connector,):
                    await connector.wait_connected()
                    await h.hub.wait_online("athena")
                    await app.send(
                        {
                            "type": "event",
                            "agent_id": "athena",
                            "thread_id": "t",
                            "payload": {"message": "block"},
                        }
                    )
                    evs = await app.until({"token"})
                    assert evs[0]["type"] == "accepted" and evs[-1]["token"] == "partial"
                    agent_scope.cancel()
            failed = (await app.until({"reply", "error"}))[-1]
            assert failed["type"] == "error" and failed["code"] == "AGENT_OFFLINE"
            assert failed["event_id"] == evs[0]["event_id"]
            await gate.cancelled.wait()
            # And with nobody connected, submissions are refused at once.
            await h.hub.wait_online("athena", online=False)
            await app.send(
                {
                    "type": "event",
                    "agent_id": "athena",
                    "thread_id": "t",
                    "payload": {"message": "x"},
                }
            )
            assert (await app.recv())["code"] == "AGENT_OFFLINE"


async def test_connector_dedupes_event_ids_and_orders_per_session_key() -> None:
    agent, gate = gate_agent("athena")
    net = FakeNetwork()
    connector = RelayConnector(
        agent, RelayConfig(token=AGENT_TOKEN, url="ws://r/v1/ws/agent"), dial=net.dial
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connector.run)
            hub = await net.accepted.receive()
            assert ("Authorization", f"Bearer {AGENT_TOKEN}") in hub.headers
            event = {
                "type": "event",
                "event_id": "evt_1",
                "app_id": "portal",
                "thread_id": "t",
                "session_key": "relay:portal:t",
                "payload": {"message": "block"},
            }
            await hub.send(event)
            await gate.started.wait()
            await hub.send(event)  # running: ignored
            await hub.send({**event, "event_id": "evt_2", "payload": {"message": "second"}})
            await hub.send({"type": "ping"})
            assert await hub.recv() == {"type": "token", "event_id": "evt_1", "token": "partial"}
            assert await hub.recv() == {"type": "pong"}
            gate.gate.set()
            frames = []
            while sum(f["type"] == "reply" for f in frames) < 2:
                frames.append(await hub.recv())
            replies = [f for f in frames if f["type"] == "reply"]
            assert [r["event_id"] for r in replies] == ["evt_1", "evt_2"]  # one key: in order
            assert replies[0]["content"] == "partial done" and replies[0]["done"] is True
            # A finished event seen again: its reply again, not a second run.
            runs = len(gate.requests)
            await hub.send(event)
            again = await hub.recv()
            assert again == replies[0]
            assert len(gate.requests) == runs
            assert connector.stats.duplicates == 2
            nursery.cancel_scope.cancel()


async def test_connector_heartbeat_and_backoff_cap(autojump_clock: trio.testing.MockClock) -> None:
    net = FakeNetwork(["accept"] + ["refuse"] * 9)
    connector = RelayConnector(
        Agent("athena"),
        RelayConfig(token=AGENT_TOKEN, url="ws://r/v1/ws/agent"),
        dial=net.dial,
        random=lambda: 0.999999,
    )
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connector.run)
            hub = await net.accepted.receive()
            t0 = trio.current_time()
            assert await hub.recv() == {"type": "ping"}
            assert trio.current_time() - t0 == pytest.approx(30.0)
            await hub.send({"type": "pong"})
            assert await hub.recv() == {"type": "ping"}
            # Silence after this ping: dead after 10 s, then 1, 2, 4 … capped at 60 s.
            await hub.wait_closed()
            assert hub.sock.closed_with == 1011
            await net.accepted.receive()  # the 11th dial is accepted again
            gaps = [b - a for a, b in zip(net.dial_times[1:], net.dial_times[2:], strict=False)]
            assert gaps == pytest.approx([2, 4, 8, 16, 32, 60, 60, 60, 60], rel=1e-3)
            nursery.cancel_scope.cancel()


def test_relay_messages() -> None:
    ev = rp.parse_agent_event(
        {"type": "event", "event_id": "e", "app_id": "a", "thread_id": "t", "payload": 5}
    )
    assert ev.session_key == "relay:a:t"
    assert rp.user_text({"message": "hi"}) == "hi"
    assert rp.user_text({"x": 1}) == '{"x":1}'
    with pytest.raises(rp.RelayProtocolError) as info:
        rp.parse("[1]")
    assert info.value.code == "INVALID_MESSAGE"
    with pytest.raises(rp.RelayProtocolError) as info:
        rp.parse_app_event({"agent_id": "a", "thread_id": "t", "payload": "x" * 70_000})
    assert info.value.code == "PAYLOAD_TOO_LARGE"
    assert rp.hub_session_key("ag", "app", "t") == "relay:ag:app:t"
