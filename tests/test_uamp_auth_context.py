"""UAMP credentials and per-turn fields against the real server (PROTOCOLS.md §0.2, §1.2, §10).

* The handshake credential (``?token=`` / ``Authorization: Bearer``) is the default token of
  sessions that bring none; a bad one is refused at the handshake (401); the agentless ``/uamp``
  verifies it per session, for the agent each ``session.create`` picks.
* On the unpinned ``/uamp`` the chosen agent's ``/uamp`` endpoint scopes are checked in-band.
* ``input.text.context`` reaches the agent as ``ctx.context`` for that turn only.
* ``input.text.payment_token`` pays for that turn only; ``payment.submit`` pays the waiting
  turn and (ordinary server) stays the session's token; on the PortalConnect daemon it does not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import orjson
import trio
import trio_websocket
from flow_helpers import (
    API_KEY,
    API_KEY_SUB,
    CONFIG,
    PRICING,
    auth_service,
    dumps,
    funded,
    paid_agent,
    serve_paid,
    spent,
    text_of,
    token,
    until,
)
from hub_helpers import ws_handshake_status
from portal_fakes import FakeNetwork, HubEnd, fake_portal
from starlette.websockets import WebSocket

from trioagents import Agent, BuiltinModel, Context, tool, uamp, websocket
from trioagents.payments import PaymentsService
from trioagents.server import AgentServer
from trioagents.testing import TestServer, open_test_server
from trioagents.transports import UampTransport

TIMEOUT = 10


@tool
def whoami(ctx: Context) -> str:
    """The caller's ``sub`` as the session sees it."""
    return str(ctx.session.metadata.get("sub"))


@tool
def peek(ctx: Context) -> str:
    """This turn's ``input.text.context`` (and whether it leaked into the session)."""
    leaked = "context" in ctx.session.metadata
    return f"{orjson.dumps(ctx.context).decode()}|leaked={leaked}"


class ScopedUamp(UampTransport):
    """UAMP demanding the ``chat`` scope."""

    @websocket("/uamp", scopes=("chat",))
    async def uamp_socket(self, ws: WebSocket) -> None:
        await super().uamp_socket(ws)


@asynccontextmanager
async def serve_two(*, auth: bool = True, required: bool = True) -> AsyncIterator[TestServer]:
    """``bot`` (whoami, peek) and ``plain`` (whoami), no default agent: ``/uamp`` is agentless."""
    server = AgentServer(
        [
            Agent("bot", model=BuiltinModel(), tools=[whoami, peek]),
            Agent("plain", model=BuiltinModel(), tools=[whoami]),
        ],
        config=CONFIG,
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        auth=auth_service(required=required, signed=()) if auth else None,
    )
    async with open_test_server(server) as srv:
        yield srv


@asynccontextmanager
async def serve_scoped(*, auth: bool = True) -> AsyncIterator[TestServer]:
    """``bot`` whose ``/uamp`` demands ``chat``, and the unscoped ``plain``."""
    server = AgentServer(
        [
            Agent("bot", model=BuiltinModel(), tools=[whoami], skills=[ScopedUamp()]),
            Agent("plain", model=BuiltinModel(), tools=[whoami]),
        ],
        config=CONFIG,
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        auth=auth_service(signed=()) if auth else None,
    )
    async with open_test_server(server) as srv:
        yield srv


async def create(ws: trio_websocket.WebSocketConnection, **fields: Any) -> dict[str, Any]:
    """Send ``session.create`` and return the answer (``session.created`` or the refusal)."""
    await ws.send_message(dumps({"type": "session.create", **fields}))
    return (await until(ws, "session.created", "session.error"))[-1]


async def ask(ws: trio_websocket.WebSocketConnection, text: str, **fields: Any) -> str:
    """One turn; the streamed text."""
    await ws.send_message(dumps({"type": "input.text", "text": text, **fields}))
    events = await until(ws, "response.done", "response.error")
    assert events[-1]["type"] == "response.done", events[-1]
    return text_of(events)


# -- the handshake credential ---------------------------------------------------------------


