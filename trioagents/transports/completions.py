"""OpenAI Chat Completions over HTTP (PROTOCOLS.md §5), JSON and SSE.

Theory of operation
-------------------
The endpoint validates the request, then returns a :class:`CompletionsResponse`, an ASGI app
that owns the turn for the rest of the request::

    request nursery
    ├── disconnect watcher: http.disconnect cancels the whole nursery
    ├── the response (run_response → bounded channel of UAMP events)
    └── the handler's own task: renders events and writes the body

Preflight: the status line waits for the first agent event after ``response.created`` (or a
failure, or ``preflight_timeout``), so errors before any output are ordinary JSON responses with
the right status. After the 200, everything queued at that moment is rendered into *one* body
chunk (several SSE events per write). A client that disconnects cancels the request nursery:
the response is cancelled, which closes the upstream model stream and cancels tools.

Payments (§9): the payment token comes from ``X-PAYMENT``, ``X-Payment-Token`` or
``?payment_token=`` (:func:`~trioagents.payments.select_payment_token`). Completions does not
negotiate in-band: a payment error before any output is an HTTP 402 with the §9.2 body (the
client repeats the request with ``X-PAYMENT``); after the 200 it is an error chunk
``{"error":{…,"type":"payment_required","accepts":[…]}}`` then ``[DONE]``.

Auth (§10): with an :class:`~trioagents.auth.AuthService` on the server, the bearer credential
(``Authorization`` or ``?token=``) is verified before the turn; a bad one (or none when required)
is a 401 with ``WWW-Authenticate`` and the OpenAI error body. The caller's ``sub`` goes into
the session metadata (``principal``, ``sub``). A signing agent signs the exact text it sent
(content deltas concatenated) and the exact request body: header ``X-Response-Signature`` on
JSON, ``event: response_signature`` after ``[DONE]`` on SSE (none after an error).
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from typing import Any

import orjson
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import uamp
from .._errors import RemoteProtocolError
from ..agent import Agent, Context, Session, Skill, http, messages_from_openai, run_response
from ..auth import (
    AuthError,
    AuthService,
    ResponseHasher,
    ResponseSigner,
    base_url_of,
    bearer_token,
    denial_response,
)
from ..payments import (
    PaymentError,
    PaymentsService,
    payment_error_from_details,
    render_http_402,
    select_payment_token,
)
from ..protocols.completions import (
    DONE,
    CompletionRequest,
    CompletionsError,
    Renderer,
    parse_request,
)
from ..protocols.sse import SSE_HEADERS, sse_comment, sse_event
from ._runtime import Runtime

__all__ = ["CompletionsTransport", "handle_completion", "read_body", "openai_error"]

log = logging.getLogger("trioagents.transports.completions")

_STATUS = {
    "rate_limit_exceeded": (429, "rate_limit_error"),
    "upstream_unavailable": (503, "server_error"),
    "tool_timeout": (504, "server_error"),
    "agent_not_found": (404, "invalid_request_error"),
    "agent_offline": (503, "server_error"),
    "agent_timeout": (504, "server_error"),
}


def openai_error(
    message: str, *, status: int = 400, param: str | None = None, code: str | None = None
) -> JSONResponse:
    """A JSON response with an OpenAI-shaped error body."""
    return JSONResponse(
        CompletionsError(message, status=status, param=param, code=code).body, status_code=status
    )


async def read_body(request: Request, limit: int) -> bytes:
    """Read the request body, refusing more than ``limit`` bytes.

    Raises:
        CompletionsError: 413 when the body is larger than ``limit``.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise CompletionsError(
            f"request body exceeds {limit} bytes", status=413, code="request_too_large"
        )
    chunks: list[bytes] = []
    size = 0
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            size += len(chunk)
            if size > limit:
                raise CompletionsError(
                    f"request body exceeds {limit} bytes", status=413, code="request_too_large"
                )
            chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # later readers (the server-level route) see the same bytes
    return body


