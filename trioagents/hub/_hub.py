"""The hub: the platform side that agents without a public URL dial into.

Routes::

    GET  /health, /agents                       who is registered, who is online
    GET  /v1/models, /agents/{name}/v1/models   callable agents as OpenAI models (also /models)
    WS   /ws                                    PortalConnect daemons (§2)
    POST /agents/{name}/chat/completions        callers (Completions, §5), also /v1/…
    POST /v1/chat/completions                   callers, agent = ``model``
    WS   /agents/{name}/uamp, /uamp?agent=      callers (UAMP, §1)
    WS   /v1/ws/agent, /v1/ws/app               Relay agents and apps (§3.2)

    GET  /.well-known/jwks.json,                the hub's response-signing keys (§10), when it
         /agents/{name}/.well-known/jwks.json   signs

Callers are served by the ordinary transports with a proxy agent per name
(:mod:`._routing`), so streaming, preflight, ``response.cancel`` and disconnect-cancels work
exactly as for local agents, and reach the daemon as ``response.cancel``.

Caller auth (§10). ``Hub(auth=AuthService(...))`` authenticates callers exactly like
``AgentServer(auth=...)``: the transports verify the credential (API keys, JWTs of trusted
issuers; audience ``{public_url}/agents/{name}`` or the bare name) and answer in their own
shape — Completions 401 + ``WWW-Authenticate``, UAMP ``session.error{unauthorized}``. On
``/agents/{name}/uamp`` and ``/uamp`` a credential presented on the handshake
(``Authorization: Bearer`` or ``?token=``) is verified first (invalid → HTTP 401, the socket is
never opened) and then stands as the default token of sessions that bring none. The verified
caller travels to the agent with each turn as ``input.text.context.caller`` = ``{sub, iss,
scopes}`` (see :mod:`._routing`); the caller's credential itself is **never** forwarded. With
``sign_responses`` the hub signs what it relays with its own per-agent keys (it attests the
text it relayed for the caller's exact request; the daemon's own signature covers the hub's
``input.text`` frame, which the caller never saw, so it is not passed on) and publishes them.

Info routes (``/health``, ``/agents``, ``/v1/models``) stay public.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from .. import uamp
from ..agent import AGENT_NAME_RE, Agent
from ..auth import AuthError, AuthService, base_url_of, denial_response
from ..config import Config
from ..protocols.completions import CompletionsError
from ..server._wsframes import prepare_scope
from ..transports._runtime import Runtime
from ..transports._wsconn import send_close, text_senders
from ..transports.completions import handle_completion, models_body, openai_error, read_body
from ..transports.uamp import serve_uamp_socket
from ._links import DaemonLink, Inbound
from ._relay import RelayHub
from ._routing import proxy_agent
from ._store import HubStore, MemoryHubStore, StoreTokenVerifier, TokenVerifier

__all__ = ["Hub", "bearer_token"]

log = logging.getLogger("trioagents.hub")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": {}}}, status_code=status
    )


def bearer_token(scope: Request | WebSocket) -> str | None:
    """The token of ``Authorization: Bearer …``, else ``?token=``."""
    auth = scope.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return scope.query_params.get("token") or None


class Hub:
    """The hub's ASGI application.

    Args:
        store: agents, tokens and allowlists (default: in memory).
        config: limits and time bounds (queue sizes, ``cleanup_timeout``, message sizes…).
        verifier: how daemon and Relay tokens are verified (default: API keys held in
            ``store``; see :class:`~trioagents.hub.JWTTokenVerifier` and
            :class:`~trioagents.hub.ChainTokenVerifier` for AOAuth JWTs).
        auth: who may call the hub's agents, and whether the hub signs what it relays
            (:class:`~trioagents.auth.AuthService`, as for ``AgentServer``); default: anyone.
        ids: id factory (``SequentialIds`` in tests).
        clock: wall clock.
        turn_timeout: how long a turn on an inbound session may take before the daemon gets
            ``response.cancel`` and the caller ``agent_timeout`` (§2: 300 s).
        turn_buffer: daemon events buffered per running turn; a caller further behind loses
            its turn rather than slowing the daemon's other sessions.
        relay_agent_timeout: Relay events without a terminal message after this fail with
            ``AGENT_TIMEOUT`` (§3.2: 120 s).
        relay_ping_interval: how often the hub pings Relay agents (§3.2: 30 s).
        relay_silence_timeout: a Relay agent silent this long is offline (§3.2: 40 s).
    """

    def __init__(
        self,
        store: HubStore | None = None,
        *,
        config: Config | None = None,
        verifier: TokenVerifier | None = None,
        auth: AuthService | None = None,
        ids: uamp.IdFactory | None = None,
        clock: uamp.Clock | None = None,
        turn_timeout: float = 300.0,
        turn_buffer: int = 1024,
        relay_agent_timeout: float = 120.0,
        relay_ping_interval: float = 30.0,
        relay_silence_timeout: float = 40.0,
    ) -> None:
        self.store: HubStore = store if store is not None else MemoryHubStore()
        self.verifier: TokenVerifier = verifier or StoreTokenVerifier(self.store)
        self.runtime = Runtime(
            config=config or Config(),
            agents={},
            ids=ids or uamp.RandomIds(),
            clock=clock or uamp.SystemClock(),
        )
        self.auth = auth
        if auth is not None:
            self.runtime.services["auth"] = auth
            auth.bind(self.runtime)
        self.turn_timeout = turn_timeout
        self.turn_buffer = turn_buffer
        self.online: dict[str, Inbound] = {}
        """Agent name → its current inbound session (PortalConnect)."""
        self._proxies: dict[str, Agent] = {}
        self._changed = trio.Event()
        self.relay = RelayHub(
            self,
            agent_timeout=relay_agent_timeout,
            ping_interval=relay_ping_interval,
            silence_timeout=relay_silence_timeout,
        )
        self.app = Starlette(
            routes=[
                Route("/health", self._health),
                Route("/agents", self._agents),
                Route("/.well-known/jwks.json", self._jwks),
                Route("/agents/{agent}/.well-known/jwks.json", self._jwks),
                WebSocketRoute("/ws", self._daemon_socket),
                Route("/v1/models", self._models),
                Route("/models", self._models),
                Route("/agents/{agent}/models", self._agent_models),
                Route("/agents/{agent}/v1/models", self._agent_models),
                Route("/v1/chat/completions", self._completions_by_model, methods=["POST"]),
                Route("/agents/{agent}/chat/completions", self._completions, methods=["POST"]),
                Route("/agents/{agent}/v1/chat/completions", self._completions, methods=["POST"]),
                WebSocketRoute("/agents/{agent}/uamp", self._uamp),
                WebSocketRoute("/uamp", self._uamp),
                WebSocketRoute("/v1/ws/agent", self.relay.agent_socket),
                WebSocketRoute("/v1/ws/app", self.relay.app_socket),
            ],
            lifespan=self._lifespan,
        )
        self.app.state.trioagents = self.runtime

    @property
    def config(self) -> Config:
        """The hub's limits and time bounds."""
        return self.runtime.config

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """ASGI entry point (a trailing ``/`` is ignored)."""
        await self.app(prepare_scope(scope, send), receive, send)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if self.auth is not None:
                await stack.enter_async_context(self.auth.lifespan(self.runtime))
            verifier_lifespan = getattr(self.verifier, "lifespan", None)
            if verifier_lifespan is not None:
                await stack.enter_async_context(verifier_lifespan())
            async with trio.open_nursery() as nursery:
                self.runtime.nursery = nursery
                try:
                    yield
                finally:
                    self.runtime.start_draining()
                    self.runtime.nursery = None
                    nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(self.config.cleanup_timeout):
            await self.store.aclose()

    # -- the online table ---------------------------------------------------------------------

    def register(self, inbound: Inbound) -> None:
        """Make ``inbound`` the agent's route; an older registration is replaced."""
        old = self.online.get(inbound.agent)
        self.online[inbound.agent] = inbound
        if old is not None and old is not inbound:
            log.info("agent %s: a newer connection replaces the older", inbound.agent)
            old.link.sessions.pop(old.session_id, None)
            old.retire(
                "agent_offline", f"agent {inbound.agent!r} was replaced by a newer connection"
            )
            old.link.reply(uamp.SessionEnd(session_id=old.session_id, reason="replaced"))
        self._notify()

    def unregister(self, inbound: Inbound) -> None:
        """Forget ``inbound`` if it is still the agent's route."""
        if self.online.get(inbound.agent) is inbound:
            del self.online[inbound.agent]
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_online(self, name: str, *, online: bool = True) -> None:
        """Wait until agent ``name`` is (or, with ``online=False``, is not) online.

        Covers PortalConnect daemons and Relay agents. Cancelling it only stops the wait.
        """
        while self.is_online(name) != online:
            await self._changed.wait()

    def is_online(self, name: str) -> bool:
        """Whether a daemon or Relay connector serves ``name`` right now."""
        return name in self.online or name in self.relay.agents

    # -- daemons --------------------------------------------------------------------------------

    async def _daemon_socket(self, ws: WebSocket) -> None:
        token = bearer_token(ws)
        identity = await self.verifier.verify(token, kinds=("agent",)) if token else None
        if identity is None:
            await ws.send_denial_response(
                _error(401, "unauthorized", "a valid agent token is required (?token=)")
            )
            return
        await ws.accept()
        send_text, send_texts = text_senders(ws)
        link = DaemonLink(self, send_text, identity, send_texts=send_texts)
        await link.serve(ws._receive)
        if link.close_code is not None:
            await send_close(
                ws._send, link.close_code, link.close_reason, self.config.cleanup_timeout
            )

    # -- callers --------------------------------------------------------------------------------

    async def _known(self, name: str) -> bool:
        if not AGENT_NAME_RE.fullmatch(name):
            return False
        return self.is_online(name) or await self.store.get_agent(name) is not None

    async def reachable(self, name: str) -> bool:
        """Whether a caller's turn for ``name`` has a route now (online or ``agent_url``)."""
        if name in self.online:
            return True
        record = await self.store.get_agent(name)
        return record is not None and bool(record.agent_url)

    def proxy(self, name: str) -> Agent:
        """The proxy agent through which callers reach ``name``."""
        agent = self._proxies.get(name)
        if agent is None:
            agent = self._proxies[name] = proxy_agent(self, name)
        return agent

    async def _completions(self, request: Request) -> Response:
        return await self._complete(request, request.path_params["agent"])

    async def _completions_by_model(self, request: Request) -> Response:
        try:
            body = await read_body(request, self.config.max_body_size)
            data = orjson.loads(body)
        except CompletionsError as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        except orjson.JSONDecodeError as exc:
            return openai_error(f"request body is not valid JSON: {exc}", code="invalid_json")
        model = data.get("model") if isinstance(data, dict) else None
        if not isinstance(model, str):
            return openai_error(
                "'model' is required: it names the agent",
                param="model",
                code="missing_required_parameter",
            )
        return await self._complete(request, model)

    async def _complete(self, request: Request, name: str) -> Response:
        if self.auth is not None:
            # Callers prove who they are before learning whether an agent exists or is online
            # (the transport verifies again, cheaply, and keeps the principal).
            try:
                await self.auth.authenticate(
                    name, bearer_token(request), base_url_of(request.scope)
                )
            except AuthError as err:
                return denial_response(err, openai=True)
        if not await self._known(name):
            return openai_error(
                f"The model {name!r} does not exist",
                status=404,
                param="model",
                code="model_not_found",
            )
        if not await self.reachable(name):
            return openai_error(f"agent {name!r} is offline", status=503, code="agent_offline")
        return await handle_completion(request, self.proxy(name))

    async def _uamp(self, ws: WebSocket) -> None:
        name = ws.path_params.get("agent") or ws.query_params.get("agent")
        if not name or not await self._known(name):
            await ws.send_denial_response(
                _error(404, "agent_not_found", f"no agent named {name!r} on this hub")
            )
            return
        # The UAMP transport verifies a handshake credential before the socket opens (§0.4:
        # 401 when possible) and makes it the default token of sessions that bring none.
        await serve_uamp_socket(ws, self.proxy(name), pinned=True)

    # -- info -----------------------------------------------------------------------------------

    async def callable_agents(self) -> list[str]:
        """Names a caller can reach now through Completions/UAMP, sorted: agents whose daemon
        is connected, and agents with an ``agent_url``. (Relay agents answer apps on
        ``/v1/ws/app`` only, so they are not models.)"""
        names = set(self.online)
        names.update(r.name for r in await self.store.list_agents() if r.agent_url)
        return sorted(names)

    async def _models(self, request: Request) -> Response:
        names = await self.callable_agents()
        return JSONResponse(models_body([self.proxy(n) for n in names], self.runtime.clock.now_s()))

    async def _agent_models(self, request: Request) -> Response:
        name = request.path_params["agent"]
        if not await self._known(name):
            return openai_error(
                f"The model {name!r} does not exist",
                status=404,
                param="model",
                code="model_not_found",
            )
        agents = [self.proxy(name)] if await self.reachable(name) else []
        return JSONResponse(models_body(agents, self.runtime.clock.now_s()))

    async def _jwks(self, request: Request) -> Response:
        name = request.path_params.get("agent")
        if name is not None and not await self._known(name):
            return _error(404, "agent_not_found", f"no agent named {name!r} on this hub")
        doc = self.auth.jwks(name) if self.auth is not None else None
        if doc is None:
            if name is None:
                return JSONResponse({"keys": []})
            return _error(404, "not_found", f"agent {name!r} does not sign its responses here")
        return JSONResponse(doc, headers={"Cache-Control": "max-age=300"})

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "online": len(self.online) + len(self.relay.agents)})

    async def _agents(self, request: Request) -> Response:
        records = {r.name: r for r in await self.store.list_agents()}
        names = sorted(set(records) | set(self.online) | set(self.relay.agents))
        return JSONResponse(
            {
                "agents": [
                    {
                        "name": n,
                        "url": f"/agents/{n}",
                        "online": self.is_online(n),
                        "via": "portal"
                        if n in self.online
                        else "relay"
                        if n in self.relay.agents
                        else ("agent_url" if records.get(n) and records[n].agent_url else None),
                    }
                    for n in names
                ]
            }
        )
