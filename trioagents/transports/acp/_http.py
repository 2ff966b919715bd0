"""ACP over Streamable HTTP and WebSocket on ``/agents/{name}/acp`` (PROTOCOLS.md §8.2, §8.3).

Theory of operation
-------------------
An HTTP ACP connection outlives the requests that make it up, so it belongs to the server:
``ACPTransport.lifespan`` puts an :class:`AcpRegistry` in ``runtime.services`` whose nursery
owns every connection::

    registry nursery (server lifespan)
    └── HttpConnection.run
        ├── idle watcher: no stream and no request for ``idle_timeout`` → closed
        └── AcpConnection.serve (the engine: writer, reader, prompts)

``POST`` hands the message to the engine's inbound channel and answers **202**; the engine's
writer puts what it sends into the connection's *pending* queue, and each open SSE ``GET``
stream takes from it: the connection stream takes everything, a session stream takes its
session's messages while no connection stream is open. With no stream open the queue is the
buffer of §8.2 (``buffer_size``; overflow ends the connection); with a stream open, a full
queue makes the writer wait (backpressure, ``send_timeout`` then closed). ``initialize``
without a connection id creates a connection and answers **200** at once with
``Acp-Connection-Id``; seed methods (§8.3) are answered on the POST itself, as JSON or SSE.

A WebSocket (``/acp`` upgrade or ``/acp/stream``) is one connection owned by its handler: text
frames in, one frame per message out, all in one order.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import orjson
import trio
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket

from ...agent import Agent, Skill, http, websocket
from ...auth import (
    AuthError,
    AuthService,
    Principal,
    ResponseSigner,
    base_url_of,
    bearer_token,
    denial_response,
)
from ...payments import select_payment_token
from ...protocols import acp, jsonrpc as rpc
from ...protocols.completions import CompletionsError
from ...protocols.sse import SSE_HEADERS, sse_comment, sse_event
from .._runtime import Runtime
from ..completions import read_body
from ._engine import AcpConnection, Framed, Outgoing, prepare_seed, sync_reply

__all__ = ["ACPTransport", "AcpRegistry", "HttpConnection", "serve_acp_websocket"]

log = logging.getLogger("trioagents.transports.acp")

SERVICE = "acp"
"""Key of the :class:`AcpRegistry` in ``runtime.services``."""

CONNECTION_HEADER = "Acp-Connection-Id"
SESSION_HEADER = "Acp-Session-Id"

_TAKE = 256


def _rpc_response(
    status: int, code: int, message: str, id: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(rpc.error(id, code, message), status_code=status, headers=headers)


class _StreamHandle:
    """One open SSE ``GET`` stream (connection-wide when ``session_id`` is None)."""

    def __init__(self, session_id: str | None) -> None:
        self.session_id = session_id


class HttpConnection:
    """One Streamable HTTP ACP connection: the engine, the pending queue and its streams.

    Args:
        registry: the registry that owns it.
        agent: the agent of the route that created it.
        connection_id: 32 hex digits (``Acp-Connection-Id``).
        idle_timeout: no stream and no request for this long closes the connection.
        buffer_size: messages kept while no stream is open (overflow closes the connection).
        principal: the caller verified at ``initialize`` (§10).
        signer: signs completed prompt results (a signing agent, §10).
    """

    def __init__(
        self,
        registry: AcpRegistry,
        agent: Agent,
        connection_id: str,
        *,
        idle_timeout: float,
        buffer_size: int,
        principal: Principal | None = None,
        signer: ResponseSigner | None = None,
    ) -> None:
        self.registry = registry
        self.runtime = registry.runtime
        self.agent = agent
        self.id = connection_id
        self.idle_timeout = idle_timeout
        self.buffer_size = buffer_size
        self.engine = AcpConnection(
            self.runtime,
            agent,
            self._write,
            transport="acp-http",
            metadata={"connection_id": connection_id},
            principal=principal,
            signer=signer,
        )
        self._inbound_send, self._inbound_recv = trio.open_memory_channel[Any](
            self.runtime.config.turn_queue_size
        )
        self.pending: deque[Outgoing] = deque()
        self.connection_stream: _StreamHandle | None = None
        self.session_streams: dict[str, _StreamHandle] = {}
        self.closed = False
        self._arrival = trio.Event()
        self._activity = trio.Event()
        self._room = trio.lowlevel.ParkingLot()
        self.last_activity = trio.current_time()

    # -- lifetime ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the engine and the idle watcher until the connection closes."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_idle)
                await nursery.start(self.engine.serve, self._inbound_recv)
                task_status.started()
                await self.engine.finished.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._mark_closed()

    def _mark_closed(self) -> None:
        self.closed = True
        self.registry.connections.pop(self.id, None)
        self._inbound_send.close()
        self._wake()

    def close(self) -> None:
        """End the connection: cancel prompts, end sessions, close streams. Idempotent."""
        self.engine.abort()
        self._mark_closed()

    def touch(self) -> None:
        """A request or stream was seen: the idle timer restarts."""
        self.last_activity = trio.current_time()
        self._activity.set()
        self._activity = trio.Event()

    async def _watch_idle(self) -> None:
        while True:
            waiter = self._activity
            if self.connection_stream is not None or self.session_streams:
                await waiter.wait()
                continue
            deadline = self.last_activity + self.idle_timeout
            if trio.current_time() >= deadline:
                log.info("ACP connection %s idle for %g s; closing", self.id, self.idle_timeout)
                self.close()
                return
            with trio.move_on_at(deadline):
                await waiter.wait()

    async def deliver(self, message: dict[str, Any] | Framed) -> bool:
        """Hand one client message to the engine; False if the connection is closed."""
        self.touch()
        try:
            await self._inbound_send.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    # -- outbound ---------------------------------------------------------------------------

    def _wake(self) -> None:
        self._arrival.set()
        self._arrival = trio.Event()
        self._room.unpark_all()

    async def _write(self, batch: list[Outgoing]) -> None:
        # Called by the engine's single writer task only.
        for item in batch:
            if len(self.pending) >= self.buffer_size:
                if self.connection_stream is None and not self.session_streams:
                    log.warning(
                        "ACP connection %s buffered %d messages with no stream; closing",
                        self.id,
                        self.buffer_size,
                    )
                    self.close()
                    raise trio.BrokenResourceError("ACP buffer overflow")
                while len(self.pending) >= self.buffer_size and not self.closed:
                    await self._room.park()
                if self.closed:
                    raise trio.BrokenResourceError("ACP connection closed")
            self.pending.append(item)
        self._wake()

    def attach(self, session_id: str | None) -> _StreamHandle:
        """Open a stream; a newer stream of the same scope replaces the older one."""
        handle = _StreamHandle(session_id)
        if session_id is None:
            self.connection_stream = handle
        else:
            self.session_streams[session_id] = handle
        self.touch()
        self._wake()
        return handle

    def detach(self, handle: _StreamHandle) -> None:
        """A stream ended."""
        if handle.session_id is None:
            if self.connection_stream is handle:
                self.connection_stream = None
        elif self.session_streams.get(handle.session_id) is handle:
            del self.session_streams[handle.session_id]
        self.touch()
        self._wake()

    def is_current(self, handle: _StreamHandle) -> bool:
        """Whether ``handle`` is still the open stream of its scope."""
        if self.closed:
            return False
        if handle.session_id is None:
            return self.connection_stream is handle
        return self.session_streams.get(handle.session_id) is handle

    def take(self, handle: _StreamHandle) -> list[Outgoing]:
        """The pending messages ``handle`` should write now (removed from the queue)."""
        pending = self.pending
        if not pending:
            return []
        out: list[Outgoing] = []
        if handle.session_id is None:
            while pending and len(out) < _TAKE:
                out.append(pending.popleft())
        elif self.connection_stream is None:
            keep: deque[Outgoing] = deque()
            for item in pending:
                if item.session_id == handle.session_id and len(out) < _TAKE:
                    out.append(item)
                else:
                    keep.append(item)
            self.pending = keep
        if out:
            self._room.unpark_all()
        return out

    async def wait_arrival(self) -> None:
        """Wait until messages arrive, a stream changes or the connection closes."""
        await self._arrival.wait()


class AcpRegistry:
    """The server's Streamable HTTP ACP connections (``runtime.services["acp"]``)."""

    def __init__(self, runtime: Runtime, nursery: trio.Nursery) -> None:
        self.runtime = runtime
        self.connections: dict[str, HttpConnection] = {}
        self._nursery = nursery

    async def create(
        self,
        agent: Agent,
        *,
        idle_timeout: float,
        buffer_size: int,
        principal: Principal | None = None,
        signer: ResponseSigner | None = None,
    ) -> HttpConnection:
        """Start a new connection for ``agent`` (running once this returns)."""
        conn_id = self.runtime.ids.hex(16)
        conn = HttpConnection(
            self,
            agent,
            conn_id,
            idle_timeout=idle_timeout,
            buffer_size=buffer_size,
            principal=principal,
            signer=signer,
        )
        self.connections[conn_id] = conn
        await self._nursery.start(conn.run)
        return conn

    def get(self, connection_id: str, agent: Agent) -> HttpConnection | None:
        """The open connection ``connection_id`` of ``agent``, or None."""
        conn = self.connections.get(connection_id)
        if conn is None or conn.closed or conn.agent is not agent:
            return None
        return conn


