"""The A2A transport (PROTOCOLS.md §6): agent card, JSON-RPC 1.0/0.3, seed REST ``/tasks``.

Endpoints (per agent, under ``/agents/{name}``; at the root too in single-agent mode):

* ``GET /.well-known/agent-card.json`` and ``/.well-known/agent.json`` — the hybrid card, with
  ``Cache-Control`` and an ``ETag`` (``If-None-Match`` → 304);
* ``POST /a2a`` — JSON-RPC: unary methods answer JSON, streaming ones SSE with one
  ``data: <JSON-RPC response>`` per event; every reply is HTTP 200;
* ``POST /tasks`` (SSE ``task.*`` events), ``GET /tasks/{id}``, ``DELETE /tasks/{id}`` — the
  seed REST dialect, sharing the task store.

Tasks run in the A2A service (:mod:`.service`), not in the request: an SSE response is only
a *subscriber*. Its request nursery holds a disconnect watcher and the writer; a client that
goes away cancels that nursery, which unsubscribes and leaves the task running.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from typing import Any, ClassVar

import attrs
import orjson
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ...agent import Agent, Message, Skill, http
from ...auth import (
    AuthError,
    AuthService,
    Principal,
    ResponseSigner,
    base_url_of,
    bearer_token,
    denial_response,
)
from ...payments import (
    PaymentError,
    a2a_payment_token,
    render_task_failed_payment,
    select_payment_token,
)
from ...protocols import a2a as proto, jsonrpc
from ...protocols.sse import SSE_HEADERS, sse_comment, sse_event
from .._runtime import Runtime
from .service import A2AService, RunningTask, ServiceOptions, content_of, new_uuid
from .store import MemoryTaskStore, SqliteTaskStore, TaskStore

__all__ = ["A2ATransport", "DB_ENV"]

log = logging.getLogger("trioagents.transports.a2a")

DB_ENV = "TRIOAGENTS_A2A_DB"
"""Environment variable naming the SQLite task database (unset or ``:memory:``: in memory)."""

_OPTION_NAMES = frozenset(
    {
        "db",
        "store_factory",
        "retention",
        "max_tasks",
        "cleanup_interval",
        "subscriber_queue_size",
        "max_contexts",
        "max_context_messages",
        "card_max_age",
        "lenient_versions",
    }
)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "details": {}}}, status_code=status
    )


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
    return b"".join(chunks)


def _service(request: Request) -> A2AService | None:
    service: A2AService | None = Runtime.of(request).services.get("a2a")
    return service


def base_url(request: Request) -> str:
    """``public_url`` if configured, else scheme + ``Host`` of the request."""
    public = Runtime.of(request).config.public_url
    if public:
        return public.rstrip("/")
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def card_response(request: Request, agent: Agent, max_age: int) -> Response:
    """The agent card with ``Cache-Control`` and ``ETag``; 304 when ``If-None-Match`` hits.

    The bearer ``securitySchemes``/``security`` are declared only when the server's
    :class:`~trioagents.auth.AuthService` requires authentication (§6.1).
    """
    auth = AuthService.of(Runtime.of(request))
    card = proto.agent_card(
        name=agent.name,
        description=agent.description,
        base_url=base_url(request),
        skills=[(t.name, t.description) for t in agent.tools.values()],
        version=str(getattr(agent, "version", None) or "1.0.0"),
        auth_required=bool(auth is not None and auth.required),
    )
    body = orjson.dumps(card)
    etag = proto.card_etag(body)
    headers = {"Cache-Control": f"public, max-age={max_age}", "ETag": etag}
    match = request.headers.get("if-none-match")
    if match is not None and (
        match.strip() == "*" or etag in [m.strip().removeprefix("W/") for m in match.split(",")]
    ):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@attrs.frozen
class _Caller:
    """The verified caller of one request and the signer of its response (§10)."""

    principal: Principal | None = None
    signer: ResponseSigner | None = None

    def signing(self, body: bytes) -> Callable[[str], str] | None:
        """Signs a response text for the request ``body`` (``None``: the agent does not sign)."""
        signer = self.signer
        if signer is None:
            return None
        audience = self.principal.sub if self.principal is not None else None

        def sign(text: str) -> str:
            return signer.sign(request_bytes=body, response_text=text, audience=audience)

        return sign


async def _authenticate(request: Request, agent: Agent) -> _Caller | Response:
    """Verify the request's bearer credential for ``agent`` (§10): the caller, or the 401
    (403) response refusing the request."""
    auth = AuthService.of(Runtime.of(request))
    if auth is None:
        return _Caller()
    base = base_url_of(request.scope)
    try:
        principal = await auth.authenticate(
            agent.name, bearer_token(request.headers, request.query_params), base
        )
    except AuthError as err:
        return denial_response(err)
    return _Caller(principal, auth.signer(agent.name, base))


# --------------------------------------------------------------------------------------------
# SSE subscriber responses
# --------------------------------------------------------------------------------------------

Render = Callable[[Any], list[bytes]]


class _SubscriberStream(Response):
    """An SSE response that drains one subscriber channel (the single writer of this body).

    Args:
        events: the subscriber's channel (closed by the service when the turn ends, or when
            this subscriber fell behind and was dropped).
        render: one stream item → SSE frames.
        is_final: whether an item ends the stream.
        dropped: frames written when the channel ends before a final item.
        keepalive: idle seconds before a ``: keepalive`` comment.
    """

    def __init__(
        self,
        events: trio.MemoryReceiveChannel[Any],
        render: Render,
        is_final: Callable[[Any], bool],
        dropped: Callable[[], list[bytes]],
        keepalive: float,
    ) -> None:
        self.events = events
        self.render_event = render
        self.is_final = is_final
        self.dropped = dropped
        self.keepalive = keepalive
        self.background = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    # The task goes on in the service; only this subscriber ends.
                    nursery.cancel_scope.cancel()
                    return

        async with self.events, trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect)
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await self._write(send)
            nursery.cancel_scope.cancel()

    async def _write(self, send: Any) -> None:
        while True:
            batch: list[Any] = []
            ended = False
            with trio.move_on_after(self.keepalive):
                try:
                    batch.append(await self.events.receive())
                except trio.EndOfChannel:
                    ended = True
            if not batch and not ended:
                await send({"type": "http.response.body", "body": sse_comment(), "more_body": True})
                continue
            while not ended and len(batch) < 256:
                try:
                    batch.append(self.events.receive_nowait())
                except trio.WouldBlock:
                    break
                except trio.EndOfChannel:
                    ended = True
            out: list[bytes] = []
            final = False
            for ev in batch:
                out.extend(self.render_event(ev))
                if self.is_final(ev):
                    final = True
                    break
            if final or ended:
                if not final:
                    out.extend(self.dropped())
                await send(
                    {"type": "http.response.body", "body": b"".join(out), "more_body": False}
                )
                return
            await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})


def _is_final(ev: Any) -> bool:
    return isinstance(ev, proto.StatusUpdate) and ev.final


# --------------------------------------------------------------------------------------------
# The transport
# --------------------------------------------------------------------------------------------


class A2ATransport(Skill):
    """Serves the agent over A2A 1.0 and 0.3 (JSON-RPC) and the seed REST ``/tasks`` dialect.

    Server-wide options are class attributes; :meth:`with_options` makes a configured
    subclass to pass in ``AgentServer(transports=...)``.

    Attributes:
        db: SQLite file for tasks; None reads ``TRIOAGENTS_A2A_DB``; unset or ``":memory:"``
            keeps tasks in memory.
        store_factory: builds the task store (overrides ``db``).
        retention: seconds finished tasks are kept (3600).
        max_tasks: finished tasks kept at most (10 000).
        cleanup_interval: seconds between retention passes (60).
        subscriber_queue_size: stream events buffered per subscriber before it is dropped.
        max_contexts: contexts (sessions) kept in memory.
        max_context_messages: messages kept per context.
        card_max_age: ``Cache-Control: max-age`` of the agent card (300).
        lenient_versions: let the method name decide the version (``a2a_lenient_versions``).
    """

    db: ClassVar[str | None] = None
    store_factory: ClassVar[Callable[[], TaskStore] | None] = None
    retention: ClassVar[float] = 3600.0
    max_tasks: ClassVar[int] = 10_000
    cleanup_interval: ClassVar[float] = 60.0
    subscriber_queue_size: ClassVar[int] = 1024
    max_contexts: ClassVar[int] = 1000
    max_context_messages: ClassVar[int] = 200
    card_max_age: ClassVar[int] = 300
    lenient_versions: ClassVar[bool] = False

    @classmethod
    def with_options(cls, **options: Any) -> type[A2ATransport]:
        """A subclass with these options (see the class attributes).

        Raises:
            TypeError: an unknown option.
        """
        unknown = set(options) - _OPTION_NAMES
        if unknown:
            raise TypeError(f"unknown A2ATransport options: {sorted(unknown)}")
        if "store_factory" in options and options["store_factory"] is not None:
            options["store_factory"] = staticmethod(options["store_factory"])
        return type(cls.__name__, (cls,), options)

    @classmethod
    def make_store(cls) -> TaskStore:
        """The task store this class's options ask for."""
        if cls.store_factory is not None:
            return cls.store_factory()
        db = cls.db if cls.db is not None else os.environ.get(DB_ENV)
        if not db or db == ":memory:":
            return MemoryTaskStore()
        return SqliteTaskStore(db)

    @classmethod
    @asynccontextmanager
    async def lifespan(cls, runtime: Runtime) -> AsyncIterator[None]:
        """Open the task store and the A2A service for the life of the server.

        On exit every running turn is cancelled and records its final state before the
        store closes (bounded by ``cleanup_timeout``).
        """
        store = cls.make_store()
        await store.open()
        try:
            async with trio.open_nursery() as nursery:
                options = ServiceOptions(
                    retention=cls.retention,
                    max_tasks=cls.max_tasks,
                    cleanup_interval=cls.cleanup_interval,
                    subscriber_queue_size=cls.subscriber_queue_size,
                    max_contexts=cls.max_contexts,
                    max_context_messages=cls.max_context_messages,
                )
                service = A2AService(runtime, store, nursery, options)
                recovered = await service.recover()
                if recovered:
                    log.info("marked %d interrupted A2A tasks failed", recovered)
                await service.cleanup()
                nursery.start_soon(service.cleanup_loop)
                runtime.services["a2a"] = service
                try:
                    yield
                finally:
                    runtime.services.pop("a2a", None)
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(runtime.config.cleanup_timeout):
                await store.aclose()

    @classmethod
    def server_routes(cls, runtime: Runtime) -> list[BaseRoute]:
        """Root ``/.well-known/agent-card.json`` and ``agent.json`` for the default agent."""

        async def root_card(request: Request) -> Response:
            agent = runtime.default_agent
            if agent is None:
                return _error(
                    404,
                    "agent_not_found",
                    "no default agent: fetch /agents/{name}/.well-known/agent-card.json",
                )
            return card_response(request, agent, cls.card_max_age)

        return [
            Route("/.well-known/agent-card.json", root_card, methods=["GET"]),
            Route("/.well-known/agent.json", root_card, methods=["GET"]),
        ]

    # -- agent card ----------------------------------------------------------------------

    @http("/.well-known/agent-card.json")
    @http("/.well-known/agent.json")
    async def agent_card(self, request: Request) -> Response:
        """The agent card (§6.1)."""
        return card_response(request, self.agent, self.card_max_age)

    # -- JSON-RPC ------------------------------------------------------------------------

    @http("/a2a", methods=["POST"])
    async def rpc(self, request: Request) -> Response:
        """``POST /agents/{name}/a2a``: A2A JSON-RPC, 1.0 or 0.3 (§6.2).

        A bad credential (or none when required) is refused with HTTP 401 (§10).
        """
        caller = await _authenticate(request, self.agent)
        if isinstance(caller, Response):
            return caller
        header = request.headers.get("a2a-version")
        try:
            header_version: str | None = proto.negotiate(header, "GetTask")[0]
        except proto.A2AError:
            header_version = None
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", "application/a2a+json"):
            return _json(
                proto.error_message(
                    None,
                    proto.CONTENT_TYPE_NOT_SUPPORTED,
                    f"Content-Type must be application/json, not {ctype or 'absent'!r}",
                    header_version,
                )
            )
        runtime = Runtime.of(request)
        body = await _read_body(request, runtime.config.max_body_size)
        if body is None:
            return _json(
                proto.error_message(
                    None, jsonrpc.INVALID_REQUEST, "request body too large", header_version
                ),
                status=413,
            )
        msg_id: Any = None
        version: str | None = header_version
        try:
            try:
                msg = jsonrpc.parse_message(body)
            except jsonrpc.JsonRpcError as exc:
                raise _RpcFailure(exc.id, exc.code, exc.message) from None
            if not isinstance(msg, jsonrpc.Request) or msg.is_notification:
                raise _RpcFailure(
                    getattr(msg, "id", None),
                    jsonrpc.INVALID_REQUEST,
                    "Invalid Request: expected a JSON-RPC request with an id",
                )
            msg_id = msg.id
            try:
                version, op = proto.negotiate(header, msg.method, lenient=self.lenient_versions)
                service = _service(request)
                if service is None:
                    raise proto.A2AError(jsonrpc.INTERNAL_ERROR, "the A2A service is not running")
                sign = caller.signing(body)
                return await self._dispatch(request, service, version, op, msg, caller, sign)
            except proto.A2AError as exc:
                raise _RpcFailure(msg_id, exc.code, exc.message) from None
        except _RpcFailure as failure:
            return _json(proto.error_message(failure.id, failure.code, failure.message, version))

    async def _dispatch(
        self,
        request: Request,
        service: A2AService,
        version: str,
        op: str,
        msg: jsonrpc.Request,
        caller: _Caller,
        sign: Callable[[str], str] | None,
    ) -> Response:
        agent = self.agent
        params = msg.params
        if op in ("send", "stream"):
            sp = proto.parse_send_params(version, params)
            token = _payment_token(request, sp.message)
            if op == "stream":
                rt = await service.start(
                    agent,
                    sp.message,
                    metadata=sp.metadata,
                    payment_token=token,
                    principal=caller.principal,
                    sign=sign,
                )
                return self._stream(service, rt, version, msg.id, subscribe_first=True)
            rt = await service.start(
                agent,
                sp.message,
                metadata=sp.metadata,
                payment_token=token,
                principal=caller.principal,
                sign=sign,
            )
            if not sp.return_immediately:
                await rt.done.wait()
            return _json(
                jsonrpc.result(
                    msg.id, proto.render_send_result(version, rt.task, sp.history_length)
                )
            )
        if op == "get":
            task_id, history_length = proto.parse_task_id_params(params)
            task = await service.find(agent, task_id)
            if task is None:
                raise proto.A2AError(proto.TASK_NOT_FOUND, f"Task not found: {task_id}")
            return _json(jsonrpc.result(msg.id, proto.render_task(version, task, history_length)))
        if op == "cancel":
            task_id, _ = proto.parse_task_id_params(params)
            task, cancelled = await service.cancel(agent, task_id)
            if not cancelled:
                raise proto.A2AError(
                    proto.TASK_NOT_CANCELABLE, f"Task {task_id} is {task.state}: not cancelable"
                )
            return _json(jsonrpc.result(msg.id, proto.render_task(version, task)))
        if op == "subscribe":
            task_id, _ = proto.parse_task_id_params(params)
            running = service.running.get(task_id)
            if running is None or running.task.agent != agent.name:
                task = await service.find(agent, task_id)
                if task is None:
                    raise proto.A2AError(proto.TASK_NOT_FOUND, f"Task not found: {task_id}")
                raise proto.A2AError(
                    proto.UNSUPPORTED_OPERATION,
                    f"Task {task_id} is {task.state}: nothing to subscribe to",
                )
            return self._stream(service, running, version, msg.id, subscribe_first=True)
        if op == "list":
            context_id, size = proto.parse_list_params(params)
            tasks = await service.list_tasks(agent, context_id, size)
            return _json(
                jsonrpc.result(
                    msg.id,
                    {
                        "tasks": [proto.render_task(version, t) for t in tasks],
                        "nextPageToken": "",
                        "pageSize": size,
                        "totalSize": len(tasks),
                    },
                )
            )
        if op == "push":
            raise proto.A2AError(
                proto.PUSH_NOTIFICATION_NOT_SUPPORTED, "Push notifications are not supported"
            )
        raise proto.A2AError(
            proto.EXTENDED_CARD_NOT_CONFIGURED, "No authenticated extended agent card"
        )

    def _stream(
        self,
        service: A2AService,
        rt: RunningTask,
        version: str,
        msg_id: Any,
        *,
        subscribe_first: bool,
    ) -> Response:
        events = rt.subscribe(service.options.subscriber_queue_size)

        def render(ev: Any) -> list[bytes]:
            result = proto.render_stream_event(version, ev)
            return [sse_event(jsonrpc.dumps(jsonrpc.result(msg_id, result)))]

        def dropped() -> list[bytes]:
            err = proto.error_message(
                msg_id,
                jsonrpc.INTERNAL_ERROR,
                f"stream dropped: the client fell behind; task {rt.task.id} goes on "
                "(resubscribe or get the task)",
                version,
            )
            return [sse_event(jsonrpc.dumps(err))]

        return _SubscriberStream(
            events, render, _is_final, dropped, service.runtime.config.sse_keepalive
        )

    # -- seed REST dialect ---------------------------------------------------------------

    @http("/tasks", methods=["POST"])
    async def create_task(self, request: Request) -> Response:
        """``POST /tasks``: run a task, stream ``task.*`` SSE events (§6.3)."""
        caller = await _authenticate(request, self.agent)
        if isinstance(caller, Response):
            return caller
        service = _service(request)
        if service is None:
            return _error(503, "service_unavailable", "the A2A service is not running")
        runtime = Runtime.of(request)
        body = await _read_body(request, runtime.config.max_body_size)
        if body is None:
            return _error(413, "request_too_large", "request body too large")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _error(400, "invalid_json", f"request body is not valid JSON: {exc}")
        try:
            messages = proto.parse_seed_request(data)
        except proto.A2AError as exc:
            return _error(400, "invalid_request", exc.message.removeprefix("Invalid params: "))
        prior = [
            Message(role="assistant" if role == "agent" else role, content=content_of(parts))
            for role, parts in messages[:-1]
        ]
        message = {
            "messageId": new_uuid(service.runtime.ids),
            "role": "user",
            "parts": messages[-1][1],
        }
        rt = await service.start(
            self.agent,
            message,
            prior=prior,
            payment_token=select_payment_token(headers=request.headers, query=request.query_params),
            pay_in_band=False,
            principal=caller.principal,
            sign=caller.signing(body),
        )
        events = rt.subscribe(service.options.subscriber_queue_size)
        task_id = rt.task.id

        def render(ev: Any) -> list[bytes]:
            if isinstance(ev, proto.TaskSnapshot):
                data = {"id": task_id, "status": "running", "createdAt": ev.task.created_at}
                return [sse_event(orjson.dumps(data), event="task.started")]
            if isinstance(ev, proto.ArtifactUpdate):
                text = "".join(p.get("text", "") for p in ev.artifact["parts"])
                data = {"role": "agent", "parts": [{"type": "text", "text": text}]}
                return [sse_event(orjson.dumps(data), event="task.message")]
            if isinstance(ev, proto.StatusUpdate) and ev.final:
                if rt.payment_error is not None:
                    data = render_task_failed_payment(rt.payment_error, task_id)
                    return [sse_event(orjson.dumps(data), event="task.failed")]
                return [_seed_terminal(ev.task)]
            return []

        def dropped() -> list[bytes]:
            data = {
                "id": task_id,
                "status": "failed",
                "error": "stream dropped: the client fell behind; GET /tasks/{id} for the result",
                "code": "stream_dropped",
            }
            return [sse_event(orjson.dumps(data), event="task.failed")]

        return _SubscriberStream(events, render, _is_final, dropped, runtime.config.sse_keepalive)

    @http("/tasks/{task_id}", methods=["GET", "DELETE"])
    async def task_resource(self, request: Request) -> Response:
        """``GET /tasks/{id}`` (status and result) and ``DELETE /tasks/{id}`` (cancel)."""
        refused = await _authenticate(request, self.agent)
        if isinstance(refused, Response):
            return refused
        service = _service(request)
        if service is None:
            return _error(503, "service_unavailable", "the A2A service is not running")
        task_id = request.path_params["task_id"]
        if request.method == "GET":
            task = await service.find(self.agent, task_id)
            if task is None:
                return _error(404, "task_not_found", f"no task {task_id!r}")
            return _json(proto.seed_task(task))
        try:
            task, cancelled = await service.cancel(self.agent, task_id)
        except proto.A2AError:
            return _error(404, "task_not_found", f"no task {task_id!r}")
        return _json(
            {"id": task.id, "status": proto.seed_state(task.state), "cancelled": cancelled}
        )


