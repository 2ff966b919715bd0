"""Routing a caller's turn to an agent the hub does not run (PROTOCOLS.md §2, hub side).

The hub serves callers through the ordinary Completions and UAMP transports with a *proxy*
agent per name, whose "model" is :class:`RoutedModel`: each LLM call of the proxy becomes one
turn delivered to the real agent, falling through only when a step cannot connect (agent
errors are final):

1. **inbound session** — a PortalConnect daemon registered the agent: ``input.text`` with the
   full history on that session;
2. **outbound UAMP** — ``{agent_url}/uamp``: ``session.create{agent, token}``, ``input.text``;
3. **HTTP** — ``POST {agent_url}/chat/completions`` with ``stream: true``.

Text deltas become the proxy's text (so the caller's transport renders them as usual); agent
tool activity (tool_call / tool_result / tool_progress deltas) is passed through to the caller
as is.

**Who is calling.** Each turn carries the caller as the transports verified it (the hub's
:class:`~trioagents.auth.AuthService`): ``input.text.context = {"caller": {"sub", "iss",
"scopes"}}`` on the inbound session and on outbound UAMP (no ``context`` for anonymous callers).
The daemon exposes it to the agent as ``session.metadata["caller"]`` / ``["sub"]`` /
``["principal"]`` for that turn only. The caller's credential (bearer token, API key) is
**never** forwarded: the agent trusts the hub's word, not a token meant for the hub.

**Payments** (§9). The caller's payment token (``X-PAYMENT`` / ``input.text.payment_token`` /
session token) travels with the turn as ``input.text.payment_token`` (``X-PAYMENT`` on the
HTTP step). When the agent answers ``payment.required``:

* a caller that negotiates in-band (UAMP) gets the ``payment.required`` (its own response id);
  its ``payment.submit`` is forwarded to the agent's response, and the agent's
  ``payment.accepted`` / ``payment.error`` come back — so both ``pay`` and a mid-stream
  ``topup`` work through the hub, in place;
* any other caller (Completions) gets the protocol's payment error: the hub cancels the
  agent's response and ends the turn with the :class:`~trioagents.payments.PaymentError`
  rebuilt from ``payment.required`` (Completions: HTTP 402 with the §9.2 body before any
  output, a ``payment_required`` error chunk after); the client repeats with ``X-PAYMENT``. Because the proxy's run loop owns the caller's response, cancellation is the run loop's:
a caller that disconnects or sends ``response.cancel`` closes this model stream, which sends
``response.cancel`` to the daemon (or closes the outbound socket / HTTP stream).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import orjson
import trio

from .. import uamp
from .._errors import ModelError
from ..agent import (
    Agent,
    Context,
    Message,
    ModelRequest,
    TextChunk,
    ThinkingChunk,
    Usage,
    message_to_openai,
)
from ..agent._model import ModelEvent
from ..payments import (
    InsufficientTokenBalanceError,
    PaymentError,
    PaymentTokenInvalidError,
    PaymentTokenRequiredError,
    error_from_http,
)
from ..portal._socket import (
    ConnectFailed,
    DialSocket,
    HandshakeRejected,
    SocketClosed,
    dial_websocket,
)
from ..protocols.portal import decode_frame
from ._links import Inbound, TurnFailed

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = [
    "RoutedModel",
    "RoutedRequest",
    "proxy_agent",
    "caller_context",
    "payment_error_of",
    "HUB_ERROR_CODES",
]

log = logging.getLogger("trioagents.hub")

HUB_ERROR_CODES = frozenset({"agent_offline", "agent_not_found", "agent_timeout", "slow_consumer"})
"""Routing failures reported to callers with their own code (not folded into ``agent_error``)."""


@attrs.frozen
class RoutedRequest(ModelRequest):
    """A :class:`ModelRequest` that carries the caller's response context."""

    ctx: Context | None = None


