"""Auth and signed responses end to end (PROTOCOLS.md §10) over Completions and UAMP."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
import trio
import trio_websocket
from flow_helpers import (
    AGENT_KEY,
    API_KEY,
    CLOCK_START,
    CONFIG,
    dumps,
    serve_auth as serve,
    sse_parts,
    token,
)

from trioagents import Agent, BuiltinModel, uamp
from trioagents.auth import (
    AuthError,
    AuthService,
    SigningKey,
    verify_response_signature,
)
from trioagents.server import AgentServer
from trioagents.testing import open_test_server

BODY = orjson.dumps({"model": "bot", "messages": [{"role": "user", "content": "hi there"}]})


async def test_published_keys() -> None:
    with trio.fail_after(10):
        async with serve() as srv, httpx.AsyncClient() as http:
            union = (await http.get(f"{srv.url}/.well-known/jwks.json")).json()
            assert union == {"keys": [AGENT_KEY.public_jwk()]}
            own = (await http.get(srv.agent_url("bot", "/.well-known/jwks.json"))).json()
            assert own == union and own["keys"][0]["kid"] == AGENT_KEY.kid
            oidc = (
                await http.get(srv.agent_url("bot", "/.well-known/openid-configuration"))
            ).json()
            assert oidc["issuer"] == srv.agent_url("bot")
            assert oidc["jwks_uri"] == srv.agent_url("bot", "/.well-known/jwks.json")
            assert oidc["id_token_signing_alg_values_supported"] == ["ES256"]
            plain = await http.get(srv.agent_url("plain", "/.well-known/jwks.json"))
            assert plain.status_code == 404
            missing = await http.get(srv.agent_url("nobody", "/.well-known/jwks.json"))
            assert missing.json()["error"]["code"] == "agent_not_found"


@pytest.mark.parametrize(
    ("credential", "reason"),
    [
        (None, "missing_token"),
        ("not-a-jwt", "invalid_token"),
        (token(aud="someone-else"), "invalid_audience"),
        (token(exp=CLOCK_START - 10), "token_expired"),
        (token(key=SigningKey.generate("EC")), "unknown_key"),  # forged: not a published key
        (token(iss="https://evil.example"), "invalid_issuer"),
    ],
)
async def test_completions_refuses_bad_credentials(credential: str | None, reason: str) -> None:
    with trio.fail_after(10):
        async with serve(required=True) as srv, httpx.AsyncClient() as http:
            headers = {"Authorization": f"Bearer {credential}"} if credential else {}
            for url in (
                srv.agent_url("bot", "/v1/chat/completions"),
                f"{srv.url}/v1/chat/completions",
            ):
                r = await http.post(url, content=BODY, headers=headers)
                assert r.status_code == 401
                assert r.headers["www-authenticate"].startswith("Bearer")
                if credential:
                    assert 'error="invalid_token"' in r.headers["www-authenticate"]
                err = r.json()["error"]
                assert err["code"] == reason and err["param"] is None
                assert err["type"] == "invalid_request_error"


async def test_completions_anonymous_allowed_unless_required_but_bad_token_refused() -> None:
    with trio.fail_after(10):
        async with serve() as srv, httpx.AsyncClient() as http:
            url = srv.agent_url("plain", "/v1/chat/completions")
            ok = await http.post(url, content=BODY)
            assert ok.status_code == 200
            assert "x-response-signature" not in ok.headers  # "plain" does not sign
            bad = await http.post(url, content=BODY, headers={"Authorization": "Bearer nope"})
            assert bad.status_code == 401
            for creds in ({"Authorization": f"Bearer {API_KEY}"}, None):
                r = await http.post(
                    url,
                    content=BODY,
                    headers=creds,
                    params=None if creds else {"token": token(aud="plain")},
                )
                assert r.status_code == 200
                assert r.json()["choices"][0]["message"]["content"] == "You said: hi there"


async def test_completions_signed_json_and_sse_verify_against_published_jwks() -> None:
    with trio.fail_after(10):
        async with serve(required=True) as srv, httpx.AsyncClient() as http:
            jwks = (await http.get(f"{srv.url}/.well-known/jwks.json")).json()
            auth = {"Authorization": f"Bearer {token()}"}
            url = srv.agent_url("bot", "/v1/chat/completions")
            r = await http.post(url, content=BODY, headers=auth)
            assert r.status_code == 200
            text = r.json()["choices"][0]["message"]["content"]
            assert text == "You said: hi there"
            claims = verify_response_signature(
                r.headers["x-response-signature"],
                jwks,
                text,
                BODY,
                issuer=srv.agent_url("bot"),
                audience="alice",
                now=CLOCK_START,
            )
            assert claims["exp"] == claims["iat"] + 300 and claims["response_id"]
            with pytest.raises(AuthError) as info:
                verify_response_signature(
                    r.headers["x-response-signature"], jwks, text + "!", BODY, now=CLOCK_START
                )
            assert info.value.reason == "hash_mismatch"

            stream_body = orjson.dumps(
                {"model": "bot", "stream": True, "messages": [{"role": "user", "content": "yo"}]}
            )
            s = await http.post(url, content=stream_body, headers=auth)
            content, items, signature = sse_parts(s.text)
            assert content == "You said: yo" and items[-1] == "[DONE]"
            assert s.text.index("[DONE]") < s.text.index("event: response_signature")
            assert signature is not None
            verify_response_signature(
                signature, jwks, content, stream_body, audience="alice", now=CLOCK_START
            )
            with pytest.raises(AuthError):  # the request bytes are signed too
                verify_response_signature(signature, jwks, content, BODY, now=CLOCK_START)


async def recv(ws: trio_websocket.WebSocketConnection, *types: str) -> dict[str, Any]:
    """The next event of one of ``types`` (others skipped)."""
    while True:
        ev = orjson.loads(await ws.get_message())
        if ev["type"] in types:
            return ev  # type: ignore[no-any-return]


async def test_uamp_session_tokens_refresh_expiry_and_signature() -> None:
    clock = uamp.FixedClock()
    with trio.fail_after(15):
        async with (
            serve(required=True, clock=clock) as srv,
            httpx.AsyncClient() as http,
            trio_websocket.open_websocket_url(srv.agent_ws_url("bot")) as ws,
        ):
            jwks = (await http.get(srv.agent_url("bot", "/.well-known/jwks.json"))).json()
            # No token, then a forged one: session.error, no session.
            await ws.send_message(dumps({"type": "session.create", "event_id": "c1"}))
            err = await recv(ws, "session.error", "session.created")
            assert err["type"] == "session.error" and err["reply_to"] == "c1"
            assert err["error"]["code"] == "unauthorized"
            assert err["error"]["details"]["reason"] == "missing_token"
            forged = token(key=SigningKey.generate("EC"))
            await ws.send_message(dumps({"type": "session.create", "token": forged}))
            err = await recv(ws, "session.error", "session.created")
            assert err["error"]["details"]["reason"] == "unknown_key"
            await ws.send_message(dumps({"type": "input.text", "text": "x", "event_id": "i0"}))
            assert (await recv(ws, "error"))["error"]["code"] == "session_required"

            # A token inside `session` (hub style), expiring 100 s after the fixed clock.
            await ws.send_message(
                dumps(
                    {"type": "session.create", "session": {"token": token(exp=CLOCK_START + 100)}}
                )
            )
            created = await recv(ws, "session.created", "session.error")
            assert created["type"] == "session.created"
            assert "token" not in created["session"]["config"]
            frame = dumps({"type": "input.text", "text": "sign me", "event_id": "i1"})
            await ws.send_message(frame)
            done = await recv(ws, "response.done")
            text = done["response"]["output"][0]["text"]
            assert text == "You said: sign me"
            claims = verify_response_signature(
                done["signature"], jwks, text, frame.encode(), audience="alice", now=CLOCK_START
            )
            assert claims["response_id"] == done["response_id"]

            # A bad refresh is refused and the old token kept.
            await ws.send_message(
                dumps({"type": "session.update", "token": "bad", "event_id": "u1"})
            )
            err = await recv(ws, "session.error")
            assert err["reply_to"] == "u1" and err["error"]["code"] == "unauthorized"
            await ws.send_message(dumps({"type": "input.text", "text": "still", "event_id": "i2"}))
            done = await recv(ws, "response.done", "session.error")
            assert done["type"] == "response.done"

            # The token expires: new inputs are refused until a refresh.
            clock.ms += 200_000
            await ws.send_message(dumps({"type": "input.text", "text": "late", "event_id": "i3"}))
            err = await recv(ws, "session.error", "response.created")
            assert err["type"] == "session.error" and err["reply_to"] == "i3"
            assert err["error"] == {
                "code": "unauthorized",
                "message": err["error"]["message"],
                "details": {"reason": "token_expired"},
            }
            fresh = token(sub="alice2", exp=clock.now_s() + 3600)
            await ws.send_message(dumps({"type": "session.update", "token": fresh}))
            frame = dumps({"type": "input.text", "text": "again", "event_id": "i4"})
            await ws.send_message(frame)
            done = await recv(ws, "response.done", "session.error")
            assert done["type"] == "response.done"
            verify_response_signature(
                done["signature"],
                jwks,
                "You said: again",
                frame.encode(),
                audience="alice2",
                now=clock.now_s(),
            )


async def test_uamp_unsigned_agent_and_api_key() -> None:
    with trio.fail_after(10):
        async with (
            serve(required=True) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("plain")) as ws,
        ):
            await ws.send_message(dumps({"type": "session.create", "token": API_KEY}))
            assert (await recv(ws, "session.created", "session.error"))["type"] == "session.created"
            await ws.send_message(dumps({"type": "input.text", "text": "hi"}))
            done = await recv(ws, "response.done")
            assert "signature" not in done or done["signature"] is None


async def test_self_issued_token_verified_through_the_jwks_cache_over_http() -> None:
    """No static keys: the service's JWKSCache fetches the issuer's keys from the server itself
    (the signing agent "bot" issues a token for "plain")."""
    auth = AuthService(
        required=True,
        self_issued_allow=["http://127.0.0.1:*/agents/bot"],
        signing_keys={"bot": AGENT_KEY},
    )
    server = AgentServer(
        [Agent("bot", model=BuiltinModel()), Agent("plain", model=BuiltinModel())],
        config=CONFIG,
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        auth=auth,
    )
    with trio.fail_after(10):
        async with open_test_server(server) as srv, httpx.AsyncClient() as http:
            url = srv.agent_url("plain", "/v1/chat/completions")
            good = token(iss=srv.agent_url("bot"), aud="plain", key=AGENT_KEY)
            r = await http.post(url, content=BODY, headers={"Authorization": f"Bearer {good}"})
            assert r.status_code == 200
            evil = token(iss="http://127.0.0.1:1/agents/other", aud="plain", key=AGENT_KEY)
            r = await http.post(url, content=BODY, headers={"Authorization": f"Bearer {evil}"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_issuer"
