"""Relay connector lifecycle (§3.1): token rotation, ``on_disconnect``, and drops (§3.2)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hub_helpers import gate_agent, open_hub
from portal_fakes import FakeNetwork, HubEnd
from test_relay import AGENT_TOKEN, APP_TOKEN, connector_cfg, open_app, relay_store

from trioagents.relay import RelayAuthError, RelayConfig, RelayConnector, open_relay

NEW_TOKEN = "rla_athena_rotated"


def event(event_id: str, message: str, thread: str | None = None) -> dict[str, Any]:
    thread = thread or event_id
    return {
        "type": "event",
        "event_id": event_id,
        "app_id": "portal",
        "thread_id": thread,
        "session_key": f"relay:portal:{thread}",
        "payload": {"message": message},
    }


def submit(thread: str, message: str) -> dict[str, Any]:
    return {
        "type": "event",
        "agent_id": "athena",
        "thread_id": thread,
        "payload": {"message": message},
    }


def live_tokens(connector: RelayConnector) -> list[str]:
    tokens = [s.token for s in connector.sockets]
    assert len(tokens) == len(set(tokens))  # never two live sockets per token
    return tokens


async def test_token_rotation_opens_new_socket_then_drains_the_old() -> None:
    store = await relay_store()
    await store.add_token(NEW_TOKEN, "athena", kind="relay_agent")
    agent, gate = gate_agent("athena")
    with trio.fail_after(20):
        async with (
            open_hub(store) as h,
            open_app(h.ws_url, APP_TOKEN) as app,
            open_relay([(agent, connector_cfg(h.ws_url))]) as (connector,),
        ):
            await connector.wait_connected()
            await h.hub.wait_online("athena")
            await app.send(submit("t1", "block"))
            evs = await app.until({"token"})
            blocked_id = evs[0]["event_id"]
            # A token the Relay refuses: the rotation fails, the old socket keeps serving.
            with pytest.raises(RelayAuthError):
                await connector.rotate_token("rla_not_registered")
            assert live_tokens(connector) == [AGENT_TOKEN]
            assert connector.config.token == AGENT_TOKEN

            await connector.rotate_token(NEW_TOKEN)
            # The new socket is up before the old one goes; the old one is draining.
            assert live_tokens(connector) == [AGENT_TOKEN, NEW_TOKEN]
            assert connector.config.token == NEW_TOKEN
            assert connector.current is connector.sockets[1]
            # New work is served while the old socket still finishes its event.
            await app.send(submit("t2", "hello"))
            evs = await app.until({"reply", "error"})
            assert evs[-1]["type"] == "reply" and evs[-1]["reply"] == "You said: hello"
            assert all(e.get("event_id") != blocked_id for e in evs[1:] if e["type"] != "token")
            gate.gate.set()
            done = (await app.until({"reply", "error"}))[-1]
            assert done["type"] == "reply" and done["event_id"] == blocked_id
            assert done["reply"] == "partial done"  # finished, not AGENT_OFFLINE
            await connector.wait_sockets(1)
            assert live_tokens(connector) == [NEW_TOKEN]
            assert connector.state == "connected"
            assert (connector.stats.connects, connector.stats.rotations) == (2, 1)
            assert connector.stats.failures == 0 and not gate.cancelled.is_set()
            await app.send(submit("t3", "still there"))
            final = (await app.until({"reply", "error"}))[-1]
            assert final["reply"] == "You said: still there"
            assert h.hub.relay.late_terminals == 0


async def test_rotating_back_waits_for_the_draining_socket_of_that_token(
    autojump_clock: trio.testing.MockClock,
) -> None:
    agent, gate = gate_agent("athena")
    net = FakeNetwork()
    connector = RelayConnector(
        agent, RelayConfig(token=AGENT_TOKEN, url="ws://r/v1/ws/agent"), dial=net.dial
    )
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connector.run)
            hub_a = await net.accepted.receive()
            await hub_a.send(event("evt_1", "block"))
            assert (await hub_a.recv())["type"] == "token"
            await connector.rotate_token(NEW_TOKEN)
            hub_b = await net.accepted.receive()
            assert ("Authorization", f"Bearer {NEW_TOKEN}") in hub_b.headers
            back = trio.Event()

            async def rotate_back() -> None:
                await connector.rotate_token(AGENT_TOKEN)
                back.set()

            nursery.start_soon(rotate_back)
            await trio.testing.wait_all_tasks_blocked()
            assert not back.is_set() and len(net.dial_times) == 2  # A still draining
            assert live_tokens(connector) == [AGENT_TOKEN, NEW_TOKEN]
            gate.gate.set()
            reply = (await hub_a.recv_until("reply"))[-1]
            assert reply["event_id"] == "evt_1"
            await hub_a.wait_closed()
            assert hub_a.sock.closed_with == 1000
            await back.wait()
            hub_a2 = await net.accepted.receive()
            assert ("Authorization", f"Bearer {AGENT_TOKEN}") in hub_a2.headers
            await hub_b.wait_closed()  # B drained (nothing running) and closed
            await connector.wait_sockets(1)
            assert live_tokens(connector) == [AGENT_TOKEN]
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("mode", ["cancel", "finish"])
async def test_on_disconnect(mode: str, autojump_clock: trio.testing.MockClock) -> None:
    agent, gate = gate_agent("athena")
    net = FakeNetwork()
    connector = RelayConnector(
        agent,
        RelayConfig(
            token=AGENT_TOKEN, url="ws://r/v1/ws/agent", on_disconnect=mode, reconnect_delay=100
        ),
        dial=net.dial,
        random=lambda: 0.5,
    )
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connector.run)
            hub1 = await net.accepted.receive()
            await hub1.send(event("evt_1", "block"))
            await hub1.send(event("evt_2", "block"))
            tokens = [await hub1.recv(), await hub1.recv()]
            assert sorted(t["event_id"] for t in tokens) == ["evt_1", "evt_2"]
            await hub1.close(1011)  # lost (not terminal)
            await hub1.wait_closed()
            if mode == "cancel":
                await gate.cancelled.wait()
                hub2 = await net.accepted.receive()
                await hub2.send({"type": "ping"})
                assert await hub2.recv() == {"type": "pong"}  # nothing re-sent
                assert connector.running == set()
                nursery.cancel_scope.cancel()
                return
            # finish: both events end while no socket is up; their replies wait for the next.
            gate.gate.set()
            hub2 = await net.accepted.receive()
            frames = [await hub2.recv(), await hub2.recv()]
            assert sorted(f["event_id"] for f in frames) == ["evt_1", "evt_2"]
            assert all(f["type"] == "reply" and f["content"] == "partial done" for f in frames)
            assert connector.stats.resent == 2 and not gate.cancelled.is_set()
            # An event that finishes after the next socket is up answers on that socket.
            gate.gate, gate.started = trio.Event(), trio.Event()
            await hub2.send(event("evt_3", "block"))
            assert (await hub2.recv())["type"] == "token"
            await hub2.close(1011)
            hub3 = await net.accepted.receive()
            await connector.wait_connected(connects=3)
            gate.gate.set()
            reply = await hub3.recv()  # no tokens: they belonged to the lost socket
            assert reply["type"] == "reply" and reply["event_id"] == "evt_3"
            nursery.cancel_scope.cancel()


async def test_finish_resend_buffer_keeps_the_newest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    agent, gate = gate_agent("athena")
    net = FakeNetwork()
    connector = RelayConnector(
        agent,
        RelayConfig(
            token=AGENT_TOKEN,
            url="ws://r/v1/ws/agent",
            on_disconnect="finish",
            resend_buffer=1,
            reconnect_delay=100,
        ),
        dial=net.dial,
    )
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connector.run)
            hub1: HubEnd = await net.accepted.receive()
            await hub1.send(event("evt_1", "block"))
            assert (await hub1.recv())["type"] == "token"
            await hub1.send(event("evt_2", "block"))
            assert (await hub1.recv())["type"] == "token"
            await hub1.close(1011)
            await hub1.wait_closed()
            gate.gate.set()
            hub2 = await net.accepted.receive()
            first = await hub2.recv()
            assert first["type"] == "reply"
            await hub2.send({"type": "ping"})
            assert await hub2.recv() == {"type": "pong"}
            assert connector.stats.resend_dropped == 1
            nursery.cancel_scope.cancel()
    with pytest.raises(ValueError):
        RelayConfig(token=AGENT_TOKEN, on_disconnect="ignore")


async def one_terminal_each(app: Any, event_ids: list[str]) -> None:
    terminals: dict[str, list[dict[str, Any]]] = {}
    while len(terminals) < len(event_ids):
        ev = await app.recv()
        if ev["type"] in ("reply", "error"):
            terminals.setdefault(ev["event_id"], []).append(ev)
    assert sorted(terminals) == sorted(event_ids)
    for evs in terminals.values():
        assert [(e["type"], e["code"]) for e in evs] == [("error", "AGENT_OFFLINE")]


@pytest.mark.parametrize("drop", ["agent_killed", "socket_lost_finish"])
async def test_events_in_flight_across_a_drop_each_end_exactly_once(drop: str) -> None:
    """Several accepted events in flight (running, and queued behind one thread) when the
    agent drops: the still-connected app gets exactly one terminal message for each."""
    store = await relay_store()
    agent, gate = gate_agent("athena")
    mode = "finish" if drop == "socket_lost_finish" else "cancel"
    with trio.fail_after(20):
        async with open_hub(store) as h, open_app(h.ws_url, APP_TOKEN) as app:
            with trio.CancelScope() as agent_scope:
                async with open_relay([(agent, connector_cfg(h.ws_url, on_disconnect=mode))]) as (
                    connector,
                ):
                    await connector.wait_connected()
                    await h.hub.wait_online("athena")
                    await app.send(submit("quick", "hi"))
                    quick = await app.until({"reply"})
                    for thread, text in [
                        ("t1", "block one"),
                        ("t2", "block two"),
                        ("t3", "block three"),
                        ("t1", "queued behind one"),
                    ]:
                        await app.send(submit(thread, text))
                    seen: list[dict[str, Any]] = []
                    while sum(e["type"] == "token" for e in seen) < 3 or (
                        sum(e["type"] == "accepted" for e in seen) < 4
                    ):
                        seen.append(await app.recv())
                    accepted = [e["event_id"] for e in seen if e["type"] == "accepted"]
                    assert len(set(accepted)) == 4
                    if drop == "agent_killed":
                        agent_scope.cancel()
                    else:
                        h.hub.relay.agents["athena"].close(1011, "test drop")
                        await one_terminal_each(app, accepted)
                        # The connector reconnects and finishes the turns; their late replies
                        # are ignored by the hub (the app already had AGENT_OFFLINE).
                        await connector.wait_connected(connects=2)
                        gate.gate.set()
                        await h.hub.relay.wait_late_terminals(4)
                        assert not gate.cancelled.is_set()
            if drop == "agent_killed":
                await one_terminal_each(app, accepted)
                await gate.cancelled.wait()
            # Nothing more for any of them: the next frame is the answer to a ping.
            await app.send({"type": "ping"})
            assert await app.recv() == {"type": "pong"}
            assert h.hub.relay.pending == {}
            assert quick[-1]["reply"] == "You said: hi"
