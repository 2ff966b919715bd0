"""Scopes on tools (``@tool(scopes=…)``) and endpoints (``@http`` / ``@websocket(scopes=…)``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import trio
import trio_websocket
from starlette.requests import Request
from starlette.websockets import WebSocket

from trioagents import Agent, BuiltinModel, Config, Skill, http, tool, uamp, websocket
from trioagents.auth import AuthService, SigningKey, StaticKeys, jwks_document
from trioagents.server import AgentServer
from trioagents.testing import TestServer, open_test_server

ISS = "https://issuer.example"
CLOCK_START = uamp.FixedClock().now_s()
ISSUER_KEY = SigningKey.generate("EC")


def token(scope: str | None = None, *, aud: str = "bot") -> str:
    """A JWT of the trusted issuer for ``aud`` granting ``scope`` (space-separated)."""
    claims: dict[str, Any] = {
        "iss": ISS,
        "sub": "alice",
        "aud": aud,
        "iat": CLOCK_START,
        "exp": CLOCK_START + 3600,
    }
    if scope is not None:
        claims["scope"] = scope
    return ISSUER_KEY.sign(claims)


class Billing(Skill):
    """A scoped tool, an unscoped one, and scoped endpoints."""

    def __init__(self) -> None:
        self.charged: list[int] = []

    @tool(scopes=("billing:write",))
    def charge(self, amount: int) -> str:
        """Charge the customer.

        Args:
            amount: cents.
        """
        self.charged.append(amount)
        return f"charged {amount}"

    @tool
    def balance(self) -> str:
        """Read the balance."""
        return "42"

    @http("/invoices", methods=["GET", "POST"], scopes=("billing:read",))
    async def invoices(self, request: Request) -> Any:
        return {"invoices": [], "sub": request.state.principal.sub}

    @http("/open")
    async def open_endpoint(self, request: Request) -> Any:
        return {"open": True}

    @websocket("/feed", scopes=("billing:read",))
    async def feed(self, ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(f"hello {ws.state.principal.sub}")
        await ws.close()


@asynccontextmanager
async def serve(
    *, with_auth: bool = True
) -> AsyncIterator[tuple[TestServer, BuiltinModel, Billing]]:
    model = BuiltinModel()
    billing = Billing()
    agent = Agent("bot", model=model, skills=[billing])
    auth = AuthService(
        trusted_issuers=[ISS],
        keys=StaticKeys({ISS: jwks_document([ISSUER_KEY])}),
    )
    server = AgentServer(
        agent,
        config=Config(host="127.0.0.1", port=0, gc_freeze=False),
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        auth=auth if with_auth else None,
    )
    async with open_test_server(server) as srv:
        yield srv, model, billing


def _bearer(tok: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"} if tok else {}


async def _complete(srv: TestServer, text: str, tok: str | None) -> httpx.Response:
    body = orjson.dumps({"model": "bot", "messages": [{"role": "user", "content": text}]})
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{srv.url}/v1/chat/completions",
            content=body,
            headers={"Content-Type": "application/json", **_bearer(tok)},
        )


def _tool_names(model: BuiltinModel) -> list[str]:
    return sorted(t["function"]["name"] for t in model.calls[-1].tools)


async def test_scoped_tool_offered_only_with_scope() -> None:
    with trio.fail_after(10):
        async with serve() as (srv, model, _):
            r = await _complete(srv, "hi", None)  # anonymous
            assert r.status_code == 200
            assert _tool_names(model) == ["balance"]
            r = await _complete(srv, "hi", token("billing:read"))
            assert r.status_code == 200
            assert _tool_names(model) == ["balance"]
            r = await _complete(srv, "hi", token("billing:read billing:write"))
            assert r.status_code == 200
            assert _tool_names(model) == ["balance", "charge"]


async def test_scoped_tool_not_offered_without_auth_service() -> None:
    with trio.fail_after(10):
        async with serve(with_auth=False) as (srv, model, _):
            r = await _complete(srv, "hi", None)
            assert r.status_code == 200
            assert _tool_names(model) == ["balance"]


async def test_forced_call_of_scoped_tool() -> None:
    with trio.fail_after(10):
        async with serve() as (srv, model, billing):
            # Without the scope: the call fails as a tool result, the response goes on.
            r = await _complete(srv, '/call charge {"amount": 5}', token("billing:read"))
            assert r.status_code == 200
            content = r.json()["choices"][0]["message"]["content"]
            assert content == "charge returned: error: insufficient scope"
            assert billing.charged == []
            last = model.calls[-1].messages[-1]
            assert (last.role, last.text) == ("tool", "error: insufficient scope")
            # Anonymous: same.
            r = await _complete(srv, '/call charge {"amount": 6}', None)
            assert r.json()["choices"][0]["message"]["content"] == (
                "charge returned: error: insufficient scope"
            )
            # An unscoped tool still runs for anyone.
            r = await _complete(srv, "/call balance {}", None)
            assert r.json()["choices"][0]["message"]["content"] == "balance returned: 42"
            # With the scope: it runs.
            r = await _complete(srv, '/call charge {"amount": 7}', token("billing:write"))
            assert r.json()["choices"][0]["message"]["content"] == "charge returned: charged 7"
            assert billing.charged == [7]


async def test_scoped_http_endpoint() -> None:
    with trio.fail_after(10):
        async with serve() as (srv, _, _), httpx.AsyncClient() as client:
            url = srv.agent_url("bot", "/invoices")
            missing = await client.get(url)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"].startswith("Bearer")
            assert missing.json()["error"]["details"]["reason"] == "missing_token"
            bad = await client.get(url, headers=_bearer("not-a-jwt"))
            assert bad.status_code == 401
            assert 'error="invalid_token"' in bad.headers["www-authenticate"]
            wrong_aud = await client.get(url, headers=_bearer(token("billing:read", aud="x")))
            assert wrong_aud.status_code == 401
            short = await client.get(url, headers=_bearer(token("billing:write")))
            assert short.status_code == 403
            assert short.json()["error"]["code"] == "forbidden"
            assert short.json()["error"]["details"]["reason"] == "insufficient_scope"
            assert 'error="insufficient_scope"' in short.headers["www-authenticate"]
            ok = await client.get(url, headers=_bearer(token("billing:read")))
            assert ok.status_code == 200
            assert ok.json() == {"invoices": [], "sub": "alice"}
            posted = await client.post(url, params={"token": token("billing:read")})
            assert posted.status_code == 200  # ?token= works too
            opened = await client.get(srv.agent_url("bot", "/open"))
            assert (opened.status_code, opened.json()) == (200, {"open": True})


async def test_scoped_endpoint_without_auth_service_refuses() -> None:
    with trio.fail_after(10):
        async with serve(with_auth=False) as (srv, _, _), httpx.AsyncClient() as client:
            r = await client.get(
                srv.agent_url("bot", "/invoices"), headers=_bearer(token("billing:read"))
            )
            assert r.status_code == 401
            opened = await client.get(srv.agent_url("bot", "/open"))
            assert opened.status_code == 200


async def _raw_upgrade(srv: TestServer, path: str, tok: str | None) -> bytes:
    """Send a raw WebSocket upgrade and return the refusal (status line to JSON body)."""
    host, port = srv.url.removeprefix("http://").split(":")
    auth = f"Authorization: Bearer {tok}\r\n".encode() if tok else b""
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n" + auth + b"\r\n"
        )
        data = b""
        while not data.rstrip().endswith(b"}"):
            chunk = await stream.receive_some(4096)
            assert chunk, data
            data += chunk
    return data


async def test_scoped_websocket_endpoint() -> None:
    with trio.fail_after(10):
        async with serve() as (srv, _, _):
            missing = await _raw_upgrade(srv, "/agents/bot/feed", None)
            assert missing.startswith(b"HTTP/1.1 401")
            assert b'"missing_token"' in missing
            short = await _raw_upgrade(srv, "/agents/bot/feed", token("billing:write"))
            assert short.startswith(b"HTTP/1.1 403")
            assert b'"insufficient_scope"' in short
            url = srv.agent_ws_url("bot", "/feed") + "?token=" + token("billing:read")
            async with trio_websocket.open_websocket_url(url) as ws:
                assert await ws.get_message() == "hello alice"