async def handle_completion(request: Request, agent: Agent) -> Response:
    """Validate a Chat Completions request for ``agent`` and return the response that runs it."""
    runtime = Runtime.of(request)
    try:
        body = getattr(request, "_body", None)
        if body is None:
            body = await read_body(request, runtime.config.max_body_size)
        req = parse_request(body)
        messages = messages_from_openai(req.messages)
    except CompletionsError as exc:
        return JSONResponse(exc.body, status_code=exc.status)
    except RemoteProtocolError as exc:
        return openai_error(exc.message, param="messages", code="invalid_value")
    for t in req.tools:
        name = t["function"]["name"]
        if name in agent.tools or name in agent.handoffs:
            return openai_error(
                f"client tool {name!r} has the same name as a tool of agent {agent.name!r}",
                param="tools",
                code="tool_name_conflict",
            )
    metadata: dict[str, Any] = {"transport": "completions", "headers": dict(request.headers)}
    auth = AuthService.of(runtime)
    signer: ResponseSigner | None = None
    audience: str | None = None
    if auth is not None:
        base = base_url_of(request.scope)
        try:
            principal = await auth.authenticate(
                agent.name, bearer_token(request.headers, request.query_params), base
            )
        except AuthError as err:
            return denial_response(err, openai=True)
        if principal is not None:
            metadata["principal"] = principal
            metadata["sub"] = audience = principal.sub
        signer = auth.signer(agent.name, base)
    session = Session(
        id=runtime.ids.new("sess"),
        agent=agent,
        messages=messages,
        client_tools=req.tools,
        metadata=metadata,
    )
    token = select_payment_token(headers=request.headers, query=request.query_params)
    response = CompletionsResponse(runtime, session, req, payment_token=token)
    if signer is not None:
        response.sign_with(signer, body, audience)
    return response