@asynccontextmanager
async def _registry_lifespan(runtime: Runtime) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        runtime.services[SERVICE] = AcpRegistry(runtime, nursery)
        try:
            yield
        finally:
            runtime.services.pop(SERVICE, None)
            nursery.cancel_scope.cancel()


def _registry(runtime: Runtime) -> AcpRegistry | None:
    registry = runtime.services.get(SERVICE)
    if registry is None and runtime.nursery is not None:
        # The transport was added to an agent but not to the server's transport list, so its
        # lifespan did not run: the app-services nursery owns the connections instead.
        registry = runtime.services[SERVICE] = AcpRegistry(runtime, runtime.nursery)
    return registry if isinstance(registry, AcpRegistry) else None


# --------------------------------------------------------------------------------------------
# ASGI responses that outlive the handler call
# --------------------------------------------------------------------------------------------


async def _watch_disconnect(receive: Any, scope: trio.CancelScope) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return


async def _watch_drain(runtime: Runtime, scope: trio.CancelScope) -> None:
    await runtime.draining.wait()
    scope.cancel()


def _frames(items: list[Outgoing]) -> bytes:
    return b"".join(sse_event(orjson.dumps(o.message)) for o in items)


class _StreamResponse(Response):
    """An SSE ``GET`` stream of one connection (or one session of it)."""

    def __init__(self, conn: HttpConnection, session_id: str | None) -> None:
        self.conn = conn
        self.session_id = session_id
        self.background = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        conn = self.conn
        runtime = conn.runtime
        handle = conn.attach(self.session_id)
        ended = False
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope)
                nursery.start_soon(_watch_drain, runtime, nursery.cancel_scope)
                while conn.is_current(handle):
                    items = conn.take(handle)
                    if items:
                        await send(
                            {
                                "type": "http.response.body",
                                "body": _frames(items),
                                "more_body": True,
                            }
                        )
                        continue
                    with trio.move_on_after(runtime.config.sse_keepalive) as idle:
                        await conn.wait_arrival()
                    if idle.cancelled_caught:
                        await send(
                            {"type": "http.response.body", "body": sse_comment(), "more_body": True}
                        )
                ended = True
                nursery.cancel_scope.cancel()
            if not ended and runtime.draining.is_set():
                ended = True
        finally:
            conn.detach(handle)
        if ended:
            with trio.CancelScope(shield=True), trio.move_on_after(runtime.config.cleanup_timeout):
                try:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except Exception:  # the client may be gone already
                    log.debug("end of ACP stream not sent", exc_info=True)