async def test_handshake_credential_is_the_default_session_token() -> None:
    alice, bob = token(sub="alice"), token(sub="bob")
    with trio.fail_after(TIMEOUT):
        async with serve_two() as srv:
            # ?token= on the per-agent socket: sessions without a token are alice's.
            url = srv.agent_ws_url("bot") + "?token=" + alice
            async with trio_websocket.open_websocket_url(url) as ws:
                assert (await create(ws))["type"] == "session.created"
                assert await ask(ws, "/call whoami {}") == "whoami returned: alice"
                # A session's own token (top level or in `session`) wins over the handshake's.
                s2 = await create(ws, session={"token": bob})
                assert s2["type"] == "session.created"
                reply = await ask(ws, "/call whoami {}", session_id=s2["session_id"])
                assert reply == "whoami returned: bob"
                # ...and a bad one of its own is refused, although the handshake's was good.
                refused = await create(ws, token="junk")
                assert refused["error"]["code"] == "unauthorized"
                assert refused["error"]["details"] == {"reason": "invalid_token"}
            # Authorization: Bearer (an API key) on the server-level /uamp?agent=.
            async with trio_websocket.open_websocket_url(
                srv.ws_url + "/uamp?agent=plain",
                extra_headers=[(b"authorization", f"Bearer {API_KEY}".encode())],
            ) as ws:
                created = await create(ws)
                assert created["type"] == "session.created" and created["agent"] == "plain"
                assert await ask(ws, "/call whoami {}") == f"whoami returned: {API_KEY_SUB}"
            # Without any credential (auth required): no session, as before.
            async with trio_websocket.open_websocket_url(srv.agent_ws_url("bot")) as ws:
                refused = await create(ws)
                assert refused["error"]["details"] == {"reason": "missing_token"}


async def test_bad_handshake_credential_is_refused_with_401() -> None:
    expired = token(exp=uamp.FixedClock().now_s() - 5)
    with trio.fail_after(TIMEOUT):
        async with serve_two(required=False) as srv:
            for url, headers, reason in [
                (srv.agent_ws_url("bot") + "?token=junk", {}, "invalid_token"),
                (srv.agent_ws_url("bot"), {"Authorization": f"Bearer {expired}"}, "token_expired"),
                (srv.ws_url + "/uamp?agent=bot&token=junk", {}, "invalid_token"),
                # alice's token is for bot: the wrong audience for plain.
                (srv.ws_url + "/uamp?agent=plain&token=" + token(), {}, "invalid_audience"),
            ]:
                r = await ws_handshake_status(url, headers)
                assert r.status_code == 401, (url, r.text)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert r.json()["error"]["details"] == {"reason": reason}
            # A presented credential is checked even though anonymous callers are allowed;
            # presenting none is fine.
            async with trio_websocket.open_websocket_url(srv.agent_ws_url("bot")) as ws:
                assert (await create(ws))["type"] == "session.created"
                assert await ask(ws, "/call whoami {}") == "whoami returned: None"


async def test_agentless_uamp_verifies_the_handshake_credential_per_session() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_two() as srv:
            # No agent at the handshake: the token's audience is the agent a session picks.
            url = srv.ws_url + "/uamp?token=" + token(sub="alice")  # aud = bot
            async with trio_websocket.open_websocket_url(url) as ws:
                created = await create(ws, agent="bot", event_id="c1")
                assert created["type"] == "session.created"
                sid = created["session_id"]
                refused = await create(ws, agent="plain", event_id="c2")
                assert refused["type"] == "session.error" and refused["reply_to"] == "c2"
                assert refused["error"]["code"] == "unauthorized"
                assert refused["error"]["details"] == {"reason": "invalid_audience"}
                assert await ask(ws, "/call whoami {}", session_id=sid) == "whoami returned: alice"
                # A session bringing a token for plain is fine on the same socket.
                ok = await create(ws, agent="plain", token=token(aud="plain", sub="carol"))
                assert ok["type"] == "session.created"
                reply = await ask(ws, "/call whoami {}", session_id=ok["session_id"])
                assert reply == "whoami returned: carol"
            async with trio_websocket.open_websocket_url(srv.ws_url + "/uamp?token=junk") as ws:
                refused = await create(ws, agent="bot")
                assert refused["error"]["details"] == {"reason": "invalid_token"}


# -- endpoint scopes on the unpinned /uamp ----------------------------------------------------