class CompletionsResponse(Response):
    """The ASGI response that runs one turn and renders it as JSON or SSE.

    Args:
        runtime: the server's runtime.
        session: the turn's session (the request's conversation).
        req: the parsed request.
        payment_token: the request's payment token (§0.2), if any.
    """

    def __init__(
        self,
        runtime: Runtime,
        session: Session,
        req: CompletionRequest,
        *,
        payment_token: str | None = None,
    ) -> None:
        self.runtime = runtime
        self.session = session
        self.req = req
        self.payment_token = payment_token
        self.background = None
        self._signer: ResponseSigner | None = None
        self._request_bytes = b""
        self._audience: str | None = None

    def sign_with(self, signer: ResponseSigner, request_bytes: bytes, audience: str | None) -> None:
        """Sign the response (§10) over ``request_bytes`` (the exact body), for ``audience``
        (the caller's ``sub``)."""
        self._signer = signer
        self._request_bytes = request_bytes
        self._audience = audience

    def _signature(self, response_hash: str, response_id: str) -> str | None:
        if self._signer is None:
            return None
        return self._signer.sign(
            request_bytes=self._request_bytes,
            response_hash=response_hash,
            audience=self._audience,
            response_id=response_id,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        runtime = self.runtime
        cfg = runtime.config
        send_ch, recv_ch = trio.open_memory_channel[Any](cfg.outbound_queue_size)

        async def emit(event: Any) -> None:
            if type(event) is uamp.ResponseDelta:
                runtime.stats.deltas += 1
            # Queue without a schedule point while there is room (still a cancel point): a
            # burst from the model is queued whole before the writer runs, which then writes
            # it as one body chunk instead of one chunk per event.
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                send_ch.send_nowait(event)
                return
            except trio.WouldBlock:
                pass
            except trio.BrokenResourceError:  # the client is gone: nobody renders it
                return
            try:
                await send_ch.send(event)
            except trio.BrokenResourceError:
                await trio.lowlevel.checkpoint()

        ctx = Context(
            session=self.session,
            response_id=runtime.ids.new("resp"),
            emit=emit,
            config=cfg,
            ids=runtime.ids,
            client_tool_mode="return",
            options=self.req.options,
            response_format=self.req.response_format,
            payments=PaymentsService.of(runtime),
            payment_token=self.payment_token,
        )
        renderer = Renderer(
            id="chatcmpl-" + runtime.ids.hex(12),
            created=runtime.clock.now_s(),
            model=self.session.agent.name,
        )
        runtime.stats.responses += 1

        async def respond() -> None:
            async with send_ch:
                await run_response(ctx)

        finished = False

        async def send_tracked(message: dict[str, Any]) -> None:
            # Hypercorn answers our last body with an http.disconnect while it recycles the
            # keep-alive connection; that one is not the client leaving, and cancelling then
            # would interrupt the recycling itself.
            nonlocal finished
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                finished = True
            await send(message)

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if finished:
                        return
                    log.debug("client went away; cancelling response %s", ctx.response_id)
                    runtime.stats.responses_cancelled += 1
                    nursery.cancel_scope.cancel()
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_disconnect)
            nursery.start_soon(respond)
            async with recv_ch:
                if self.req.stream:
                    await self._stream(ctx, renderer, recv_ch, send_tracked)
                else:
                    await self._json(ctx, renderer, recv_ch, send_tracked)
            nursery.cancel_scope.cancel()

    async def _json(self, ctx: Context, r: Renderer, events: Any, send: Any) -> None:
        reasoning: list[str] = []
        terminal: Any = None
        async for ev in events:
            if type(ev) is uamp.Thinking:
                reasoning.append(ev.content)
            elif ev.type in uamp.TERMINAL_TYPES:
                terminal = ev
        if isinstance(terminal, uamp.ResponseError):
            await _send_json(send, *_error_response(terminal.error, ctx.agent.name))
            return
        if not isinstance(terminal, uamp.ResponseDone):  # cancelled: nobody is listening
            return
        body = r.completion(
            ctx.output_text,
            ctx.returned_calls,
            ctx.finish_reason,
            terminal.response.usage,
            "".join(reasoning) or None,
        )
        text = body["choices"][0]["message"].get("content") or ""
        hasher = ResponseHasher()
        hasher.update(text)
        signature = self._signature(hasher.hexdigest(), ctx.response_id)
        headers = {"X-Response-Signature": signature} if signature is not None else None
        await _send_json(send, 200, body, headers)

    async def _stream(self, ctx: Context, r: Renderer, events: Any, send: Any) -> None:
        cfg = self.runtime.config
        req = self.req
        client_tools = {t["function"]["name"] for t in req.tools}
        first: list[Any] = []
        # Preflight: wait for the first event after response.created.
        with trio.move_on_after(cfg.preflight_timeout):
            async for ev in events:
                if type(ev) is uamp.ResponseCreated:
                    continue
                first.append(ev)
                break
        if first and not isinstance(first[0], uamp.ResponseError):
            # Whatever else is queued already goes out with the status line's first chunk.
            while len(first) < 256:
                try:
                    first.append(events.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
        if first and isinstance(first[0], uamp.ResponseError):
            await _send_json(send, *_error_response(first[0].error, ctx.agent.name))
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        head = r.role()
        hasher = ResponseHasher()
        done = False
        terminal: Any = None
        batch = first
        while True:
            out = [head] if head else []
            head = b""
            for ev in batch:
                t = type(ev)
                if t is uamp.ResponseDelta:
                    d = ev.delta
                    if type(d) is uamp.TextDelta:
                        hasher.update(d.text)
                        out.append(r.content(d.text))
                    elif req.include_agent_events:
                        out.extend(_agent_event(r, d, client_tools))
                elif t is uamp.ToolCall:
                    out.append(r.tool_call(ev.call_id, ev.name, ev.arguments))
                elif t is uamp.Thinking:
                    out.append(r.reasoning(ev.content))
                elif ev.type in uamp.TERMINAL_TYPES:
                    terminal = ev
                    done = True
            if done:
                if isinstance(terminal, uamp.ResponseDone):
                    out.append(r.finish(ctx.finish_reason))
                    if req.include_usage:
                        out.append(r.usage(terminal.response.usage))
                    out.append(DONE)
                    signature = self._signature(hasher.hexdigest(), ctx.response_id)
                    if signature is not None:
                        out.append(
                            sse_event(
                                orjson.dumps({"signature": signature}), event="response_signature"
                            )
                        )
                elif isinstance(terminal, uamp.ResponseError):
                    out.append(_error_chunk(terminal.error))
                await send(
                    {"type": "http.response.body", "body": b"".join(out), "more_body": False}
                )
                return
            if out:
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
            batch = []
            with trio.move_on_after(cfg.sse_keepalive):
                try:
                    batch.append(await events.receive())
                except trio.EndOfChannel:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return
            if not batch:
                await send({"type": "http.response.body", "body": sse_comment(), "more_body": True})
                continue
            while len(batch) < 256:
                try:
                    batch.append(events.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break


def _agent_event(r: Renderer, d: Any, client_tools: set[str]) -> list[bytes]:
    if type(d) is uamp.ToolCallDelta:
        c = d.tool_call
        if c.name in client_tools:
            return []
        return [
            r.agent_event(
                {"type": "tool_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
            )
        ]
    if type(d) is uamp.ToolResultDelta:
        res = d.tool_result
        return [
            r.agent_event(
                {
                    "type": "tool_result",
                    "call_id": res.call_id,
                    "status": res.status,
                    "result": res.result,
                }
            )
        ]
    if type(d) is uamp.ToolProgressDelta:
        p = d.tool_progress
        return [r.agent_event({"type": "tool_progress", "call_id": p.call_id, "text": p.text})]
    return []


def _payment_error(err: uamp.ErrorInfo) -> PaymentError | None:
    """The payment error behind a ``response.error``, if it is one."""
    if err.code not in ("payment_failed", "payment_timeout") or not err.details:
        return None
    return payment_error_from_details({**err.details, "message": err.message})


def _error_chunk(err: uamp.ErrorInfo) -> bytes:
    """The error chunk (then ``[DONE]``) for a failure after the 200."""
    payment = _payment_error(err)
    if payment is None:
        return Renderer.error(err.message, err.code)
    _, body = render_http_402(payment)
    chunk = {
        "error": {
            "message": err.message,
            "type": "payment_required",
            "param": None,
            "code": payment.error_code,
            "accepts": body["accepts"],
        }
    }
    return sse_event(orjson.dumps(chunk)) + DONE


def _error_response(err: uamp.ErrorInfo, agent: str | None = None) -> tuple[int, dict[str, Any]]:
    payment = _payment_error(err)
    if payment is not None:
        return render_http_402(payment, agent_name=agent)
    status, kind = _STATUS.get(err.code, (500, "server_error"))
    return status, {
        "error": {"message": err.message, "type": kind, "param": None, "code": err.code}
    }


async def _send_json(
    send: Any, status: int, body: dict[str, Any], extra: dict[str, str] | None = None
) -> None:
    data = orjson.dumps(body)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
    ]
    for name, value in (extra or {}).items():
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def models_body(agents: list[Agent], created: int) -> dict[str, Any]:
    """The ``/v1/models`` list for ``agents``."""
    return {
        "object": "list",
        "data": [
            {"id": a.name, "object": "model", "created": created, "owned_by": "trioagents"}
            for a in agents
        ],
    }


class CompletionsTransport(Skill):
    """Serves the agent over OpenAI Chat Completions."""

    @http("/chat/completions", methods=["POST"])
    @http("/v1/chat/completions", methods=["POST"])
    async def chat_completions(self, request: Request) -> Response:
        """``POST /agents/{name}/chat/completions`` (and ``/v1/…``)."""
        return await handle_completion(request, self.agent)

    @http("/models")
    @http("/v1/models")
    async def models(self, request: Request) -> Response:
        """This agent as the only model."""
        return JSONResponse(models_body([self.agent], Runtime.of(request).clock.now_s()))

    @http("/capabilities")
    async def capabilities(self, request: Request) -> Response:
        """The agent's UAMP capabilities."""
        return JSONResponse(self.agent.capabilities())
