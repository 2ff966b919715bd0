"""The PortalConnect daemon against a fake hub: timing on autojump_clock, turns on memory."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hub_helpers import gate_agent
from portal_fakes import FakeNetwork, HubEnd, fake_portal as make

from trioagents import Agent, BuiltinModel, Fail
from trioagents.portal import (
    PortalAuthError,
    PortalConfig,
    PortalConnect,
    PortalGaveUp,
    open_portal,
)
from trioagents.protocols.portal import backoff_delay


async def register(hub: HubEnd, n: int = 1, *, start: int = 1) -> dict[str, str]:
    """Answer ``n`` session.create frames; returns agent → session id."""
    out = {}
    for i in range(n):
        ev = await hub.recv()
        assert ev["type"] == "session.create"
        sid = f"sess_hub{start + i}"
        out[ev["agent"]] = sid
        await hub.send(
            {
                "type": "session.created",
                "session_id": sid,
                "agent": ev["agent"],
                "reply_to": ev["event_id"],
                "session": {"id": sid, "status": "active"},
            }
        )
    return out


async def test_backoff_doubles_with_jitter_and_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNetwork(["refuse"] * 10)
    portal = make(net, Agent("a"), ("a", "t"), reconnect_delay=1.0, max_reconnect_attempts=3)
    with trio.fail_after(100), pytest.raises(PortalGaveUp):
        await portal.run()
    gaps = [b - a for a, b in zip(net.dial_times, net.dial_times[1:], strict=False)]
    # U(0.5, 1) with the uniform draw at 0 → half of 1, 2, 4 s; then the 4th failure gives up.
    assert gaps == pytest.approx([0.5, 1.0, 2.0])
    assert portal.stats.reconnects == 3
    assert portal.state == "stopped"


def test_backoff_formula_caps_at_sixty_seconds() -> None:
    assert backoff_delay(1, 5.0, lambda: 0.0) == 2.5
    assert backoff_delay(2, 5.0, lambda: 1.0) == 10.0
    assert backoff_delay(5, 5.0, lambda: 1.0) == 60.0  # 80 capped
    assert backoff_delay(10_000, 5.0, lambda: 0.5) == 45.0
    with pytest.raises(ValueError):
        backoff_delay(0, 1.0, lambda: 0.0)


async def test_registers_every_entry_and_again_after_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNetwork()
    portal = make(net, [Agent("a"), Agent("b")], ("a", "ta"), ("b", "tb"), reconnect_delay=2.0)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(portal.run)
            hub = await net.accepted.receive()
            assert hub.url == "ws://hub.example/ws?token=ta"  # the first entry's token
            first = await hub.recv()
            assert first["type"] == "session.create"
            assert first["agent"] == "a" and first["token"] == "ta"
            assert first["session"]["agent"] == "a" and first["session"]["token"] == "ta"
            second = await hub.recv()
            assert (second["agent"], second["token"]) == ("b", "tb")
            # Answered out of order and without reply_to: matched by `agent`.
            for ev, sid in ((second, "s-b"), (first, "s-a")):
                await hub.send(
                    {
                        "type": "session.created",
                        "session_id": sid,
                        "agent": ev["agent"],
                        "session": {"id": sid},
                    }
                )
            await portal.wait_registered()
            assert portal.registered == {"a": "s-a", "b": "s-b"}

            # The hub drops us; the daemon forgets the sessions and registers again.
            t0 = trio.current_time()
            await hub.close(1011)
            hub2 = await net.accepted.receive()
            assert trio.current_time() - t0 == pytest.approx(1.0)  # 2 s x U(0.5,1) at 0
            assert await register(hub2, 2, start=10) == {"a": "sess_hub10", "b": "sess_hub11"}
            await portal.wait_registered(connects=2)
            assert portal.registered == {"a": "sess_hub10", "b": "sess_hub11"}
            assert portal.stats.registrations == 4
            nursery.cancel_scope.cancel()


async def test_failure_counter_resets_after_thirty_seconds_connected(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNetwork(["refuse", "accept", "refuse", "accept"])
    portal = make(net, Agent("a"), ("a", "t"), reconnect_delay=4.0, ping_interval=1000.0)
    with trio.fail_after(200):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(portal.run)
            hub = await net.accepted.receive()  # after one failure: slept 2 s
            await register(hub)
            await trio.sleep(10)  # short-lived: the counter keeps counting
            await hub.close(1006)
            hub = await net.accepted.receive()  # failures 2 (close) and 3 (refused): 4 + 8 s
            await register(hub)
            await trio.sleep(31)  # long enough: the counter resets
            await hub.close(1006)
            await net.accepted.receive()
            gaps = [b - a for a, b in zip(net.dial_times, net.dial_times[1:], strict=False)]
            assert gaps[0] == pytest.approx(2.0)
            assert gaps[1] == pytest.approx(10 + 4.0)
            assert gaps[2] == pytest.approx(8.0)
            assert gaps[3] == pytest.approx(31 + 2.0)  # attempt 1 again
            nursery.cancel_scope.cancel()


async def test_pings_and_pong_deadline(autojump_clock: trio.testing.MockClock) -> None:
    net = FakeNetwork()
    portal = make(net, Agent("a"), ("a", "t"), reconnect_delay=1.0)
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(portal.run)
            hub = await net.accepted.receive()
            t0 = trio.current_time()
            await register(hub)
            ping = await hub.recv()
            assert ping["type"] == "ping" and "event_id" in ping and "timestamp" in ping
            assert trio.current_time() - t0 == pytest.approx(55.0)
            await hub.send({"type": "pong", "reply_to": ping["event_id"]})
            # The hub's own ping is answered at once.
            await hub.send({"type": "ping", "event_id": "evt_hubping"})
            pong = await hub.recv()
            assert pong["type"] == "pong" and pong["reply_to"] == "evt_hubping"
            ping2 = await hub.recv()
            assert ping2["type"] == "ping"
            assert trio.current_time() - t0 == pytest.approx(110.0)
            # No pong this time: 10 s later the daemon closes with 1011 and dials again.
            await hub.wait_closed()
            assert trio.current_time() - t0 == pytest.approx(120.0)
            assert hub.sock.closed_with == 1011
            assert portal.stats.keepalive_timeouts == 1
            await net.accepted.receive()
            assert net.dial_times[-1] - t0 == pytest.approx(120.5)
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("code", [1008, 4001, 4003])
async def test_auth_close_codes_are_terminal(
    code: int, autojump_clock: trio.testing.MockClock
) -> None:
    net = FakeNetwork()
    portal = make(net, Agent("a"), ("a", "t"), reconnect_delay=1.0)
    with trio.fail_after(100), pytest.RaisesGroup(PortalAuthError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(portal.run)
            hub = await net.accepted.receive()
            await hub.close(code)
    assert len(net.dial_times) == 1


async def test_handshake_401_is_terminal_but_500_is_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNetwork([500, 503, 401])
    portal = make(net, Agent("a"), ("a", "t"), reconnect_delay=1.0)
    with trio.fail_after(100), pytest.raises(PortalAuthError, match="401"):
        await portal.run()
    assert len(net.dial_times) == 3


async def test_unauthorized_entry_is_disabled_and_all_refused_is_terminal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNetwork()
    portal = make(net, [Agent("a"), Agent("b")], ("a", "ta"), ("b", "tb"), reconnect_delay=1.0)
    with trio.fail_after(100):
        with pytest.RaisesGroup(pytest.RaisesExc(PortalAuthError, match="refused every")):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(portal.run)
                hub = await net.accepted.receive()
                a, b = await hub.recv(), await hub.recv()
                await hub.send(
                    {
                        "type": "session.error",
                        "reply_to": b["event_id"],
                        "error": {"code": "unauthorized", "message": "bad token"},
                    }
                )
                await hub.send(
                    {
                        "type": "session.created",
                        "session_id": "s-a",
                        "agent": "a",
                        "reply_to": a["event_id"],
                        "session": {"id": "s-a"},
                    }
                )
                await portal.wait_registered()
                assert portal.disabled == {"b"} and portal.registered == {"a": "s-a"}
                # Reconnect: only "a" registers now; then "a" is refused too.
                await hub.close(1011)
                hub = await net.accepted.receive()
                only = await hub.recv()
                assert only["agent"] == "a"
                await hub.send(
                    {
                        "type": "session.error",
                        "reply_to": only["event_id"],
                        "error": {"code": "unauthorized", "message": "revoked"},
                    }
                )
                await trio.sleep_forever()


async def test_turns_run_concurrently_across_sessions_and_in_order_within_one() -> None:
    slow, gate = gate_agent("slow")
    fast = Agent("fast", model=BuiltinModel(word_delay=0.0))
    net = FakeNetwork()
    portal = make(net, [slow, fast], ("slow", "t1"), ("fast", "t2"))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(portal.run)
            hub = await net.accepted.receive()
            sids = await register(hub, 2)
            s_slow, s_fast = sids["slow"], sids["fast"]
            await hub.send(
                {"type": "input.text", "session_id": s_slow, "text": "block 1", "event_id": "in1"}
            )
            await hub.send(
                {"type": "input.text", "session_id": s_slow, "text": "second", "event_id": "in2"}
            )
            await gate.started.wait()
            # The slow session is stuck; the fast one answers meanwhile, with full history.
            await hub.send(
                {
                    "type": "input.text",
                    "session_id": s_fast,
                    "text": "hi",
                    "messages": [
                        {"role": "user", "content": "earlier"},
                        {"role": "assistant", "content": "ok"},
                        {"role": "user", "content": "hi"},
                    ],
                    "event_id": "in3",
                }
            )
            events: list[dict[str, Any]] = []
            while not any(
                e["type"] == "response.done" and e["session_id"] == s_fast for e in events
            ):
                events.append(await hub.recv())
            fast_events = [
                e
                for e in events
                if e.get("session_id") == s_fast and e["type"].startswith("response.")
            ]
            assert fast_events[0]["type"] == "response.created"
            assert fast_events[0]["reply_to"] == "in3"
            text = "".join(e["delta"]["text"] for e in fast_events if e["type"] == "response.delta")
            assert text == "You said: hi"
            assert fast_events[-1]["response"]["status"] == "completed"
            assert [m.text for m in fast.model.calls[0].messages] == ["earlier", "ok", "hi"]  # type: ignore[attr-defined]
            slow_so_far = [
                e["type"]
                for e in events
                if e.get("session_id") == s_slow and e["type"].startswith("response.")
            ]
            assert slow_so_far == ["response.created", "response.delta"]
            gate.gate.set()
            rest = []
            while sum(e["type"] == "response.done" for e in rest) < 2:
                rest.append(await hub.recv())
            created = [e for e in rest if e["type"] == "response.created"]
            assert [e["reply_to"] for e in created] == ["in2"]  # queued behind the first
            nursery.cancel_scope.cancel()


async def test_cancel_tool_result_payment_and_errors() -> None:
    agent, gate = gate_agent("a")
    boom = Agent("boom", model=BuiltinModel([Fail("exploded")]))
    extra = Agent("extra")
    net = FakeNetwork()
    portal = make(net, [agent, boom], ("a", "t"), ("boom", "t"), ("ghost", "t"), ("extra", "t"))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(portal.run)
            hub = await net.accepted.receive()
            sids = await register(hub, 4)
            # response.cancel reaches the model.
            await hub.send({"type": "input.text", "session_id": sids["a"], "text": "block"})
            created = (await hub.recv_until("response.created"))[-1]
            await gate.started.wait()
            await hub.send(
                {
                    "type": "response.cancel",
                    "session_id": sids["a"],
                    "response_id": created["response_id"],
                }
            )
            evs = await hub.recv_until("response.cancelled")
            assert evs[-1]["partial_output"] == [{"type": "text", "text": "partial"}]
            await gate.cancelled.wait()
            # payment.submit is stored on the session (payments come later).
            await hub.send(
                {
                    "type": "payment.submit",
                    "session_id": sids["a"],
                    "payment": {"scheme": "token", "token": "pay-1"},
                }
            )
            # tool.result for an unknown call is an error, the session lives on.
            await hub.send(
                {
                    "type": "tool.result",
                    "session_id": sids["a"],
                    "call_id": "nope",
                    "result": "{}",
                    "event_id": "tr1",
                }
            )
            err = (await hub.recv_until("error"))[-1]
            assert err["error"]["code"] == "unknown_call_id" and err["reply_to"] == "tr1"
            # An agent that raises → response.error{agent_error}.
            await hub.send({"type": "input.text", "session_id": sids["boom"], "text": "x"})
            bad = (await hub.recv_until("response.error"))[-1]
            assert bad["error"]["code"] == "agent_error"
            assert "exploded" in bad["error"]["message"]
            # An agent the daemon cannot resolve → response.error{agent_not_found}.
            await hub.send(
                {
                    "type": "input.text",
                    "session_id": sids["ghost"],
                    "text": "x",
                    "event_id": "in-ghost",
                }
            )
            evs = await hub.recv_until("response.error")
            assert evs[-2]["type"] == "response.created" and evs[-2]["reply_to"] == "in-ghost"
            assert evs[-1]["error"]["code"] == "agent_not_found"
            # A resolver set later resolves names on the next input.
            portal.set_agent_resolver(lambda name: extra if name in ("ghost", "extra") else None)
            await hub.send({"type": "input.text", "session_id": sids["ghost"], "text": "now"})
            done = (await hub.recv_until("response.done"))[-1]
            assert done["response"]["output"] == [{"type": "text", "text": "You said: now"}]
            session = portal._connection.sessions[sids["a"]]  # type: ignore[union-attr]
            assert session.payment_token == "pay-1"
            nursery.cancel_scope.cancel()


async def test_losing_the_socket_cancels_turns(autojump_clock: trio.testing.MockClock) -> None:
    agent, gate = gate_agent("a")
    net = FakeNetwork()
    portal = make(net, agent, ("a", "t"), reconnect_delay=1.0)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(portal.run)
            hub = await net.accepted.receive()
            sids = await register(hub)
            await hub.send({"type": "input.text", "session_id": sids["a"], "text": "block"})
            await gate.started.wait()
            await hub.close(1006)
            await gate.cancelled.wait()
            await register(await net.accepted.receive())
            await portal.wait_registered(connects=2)
            nursery.cancel_scope.cancel()


def test_config_from_the_original_dict_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTAL_WS_URL", "wss://hub.test/ws")
    cfg = PortalConfig.from_dict(
        {"agents": [{"name": "x", "token": "jwt"}], "auto_reconnect": False, "unknown": 1}
    )
    assert cfg.portal_ws_url == "wss://hub.test/ws"
    assert cfg.connection_token == "jwt" and cfg.auto_reconnect is False
    assert cfg.reconnect_delay == 5.0 and cfg.max_reconnect_attempts == 0
    assert cfg.ping_interval == 55.0 and cfg.pong_timeout == 10.0
    monkeypatch.delenv("PORTAL_WS_URL")
    assert PortalConfig().portal_ws_url == "wss://roborum.ai/ws"
    # agents omitted + token ⇒ the host agent
    portal = PortalConnect({"token": "t"}, Agent("host"))
    assert [(e.name, e.token) for e in portal.entries] == [("host", "t")]
    with pytest.raises(ValueError):
        PortalConnect({}, Agent("host"))
    with pytest.raises(ValueError):
        PortalConfig(agents=["nope"])


async def test_open_portal_raises_the_terminal_error_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    net = FakeNetwork([403])
    with trio.fail_after(10), pytest.raises(PortalAuthError):
        async with open_portal(
            {"portal_ws_url": "ws://h/ws", "agents": [{"name": "a", "token": "t"}]},
            Agent("a"),
            dial=net.dial,
        ):
            await trio.sleep_forever()