Run = Callable[[Runtime, Callable[[dict[str, Any]], Awaitable[None]]], Awaitable[None]]


class _SeedResponse(Response):
    """A seed method answered on the POST itself: SSE with every message, or JSON (final)."""

    def __init__(self, runtime: Runtime, run: Run, *, sse: bool) -> None:
        self.runtime = runtime
        self.run = run
        self.sse = sse
        self.background = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        final: list[dict[str, Any]] = []
        started = False

        async def out(message: dict[str, Any]) -> None:
            nonlocal started
            if not self.sse:
                if "id" in message:
                    final.append(message)
                await trio.lowlevel.checkpoint()
                return
            if not started:
                started = True
                await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await send(
                {
                    "type": "http.response.body",
                    "body": sse_event(orjson.dumps(message)),
                    "more_body": True,
                }
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_disconnect, receive, nursery.cancel_scope)
            await self.run(self.runtime, out)
            nursery.cancel_scope.cancel()
        if nursery.cancel_scope.cancelled_caught and not final and not started:
            return  # the client went away before the answer
        if self.sse:
            if not started:
                await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        body = orjson.dumps(final[-1] if final else rpc.result(None, None))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


def _wants_sse(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


def _single(message: dict[str, Any]) -> Run:
    async def run(runtime: Runtime, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        await send(message)

    return run


# --------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------


async def authenticate(
    conn: HTTPConnection, agent: Agent
) -> tuple[Principal | None, ResponseSigner | None] | JSONResponse:
    """Verify a request's (or handshake's) bearer credential for ``agent`` (§10).

    Returns ``(principal, signer)`` (both ``None`` without an auth service), or the refusal
    to answer with (401/403 + ``WWW-Authenticate``).
    """
    auth = AuthService.of(Runtime.of(conn))
    if auth is None:
        return None, None
    base = base_url_of(conn.scope)
    try:
        principal = await auth.authenticate(
            agent.name, bearer_token(conn.headers, conn.query_params), base
        )
    except AuthError as err:
        return denial_response(err)
    return principal, auth.signer(agent.name, base)


async def handle_post(
    request: Request,
    agent: Agent,
    *,
    idle_timeout: float,
    buffer_size: int,
    principal: Principal | None = None,
    signer: ResponseSigner | None = None,
) -> Response:
    """``POST /agents/{name}/acp``: §8.2 rules, seed methods (§8.3) answered in place.

    ``principal`` and ``signer`` (§10, verified by the caller) go to a connection created by
    ``initialize``.
    """
    runtime = Runtime.of(request)
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        return _rpc_response(
            415,
            rpc.INVALID_REQUEST,
            "Unsupported Media Type: Content-Type must be application/json",
        )
    try:
        body = await read_body(request, runtime.config.max_body_size)
    except CompletionsError as exc:
        return _rpc_response(exc.status, rpc.INVALID_REQUEST, f"Invalid Request: {exc.body}")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _rpc_response(400, rpc.PARSE_ERROR, f"Parse error: {exc}")
    if isinstance(data, list):
        return _rpc_response(501, rpc.INVALID_REQUEST, "batch requests are not supported")
    # X-PAYMENT (or the legacy header / query) pays for a prompt that names no token (§9.1).
    data = acp.with_payment_token(
        data, select_payment_token(headers=request.headers, query=request.query_params)
    )
    try:
        msg = rpc.parse_message(data)
    except rpc.JsonRpcError as exc:
        return JSONResponse(exc.to_message(), status_code=400)
    conn_id = request.headers.get(CONNECTION_HEADER)
    msg_id = msg.id
    if isinstance(msg, rpc.Request) and not msg.is_notification:
        kind = acp.classify(msg)
        if kind == "seed":
            try:
                reply = sync_reply(agent, msg)
                run = _single(reply) if reply is not None else prepare_seed(agent, msg)
            except rpc.JsonRpcError as exc:
                run = _single(exc.to_message())
            return _SeedResponse(runtime, run, sse=_wants_sse(request))
        if msg.method == "initialize" and conn_id is None:
            try:
                reply = sync_reply(agent, msg)
            except rpc.JsonRpcError as exc:
                return JSONResponse(exc.to_message(), status_code=400)
            registry = _registry(runtime)
            if registry is None:
                return _rpc_response(503, rpc.INTERNAL_ERROR, "the ACP transport is not running")
            new = await registry.create(
                agent,
                idle_timeout=idle_timeout,
                buffer_size=buffer_size,
                principal=principal,
                signer=signer,
            )
            caps = (
                (msg.params or {}).get("clientCapabilities")
                if isinstance(msg.params, dict)
                else None
            )
            new.engine.client_capabilities = caps if isinstance(caps, dict) else None
            return JSONResponse(reply, headers={CONNECTION_HEADER: new.id})
    if not conn_id:
        return _rpc_response(
            400, rpc.INVALID_REQUEST, f"missing {CONNECTION_HEADER} header", msg_id
        )
    registry = _registry(runtime)
    conn = registry.get(conn_id, agent) if registry is not None else None
    if conn is None:
        return _rpc_response(404, rpc.INVALID_REQUEST, f"unknown {CONNECTION_HEADER}", msg_id)
    if isinstance(msg, rpc.Request) and msg.method in acp.SESSION_SCOPED_METHODS:
        sid = request.headers.get(SESSION_HEADER)
        if not sid:
            return _rpc_response(
                400, rpc.INVALID_REQUEST, f"{msg.method} needs the {SESSION_HEADER} header", msg_id
            )
        if sid not in conn.engine.sessions:
            return _rpc_response(404, rpc.INVALID_REQUEST, f"unknown {SESSION_HEADER}", msg_id)
    if not await conn.deliver(Framed(data, body)):
        return _rpc_response(404, rpc.INVALID_REQUEST, f"unknown {CONNECTION_HEADER}", msg_id)
    return Response(status_code=202)


def handle_get(request: Request, agent: Agent) -> Response:
    """``GET /agents/{name}/acp`` with ``Accept: text/event-stream``: a connection or session
    stream."""
    if not _wants_sse(request):
        return _rpc_response(406, rpc.INVALID_REQUEST, "Accept must include text/event-stream")
    conn_id = request.headers.get(CONNECTION_HEADER)
    if not conn_id:
        return _rpc_response(400, rpc.INVALID_REQUEST, f"missing {CONNECTION_HEADER} header")
    registry = _registry(Runtime.of(request))
    conn = registry.get(conn_id, agent) if registry is not None else None
    if conn is None:
        return _rpc_response(404, rpc.INVALID_REQUEST, f"unknown {CONNECTION_HEADER}")
    sid = request.headers.get(SESSION_HEADER)
    if sid is not None and sid not in conn.engine.sessions:
        return _rpc_response(404, rpc.INVALID_REQUEST, f"unknown {SESSION_HEADER}")
    return _StreamResponse(conn, sid)


def handle_delete(request: Request, agent: Agent) -> Response:
    """``DELETE /agents/{name}/acp``: cancel prompts, end sessions, close streams."""
    conn_id = request.headers.get(CONNECTION_HEADER)
    if not conn_id:
        return _rpc_response(400, rpc.INVALID_REQUEST, f"missing {CONNECTION_HEADER} header")
    registry = _registry(Runtime.of(request))
    conn = registry.get(conn_id, agent) if registry is not None else None
    if conn is None:
        return _rpc_response(404, rpc.INVALID_REQUEST, f"unknown {CONNECTION_HEADER}")
    conn.close()
    return Response(status_code=202)


async def serve_acp_websocket(ws: WebSocket, agent: Agent) -> None:
    """Serve one ACP connection over a WebSocket (text frames, one JSON-RPC message each).

    Returns when the client leaves or the server drains (close 1001), after every prompt of
    the connection has finished. Cancellation stops everything at once. A bad credential (or
    none when required, §10) refuses the handshake with 401 + ``WWW-Authenticate``.
    """
    runtime = Runtime.of(ws)
    verified = await authenticate(ws, agent)
    if isinstance(verified, JSONResponse):
        await ws.send_denial_response(verified)
        return
    principal, signer = verified
    conn_id = runtime.ids.hex(16)
    await ws.accept(headers=[(CONNECTION_HEADER.lower().encode(), conn_id.encode())])
    send, receive = ws._send, ws._receive

    async def write(batch: list[Outgoing]) -> None:
        for item in batch:
            try:
                await send({"type": "websocket.send", "text": orjson.dumps(item.message).decode()})
            except trio.Cancelled:
                raise
            except Exception as exc:  # the ASGI server's error for a socket that is gone
                raise trio.BrokenResourceError("ACP WebSocket closed") from exc

    engine = AcpConnection(
        runtime,
        agent,
        write,
        transport="acp-ws",
        metadata={"connection_id": conn_id},
        principal=principal,
        signer=signer,
    )
    inbound_send, inbound_recv = trio.open_memory_channel[Any](runtime.config.turn_queue_size)
    close: list[tuple[int, str]] = []
    limit = runtime.config.max_message_size

    async def read() -> None:
        async with inbound_send:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    engine.abort()
                    return
                text = message.get("text")
                size = len(text) if text is not None else len(message.get("bytes") or b"")
                if size > limit:
                    close.append((1009, "message too large"))
                    engine.close()
                    return
                if text is None:
                    engine.send_error(
                        rpc.INVALID_REQUEST,
                        "Invalid Request: binary frames are not supported; send JSON text frames",
                    )
                    continue
                await inbound_send.send(text)

    async def watch_drain() -> None:
        await runtime.draining.wait()
        close.append((1001, "server shutting down"))
        engine.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        nursery.start_soon(watch_drain)
        await engine.serve(inbound_recv)
        nursery.cancel_scope.cancel()
    if close and not engine.writer.closed:
        code, reason = close[0]
        with trio.CancelScope(shield=True), trio.move_on_after(runtime.config.cleanup_timeout):
            try:
                await send({"type": "websocket.close", "code": code, "reason": reason})
            except Exception:  # the peer may be gone already
                log.debug("close frame not sent", exc_info=True)


class ACPTransport(Skill):
    """Serves the agent over ACP's Streamable HTTP and WebSocket carriers (draft, §8.2).

    Args:
        idle_timeout: seconds without a stream or a request before an HTTP connection closes.
        buffer_size: messages an HTTP connection keeps while no stream is open; more ends it.
    """

    def __init__(self, *, idle_timeout: float = 300.0, buffer_size: int = 1024) -> None:
        self.idle_timeout = idle_timeout
        self.buffer_size = buffer_size

    @staticmethod
    def lifespan(runtime: Runtime) -> AbstractAsyncContextManager[None]:
        """The per-server connection registry, in ``runtime.services["acp"]``."""
        return _registry_lifespan(runtime)

    @http("/acp", methods=["POST", "GET", "DELETE"])
    async def acp_http(self, request: Request) -> Response:
        """``POST``/``GET``/``DELETE /agents/{name}/acp``.

        Every request carries the credential (§10); a bad one (or none when required) is
        refused with 401 + ``WWW-Authenticate``.
        """
        verified = await authenticate(request, self.agent)
        if isinstance(verified, JSONResponse):
            return verified
        if request.method == "POST":
            return await handle_post(
                request,
                self.agent,
                idle_timeout=self.idle_timeout,
                buffer_size=self.buffer_size,
                principal=verified[0],
                signer=verified[1],
            )
        if request.method == "GET":
            return handle_get(request, self.agent)
        return handle_delete(request, self.agent)

    @websocket("/acp")
    @websocket("/acp/stream")
    async def acp_socket(self, ws: WebSocket) -> None:
        """The WebSocket carrier (upgrade on ``/acp``, or ``/acp/stream``)."""
        await serve_acp_websocket(ws, self.agent)