async def test_unpinned_uamp_checks_the_chosen_agents_endpoint_scopes() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve_scoped() as srv:
            async with trio_websocket.open_websocket_url(srv.ws_url + "/uamp") as ws:
                refused = await create(ws, agent="bot")
                assert refused["type"] == "session.error"
                assert refused["error"]["code"] == "unauthorized"
                assert refused["error"]["details"]["reason"] == "missing_token"
                refused = await create(ws, agent="bot", token=token("billing:read"))
                assert refused["error"]["code"] == "unauthorized"
                assert refused["error"]["details"] == {
                    "reason": "insufficient_scope",
                    "scopes": ["chat"],
                }
                # The unscoped agent needs nothing, on the same socket.
                free = await create(ws, agent="plain")
                assert free["type"] == "session.created"
                ok = await create(ws, agent="bot", token=token("chat"))
                assert ok["type"] == "session.created"
                sid = ok["session_id"]
                # A refreshed token must hold the scopes too; the old one stays.
                await ws.send_message(
                    dumps(
                        {
                            "type": "session.update",
                            "session_id": sid,
                            "token": token("billing:read", sub="mallory"),
                            "event_id": "u1",
                        }
                    )
                )
                err = (await until(ws, "session.error"))[-1]
                assert err["reply_to"] == "u1"
                assert err["error"]["details"]["reason"] == "insufficient_scope"
                assert await ask(ws, "/call whoami {}", session_id=sid) == "whoami returned: alice"
            # The handshake credential counts as the session's.
            url = srv.ws_url + "/uamp?token=" + token("chat")
            async with trio_websocket.open_websocket_url(url) as ws:
                assert (await create(ws, agent="bot"))["type"] == "session.created"


async def test_unpinned_uamp_scoped_agent_without_auth_service_fails_closed() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            serve_scoped(auth=False) as srv,
            trio_websocket.open_websocket_url(srv.ws_url + "/uamp") as ws,
        ):
            refused = await create(ws, agent="bot", token=token("chat"))
            assert refused["error"]["code"] == "unauthorized"
            assert refused["error"]["details"] == {"reason": "missing_token"}
            assert (await create(ws, agent="plain"))["type"] == "session.created"


# -- input.text.context -----------------------------------------------------------------------


async def test_input_text_context_is_for_that_turn_only() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            serve_two(auth=False) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("bot")) as ws,
        ):
            assert (await create(ws))["type"] == "session.created"
            reply = await ask(ws, "/call peek {}", context={"tenant": "acme", "n": 1})
            assert reply == 'peek returned: {"tenant":"acme","n":1}|leaked=False'
            assert await ask(ws, "/call peek {}") == "peek returned: null|leaked=False"
            # An input that starts no response hands its context to the next response.
            await ws.send_message(
                dumps(
                    {"type": "session.update", "session": {"extensions": {"auto_respond": False}}}
                )
            )
            await until(ws, "session.updated")
            await ws.send_message(
                dumps({"type": "input.text", "text": "/call peek {}", "context": {"k": 2}})
            )
            await ws.send_message(dumps({"type": "response.create"}))
            events = await until(ws, "response.done", "response.error")
            assert text_of(events) == 'peek returned: {"k":2}|leaked=False'
            await ws.send_message(dumps({"type": "input.text", "text": "/call peek {}"}))
            await ws.send_message(dumps({"type": "response.create"}))
            events = await until(ws, "response.done", "response.error")
            assert text_of(events) == "peek returned: null|leaked=False"


# -- per-turn payment tokens ------------------------------------------------------------------


