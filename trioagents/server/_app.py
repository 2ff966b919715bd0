"""The ASGI application: agents under ``/agents/{name}/…``, server routes, lifespan.

Routes come from each agent's endpoint registry (built-in transports and users' ``@http`` /
``@websocket`` alike): one Starlette route per distinct path, ``/agents/{agent}{path}``, that
dispatches on the agent name. In single-agent mode the default agent's routes are also served
at the root. The lifespan owns the app-services nursery for the whole life of the server.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import orjson
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from .. import uamp
from ..agent import Agent
from ..auth import (
    AuthError,
    AuthService,
    Principal,
    base_url_of,
    bearer_token,
    denial_response,
    openid_configuration,
    require_scopes,
)
from ..config import Config
from ..connections import ConnectionAgent, ConnectionHost
from ..connections._web import web_routes
from ..payments import PaymentBackend, PaymentsService
from ..protocols.completions import CompletionsError
from ..transports import DEFAULT_TRANSPORTS, Runtime
from ..transports.completions import models_body, openai_error, read_body
from ..transports.uamp import serve_uamp_socket
from ._wsframes import prepare_scope

__all__ = ["AgentServer", "error_response"]

log = logging.getLogger("trioagents.server")

# Per-agent paths of the OpenAI-compatible routes: their errors keep the OpenAI shape (§0.4).
_OPENAI_PATHS = frozenset({"/chat/completions", "/v1/chat/completions", "/models", "/v1/models"})


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    """The generic HTTP error shape: ``{"error": {code, message, details}}``."""
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": details or {}}}, status_code=status
    )


def _as_response(value: Any) -> Response:
    if isinstance(value, Response):
        return value
    if isinstance(value, str):
        return PlainTextResponse(value)
    return Response(orjson.dumps(value), media_type="application/json")


class AgentServer:
    """The ASGI app serving one or more agents.

    Args:
        agents: the agents (names must be unique).
        config: limits, time bounds and addresses.
        ids: id factory (inject :class:`~trioagents.uamp.SequentialIds` for deterministic tests).
        clock: wall clock (inject :class:`~trioagents.uamp.FixedClock` in tests).
        transports: transport skill classes added to every agent that lacks them.
        connection_agents: :class:`~trioagents.connections.ConnectionAgent` classes served at
            ``WS /agents/{agent}/{instance}`` (PROTOCOLS.md §4); their state stores and
            instances live as long as the server.
        payments: charge paid agents (``Agent(pricing=…)``, PROTOCOLS.md §9) with this
            :class:`~trioagents.payments.PaymentsService` or payment backend; it is
            ``runtime.services["payments"]``. Without it every agent is free.
        auth: authenticate callers and sign responses (PROTOCOLS.md §10) with this
            :class:`~trioagents.auth.AuthService`; it is ``runtime.services["auth"]`` and adds
            ``/.well-known/jwks.json`` and each agent's ``/.well-known/jwks.json`` and
            ``/.well-known/openid-configuration``. Without it every caller is anonymous.

    Raises:
        ValueError: two agents share a name, or ``config.default_agent`` names no agent.
    """

    def __init__(
        self,
        agents: Agent | Iterable[Agent],
        *,
        config: Config | None = None,
        ids: uamp.IdFactory | None = None,
        clock: uamp.Clock | None = None,
        transports: Iterable[type] = DEFAULT_TRANSPORTS,
        connection_agents: Iterable[type[ConnectionAgent]] = (),
        payments: PaymentsService | PaymentBackend | None = None,
        auth: AuthService | None = None,
    ) -> None:
        config = config or Config()
        self._transports = tuple(transports)
        agent_list = [agents] if isinstance(agents, Agent) else list(agents)
        by_name: dict[str, Agent] = {}
        for agent in agent_list:
            if agent.name in by_name:
                raise ValueError(f"two agents are named {agent.name!r}")
            by_name[agent.name] = agent
            for transport in transports:
                if not agent.has_skill(transport):
                    agent.add_skill(transport())
        if config.default_agent is not None and config.default_agent not in by_name:
            raise ValueError(f"default_agent {config.default_agent!r} is not one of the agents")
        self.runtime = Runtime(
            config=config,
            agents=by_name,
            ids=ids or uamp.RandomIds(),
            clock=clock or uamp.SystemClock(),
        )
        if payments is not None:
            service = (
                payments if isinstance(payments, PaymentsService) else PaymentsService(payments)
            )
            self.runtime.services["payments"] = service
        self._auth = auth
        if auth is not None:
            self.runtime.services["auth"] = auth
            auth.bind(self.runtime)
        self.connections = ConnectionHost(self.runtime, connection_agents)
        """The connection agents (§4): their instances, stores and routes."""
        self.app = Starlette(
            routes=self._routes(),
            lifespan=self._lifespan,
            exception_handlers={HTTPException: self._http_error, Exception: self._server_error},
        )
        self.app.state.trioagents = self.runtime

    @property
    def agents(self) -> dict[str, Agent]:
        """The served agents by name."""
        return self.runtime.agents

    @property
    def config(self) -> Config:
        """The server's configuration."""
        return self.runtime.config

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """ASGI entry point. A trailing ``/`` is ignored (§0.1)."""
        await self.app(prepare_scope(scope, send), receive, send)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            self.runtime.nursery = nursery
            # Transport services (stores, cleanup loops): ``lifespan(runtime)`` on the transport
            # class returns an async context manager that lives as long as the server.
            for transport in self._transports:
                hook = getattr(transport, "lifespan", None)
                if hook is not None:
                    await stack.enter_async_context(hook(self.runtime))
            if self._auth is not None:
                await stack.enter_async_context(self._auth.lifespan(self.runtime))
            await stack.enter_async_context(self.connections.lifespan())
            try:
                yield
            finally:
                self.runtime.start_draining()
                self.runtime.nursery = None
                nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(self.config.cleanup_timeout):
            for agent in self.agents.values():
                await agent.aclose()

    # -- routes ---------------------------------------------------------------------------------

    def _routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route("/health", self._health),
            Route("/ready", self._ready),
            Route("/metrics", self._metrics),
            Route("/agents", self._list_agents),
            Route("/v1/models", self._models),
            Route("/v1/chat/completions", self._chat_completions, methods=["POST"]),
            WebSocketRoute("/uamp", self._uamp),
        ]
        if self._auth is not None:  # published keys (§10)
            routes += [
                Route("/.well-known/jwks.json", self._jwks),
                Route("/agents/{agent}/.well-known/jwks.json", self._jwks),
                Route("/agents/{agent}/.well-known/openid-configuration", self._openid),
            ]
            if self.runtime.default_agent is not None:
                routes.append(Route("/.well-known/openid-configuration", self._openid))
        # Server-level routes a transport contributes (e.g. /v1/realtime?model=NAME, the root
        # agent card, /agents/{agent}/{instance}): ``server_routes(runtime)`` on the transport
        # class. They go last, so a pattern like /agents/{agent}/{instance} never shadows an
        # agent's own endpoints, and their paths are not reused for single-agent root routes.
        extra: list[BaseRoute] = []
        for transport in self._transports:
            contribute = getattr(transport, "server_routes", None)
            if contribute is not None:
                extra.extend(contribute(self.runtime))
        http: dict[str, dict[tuple[str, str], Any]] = {}
        ws: dict[str, dict[str, Any]] = {}
        # Scopes an endpoint demands (``@http(scopes=…)``), keyed like the handler tables.
        self._http_scopes: dict[str, dict[tuple[str, str], tuple[str, ...]]] = {}
        self._ws_scopes: dict[str, dict[str, tuple[str, ...]]] = {}
        for agent in self.agents.values():
            for ep in agent.http_endpoints:
                table = http.setdefault(ep.path, {})
                for method in ep.methods:
                    table[(agent.name, method)] = ep.handler
                    self._http_scopes.setdefault(ep.path, {})[(agent.name, method)] = ep.scopes
            for wep in agent.websocket_endpoints:
                ws.setdefault(wep.path, {})[agent.name] = wep.handler
                self._ws_scopes.setdefault(wep.path, {})[agent.name] = wep.scopes
        self._http = http
        self._ws = ws
        for path, table in http.items():
            methods = sorted({m for _, m in table})
            routes.append(
                Route("/agents/{agent}" + path, self._dispatch_http(path, None), methods=methods)
            )
        for path in ws:
            routes.append(WebSocketRoute("/agents/{agent}" + path, self._dispatch_ws(path, None)))
        default = self.runtime.default_agent
        if default is not None:
            taken = {getattr(r, "path", None) for r in (*routes, *extra)}
            for path, table in http.items():
                methods = sorted({m for (name, m) in table if name == default.name})
                if methods and path not in taken:
                    routes.append(
                        Route(path, self._dispatch_http(path, default.name), methods=methods)
                    )
            for path, wtable in ws.items():
                if default.name in wtable and path not in taken:
                    routes.append(WebSocketRoute(path, self._dispatch_ws(path, default.name)))
        routes.extend(self._guard_server_route(route) for route in extra)
        # Connection agents' WS /agents/{agent}/{instance} (and the demo page, /static/…) go
        # after everything else: an agent's own endpoints and transport routes always win.
        routes.extend(web_routes(self.runtime))
        routes.extend(self.connections.routes())
        return routes

    def _agent_of(self, params: dict[str, Any], fixed: str | None) -> Agent | None:
        return self.agents.get(fixed or params.get("agent", ""))

    async def _check_scopes(
        self, agent: Agent, scopes: tuple[str, ...], conn: Request | WebSocket
    ) -> Principal:
        """Authenticate the caller of a scoped endpoint and check its scopes.

        Without an auth service nobody can prove a scope, so a scoped endpoint refuses every
        caller (``missing_token``, fail closed).

        Raises:
            AuthError: no or a bad credential (401), or missing scopes (403).
        """
        auth = AuthService.of(self.runtime)
        token = bearer_token(conn.headers, conn.query_params)
        principal: Principal | None = None
        if auth is not None:
            principal = await auth.authenticate(agent.name, token, base_url_of(conn.scope))
        if principal is None:
            raise AuthError("missing_token", f"endpoint requires scopes: {' '.join(scopes)}")
        require_scopes(principal, scopes)
        conn.state.principal = principal  # the handler may read request.state.principal
        return principal

    async def _scope_denial(
        self,
        agent: Agent,
        scopes: tuple[str, ...],
        conn: Request | WebSocket,
        *,
        openai: bool = False,
    ) -> JSONResponse | None:
        """The refusal of a caller lacking ``scopes`` (None: let it in, or nothing to check).

        ``openai`` renders the OpenAI error body (§0.4: OpenAI routes keep their shape).
        """
        if not scopes:
            return None
        try:
            await self._check_scopes(agent, scopes, conn)
        except AuthError as err:
            return denial_response(err, openai=openai)
        return None

    def _guard_server_route(self, route: BaseRoute) -> BaseRoute:
        """Enforce an agent's endpoint scopes on a transport's server-level route.

        A server-level route at a path that is also a per-agent path (``WS /v1/realtime?model=``
        for ``/agents/{name}/v1/realtime``, the root agent card for the default agent's) serves
        the agent its request names, so it must demand what the per-agent endpoint demands.
        The agent is resolved the way those routes do it: a ``{agent}`` path parameter, else
        ``?model=`` (OpenAI's convention), else ``?agent=``, else the default agent. A request
        naming no known agent passes through, for the route to refuse in its own shape.
        """
        path = getattr(route, "path", None)
        if isinstance(route, WebSocketRoute):
            ws_needs = self._ws_scopes.get(path or "", {})
            if not any(ws_needs.values()):
                return route
            inner_ws = route.app

            async def guarded_ws(scope: Any, receive: Any, send: Any) -> None:
                ws = WebSocket(scope, receive, send)
                agent = self._server_route_agent(ws)
                if agent is not None:
                    denial = await self._scope_denial(agent, ws_needs.get(agent.name, ()), ws)
                    if denial is not None:
                        await ws.send_denial_response(denial)
                        return
                await inner_ws(scope, receive, send)

            route.app = guarded_ws
        elif isinstance(route, Route):
            http_needs = self._http_scopes.get(path or "", {})
            if not any(http_needs.values()):
                return route
            inner_http = route.app
            openai = path in _OPENAI_PATHS

            async def guarded_http(scope: Any, receive: Any, send: Any) -> None:
                request = Request(scope, receive)  # headers and query only: the body is untouched
                agent = self._server_route_agent(request)
                if agent is not None:
                    scopes = http_needs.get((agent.name, request.method), ())
                    denial = await self._scope_denial(agent, scopes, request, openai=openai)
                    if denial is not None:
                        await denial(scope, receive, send)
                        return
                await inner_http(scope, receive, send)

            route.app = guarded_http
        return route

    def _server_route_agent(self, conn: Request | WebSocket) -> Agent | None:
        name = conn.path_params.get("agent")
        if name is None:
            name = conn.query_params.get("model") or conn.query_params.get("agent")
        return self.runtime.resolve(name)

    def _dispatch_http(self, path: str, fixed: str | None) -> Any:
        table = self._http[path]
        needs = self._http_scopes.get(path, {})
        openai = path in _OPENAI_PATHS

        async def endpoint(request: Request) -> Response:
            agent = self._agent_of(request.path_params, fixed)
            if agent is None:
                name = request.path_params.get("agent")
                return error_response(404, "agent_not_found", f"no agent named {name!r}")
            handler = table.get((agent.name, request.method))
            if handler is None:
                if any(n == agent.name for n, _ in table):
                    return error_response(
                        405, "method_not_allowed", f"{request.method} is not allowed here"
                    )
                return error_response(
                    404, "route_not_found", f"agent {agent.name!r} has no endpoint {path}"
                )
            scopes = needs.get((agent.name, request.method), ())
            denial = await self._scope_denial(agent, scopes, request, openai=openai)
            if denial is not None:
                return denial
            result = handler(request)
            if inspect.isawaitable(result):
                result = await result
            return _as_response(result)

        return endpoint

    def _dispatch_ws(self, path: str, fixed: str | None) -> Any:
        table = self._ws[path]
        needs = self._ws_scopes.get(path, {})

        async def endpoint(ws: WebSocket) -> None:
            agent = self._agent_of(ws.path_params, fixed)
            handler = table.get(agent.name) if agent is not None else None
            if agent is None or handler is None:
                name = ws.path_params.get("agent", fixed)
                await ws.send_denial_response(
                    error_response(404, "agent_not_found", f"no agent named {name!r} with {path}")
                )
                return
            denial = await self._scope_denial(agent, needs.get(agent.name, ()), ws)
            if denial is not None:
                await ws.send_denial_response(denial)
                return
            await handler(ws)

        return endpoint

    # -- server-level endpoints -------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "agents": len(self.agents)})

    async def _ready(self, request: Request) -> Response:
        if self.runtime.draining.is_set():
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def _metrics(self, request: Request) -> Response:
        s = self.runtime.stats
        lines = []
        for name, kind, value in (
            ("connections_total", "counter", s.connections),
            ("connections_open", "gauge", s.connections_open),
            ("sessions_total", "counter", s.sessions),
            ("sessions_open", "gauge", s.sessions_open),
            ("responses_total", "counter", s.responses),
            ("responses_cancelled_total", "counter", s.responses_cancelled),
            ("responses_failed_total", "counter", s.responses_failed),
            ("deltas_total", "counter", s.deltas),
            ("errors_total", "counter", s.errors),
            ("tasks", "gauge", _live_tasks()),
        ):
            lines.append(f"# TYPE trioagents_{name} {kind}\ntrioagents_{name} {value}")
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    async def _list_agents(self, request: Request) -> Response:
        return JSONResponse(
            {
                "agents": [
                    {
                        "name": a.name,
                        "description": a.description,
                        "url": f"/agents/{a.name}",
                        "model": getattr(a.model, "name", None),
                        "tools": sorted(a.tools),
                    }
                    for a in self.agents.values()
                ]
            }
        )

    async def _models(self, request: Request) -> Response:
        return JSONResponse(models_body(list(self.agents.values()), self.runtime.clock.now_s()))

    async def _chat_completions(self, request: Request) -> Response:
        try:
            body = await read_body(request, self.config.max_body_size)
        except CompletionsError as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return openai_error(f"request body is not valid JSON: {exc}", code="invalid_json")
        if not isinstance(data, dict):
            return openai_error("request body must be a JSON object", code="invalid_json")
        model = data.get("model")
        agent = self.runtime.resolve(model if isinstance(model, str) else None)
        if agent is None:
            if model is None:
                return openai_error(
                    "'model' is required: it names the agent",
                    param="model",
                    code="missing_required_parameter",
                )
            return openai_error(
                f"The model {model!r} does not exist",
                status=404,
                param="model",
                code="model_not_found",
            )
        handler = self._http["/v1/chat/completions"].get((agent.name, "POST"))
        if handler is None:
            return error_response(
                404, "route_not_found", f"agent {agent.name!r} does not serve completions"
            )
        # The agent's endpoint scopes apply whichever route the request took (§10).
        scopes = self._http_scopes["/v1/chat/completions"].get((agent.name, "POST"), ())
        denial = await self._scope_denial(agent, scopes, request, openai=True)
        if denial is not None:
            return denial
        return _as_response(await handler(request))

    async def _jwks(self, request: Request) -> Response:
        assert self._auth is not None
        name = request.path_params.get("agent")
        if name is not None and name not in self.agents:
            return error_response(404, "agent_not_found", f"no agent named {name!r}")
        doc = self._auth.jwks(name)
        if doc is None:
            return error_response(404, "not_found", f"agent {name!r} does not sign responses")
        return JSONResponse(doc, headers={"Cache-Control": "public, max-age=300"})

    async def _openid(self, request: Request) -> Response:
        assert self._auth is not None
        agent = self._agent_of(request.path_params, None) or self.runtime.default_agent
        if agent is None or (
            "agent" in request.path_params and request.path_params["agent"] != agent.name
        ):
            name = request.path_params.get("agent")
            return error_response(404, "agent_not_found", f"no agent named {name!r}")
        ring = self._auth.ring(agent.name)
        algs = sorted({k.alg for k in ring.published(now=self._auth.now())}) if ring else []
        issuer = self._auth.issuer(agent.name, base_url_of(request.scope))
        return JSONResponse(openid_configuration(issuer, algorithms=algs or ("RS256", "ES256")))

    async def _uamp(self, ws: WebSocket) -> None:
        name = ws.query_params.get("agent")
        agent = self.runtime.resolve(name)
        if name is not None and agent is None:
            await ws.send_denial_response(
                error_response(404, "agent_not_found", f"no agent named {name!r}")
            )
            return
        needs = self._ws_scopes.get("/uamp", {})
        pinned = False
        if agent is not None:
            # The socket is for one agent (``?agent=`` or the default): it demands what
            # /agents/{name}/uamp demands. When any agent's UAMP endpoint is scoped, the
            # socket's sessions are pinned to this agent, so a session.create naming another
            # agent cannot slip past that agent's check (it would be made on no handshake).
            denial = await self._scope_denial(agent, needs.get(agent.name, ()), ws)
            if denial is not None:
                await ws.send_denial_response(denial)
                return
            pinned = any(needs.values())
        await serve_uamp_socket(ws, agent, pinned=pinned)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, exc.detail or code)

    async def _server_error(self, request: Request, exc: Exception) -> Response:
        log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal server error")


def _live_tasks() -> int:
    """Live trio tasks in this process (the whole tree under the root task).

    Read only when ``/metrics`` is scraped, so a leak check (a benchmark's 1,000 aborts, an
    operator's dashboard) can see tasks that outlived their connection.
    """
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count