def _payment_token(request: Request, message: dict[str, Any]) -> str | None:
    """The token paying for a JSON-RPC send (§6.2, §9.1): an ``x402.payment.payload`` in the
    message's metadata, else ``X-PAYMENT`` (or the other §0.2 sources).

    Raises:
        proto.A2AError: ``-32602`` when the message says ``payment-submitted`` but its payload
            holds no token.
    """
    try:
        submitted = a2a_payment_token(message.get("metadata"))
    except PaymentError as exc:
        raise proto.A2AError(jsonrpc.INVALID_PARAMS, f"Invalid params: {exc.message}") from None
    return select_payment_token(turn=submitted, headers=request.headers, query=request.query_params)


def _seed_terminal(task: proto.Task) -> bytes:
    ts = task.updated_at
    if task.state == "completed":
        data: dict[str, Any] = {"id": task.id, "status": "completed", "completedAt": ts}
        signature = ((task.status_message or {}).get("metadata") or {}).get("response_signature")
        if signature is not None:
            data["metadata"] = {"response_signature": signature}
        return sse_event(orjson.dumps(data), event="task.completed")
    data = {
        "id": task.id,
        "status": proto.seed_state(task.state),
        "error": task.error
        or ("the task was cancelled" if task.state == "canceled" else "input required"),
        "code": task.error_code
        or {"canceled": "cancelled", "input-required": "input_required"}.get(task.state, "failed"),
    }
    if task.state == "input-required" and task.status_message is not None:
        data["error"] = "".join(p.get("text", "") for p in task.status_message["parts"])
    return sse_event(orjson.dumps(data), event="task.failed")


class _RpcFailure(Exception):
    def __init__(self, id: Any, code: int, message: str) -> None:
        super().__init__(message)
        self.id = id
        self.code = code
        self.message = message