def _keep_hub_codes(emit: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    # run_response folds codes outside §1.3's response.error list into agent_error (keeping the
    # original in details.reason); a routing failure is clearer to callers under its own code.
    async def emit_with_codes(event: Any) -> None:
        if type(event) is uamp.ResponseError and event.error.code == "agent_error":
            details = dict(event.error.details or {})
            reason = details.get("reason")
            if reason in HUB_ERROR_CODES:
                details.pop("reason")
                event = attrs.evolve(
                    event,
                    error=uamp.ErrorInfo(
                        code=str(reason), message=event.error.message, details=details or None
                    ),
                )
        await emit(event)

    emit_with_codes.hub_codes = True  # type: ignore[attr-defined]
    return emit_with_codes


def proxy_agent(hub: Hub, name: str) -> Agent:
    """The hub-side stand-in for agent ``name`` (served by the standard transports)."""
    agent = Agent(name, model=RoutedModel(hub, name), description=f"{name} (via hub)")

    def before_llm(ctx: Context, request: ModelRequest) -> ModelRequest:
        if not getattr(ctx.emit, "hub_codes", False):
            ctx.emit = _keep_hub_codes(ctx.emit)
        return RoutedRequest(
            messages=request.messages,
            tools=request.tools,
            options=request.options,
            response_format=request.response_format,
            ctx=ctx,
        )

    agent.add_hook("before_llm", before_llm)
    return agent


def caller_context(ctx: Context | None) -> dict[str, Any] | None:
    """``input.text.context`` naming the verified caller of the turn, or None (anonymous).

    ``{"caller": {"sub", "iss", "scopes"}}`` from the principal the caller's transport put in
    ``session.metadata["principal"]``. Never the caller's credential.
    """
    principal = ctx.session.metadata.get("principal") if ctx is not None else None
    sub = getattr(principal, "sub", None)
    if not isinstance(sub, str):
        return None
    scopes = getattr(principal, "scopes", None) or ()
    return {
        "caller": {
            "sub": sub,
            "iss": getattr(principal, "iss", None),
            "scopes": sorted(str(s) for s in scopes),
        }
    }


def payment_error_of(ev: uamp.PaymentRequired, *, token_sent: bool) -> PaymentError:
    """The :class:`~trioagents.payments.PaymentError` an agent's ``payment.required`` stands for
    (to render as the caller protocol's payment signal, e.g. HTTP 402).

    ``topup`` → :class:`~trioagents.payments.InsufficientTokenBalanceError`; ``pay`` without a
    token → :class:`~trioagents.payments.PaymentTokenRequiredError`; ``pay`` although a token
    was sent → :class:`~trioagents.payments.PaymentTokenInvalidError` (refused or too low).
    """
    req = ev.requirements or {}
    extra = ev.extra or {}
    action = "topup" if extra.get("action") == "topup" else "pay"
    amount = extra.get("amount") if action == "topup" else req.get("amount")
    kwargs: dict[str, Any] = {
        "accepts": [a for a in (ev.accepts or ()) if isinstance(a, dict)],
        "amount": str(amount) if isinstance(amount, (str, int, float)) else None,
        "currency": req.get("currency") if isinstance(req.get("currency"), str) else None,
        "reason": req.get("reason") if isinstance(req.get("reason"), str) else None,
        "action": action,
        "token_id": extra.get("token_id") if isinstance(extra.get("token_id"), str) else None,
    }
    if action == "topup":
        return InsufficientTokenBalanceError("the payment token needs a top-up", **kwargs)
    if token_sent:
        return PaymentTokenInvalidError(
            "the agent did not accept the payment token (invalid, expired or too low)", **kwargs
        )
    return PaymentTokenRequiredError("Payment token required", **kwargs)


def _last_user_text(messages: tuple[Message, ...]) -> str:
    if messages and messages[-1].role == "user":
        return messages[-1].text
    return ""


class _Unreachable(Exception):
    """This routing step cannot connect; try the next."""


class RoutedModel:
    """The "model" of a proxy agent: delivers each call to the real agent (see the module)."""

    def __init__(self, hub: Hub, agent: str) -> None:
        self.hub = hub
        self.agent = agent
        self.name = f"hub:{agent}"

    async def aclose(self) -> None:
        """Nothing pooled."""

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ModelEvent, None]:
        """Deliver ``request`` to the agent and stream its answer.

        Raises:
            ModelError: the agent failed (its code), or no route reached it
                (``agent_offline``), or it did not answer in ``turn_timeout`` (``agent_timeout``).
        """
        ctx = request.ctx if isinstance(request, RoutedRequest) else None
        inbound = self.hub.online.get(self.agent)
        if inbound is not None:
            async with aclosing(self._inbound(inbound, request, ctx)) as events:
                async for ev in events:
                    yield ev
            return
        record = await self.hub.store.get_agent(self.agent)
        if record is not None and record.agent_url:
            try:
                async with aclosing(
                    self._outbound_uamp(record.agent_url, record.agent_token, request, ctx)
                ) as events:
                    async for ev in events:
                        yield ev
                return
            except _Unreachable as exc:
                log.info("outbound UAMP to %s unavailable (%s); trying HTTP", self.agent, exc)
            try:
                async with aclosing(
                    self._outbound_http(record.agent_url, record.agent_token, request, ctx)
                ) as events:
                    async for ev in events:
                        yield ev
                return
            except _Unreachable as exc:
                log.info("HTTP to %s unavailable (%s)", self.agent, exc)
        raise ModelError(f"agent {self.agent!r} is offline", code="agent_offline")

    # -- 1. inbound session -------------------------------------------------------------------

    async def _inbound(
        self, inbound: Inbound, request: ModelRequest, ctx: Context | None
    ) -> AsyncGenerator[ModelEvent, None]:
        hub = self.hub
        payment_token = ctx.payment_token if ctx is not None else None
        event = uamp.InputText(
            session_id=inbound.session_id,
            text=_last_user_text(request.messages),
            messages=[message_to_openai(m) for m in request.messages],
            payment_token=payment_token,
            context=caller_context(ctx),
            event_id=hub.runtime.ids.new("evt"),
        )
        try:
            async with inbound.turn(event, hub.turn_buffer) as turn:
                # The deadline scope wraps each receive only: an async generator must never
                # yield inside a cancel scope (it would cancel its consumer's code).
                deadline = trio.current_time() + hub.turn_timeout

                async def receive() -> Any:
                    ev = None
                    with trio.move_on_at(deadline):
                        try:
                            ev = await turn.recv.receive()
                        except trio.EndOfChannel:
                            failure = turn.failure or TurnFailed(
                                "agent_offline", f"agent {self.agent!r} went offline"
                            )
                            raise ModelError(failure.message, code=failure.code) from None
                    if ev is None:
                        raise ModelError(
                            f"agent {self.agent!r} did not answer within {hub.turn_timeout:g} s",
                            code="agent_timeout",
                        )
                    return ev

                while True:
                    ev = await receive()
                    while type(ev) is uamp.PaymentRequired:
                        if ctx is None or ctx.wait_payment is None:
                            raise payment_error_of(ev, token_sent=bool(payment_token))
                        ev = await self._relay_payment(inbound, turn, ev, ctx, receive)
                    if ev.type.startswith("payment."):
                        continue  # a late payment.error/balance of a finished negotiation
                    if type(ev) is uamp.ResponseCancelled and not turn.cancel_requested:
                        # Nobody here asked: the daemon is shutting down or its session
                        # ended (e.g. replaced). For the caller the agent went away.
                        raise ModelError(
                            f"agent {self.agent!r} stopped before finishing the response "
                            "(its daemon left)",
                            code="agent_offline",
                        )
                    async for out in _translate(ev, ctx):
                        yield out
                    if ev.type in uamp.TERMINAL_TYPES:
                        return
        except TurnFailed as exc:
            raise ModelError(exc.message, code=exc.code) from None

    async def _relay_payment(
        self,
        inbound: Inbound,
        turn: Any,
        required: uamp.PaymentRequired,
        ctx: Context,
        receive: Callable[[], Awaitable[Any]],
    ) -> Any:
        """In-band payment through the hub: the caller gets ``payment.required``, its
        ``payment.submit`` goes to the agent's response, the agent's ``payment.accepted`` /
        ``payment.error`` come back. Returns the first agent event after the negotiation.

        Cancellation (the caller left, ``response.cancel``) stops the relay; the turn's own
        cleanup then cancels the agent's response.
        """
        assert ctx.wait_payment is not None
        sid = ctx.session_id
        err = payment_error_of(required, token_sent=bool(ctx.payment_token))
        await ctx.emit(
            attrs.evolve(
                required,
                response_id=ctx.response_id,
                session_id=sid,
                event_id=None,
                timestamp=None,
            )
        )
        wait_payment = ctx.wait_payment

        async def forward_submissions() -> None:
            while True:
                token = await wait_payment(err)
                inbound.link.reply(
                    uamp.PaymentSubmit(
                        session_id=inbound.session_id,
                        response_id=turn.response_id,
                        payment=uamp.PaymentInfo(scheme="token", token=token),
                        event_id=self.hub.runtime.ids.new("evt"),
                    )
                )

        after: Any = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward_submissions)
                while after is None:
                    ev = await receive()
                    if type(ev) in (uamp.PaymentAccepted, uamp.PaymentError):
                        await ctx.emit(
                            attrs.evolve(ev, session_id=sid, event_id=None, timestamp=None)
                        )
                        if not (type(ev) is uamp.PaymentError and ev.can_retry):
                            break
                    elif type(ev) is not uamp.PaymentBalance:
                        after = ev
                nursery.cancel_scope.cancel()
        except* ModelError as group:  # the agent went away / timed out while we negotiated
            raise group.exceptions[0] from None
        return after if after is not None else await receive()

    # -- 2. outbound UAMP ---------------------------------------------------------------------

    async def _outbound_uamp(
        self, agent_url: str, token: str | None, request: ModelRequest, ctx: Context | None
    ) -> AsyncGenerator[ModelEvent, None]:
        # The socket needs a nursery, and an async generator must not hold one across a
        # yield: the connection runs as a task of the hub's service nursery, owned through
        # ``scope`` (cancelled when this stream ends) and bounded by its shielded cleanup.
        nursery = self.hub.runtime.nursery
        if nursery is None:
            raise _Unreachable("the hub is not running")
        send, recv = trio.open_memory_channel[Any](self.hub.turn_buffer)
        scope = trio.CancelScope()
        nursery.start_soon(self._outbound_uamp_task, agent_url, token, request, send, scope, ctx)
        try:
            async with recv:
                async for item in recv:
                    if isinstance(item, BaseException):
                        raise item
                    if type(item) is uamp.PaymentRequired:  # one-shot: no in-band relay here
                        raise payment_error_of(
                            item, token_sent=bool(ctx is not None and ctx.payment_token)
                        )
                    async for out in _translate(item, ctx):
                        yield out
                    if item.type in uamp.TERMINAL_TYPES:
                        return
            raise ModelError(f"agent {self.agent!r} closed the socket", code="agent_offline")
        finally:
            scope.cancel()

    async def _outbound_uamp_task(
        self,
        agent_url: str,
        token: str | None,
        request: ModelRequest,
        send: trio.MemorySendChannel[Any],
        scope: trio.CancelScope,
        ctx: Context | None = None,
    ) -> None:
        base = agent_url.rstrip("/")
        url = ("ws" + base[len("http") :] if base.startswith("http") else base) + "/uamp"
        cfg = self.hub.runtime.config
        dial = dial_websocket(
            max_message_size=cfg.max_message_size,
            handshake_timeout=cfg.preflight_timeout,
            cleanup_timeout=cfg.cleanup_timeout,
        )
        headers = [("Authorization", f"Bearer {token}")] if token else []
        with scope:
            async with send:
                try:
                    try:
                        async with dial(url, headers) as sock:
                            await self._outbound_uamp_turn(sock, token, request, send, ctx)
                    except (ConnectFailed, HandshakeRejected) as exc:
                        await send.send(_Unreachable(str(exc)))
                    except SocketClosed:
                        await send.send(
                            ModelError(
                                f"agent {self.agent!r} closed the socket", code="agent_offline"
                            )
                        )
                    except uamp.DecodeError as exc:
                        await send.send(
                            ModelError(
                                f"agent {self.agent!r} sent {exc.message}", code="agent_error"
                            )
                        )
                    except Exception as exc:
                        # A hub service task: one route's failure must not take the hub down.
                        log.exception("outbound UAMP to %s failed", self.agent)
                        await send.send(
                            ModelError(f"outbound UAMP failed: {exc!r}", code="agent_offline")
                        )
                except trio.BrokenResourceError:
                    pass  # the caller is gone; nobody reads the outcome

    async def _outbound_uamp_turn(
        self,
        sock: DialSocket,
        token: str | None,
        request: ModelRequest,
        send: trio.MemorySendChannel[Any],
        ctx: Context | None = None,
    ) -> None:
        encoder = self.hub.runtime.encoder
        await sock.send_message(
            encoder.encode_text(
                uamp.SessionCreate(agent=self.agent, token=token, session={"modalities": ["text"]})
            )
        )
        await sock.send_message(
            encoder.encode_text(
                uamp.InputText(
                    text=_last_user_text(request.messages),
                    messages=[message_to_openai(m) for m in request.messages],
                    payment_token=ctx.payment_token if ctx is not None else None,
                    context=caller_context(ctx),
                )
            )
        )
        rid: str | None = None
        finished = False
        try:
            while True:
                ev = decode_frame(await sock.get_message(), prefer="server")
                if type(ev) is uamp.SessionError:
                    await send.send(ModelError(ev.error.message, code=ev.error.code))
                    return
                if type(ev) is uamp.Error:
                    await send.send(ModelError(ev.error.message, code="agent_error"))
                    return
                if type(ev) is uamp.ResponseCreated and rid is None:
                    rid = ev.response_id
                if rid is None or getattr(ev, "response_id", None) != rid:
                    continue
                await send.send(ev)
                if ev.type in uamp.TERMINAL_TYPES:
                    finished = True
                    return
        finally:
            if not finished and rid is not None:
                # The caller left: cancel the agent's response before closing (bounded).
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(self.hub.runtime.config.cleanup_timeout),
                ):
                    try:
                        await sock.send_message(
                            encoder.encode_text(uamp.ResponseCancel(response_id=rid))
                        )
                    except SocketClosed:
                        pass

    # -- 3. HTTP completions --------------------------------------------------------------------

    async def _outbound_http(
        self, agent_url: str, token: str | None, request: ModelRequest, ctx: Context | None = None
    ) -> AsyncGenerator[ModelEvent, None]:
        url = agent_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if ctx is not None and ctx.payment_token:
            headers["X-PAYMENT"] = ctx.payment_token
        body = {
            "model": self.agent,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [message_to_openai(m) for m in request.messages],
        }
        try:
            async with (
                httpx.AsyncClient(timeout=httpx.Timeout(None, connect=10.0)) as http,
                http.stream("POST", url, json=body, headers=headers) as resp,
            ):
                if resp.status_code == 402:
                    data = await resp.aread()
                    try:
                        raise error_from_http(402, orjson.loads(data))
                    except orjson.JSONDecodeError:
                        pass
                if resp.status_code >= 400:
                    data = await resp.aread()
                    raise ModelError(
                        f"agent {self.agent!r} answered HTTP {resp.status_code}: "
                        f"{data[:200].decode(errors='replace')}",
                        status=resp.status_code,
                    )
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        continue  # read to the end: httpx's body generators finish cleanly
                    chunk = orjson.loads(payload)
                    if "error" in chunk:
                        err = chunk["error"] or {}
                        raise ModelError(
                            str(err.get("message", "agent error")),
                            code=str(err.get("code") or "agent_error"),
                        )
                    for choice in chunk.get("choices") or ():
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            yield TextChunk(text)
                    usage = chunk.get("usage")
                    if usage:
                        yield Usage(
                            input_tokens=int(usage.get("prompt_tokens", 0)),
                            output_tokens=int(usage.get("completion_tokens", 0)),
                        )
        except httpx.TransportError as exc:
            raise _Unreachable(str(exc)) from None


async def _translate(ev: Any, ctx: Context | None) -> AsyncGenerator[ModelEvent, None]:
    """One daemon event → the proxy model's events (deltas passed through via ``ctx``)."""
    t = type(ev)
    if t is uamp.ResponseDelta:
        if type(ev.delta) is uamp.TextDelta:
            yield TextChunk(ev.delta.text)
        elif ctx is not None and type(ev.delta) is not uamp.AudioDelta:
            await ctx.emit(
                uamp.ResponseDelta(
                    response_id=ctx.response_id, session_id=ctx.session_id, delta=ev.delta
                )
            )
    elif t is uamp.Thinking:
        yield ThinkingChunk(ev.content)
    elif t is uamp.ResponseDone:
        usage = ev.response.usage
        if usage is not None:
            yield Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cached_tokens=usage.cached_tokens,
            )
    elif t is uamp.ResponseError:
        raise ModelError(ev.error.message, code=ev.error.code, details=ev.error.details)
    elif t is uamp.ResponseCancelled:
        raise ModelError("the agent cancelled the response", code="agent_error")
    elif t is uamp.ToolCall:
        raise ModelError(
            f"the agent asked the client to run tool {ev.name!r}; client tools are not routed "
            "through the hub",
            code="agent_error",
        )
