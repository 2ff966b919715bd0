"""The ACP connection engine, independent of the carrier (stdio, HTTP streams, WebSocket).

Theory of operation
-------------------
A carrier feeds raw messages (a line, a frame, a parsed POST body) into a bounded channel and
gives the engine one ``write(batch)`` function. :meth:`AcpConnection.serve` owns the tree::

    connection nursery
    ├── writer (_Writer.run): the only task that calls ``write``; batches what is queued
    └── work scope (AcpConnection.scope)
        ├── the reader: the serve task itself, handling each message without waiting
        └── one task per running prompt / seed call, each in its own cancel scope
            └── run_response → agent tools

The reader never waits on a prompt: ``session/prompt`` starts a task in the connection's nursery
(one prompt per session; a second one is refused with ``-32600``); ``session/cancel`` cancels
that prompt's scope. ``run_response`` then emits ``response.cancelled`` (rendered as nothing)
and the prompt task answers ``{"stopReason":"cancelled"}`` after every update it queued, so the
client sees no update after the answer. Replies computed by the reader itself go through the
writer's small control lane; updates and prompt answers share the ordered data lane.

The end of the inbound channel (stdin closed, socket gone) or :meth:`AcpConnection.close`
cancels every prompt; what is already queued is still written within ``cleanup_timeout``
unless the peer is gone (:meth:`AcpConnection.abort`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from importlib import metadata as _metadata
from typing import Any

import attrs
import trio

from ... import uamp
from ..._errors import RemoteProtocolError
from ...agent import Agent, Context, Message, Session, messages_from_openai, run_response
from ...agent._agent import ToolArgumentError
from ...auth import Principal, ResponseHasher, ResponseSigner
from ...payments import PaymentsService, payment_error_from_details, render_acp_payment_error
from ...protocols import acp, jsonrpc as rpc
from .._outbox import Outbox
from .._runtime import Runtime

__all__ = [
    "AcpConnection",
    "Outgoing",
    "WriteBatch",
    "sync_reply",
    "run_seed",
    "SERVER_VERSION",
    "payment_reply",
]

log = logging.getLogger("trioagents.transports.acp")

try:
    SERVER_VERSION = _metadata.version("trioagents")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    SERVER_VERSION = "0.0.0"
"""The version reported in ``agentInfo`` / ``serverInfo``."""


@attrs.frozen
class Outgoing:
    """One message for the peer and the session it belongs to (HTTP routes by it)."""

    message: dict[str, Any]
    session_id: str | None = None


WriteBatch = Callable[[list[Outgoing]], Awaitable[None]]
"""Writes several messages to the peer (one syscall / one SSE chunk when it can)."""

Send = Callable[[dict[str, Any]], Awaitable[None]]


def _merge(batch: list[Outgoing]) -> list[Outgoing]:
    """Merge text chunks within runs of the same session (never across sessions)."""
    if len(batch) < 2:
        return batch
    out: list[Outgoing] = []
    i = 0
    while i < len(batch):
        j = i
        sid = batch[i].session_id
        while j < len(batch) and batch[j].session_id == sid:
            j += 1
        if j - i == 1:
            out.append(batch[i])
        else:
            out.extend(Outgoing(m, sid) for m in acp.merge_chunks([o.message for o in batch[i:j]]))
        i = j
    return out


# --------------------------------------------------------------------------------------------
# Replies shared by every carrier (the HTTP POST answers seed methods itself)
# --------------------------------------------------------------------------------------------


def sync_reply(agent: Agent, req: rpc.Request) -> dict[str, Any] | None:
    """The reply to a request answered without running anything, or None.

    Covers both ``initialize`` flavours, ``authenticate`` and ``tools/list``.

    Raises:
        JsonRpcError: bad params.
    """
    method = req.method
    if method == "initialize":
        if acp.classify(req) == "seed":
            return rpc.result(
                req.id, acp.seed_initialize_result(name=agent.name, version=SERVER_VERSION)
            )
        return rpc.result(
            req.id, acp.initialize_result(req, name=agent.name, version=SERVER_VERSION)
        )
    if method == "authenticate":
        return rpc.result(req.id, {})
    if method == "tools/list":
        return rpc.result(
            req.id,
            acp.tools_list_result(
                (t.name, t.description, t.parameters) for t in agent.tools.values()
            ),
        )
    return None


def prepare_seed(agent: Agent, req: rpc.Request) -> Callable[[Runtime, Send], Awaitable[None]]:
    """Validate a seed ``prompt/submit`` or ``tools/call``; return the call that runs it.

    The returned ``run(runtime, send)`` sends every message of the answer through ``send``:
    for ``prompt/submit``, ``prompt/started``, ``prompt/progress``… and the final response;
    for ``tools/call``, the response only.

    Raises:
        JsonRpcError: ``-32602`` for bad params or an unknown tool; ``-32601`` otherwise.
    """
    if req.method in ("prompt/submit", "chat/submit"):
        raw, token = acp.parse_seed_submit(req)
        try:
            messages = messages_from_openai(raw)
        except RemoteProtocolError as exc:
            raise rpc.JsonRpcError(
                rpc.INVALID_PARAMS, f"Invalid params: {exc.message}", id=req.id
            ) from None

        async def run_prompt(runtime: Runtime, send: Send) -> None:
            await run_seed(runtime, agent, req.id, messages, send, payment_token=token)

        return run_prompt
    if req.method == "tools/call":
        name, arguments = acp.parse_tool_call(req)
        spec = agent.tools.get(name)
        if spec is None:
            raise rpc.JsonRpcError(
                rpc.INVALID_PARAMS, f"Invalid params: unknown tool {name!r}", id=req.id
            )

        async def run_tool(runtime: Runtime, send: Send) -> None:
            ctx = _context(runtime, agent, _discard, transport="acp-seed")
            try:
                text, failed = await spec.call(ctx, arguments), False
            except ToolArgumentError as exc:
                text, failed = f"error: {exc}", True
            except Exception as exc:
                log.info("tool %r of agent %r raised", name, agent.name, exc_info=True)
                text, failed = f"error: {type(exc).__name__}: {exc}", True
            await send(rpc.result(req.id, acp.tool_call_result(text, is_error=failed)))

        return run_tool
    raise acp.unknown_method(req)


async def _discard(event: Any) -> None:
    await trio.lowlevel.checkpoint()


def _context(
    runtime: Runtime,
    agent: Agent,
    emit: Callable[[Any], Awaitable[None]],
    *,
    transport: str,
    session: Session | None = None,
    payment_token: str | None = None,
) -> Context:
    if session is None:
        session = Session(
            id=runtime.ids.new("sess"), agent=agent, metadata={"transport": transport}
        )
    return Context(
        session=session,
        response_id=runtime.ids.new("resp"),
        emit=emit,
        config=runtime.config,
        ids=runtime.ids,
        session_id=session.id,
        client_tool_mode="return",
        payments=PaymentsService.of(runtime),
        payment_token=payment_token,
    )


def payment_reply(id: Any, terminal: Any) -> dict[str, Any] | None:
    """The ``-32402`` error answering a turn that ended for want of payment (§9.1), or None.

    ``data`` is ``{x402Version:2, accepts, error, subcode?}``
    (:func:`~trioagents.payments.render_acp_payment_error`).
    """
    if type(terminal) is not uamp.ResponseError or not terminal.error.details:
        return None
    err = payment_error_from_details({**terminal.error.details, "message": terminal.error.message})
    return None if err is None else render_acp_payment_error(err, id)


async def run_seed(
    runtime: Runtime,
    agent: Agent,
    request_id: Any,
    messages: list[Message],
    send: Send,
    *,
    payment_token: str | None = None,
) -> None:
    """Run one seed ``prompt/submit`` turn, sending its messages through ``send``.

    Cancellation cancels the turn; nothing is sent after that (the peer is gone or leaving).
    """
    session = Session(
        id=runtime.ids.new("sess"),
        agent=agent,
        messages=list(messages),
        metadata={"transport": "acp-seed", "payment_token": payment_token},
    )
    ctx: Context | None = None
    renderer: acp.SeedRenderer | None = None

    async def emit(event: Any) -> None:
        assert renderer is not None
        if type(event) is uamp.ResponseDelta:
            runtime.stats.deltas += 1
        for m in renderer.render(event):
            await send(m)

    ctx = _context(
        runtime, agent, emit, transport="acp-seed", session=session, payment_token=payment_token
    )
    renderer = acp.SeedRenderer(ctx.response_id)
    await send(renderer.started())
    runtime.stats.responses += 1
    try:
        terminal = await run_response(ctx)
    except BaseException:
        runtime.stats.responses_cancelled += 1
        raise
    if isinstance(terminal, uamp.ResponseError):
        runtime.stats.responses_failed += 1
    await send(
        payment_reply(request_id, terminal) or renderer.final(request_id, terminal, ctx.output_text)
    )


# --------------------------------------------------------------------------------------------
# The connection
# --------------------------------------------------------------------------------------------


@attrs.define(eq=False)
class _Prompt:
    request_id: Any
    frame: bytes = b""  # the exact request bytes (signed responses, §10)
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)


@attrs.frozen
class Framed:
    """An inbound message with the exact bytes it arrived as (an HTTP body), so a signed
    response can hash them (§10)."""

    message: dict[str, Any]
    frame: bytes


@attrs.define(eq=False)
class AcpSession:
    """One ACP session: a conversation and at most one running prompt."""

    id: str
    state: Session
    prompt: _Prompt | None = None


class AcpConnection:
    """One ACP connection: sessions, their prompts, and the single writer.

    Args:
        runtime: config, ids and stats.
        agent: the agent every session talks to.
        write: writes a batch of messages to the peer (called by the writer task only).
        transport: ``"acp-stdio"``, ``"acp-http"`` or ``"acp-ws"`` (in ``Session.metadata``).
        metadata: more transport facts for ``Session.metadata``.
        principal: the caller verified by the carrier (§10): ``principal`` and ``sub`` in
            every session's metadata.
        signer: signs each completed ``session/prompt`` result (``_meta.signature``, §10).
        on_stuck: extra action when the peer stops reading (the connection is closed anyway).
    """

    def __init__(
        self,
        runtime: Runtime,
        agent: Agent,
        write: WriteBatch,
        *,
        transport: str,
        metadata: dict[str, Any] | None = None,
        principal: Principal | None = None,
        signer: ResponseSigner | None = None,
    ) -> None:
        self.runtime = runtime
        self.agent = agent
        self.transport = transport
        self.metadata = dict(metadata or {})
        self.principal = principal
        self.signer = signer
        if principal is not None:
            self.metadata["principal"] = principal
            self.metadata["sub"] = principal.sub
        self._frame = b""  # the exact bytes of the message being dispatched
        self.sessions: dict[str, AcpSession] = {}
        self.client_capabilities: dict[str, Any] | None = None
        self.scope = trio.CancelScope()
        self.finished = trio.Event()
        self.writer = Outbox(
            write_batch=write,
            merge=_merge,
            size=runtime.config.outbound_queue_size,
            send_timeout=runtime.config.send_timeout,
            on_stuck=self._stuck,
            on_broken=self.abort,
        )
        self._nursery: trio.Nursery | None = None

    # -- lifetime ---------------------------------------------------------------------------

    def _stuck(self) -> None:
        log.warning(
            "ACP client stopped reading for %.0f s; closing the connection",
            self.runtime.config.send_timeout,
        )
        self.abort()

    def close(self) -> None:
        """Cancel every prompt and stop reading; what is queued is still written."""
        self.scope.cancel()

    def abort(self) -> None:
        """The peer is gone: drop queued output and cancel everything. Idempotent."""
        self.writer.close()
        self.scope.cancel()

    async def serve(
        self,
        inbound: trio.MemoryReceiveChannel[Any],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Handle messages from ``inbound`` until it ends or the connection is closed.

        Returns only after every prompt of the connection has finished and the writer has
        drained (bounded by ``cleanup_timeout``). Cancellation stops everything at once.
        """
        stats = self.runtime.stats
        stats.connections += 1
        stats.connections_open += 1
        try:
            async with trio.open_nursery() as connection:
                connection.start_soon(self.writer.run)
                with self.scope:
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        task_status.started()
                        async for item in inbound:
                            self.handle(item)
                        nursery.cancel_scope.cancel()
                self._nursery = None
                if self.writer.closed:
                    connection.cancel_scope.cancel()
                else:
                    self.writer.finish()
                    connection.cancel_scope.deadline = (
                        trio.current_time() + self.runtime.config.cleanup_timeout
                    )
        finally:
            stats.connections_open -= 1
            stats.sessions_open -= len(self.sessions)
            self.sessions.clear()
            self.finished.set()

    # -- reader -----------------------------------------------------------------------------

    def _reply(self, message: dict[str, Any], session_id: str | None = None) -> None:
        try:
            self.writer.send_control_nowait(Outgoing(message, session_id))
        except trio.WouldBlock:
            self._stuck()

    def send_error(self, code: int, message: str, id: Any = None) -> None:
        """Answer something that is not a request (a bad frame, an oversized line)."""
        self.runtime.stats.errors += 1
        self._reply(rpc.error(id, code, message))

    def handle(self, item: str | bytes | dict[str, Any] | Framed | acp.LineTooLong) -> None:
        """Handle one inbound message (never blocks)."""
        if isinstance(item, Framed):
            self._frame = item.frame
            try:
                self.handle(item.message)
            finally:
                self._frame = b""
            return
        if isinstance(item, str | bytes) and not self._frame:
            self._frame = item.encode("utf-8") if isinstance(item, str) else item
            try:
                self.handle_message(item)
            finally:
                self._frame = b""
            return
        self.handle_message(item)

    def handle_message(self, item: str | bytes | dict[str, Any] | acp.LineTooLong) -> None:
        """Handle one inbound message whose bytes, if needed, are already recorded."""
        if isinstance(item, acp.LineTooLong):
            self.send_error(
                rpc.INVALID_REQUEST,
                f"Invalid Request: message of {item.size} bytes exceeds the limit",
            )
            return
        try:
            msg = rpc.parse_message(item)
        except rpc.JsonRpcError as exc:
            self.runtime.stats.errors += 1
            self._reply(exc.to_message())
            return
        if isinstance(msg, rpc.Response):
            return  # we never send requests, so there is nothing to correlate
        try:
            self._dispatch(msg)
        except rpc.JsonRpcError as exc:
            self.runtime.stats.errors += 1
            if not msg.is_notification:
                exc.id = msg.id
                self._reply(exc.to_message())

    def _dispatch(self, req: rpc.Request) -> None:
        if req.is_notification:
            if req.method == "session/cancel":
                self._cancel(acp.parse_session_id(req))
            else:
                log.debug("ignoring ACP notification %r", req.method)
            return
        kind = acp.classify(req)
        if kind not in ("acp", "seed"):
            raise acp.unknown_method(req)
        reply = sync_reply(self.agent, req)
        if reply is not None:
            if req.method == "initialize" and isinstance(req.params, dict):
                caps = req.params.get("clientCapabilities")
                self.client_capabilities = caps if isinstance(caps, dict) else None
            self._reply(reply)
            return
        if kind == "seed":
            run = prepare_seed(self.agent, req)
            assert self._nursery is not None
            self._nursery.start_soon(self._run_seed, run)
            return
        handler = getattr(self, "_on_" + req.method.replace("session/", "session_"), None)
        if handler is None:
            raise acp.unknown_method(req)
        handler(req)

    def _session(self, req: rpc.Request) -> AcpSession:
        sid = acp.parse_session_id(req)
        s = self.sessions.get(sid)
        if s is None:
            raise rpc.JsonRpcError(
                rpc.INVALID_PARAMS, f"Invalid params: unknown sessionId {sid!r}", id=req.id
            )
        return s

    def _on_session_new(self, req: rpc.Request) -> None:
        params = acp.parse_new_session(req)
        limit = self.runtime.config.max_sessions_per_socket
        if len(self.sessions) >= limit:
            raise rpc.JsonRpcError(
                rpc.INVALID_REQUEST,
                f"Invalid Request: at most {limit} sessions per connection",
                id=req.id,
            )
        sid = self.runtime.ids.new("sess")
        state = Session(
            id=sid,
            agent=self.agent,
            metadata={
                "transport": self.transport,
                "cwd": params.cwd,
                "mcp_servers": params.mcp_servers,
                "client_capabilities": self.client_capabilities,
                **self.metadata,
            },
        )
        self.sessions[sid] = AcpSession(id=sid, state=state)
        self.runtime.stats.sessions += 1
        self.runtime.stats.sessions_open += 1
        self._reply(rpc.result(req.id, {"sessionId": sid}))

    def _on_session_load(self, req: rpc.Request) -> None:
        # loadSession is false: conversations live only as long as their connection.
        raise rpc.JsonRpcError(
            rpc.METHOD_NOT_FOUND,
            "Method not found: session/load (this agent does not advertise loadSession)",
            id=req.id,
        )

    def _on_session_cancel(self, req: rpc.Request) -> None:
        self._cancel(acp.parse_session_id(req))
        self._reply(rpc.result(req.id, None))

    def _on_session_close(self, req: rpc.Request) -> None:
        s = self._session(req)
        if s.prompt is not None:
            s.prompt.scope.cancel()
        del self.sessions[s.id]
        self.runtime.stats.sessions_open -= 1
        self._reply(rpc.result(req.id, {}), s.id)

    def _cancel(self, sid: str) -> None:
        s = self.sessions.get(sid)
        if s is not None and s.prompt is not None:
            s.prompt.scope.cancel()

    def _on_session_prompt(self, req: rpc.Request) -> None:
        params = acp.parse_prompt(req)
        s = self._session(req)
        if s.prompt is not None:
            raise acp.busy(req, s.id)
        # Marked busy before the task starts, so a second prompt in the same batch is refused.
        s.prompt = _Prompt(request_id=req.id, frame=self._frame)
        assert self._nursery is not None
        self._nursery.start_soon(self._run_prompt, s, s.prompt, params)

    # -- tasks ------------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any]) -> None:
        await self.writer.send(Outgoing(message))

    async def _run_seed(self, run: Callable[[Runtime, Send], Awaitable[None]]) -> None:
        await run(self.runtime, self._send)

    async def _run_prompt(self, s: AcpSession, p: _Prompt, params: acp.PromptParams) -> None:
        runtime = self.runtime
        state = s.state
        if params.payment_token:
            state.metadata["payment_token"] = params.payment_token
        state.messages.append(Message(role="user", content=params.content))
        renderer = acp.UpdateRenderer(s.id)
        hasher = ResponseHasher() if self.signer is not None else None

        async def emit(event: Any) -> None:
            if type(event) is uamp.ResponseDelta:
                runtime.stats.deltas += 1
                if hasher is not None and type(event.delta) is uamp.TextDelta:
                    hasher.update(event.delta.text)
            for m in renderer.render(event):
                await self.writer.send(Outgoing(m, s.id))

        ctx = _context(
            runtime,
            self.agent,
            emit,
            transport=self.transport,
            session=state,
            payment_token=params.payment_token,
        )
        runtime.stats.responses += 1
        terminal: Any = None
        try:
            with p.scope:
                terminal = await run_response(ctx)
        finally:
            if s.prompt is p:
                s.prompt = None
            if terminal is None:
                runtime.stats.responses_cancelled += 1
            elif isinstance(terminal, uamp.ResponseError):
                runtime.stats.responses_failed += 1
        # Queued after every update of this prompt: the client sees no update after it.
        paid = None if p.scope.cancel_called else payment_reply(p.request_id, terminal)
        reply = paid or acp.prompt_reply(
            p.request_id, terminal, finish_reason=ctx.finish_reason, cancelled=p.scope.cancel_called
        )
        if (
            hasher is not None
            and self.signer is not None
            and not p.scope.cancel_called
            and type(terminal) is uamp.ResponseDone
            and isinstance(reply.get("result"), dict)
        ):
            reply["result"]["_meta"] = {
                "signature": self.signer.sign(
                    request_bytes=p.frame,
                    response_hash=hasher.hexdigest(),
                    audience=self.principal.sub if self.principal is not None else None,
                    response_id=ctx.response_id,
                )
            }
        await self.writer.send(Outgoing(reply, s.id))