async def test_per_turn_payment_token_pays_for_that_turn_only() -> None:
    ledger, tok = await funded("1.00")
    session_tok = await ledger.issue_token("1.00")
    agent = paid_agent("First answer.", "Second answer.", "Third answer.", "Fourth answer.")
    with trio.fail_after(TIMEOUT):
        async with (
            serve_paid(agent, ledger) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("paid")) as ws,
        ):
            assert (await create(ws))["type"] == "session.created"
            await ws.send_message(
                dumps({"type": "input.text", "text": "one", "payment_token": tok.token})
            )
            events = await until(ws, "payment.balance")
            assert text_of(events) == "First answer."
            assert "payment.required" not in [e["type"] for e in events]
            assert await spent(ledger, tok.token_id) == (Decimal("0.12"), Decimal("0.88"))

            # The next turn brings none: the session has none, so it must pay in-band.
            await ws.send_message(dumps({"type": "input.text", "text": "two"}))
            required = (await until(ws, "payment.required"))[-1]
            assert required["extra"] == {"action": "pay"}
            assert await spent(ledger, tok.token_id) == (Decimal("0.12"), Decimal("0.88"))
            # payment.submit pays for the waiting turn and, on the ordinary server, stays the
            # session's token (one client): the third turn needs no negotiation.
            await ws.send_message(
                dumps(
                    {
                        "type": "payment.submit",
                        "response_id": required["response_id"],
                        "payment": {"scheme": "token", "token": session_tok.token},
                    }
                )
            )
            events = await until(ws, "payment.balance")
            assert text_of(events) == "Second answer."
            await ws.send_message(dumps({"type": "input.text", "text": "three"}))
            events = await until(ws, "payment.balance")  # it follows response.done
            assert "payment.required" not in [e["type"] for e in events]
            assert text_of(events) == "Third answer."
            assert await spent(ledger, session_tok.token_id) == (Decimal("0.24"), Decimal("0.76"))
            # A per-turn token wins over the session's token (§0.2: first match wins).
            await ws.send_message(
                dumps({"type": "input.text", "text": "four", "payment_token": tok.token})
            )
            await until(ws, "payment.balance")
            assert await spent(ledger, tok.token_id) == (Decimal("0.24"), Decimal("0.76"))
            assert await spent(ledger, session_tok.token_id) == (Decimal("0.24"), Decimal("0.76"))


# -- the PortalConnect daemon: nothing a caller brings sticks --------------------------------


async def _register(hub: HubEnd) -> str:
    ev = await hub.recv()
    assert ev["type"] == "session.create"
    await hub.send(
        {
            "type": "session.created",
            "session_id": "sess_hub1",
            "agent": ev["agent"],
            "reply_to": ev["event_id"],
            "session": {"id": "sess_hub1", "status": "active"},
        }
    )
    return "sess_hub1"


async def test_daemon_submitted_payment_pays_that_turn_only_and_context_is_per_turn() -> None:
    ledger, tok = await funded("1.00")

    @tool
    def caller(ctx: Context) -> str:
        """Who the hub says is calling."""
        meta = ctx.session.metadata
        return f"{meta.get('sub')}|{ctx.context}"

    agent = Agent("paid", model=BuiltinModel(), tools=[caller], pricing=PRICING)
    net = FakeNetwork()
    portal = fake_portal(
        net, agent, ("paid", "t"), payments=PaymentsService(ledger, pay_to="acct_paid")
    )
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(portal.run)
            hub = await net.accepted.receive()
            sid = await _register(hub)
            await hub.send({"type": "input.text", "session_id": sid, "text": "hi"})
            required = (await hub.recv_until("payment.required"))[-1]
            await hub.send(
                {
                    "type": "payment.submit",
                    "session_id": sid,
                    "response_id": required["response_id"],
                    "payment": {"scheme": "token", "token": tok.token},
                }
            )
            events = await hub.recv_until("payment.balance")
            assert text_of(events) == "You said: hi"
            assert await spent(ledger, tok.token_id) == (Decimal("0.13"), Decimal("0.87"))
            # Another caller's turn does not inherit it, and sees its own caller only.
            context = {"caller": {"sub": "bob", "iss": "hub", "scopes": []}}
            await hub.send(
                {
                    "type": "input.text",
                    "session_id": sid,
                    "text": "/call caller {}",
                    "context": context,
                }
            )
            required = (await hub.recv_until("payment.required"))[-1]
            await hub.send(
                {
                    "type": "payment.submit",
                    "session_id": sid,
                    "payment": {"scheme": "token", "token": tok.token},
                }
            )
            events = await hub.recv_until("response.done")
            assert text_of(events) == f"caller returned: bob|{context}"
            await hub.send(
                {
                    "type": "input.text",
                    "session_id": sid,
                    "text": "/call caller {}",
                    "payment_token": tok.token,
                }
            )
            events = await hub.recv_until("response.done")
            assert "payment.required" not in [e["type"] for e in events]
            assert text_of(events) == "caller returned: None|None"
            nursery.cancel_scope.cancel()
    assert ledger.open_locks() == []
