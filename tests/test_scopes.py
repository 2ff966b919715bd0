"""Scopes on tools (``@tool(scopes=…)``) and endpoints (``@http`` / ``@websocket(scopes=…)``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import trio
import trio_websocket
from flow_helpers import CONFIG, ISS, ISSUER_KEY, bearer, token
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from test_uamp import drop_closed_client

from trioagents import Agent, BuiltinModel, Skill, http, tool, uamp, websocket
from trioagents.auth import AuthService, StaticKeys, jwks_document
from trioagents.server import AgentServer
from trioagents.testing import TestServer, open_test_server
from trioagents.transports import CompletionsTransport, RealtimeTransport, UampTransport


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
        config=CONFIG,
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        auth=auth if with_auth else None,
    )
    async with open_test_server(server) as srv:
        yield srv, model, billing


async def _complete(srv: TestServer, text: str, tok: str | None) -> httpx.Response:
    body = orjson.dumps({"model": "bot", "messages": [{"role": "user", "content": text}]})
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{srv.url}/v1/chat/completions",
            content=body,
            headers={"Content-Type": "application/json", **bearer(tok)},
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
            bad = await client.get(url, headers=bearer("not-a-jwt"))
            assert bad.status_code == 401
            assert 'error="invalid_token"' in bad.headers["www-authenticate"]
            wrong_aud = await client.get(url, headers=bearer(token("billing:read", aud="x")))
            assert wrong_aud.status_code == 401
            short = await client.get(url, headers=bearer(token("billing:write")))
            assert short.status_code == 403
            assert short.json()["error"]["code"] == "forbidden"
            assert short.json()["error"]["details"]["reason"] == "insufficient_scope"
            assert 'error="insufficient_scope"' in short.headers["www-authenticate"]
            ok = await client.get(url, headers=bearer(token("billing:read")))
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
                srv.agent_url("bot", "/invoices"), headers=bearer(token("billing:read"))
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
                # The handler closes first: close the client's TCP stream ourselves, or
                # trio-websocket leaves it to the garbage collector (see test_uamp.py).
                await drop_closed_client(ws)


# -- the same scopes whichever route reaches the agent ---------------------------------------

CHAT = ("chat",)


class ScopedCompletions(CompletionsTransport):
    """Chat Completions demanding the ``chat`` scope."""

    @http("/chat/completions", methods=["POST"], scopes=CHAT)
    @http("/v1/chat/completions", methods=["POST"], scopes=CHAT)
    async def chat_completions(self, request: Request) -> Response:
        return await super().chat_completions(request)


class ScopedUamp(UampTransport):
    """UAMP demanding the ``chat`` scope."""

    @websocket("/uamp", scopes=CHAT)
    async def uamp_socket(self, ws: WebSocket) -> None:
        await super().uamp_socket(ws)


class ScopedRealtime(RealtimeTransport):
    """Realtime demanding the ``chat`` scope on ``/v1/realtime``."""

    @websocket("/v1/realtime", scopes=CHAT)
    async def realtime_v1(self, ws: WebSocket) -> None:
        await super().realtime_v1(ws)


@asynccontextmanager
async def serve_scoped(*, single: bool = False) -> AsyncIterator[tuple[TestServer, BuiltinModel]]:
    """``bot``: Billing + transports demanding ``chat``; ``free`` (unless ``single``): none."""
    model = BuiltinModel()
    bot = Agent(
        "bot",
        model=model,
        skills=[Billing(), ScopedCompletions(), ScopedUamp(), ScopedRealtime()],
    )
    agents = [bot] if single else [bot, Agent("free")]
    server = AgentServer(
        agents,
        config=CONFIG,
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        auth=AuthService(
            trusted_issuers=[ISS], keys=StaticKeys({ISS: jwks_document([ISSUER_KEY])})
        ),
    )
    async with open_test_server(server) as srv:
        yield srv, model


async def _post_completion(
    srv: TestServer, path: str, tok: str | None, model: str = "bot"
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient() as client:
        return await client.post(srv.url + path, json=body, headers=bearer(tok))


async def test_server_level_completions_enforces_endpoint_scopes() -> None:
    with trio.fail_after(10):
        async with serve_scoped() as (srv, _):
            for path in (
                "/v1/chat/completions",
                "/agents/bot/v1/chat/completions",
                "/agents/bot/chat/completions",
            ):
                # OpenAI routes keep the OpenAI error shape (§0.4).
                r = await _post_completion(srv, path, None)
                assert r.status_code == 401, path
                assert r.headers["www-authenticate"] == "Bearer"
                assert r.json()["error"]["code"] == "missing_token"
                assert r.json()["error"]["type"] == "invalid_request_error"
                r = await _post_completion(srv, path, "junk")
                assert r.status_code == 401
                assert r.json()["error"]["code"] == "invalid_token"
                r = await _post_completion(srv, path, token("billing:write"))
                assert r.status_code == 403, path
                assert r.json()["error"] == {
                    "message": r.json()["error"]["message"],
                    "type": "permission_error",
                    "param": None,
                    "code": "insufficient_scope",
                }
                assert 'scope="chat"' in r.headers["www-authenticate"]
                r = await _post_completion(srv, path, token("chat"))
                assert r.status_code == 200, (path, r.text)
                assert r.json()["choices"][0]["message"]["content"] == "You said: hi"
            # Another agent on the same server route demands nothing.
            r = await _post_completion(srv, "/v1/chat/completions", None, model="free")
            assert r.status_code == 200


async def test_single_agent_root_routes_enforce_endpoint_scopes() -> None:
    with trio.fail_after(10):
        async with serve_scoped(single=True) as (srv, _):
            for path in ("/v1/chat/completions", "/chat/completions"):
                r = await _post_completion(srv, path, None, model="anything")
                assert r.status_code == 401, path
                r = await _post_completion(srv, path, token("chat"), model="anything")
                assert r.status_code == 200, path
            refused = await _raw_upgrade(srv, "/uamp", None)
            assert refused.startswith(b"HTTP/1.1 401")
            refused = await _raw_upgrade(srv, "/v1/realtime", token("billing:read"))
            assert refused.startswith(b"HTTP/1.1 403")


async def test_server_level_websockets_enforce_endpoint_scopes() -> None:
    with trio.fail_after(10):
        async with serve_scoped() as (srv, _):
            for path in (
                "/uamp?agent=bot",
                "/agents/bot/uamp",
                "/v1/realtime?model=bot",
                "/agents/bot/v1/realtime",
            ):
                missing = await _raw_upgrade(srv, path, None)
                assert missing.startswith(b"HTTP/1.1 401"), (path, missing)
                assert b'"missing_token"' in missing
                short = await _raw_upgrade(srv, path, token("billing:read"))
                assert short.startswith(b"HTTP/1.1 403"), (path, short)
                assert b'"insufficient_scope"' in short
                sep = "&" if "?" in path else "?"
                url = srv.ws_url + path + sep + "token=" + token("chat")
                async with trio_websocket.open_websocket_url(url) as ws:
                    await ws.send_message('{"type":"ping"}')
                    assert await ws.get_message()  # accepted: something comes back
            # Unknown agents are still the route's own refusal, not an auth failure.
            unknown = await _raw_upgrade(srv, "/v1/realtime?model=nope", None)
            assert unknown.startswith(b"HTTP/1.1 404")
            # An unscoped agent's server-level sockets need nothing ...
            async with trio_websocket.open_websocket_url(
                srv.ws_url + "/v1/realtime?model=free"
            ) as ws:
                assert orjson.loads(await ws.get_message())["type"] == "session.created"
            # ... but a socket opened for it cannot reach the scoped agent in-band.
            async with trio_websocket.open_websocket_url(srv.ws_url + "/uamp?agent=free") as ws:
                await ws.send_message('{"type":"session.create","agent":"bot"}')
                refused = orjson.loads(await ws.get_message())
                assert refused["type"] == "session.error"
                assert refused["error"]["code"] == "agent_not_found"


async def _uamp_turn(url: str, tok: str) -> None:
    async with trio_websocket.open_websocket_url(url + "token=" + tok) as ws:
        create = {"type": "session.create", "token": tok}
        await ws.send_message(orjson.dumps(create).decode())
        await ws.send_message('{"type":"input.text","text":"hi"}')
        while orjson.loads(await ws.get_message())["type"] != "response.done":
            pass


async def _realtime_turn(url: str, tok: str) -> None:
    async with trio_websocket.open_websocket_url(url + "token=" + tok) as ws:
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "hi"}],
        }
        await ws.send_message(
            orjson.dumps({"type": "conversation.item.create", "item": item}).decode()
        )
        await ws.send_message('{"type":"response.create"}')
        while orjson.loads(await ws.get_message())["type"] != "response.done":
            pass


async def test_tool_scopes_apply_identically_on_every_route() -> None:
    with trio.fail_after(15):
        async with serve_scoped() as (srv, model):
            ws = srv.ws_url
            routes = {
                "completions server": lambda t: _post_completion(srv, "/v1/chat/completions", t),
                "completions agent": lambda t: _post_completion(
                    srv, "/agents/bot/v1/chat/completions", t
                ),
                "uamp server": lambda t: _uamp_turn(ws + "/uamp?agent=bot&", t),
                "uamp agent": lambda t: _uamp_turn(ws + "/agents/bot/uamp?", t),
                "realtime server": lambda t: _realtime_turn(ws + "/v1/realtime?model=bot&", t),
                "realtime agent": lambda t: _realtime_turn(ws + "/agents/bot/v1/realtime?", t),
            }
            offered: dict[str, list[list[str]]] = {}
            for name, turn in routes.items():
                for scope in ("chat", "chat billing:write"):
                    before = len(model.calls)
                    await turn(token(scope))
                    assert len(model.calls) == before + 1, name
                    offered.setdefault(name, []).append(_tool_names(model))
            assert offered == {name: [["balance"], ["balance", "charge"]] for name in routes}


async def test_unpinned_uamp_session_for_a_scoped_agent_is_refused() -> None:
    with trio.fail_after(10):
        async with (
            serve_scoped() as (srv, _),
            trio_websocket.open_websocket_url(srv.ws_url + "/uamp") as ws,
        ):
            await ws.send_message('{"type":"session.create","agent":"bot"}')
            reply = orjson.loads(await ws.get_message())
            assert reply["type"] == "session.error"
