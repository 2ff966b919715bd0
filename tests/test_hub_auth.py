"""Auth, signatures and payments through the hub (PROTOCOLS.md §2, §9, §10).

A real hub on 127.0.0.1 with in-process PortalConnect daemons: callers authenticated by the
hub's AuthService (Completions 401 + WWW-Authenticate, UAMP handshake 401 /
``session.error{unauthorized}``), the verified caller reaching the daemon's tools, daemon
tokens as AOAuth JWTs (``sub`` = agent), the hub signing what it relays, and payment tokens /
``payment.*`` relayed between caller and daemon.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio_websocket
from flow_helpers import dumps, expensive_tool, funded, paid_agent, sse_parts, text_of, until
from hub_helpers import hub_config, open_hub, portal_cfg, ws_handshake_status
from portal_fakes import FakeNetwork, fake_portal

from trioagents import Agent, BuiltinModel, CallTool, Context, Reply, tool, uamp
from trioagents.auth import (
    AuthError,
    AuthService,
    SigningKey,
    StaticKeys,
    jwks_document,
    verify_response_signature,
)
from trioagents.hub import (
    ChainTokenVerifier,
    JWTTokenVerifier,
    MemoryHubStore,
    StoreTokenVerifier,
)
from trioagents.payments import MemoryLedger, PaymentsService, Pricing
from trioagents.portal import PortalAuthError, open_portal

TIMEOUT = 15
NOW = uamp.FixedClock().now_s()
CALLER_ISS = "https://callers.example"
CALLER_KEY = SigningKey.generate("EC")
DAEMON_ISS = "https://daemons.example"
DAEMON_KEY = SigningKey.generate("EC")
HUB_AUD = "hub.example"
API_KEY = "sk-hub-test"


def jwt(
    key: SigningKey, iss: str, sub: str, aud: str, *, exp: int | None = None, scope: str = ""
) -> str:
    claims: dict[str, Any] = {"iss": iss, "sub": sub, "aud": aud, "iat": NOW}
    claims["exp"] = exp if exp is not None else NOW + 3600
    if scope:
        claims["scope"] = scope
    return key.sign(claims)


def caller_jwt(sub: str = "alice", aud: str = "alpha", **kw: Any) -> str:
    return jwt(CALLER_KEY, CALLER_ISS, sub, aud, **kw)


def daemon_jwt(sub: str, **kw: Any) -> str:
    return jwt(DAEMON_KEY, DAEMON_ISS, sub, HUB_AUD, **kw)


def caller_auth(**kw: Any) -> AuthService:
    return AuthService(
        api_keys={API_KEY: "ci-bot"},
        trusted_issuers=[CALLER_ISS],
        keys=StaticKeys({CALLER_ISS: jwks_document([CALLER_KEY])}),
        **kw,
    )


def daemon_verifier(store: MemoryHubStore) -> ChainTokenVerifier:
    return ChainTokenVerifier(
        StoreTokenVerifier(store),
        JWTTokenVerifier(
            trusted_issuers=[DAEMON_ISS],
            audiences=[HUB_AUD],
            keys=StaticKeys({DAEMON_ISS: jwks_document([DAEMON_KEY])}),
            clock=uamp.FixedClock(),
        ),
    )


@tool
def whoami(ctx: Context) -> str:
    """Who is calling, as the daemon-side agent sees it."""
    meta = ctx.session.metadata
    principal = meta.get("principal")
    scopes = ",".join(sorted(principal.scopes)) if principal is not None else "-"
    # The caller's credential never reaches the daemon (only the verified identity does).
    leaked = any(secret in repr(meta) for secret in (API_KEY, "eyJ"))
    return f"{meta.get('sub')}|{scopes}|{(meta.get('caller') or {}).get('iss')}|leak={leaked}"


@asynccontextmanager
async def hub_with_daemon(
    agent: Agent, *, hub_auth: AuthService | None = None, **portal_kw: Any
) -> AsyncIterator[Any]:
    """A hub (with ``hub_auth`` for its callers) and a daemon serving ``agent`` through it."""
    store = MemoryHubStore()
    await store.add_token("tok-daemon", agent.name)
    async with (
        open_hub(store, auth=hub_auth) as h,
        open_portal(
            portal_cfg(h.portal_url, (agent.name, "tok-daemon")),
            agent,
            ids=uamp.SequentialIds(),
            clock=uamp.FixedClock(),
            **portal_kw,
        ) as portal,
    ):
        await portal.wait_registered()
        await h.hub.wait_online(agent.name)
        yield h


# --------------------------------------------------------------------------------------------
# 1. Callers of the hub are authenticated; the daemon's tools see who is calling
# --------------------------------------------------------------------------------------------


async def test_completions_callers_authenticated_and_the_daemon_sees_the_caller() -> None:
    alpha = Agent("alpha", tools=[whoami])
    with trio.fail_after(TIMEOUT):
        async with (
            hub_with_daemon(alpha, hub_auth=caller_auth(required=True)) as h,
            httpx.AsyncClient() as http,
        ):
            url = h.agent_url("alpha", "/v1/chat/completions")
            body = {"model": "alpha", "messages": [{"role": "user", "content": "/call whoami {}"}]}

            async def post(token: str | None, **kw: Any) -> httpx.Response:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                return await http.post(url, json=body, headers=headers, **kw)

            r = await post(None)
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["error"]["code"] == "missing_token"
            for bad, reason in [
                ("nope", "invalid_token"),
                (caller_jwt(aud="someone-else"), "invalid_audience"),
                (caller_jwt(exp=NOW - 5), "token_expired"),
                (jwt(SigningKey.generate("EC"), CALLER_ISS, "mallory", "alpha"), "unknown_key"),
            ]:
                r = await post(bad)
                assert r.status_code == 401, reason
                assert r.json()["error"]["code"] == reason
                assert 'error="invalid_token"' in r.headers["www-authenticate"]

            r = await post(caller_jwt(scope="read write"))
            assert r.status_code == 200
            answer = r.json()["choices"][0]["message"]["content"]
            assert answer == f"whoami returned: alice|read,write|{CALLER_ISS}|leak=False"
            # The API key, as ?token= this time, streamed.
            r = await http.post(
                url + f"?token={API_KEY}", json={**body, "stream": True}, headers={}
            )
            content, items, _ = sse_parts(r.text)
            assert r.status_code == 200 and items[-1] == "[DONE]"
            assert content == "whoami returned: ci-bot||api_key|leak=False"
            # The server-level route authenticates too.
            r = await http.post(h.url + "/v1/chat/completions", json=body)
            assert r.status_code == 401


async def test_uamp_callers_handshake_and_session_tokens() -> None:
    alpha = Agent("alpha", tools=[whoami])
    with trio.fail_after(TIMEOUT):
        async with hub_with_daemon(alpha, hub_auth=caller_auth(required=True)) as h:
            # A bad credential on the handshake: refused before the upgrade.
            r = await ws_handshake_status(h.agent_ws_url("alpha") + "?token=forged")
            assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
            r = await ws_handshake_status(
                h.ws_url + "/uamp?agent=alpha", {"Authorization": "Bearer forged"}
            )
            assert r.status_code == 401

            async with trio_websocket.open_websocket_url(h.agent_ws_url("alpha")) as ws:
                # No token anywhere: session.error{unauthorized}, no session.
                await ws.send_message(dumps({"type": "session.create", "event_id": "c1"}))
                err = (await until(ws, "session.error", "session.created"))[-1]
                assert err["type"] == "session.error" and err["reply_to"] == "c1"
                assert err["error"]["code"] == "unauthorized"
                assert err["error"]["details"] == {"reason": "missing_token"}
                bad = caller_jwt(exp=NOW - 1)
                await ws.send_message(dumps({"type": "session.create", "token": bad}))
                err = (await until(ws, "session.error", "session.created"))[-1]
                assert err["error"]["details"] == {"reason": "token_expired"}
                # A session token (inside `session`, hub style) for bob.
                token = caller_jwt(sub="bob", scope="x")
                await ws.send_message(
                    dumps({"type": "session.create", "session": {"token": token}})
                )
                created = (await until(ws, "session.created", "session.error"))[-1]
                assert created["type"] == "session.created"
                await ws.send_message(dumps({"type": "input.text", "text": "/call whoami {}"}))
                got = await until(ws, "response.done", "response.error")
                assert got[-1]["type"] == "response.done"
                assert text_of(got) == f"whoami returned: bob|x|{CALLER_ISS}|leak=False"

            # A valid credential on the handshake stands for sessions that bring none.
            url = h.agent_ws_url("alpha") + f"?token={API_KEY}"
            async with trio_websocket.open_websocket_url(url) as ws:
                await ws.send_message(dumps({"type": "session.create"}))
                assert (await until(ws, "session.created", "session.error"))[-1][
                    "type"
                ] == "session.created"
                await ws.send_message(dumps({"type": "input.text", "text": "/call whoami {}"}))
                got = await until(ws, "response.done", "response.error")
                assert text_of(got) == "whoami returned: ci-bot||api_key|leak=False"


async def test_caller_identity_is_per_turn_anonymous_turns_see_none() -> None:
    alpha = Agent("alpha", tools=[whoami])
    with trio.fail_after(TIMEOUT):
        async with (
            hub_with_daemon(alpha, hub_auth=caller_auth()) as h,  # anonymous callers allowed
            httpx.AsyncClient() as http,
        ):
            url = h.agent_url("alpha", "/v1/chat/completions")
            body = {"model": "alpha", "messages": [{"role": "user", "content": "/call whoami {}"}]}
            texts = []
            for headers in ({"Authorization": f"Bearer {caller_jwt()}"}, {}):
                r = await http.post(url, json=body, headers=headers)
                texts.append(r.json()["choices"][0]["message"]["content"])
            # alice's identity did not stick to the daemon's session for the next caller.
            assert texts == [
                f"whoami returned: alice||{CALLER_ISS}|leak=False",
                "whoami returned: None|-|None|leak=False",
            ]
            # A presented bad credential is refused even though anonymous callers are allowed.
            r = await http.post(url, json=body, headers={"Authorization": "Bearer junk"})
            assert r.status_code == 401


# --------------------------------------------------------------------------------------------
# 2. PortalConnect session tokens as JWTs (sub = agent name)
# --------------------------------------------------------------------------------------------


async def test_daemon_jwts_register_only_their_own_agent() -> None:
    store = MemoryHubStore()
    await store.add_token("tok-legacy", "legacy")  # stored API keys keep working alongside
    entries = [
        ("x", daemon_jwt("x")),
        ("y", daemon_jwt("x")),  # a JWT for x used to register y
        ("z", daemon_jwt("z", exp=NOW - 60)),  # expired
        ("w", jwt(SigningKey.generate("EC"), DAEMON_ISS, "w", HUB_AUD)),  # forged
        ("v", caller_jwt(sub="v", aud=HUB_AUD)),  # untrusted issuer for daemons
        ("legacy", "tok-legacy"),
    ]
    agents = [Agent(n, model=BuiltinModel()) for n, _ in entries]
    with trio.fail_after(TIMEOUT):
        async with (
            open_hub(store, verifier=daemon_verifier(store)) as h,
            open_portal(portal_cfg(h.portal_url, *entries), agents) as portal,
        ):
            await portal.wait_registered()
            assert set(portal.registered) == {"x", "legacy"}
            assert portal.disabled == {"y", "z", "w", "v"}
            await h.hub.wait_online("x")
            async with httpx.AsyncClient() as http:
                r = await http.post(
                    h.agent_url("x", "/v1/chat/completions"),
                    json={"messages": [{"role": "user", "content": "hi x"}]},
                )
                assert r.json()["choices"][0]["message"]["content"] == "You said: hi x"

            # The same, frame by frame: each refusal is session.error{unauthorized} for that
            # entry only, and the socket goes on.
            url = h.portal_url + "?token=" + daemon_jwt("q")
            async with trio_websocket.open_websocket_url(url) as ws:
                for eid, name, token in [
                    ("e1", "q2", daemon_jwt("q")),
                    ("e2", "q", daemon_jwt("q", exp=NOW - 1)),
                    ("e3", "q", "not-a-token"),
                    ("e4", "q", daemon_jwt("q")),
                ]:
                    await ws.send_message(
                        dumps(
                            {
                                "type": "session.create",
                                "event_id": eid,
                                "agent": name,
                                "token": token,
                            }
                        )
                    )
                    ev = (await until(ws, "session.error", "session.created"))[-1]
                    assert ev["reply_to"] == eid
                    if eid == "e4":
                        assert ev["type"] == "session.created" and ev["agent"] == "q"
                    else:
                        assert ev["type"] == "session.error"
                        assert ev["error"]["code"] == "unauthorized"

            # An invalid ?token= is refused at the handshake (401), and the daemon stops for good.
            r = await ws_handshake_status(h.portal_url + "?token=" + daemon_jwt("x", exp=NOW - 1))
            assert r.status_code == 401
            with pytest.raises(PortalAuthError):
                async with open_portal(
                    portal_cfg(
                        h.portal_url,
                        ("x", jwt(SigningKey.generate("EC"), DAEMON_ISS, "x", HUB_AUD)),
                    ),
                    Agent("x"),
                ) as doomed:
                    await doomed.wait_state("stopped")


# --------------------------------------------------------------------------------------------
# 3. Signed responses: the daemon signs its frame, the hub re-signs for its caller
# --------------------------------------------------------------------------------------------


DAEMON_AGENT_KEY = SigningKey.generate("EC")
HUB_AGENT_KEY = SigningKey.generate("RSA")


async def test_daemon_signs_response_done_over_the_exact_input_frame() -> None:
    net = FakeNetwork()
    auth = AuthService(signing_keys={"alpha": DAEMON_AGENT_KEY}, public_url="https://d.example")
    portal = fake_portal(
        net, Agent("alpha", model=BuiltinModel()), ("alpha", "t"), auth=auth, reconnect_delay=0.05
    )
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(portal.run)
            hub = await net.accepted.receive()
            create = await hub.recv()
            await hub.send(
                {
                    "type": "session.created",
                    "session_id": "s1",
                    "agent": "alpha",
                    "reply_to": create["event_id"],
                    "session": {"id": "s1", "status": "active"},
                }
            )
            frame = dumps(
                {"type": "input.text", "session_id": "s1", "text": "sign", "event_id": "i"}
            )
            await hub.to_daemon.send(frame)
            got = await hub.recv_until("response.done")
            done = got[-1]
            jwks = jwks_document([DAEMON_AGENT_KEY])
            claims = verify_response_signature(
                done["signature"], jwks, "You said: sign", frame.encode(), now=NOW
            )
            assert claims["iss"] == "https://d.example/agents/alpha"
            with pytest.raises(AuthError):
                verify_response_signature(
                    done["signature"], jwks, "You said: sigN", frame.encode(), now=NOW
                )
            nursery.cancel_scope.cancel()


async def test_hub_signs_relayed_responses_for_its_callers() -> None:
    alpha = Agent("alpha", model=BuiltinModel())
    daemon_auth = AuthService(signing_keys={"alpha": DAEMON_AGENT_KEY})
    with trio.fail_after(TIMEOUT):
        async with (
            hub_with_daemon(
                alpha,
                hub_auth=caller_auth(signing_keys={"alpha": HUB_AGENT_KEY}),
                auth=daemon_auth,  # the daemon signs too; its signature is not passed on
            ) as h,
            httpx.AsyncClient() as http,
        ):
            jwks = (await http.get(h.agent_url("alpha", "/.well-known/jwks.json"))).json()
            assert jwks == {"keys": [HUB_AGENT_KEY.public_jwk()]}
            union = (await http.get(h.url + "/.well-known/jwks.json")).json()
            assert union == jwks
            nobody = await http.get(h.agent_url("nobody", "/.well-known/jwks.json"))
            assert nobody.status_code == 404

            # UAMP: response.done.signature over the caller's own frame and the text it got.
            token = caller_jwt(sub="carol")
            async with trio_websocket.open_websocket_url(h.agent_ws_url("alpha")) as ws:
                await ws.send_message(dumps({"type": "session.create", "token": token}))
                await until(ws, "session.created")
                frame = dumps({"type": "input.text", "text": "relay me", "event_id": "f1"})
                await ws.send_message(frame)
                got = await until(ws, "response.done")
                text = text_of(got)
                assert text == "You said: relay me"
                claims = verify_response_signature(
                    got[-1]["signature"], jwks, text, frame.encode(), audience="carol", now=NOW
                )
                assert claims["iss"] == h.agent_url("alpha")
                with pytest.raises(AuthError):
                    verify_response_signature(
                        got[-1]["signature"], jwks, text + "!", frame.encode(), now=NOW
                    )

            # Completions SSE: event: response_signature after [DONE], over the exact body.
            body = orjson.dumps(
                {"model": "alpha", "stream": True, "messages": [{"role": "user", "content": "hey"}]}
            )
            r = await http.post(h.agent_url("alpha", "/v1/chat/completions"), content=body)
            content, items, signature = sse_parts(r.text)
            assert content == "You said: hey" and items[-1] == "[DONE]"
            assert signature is not None
            verify_response_signature(signature, jwks, content, body, now=NOW)
            with pytest.raises(AuthError):
                verify_response_signature(signature, jwks, content, body + b" ", now=NOW)


# --------------------------------------------------------------------------------------------
# 4. Payments through the hub
# --------------------------------------------------------------------------------------------


async def test_payments_through_the_hub_402_uamp_relay_and_per_turn_tokens() -> None:
    ledger = MemoryLedger()
    tok = await ledger.issue_token("1.00")
    paid = Agent(
        "paid",
        model=BuiltinModel(),
        pricing=Pricing(per_turn="0.10"),
    )
    service = PaymentsService(ledger, pay_to="acct_paid")
    with trio.fail_after(TIMEOUT):
        async with (
            hub_with_daemon(paid, payments=service) as h,
            httpx.AsyncClient() as http,
        ):
            url = h.agent_url("paid", "/v1/chat/completions")
            body = {"model": "paid", "messages": [{"role": "user", "content": "hi"}]}
            # No token: the caller gets Completions' payment signal, a 402 with §9.2's body.
            r = await http.post(url, json=body)
            assert r.status_code == 402
            err = r.json()
            assert err["error"] == "PAYMENT_TOKEN_REQUIRED"
            assert err["accepts"][0]["payTo"] == "acct_paid"
            assert err["accepts"][0]["amount"] == "0.10"
            # The token travels with the turn (X-PAYMENT → input.text.payment_token).
            r = await http.post(url, json=body, headers={"X-PAYMENT": tok.token})
            assert r.status_code == 200
            assert r.json()["choices"][0]["message"]["content"] == "You said: hi"
            assert (await ledger.balance(tok.token_id)).balance == Decimal("0.90")
            # ...for that turn only: the next caller without a token pays nothing of it.
            r = await http.post(url, json={**body, "stream": True})
            assert r.status_code == 402
            assert (await ledger.balance(tok.token_id)).balance == Decimal("0.90")

            # UAMP negotiates in-band through the hub: payment.required → payment.submit.
            async with trio_websocket.open_websocket_url(h.agent_ws_url("paid")) as ws:
                await ws.send_message(dumps({"type": "session.create"}))
                await until(ws, "session.created")
                await ws.send_message(dumps({"type": "input.text", "text": "pay me"}))
                got = await until(ws, "payment.required", "response.error")
                required = got[-1]
                assert required["type"] == "payment.required"
                created = [e for e in got if e["type"] == "response.created"]
                assert len(created) == 1
                rid = created[0]["response_id"]
                assert required["response_id"] == rid  # the caller's own response id
                assert required["extra"]["action"] == "pay"
                assert required["accepts"][0]["payTo"] == "acct_paid"
                await ws.send_message(
                    dumps({"type": "payment.submit", "payment": {"scheme": "token", "token": "x"}})
                )
                bad = (await until(ws, "payment.error"))[-1]
                assert bad["can_retry"] is True
                await ws.send_message(
                    dumps(
                        {
                            "type": "payment.submit",
                            "response_id": rid,
                            "payment": {"scheme": "token", "token": tok.token},
                        }
                    )
                )
                got = await until(ws, "response.done", "response.error")
                kinds = [e["type"] for e in got]
                assert kinds[0] == "payment.accepted" and kinds[-1] == "response.done"
                assert "response.created" not in kinds  # the same response went on
                assert text_of(got) == "You said: pay me"
                assert got[-1]["response_id"] == rid
            assert (await ledger.balance(tok.token_id)).balance == Decimal("0.80")
    assert ledger.open_locks() == []


async def test_mid_stream_topup_through_the_hub_resumes_in_place() -> None:
    """A UAMP caller's turn on a daemon: text streams, a costly tool drains the lock, the
    caller tops up and submits through the hub, and the same response finishes."""
    ledger, tok = await funded("0.50")
    log: list[str] = []
    agent = paid_agent(
        [[Reply("Let me look that up."), CallTool("expensive")], Reply("Found it.")],
        tools=[expensive_tool(log)],
    )
    with trio.fail_after(TIMEOUT):
        async with (
            hub_with_daemon(agent, payments=PaymentsService(ledger, pay_to="acct_paid")) as h,
            trio_websocket.open_websocket_url(h.agent_ws_url("paid")) as ws,
        ):
            await ws.send_message(
                dumps({"type": "session.create", "session": {"payment_token": tok.token}})
            )
            await until(ws, "session.created")
            await ws.send_message(dumps({"type": "input.text", "text": "find it"}))
            before = await until(ws, "payment.required", "response.error")
            required = before[-1]
            assert text_of(before) == "Let me look that up."
            assert required["extra"] == {
                "action": "topup",
                "amount": "0.65",
                "token_id": tok.token_id,
            }
            assert log == []
            await ledger.topup(tok.token_id, "1.00", "client-topup-1")
            await ws.send_message(
                dumps(
                    {
                        "type": "payment.submit",
                        "response_id": required["response_id"],
                        "payment": {"scheme": "token", "token": tok.token},
                    }
                )
            )
            after = await until(ws, "response.done", "response.error")
            assert after[0]["type"] == "payment.accepted"
            assert after[-1]["type"] == "response.done"
            assert after[-1]["response_id"] == required["response_id"]
            assert text_of(before + after) == "Let me look that up.Found it."
            assert log == ["expensive"]
    assert ledger.open_locks() == []


async def test_hub_cli_auth_flags() -> None:
    from trioagents.hub._cli import _parser, hub_auth, hub_verifier

    args = _parser().parse_args(
        [
            "serve",
            "--api-key",
            "ci-bot=sk-cli",
            "--require-auth",
            "--trusted-issuer",
            CALLER_ISS,
            "--jwks-uri",
            f"{DAEMON_ISS}=https://daemons.example/keys",
            "--daemon-issuer",
            DAEMON_ISS,
            "--public-url",
            "https://hub.example",
        ]
    )
    auth = hub_auth(args)
    assert auth is not None and auth.required and auth.trusted_issuers == (CALLER_ISS,)
    assert auth.api_keys["sk-cli"].sub == "ci-bot"
    store = MemoryHubStore()
    verifier = hub_verifier(args, store)  # type: ignore[arg-type]
    assert isinstance(verifier, ChainTokenVerifier)
    jwt_verifier = verifier.verifiers[1]
    assert isinstance(jwt_verifier, JWTTokenVerifier)
    assert jwt_verifier.config.audiences == ("https://hub.example",)
    assert jwt_verifier.jwks_uris == {DAEMON_ISS: "https://daemons.example/keys"}
    plain = _parser().parse_args(["serve"])
    assert hub_auth(plain) is None and hub_verifier(plain, store) is None  # type: ignore[arg-type]
    with trio.fail_after(TIMEOUT):
        async with open_hub(store, auth=auth, verifier=verifier) as h, httpx.AsyncClient() as http:
            await store.add_token("tok", "alpha")  # known (offline) agent
            body = {"model": "alpha", "messages": [{"role": "user", "content": "x"}]}
            url = h.agent_url("alpha", "/v1/chat/completions")
            r = await http.post(url, json=body)
            assert r.status_code == 401
            r = await http.post(url, json=body, headers={"Authorization": "Bearer sk-cli"})
            assert r.status_code == 503 and r.json()["error"]["code"] == "agent_offline"


async def test_payment_timeout_and_caller_leaving_through_the_hub_release_the_lock() -> None:
    ledger, tok = await funded("0.50")
    log: list[str] = []
    agent = paid_agent(
        [[Reply("Let me look that up."), CallTool("expensive")], Reply("Found it.")],
        "Second.",
        tools=[expensive_tool(log)],
    )
    with trio.fail_after(TIMEOUT):
        async with hub_with_daemon(
            agent,
            payments=PaymentsService(ledger, pay_to="acct_paid"),
            runtime_config=hub_config(payment_timeout=0.3),
        ) as h:
            # Nobody pays: payment.error{payment_timeout} relayed, then response.error.
            async with trio_websocket.open_websocket_url(h.agent_ws_url("paid")) as ws:
                await ws.send_message(dumps({"type": "session.create"}))
                await until(ws, "session.created")
                await ws.send_message(dumps({"type": "input.text", "text": "free?"}))
                got = await until(ws, "response.error", "response.done")
                kinds = [e["type"] for e in got]
                assert "payment.required" in kinds
                assert got[-2]["type"] == "payment.error"
                assert got[-2]["code"] == "payment_timeout" and got[-2]["can_retry"] is False
                assert got[-1]["error"]["code"] == "payment_timeout"

            # The caller leaves while a top-up is awaited: the daemon's lock is released.
            async with trio_websocket.open_websocket_url(h.agent_ws_url("paid")) as ws:
                await ws.send_message(
                    dumps({"type": "session.create", "session": {"payment_token": tok.token}})
                )
                await until(ws, "session.created")
                await ws.send_message(dumps({"type": "input.text", "text": "find it"}))
                required = (await until(ws, "payment.required"))[-1]
                assert required["extra"]["action"] == "topup"
                assert ledger.open_locks() != []
            # Turns of one agent run in order, so the next turn starts after the cancelled
            # one has ended (and released its lock) on the daemon.
            async with httpx.AsyncClient() as http:
                r = await http.post(
                    h.agent_url("paid", "/v1/chat/completions"),
                    json={"messages": [{"role": "user", "content": "again"}]},
                    headers={"X-PAYMENT": tok.token},
                )
                assert r.status_code == 200
            assert log == []
            assert ledger.open_locks() == []
    assert ledger.open_locks() == []
