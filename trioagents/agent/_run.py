"""The run loop: one response, from ``response.created`` to exactly one terminal event.

Theory of operation
-------------------
:func:`run_response` emits ``response.created``, then repeats *steps* until the model answers
without asking for tools: build the prompt, stream the model (text → ``response.delta``),
run the agent tools it asked for concurrently (each in its own cancel scope inside one nursery
owned by the response), hand client tools to the caller (``tool.call`` and wait, or end the
response with them), and feed results back. Then it emits exactly one of ``response.done``,
``response.error`` or ``response.cancelled``:

* the model or a hook fails → ``response.error`` with the error's code; the function returns;
* the response's cancel scope is cancelled (``response.cancel``, session end, disconnect,
  shutdown) → ``response.cancelled`` is sent under a shielded, bounded scope and the
  cancellation propagates: **no cancel is ever swallowed**.

An agent tool that raises does not fail the response: the model sees the error as the tool's
result (``is_error``), which is what models are trained to recover from — except a
:class:`~trioagents.payments.PaymentError`, which ends (or suspends) the turn.

Payments (PROTOCOLS.md §9): when ``ctx.payments`` is set and the agent charges something
(:func:`~trioagents.payments.effective_pricing`), the turn needs a verified payment token
before any work: without one (or with a bad one) the response ends with
``response.error{payment_failed}`` whose ``details`` rebuild the
:class:`~trioagents.payments.PaymentError` (Completions turns it into a 402), or — when the
transport negotiates in-band (``ctx.wait_payment``, UAMP) — the loop emits
``payment.required{extra.action:"pay"}`` and waits, within ``payment_timeout``, for a valid
submission (``payment.error{can_retry:true}`` after each bad one, ``payment.accepted`` after
the good one). The steps then run inside a :class:`~trioagents.payments.TurnPayment`: each agent
tool call is charged before it runs and each model step's usage after it; a charge the token
cannot cover suspends the charging task in place and negotiates a ``topup`` the same way (or
ends the response with ``INSUFFICIENT_TOKEN_BALANCE`` when there is no ``wait_payment``). The
locks are settled before ``response.done`` and released on every other outcome, cancellation
included; in-band transports get a ``payment.balance`` after the ``response.done``, and a
``payment.error{payment_timeout, can_retry:false}`` before a ``response.error{payment_timeout}``.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from decimal import Decimal
from typing import Any, cast

import trio

from .. import uamp
from .._errors import AgentError, MaxStepsExceeded, ToolTimeout, TrioAgentsError
from ..payments import (
    InsufficientTokenBalanceError,
    PaymentError,
    PaymentTimeoutError,
    PaymentTokenRequiredError,
    Pricing,
    TurnPayment,
    VerifiedPayment,
    effective_pricing,
    render_payment_accepted,
    render_payment_balance,
    render_payment_error,
    render_payment_required,
)
from ._agent import Agent, Context, ToolArgumentError, _current_call, _maybe_await
from ._messages import Message
from ._model import ModelRequest, TextChunk, ThinkingChunk, ToolCallRequest, Usage

__all__ = ["run_response", "is_cancellation", "RESPONSE_ERROR_CODES"]

RESPONSE_ERROR_CODES = frozenset(
    {
        "agent_error",
        "tool_timeout",
        "payment_timeout",
        "payment_failed",
        "unsupported_modality",
        "rate_limit_exceeded",
        "internal_error",
        # routing through a hub (PROTOCOLS.md §2)
        "agent_not_found",
        "agent_offline",
        "agent_timeout",
    }
)
"""The ``response.error`` codes of PROTOCOLS.md §1.3; any other error code is reported as
``agent_error`` with the original code in ``details.reason``."""

log = logging.getLogger("trioagents.agent")


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``trio.Cancelled`` or a group made only of them."""
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        _, rest = exc.split(trio.Cancelled)
        return rest is None
    return False


def _first_error(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        rest = exc.split(trio.Cancelled)[1]
        exc = (rest or exc).exceptions[0]
    return exc


async def run_response(ctx: Context) -> uamp.ServerEvent:
    """Run one response and emit its events through ``ctx.emit``.

    Returns:
        The terminal event that was emitted (``ResponseDone`` or ``ResponseError``).

    Raises:
        trio.Cancelled: the response was cancelled; ``response.cancelled`` has been emitted
            (shielded, within ``config.cleanup_timeout``) before this propagates. When tools
            were running it arrives as a group made only of ``Cancelled`` (see
            :func:`is_cancellation`); the enclosing cancel scope absorbs either form.
    """
    sid = ctx.session_id
    rid = ctx.response_id
    # Shielded: once a response is asked for, its response.created goes out even if a cancel
    # is already on its way, so the cancel then ends it with response.cancelled (the terminal
    # rule) instead of leaving the client with a response that never started or never ends.
    with trio.CancelScope(shield=True), trio.move_on_after(ctx.config.cleanup_timeout):
        await ctx.emit(uamp.ResponseCreated(response_id=rid, session_id=sid))
    terminal: uamp.ServerEvent
    try:
        await _paid_turn(ctx)
    except BaseException as exc:
        if not isinstance(exc, Exception) and not is_cancellation(exc):
            raise  # KeyboardInterrupt, SystemExit: never turned into an event
        if is_cancellation(exc):
            partial = ctx.output_text
            _close_conversation(ctx)
            with trio.CancelScope(shield=True), trio.move_on_after(ctx.config.cleanup_timeout):
                try:
                    await ctx.emit(
                        uamp.ResponseCancelled(
                            response_id=rid,
                            session_id=sid,
                            partial_output=[uamp.TextContent(partial)] if partial else [],
                        )
                    )
                finally:
                    await _finalize(ctx)
            raise
        err = _first_error(exc)
        if isinstance(err, PaymentTimeoutError) and ctx.wait_payment is not None:
            await ctx.emit(render_payment_error(err, can_retry=False, session_id=sid))
        if isinstance(err, TrioAgentsError):
            code, details = err.code, dict(err.details or {})
            if code not in RESPONSE_ERROR_CODES:
                details.setdefault("reason", code)
                code = "agent_error"
            status = getattr(err, "status", None)
            if status is not None:
                details.setdefault("upstream_status", status)
            info = uamp.ErrorInfo(code=code, message=err.message, details=details or None)
        else:
            log.exception("agent %r failed", ctx.agent.name, exc_info=err)
            info = uamp.ErrorInfo(code="agent_error", message=f"{type(err).__name__}: {err}")
        terminal = uamp.ResponseError(response_id=rid, session_id=sid, error=info)
        await ctx.emit(terminal)
        if ctx.agent.has_hooks("finalize"):
            with trio.CancelScope(shield=True), trio.move_on_after(ctx.config.cleanup_timeout):
                await _finalize(ctx)
        return terminal
    output: list[Any] = []
    text = ctx.output_text
    if text:
        output.append(uamp.TextContent(text))
    output.extend(uamp.ToolCallContent(c) for c in ctx.returned_calls)
    terminal = uamp.ResponseDone(
        response_id=rid,
        session_id=sid,
        response=uamp.ResponseInfo(id=rid, output=output, usage=ctx.usage),
    )
    await ctx.emit(terminal)
    if ctx.agent.has_hooks("finalize"):  # two cancel scopes per response saved otherwise
        with trio.CancelScope(shield=True), trio.move_on_after(ctx.config.cleanup_timeout):
            await _finalize(ctx)
    if ctx.payment is not None and ctx.wait_payment is not None:
        await _emit_balance(ctx, ctx.payment)
    return terminal


# --------------------------------------------------------------------------------------------
# Payments
# --------------------------------------------------------------------------------------------


async def _paid_turn(ctx: Context) -> None:
    """The hooks and steps of one turn, inside a :class:`TurnPayment` when the turn is paid."""
    service = ctx.payments
    pricing = effective_pricing(ctx.agent) if service is not None else None
    if service is None or pricing is None:
        await ctx.agent.run_hooks("on_message", ctx)
        await _steps(ctx)
        return
    verified = await _pay_token(ctx, pricing)

    async def topup(err: InsufficientTokenBalanceError) -> str | None:
        # The token (topped up, or another one) must cover what the open locks lack.
        requested = Decimal(str((err.details or {}).get("requested", err.amount or 0)))
        return (await _negotiate(ctx, err, requested - pay.remaining)).token_id

    pay = TurnPayment(
        service.backend,
        verified.token_id,
        pricing=pricing,
        topup=topup if ctx.wait_payment is not None else None,
        payment_timeout=ctx.config.payment_timeout,
        cleanup_timeout=ctx.config.cleanup_timeout,
    )
    ctx.payment = pay
    async with pay:
        await ctx.agent.run_hooks("on_message", ctx)
        await _steps(ctx)


def _asked_amount(pricing: Pricing) -> Decimal:
    """What a turn asks for up front: the reserve, else the first non-zero price."""
    for value in (
        pricing.turn_reserve,
        pricing.per_turn,
        pricing.per_tool_call,
        *pricing.tools.values(),
        pricing.per_output_token,
        pricing.per_input_token,
    ):
        if value > 0:
            return value
    return Decimal(0)


async def _pay_token(ctx: Context, pricing: Pricing) -> VerifiedPayment:
    """The verified token that pays for this turn (``action="pay"``, before any work).

    Raises:
        PaymentError: no usable token and no in-band negotiation (or it timed out).
    """
    assert ctx.payments is not None
    amount = _asked_amount(pricing)
    accepts = ctx.payments.accepts(amount, pricing.currency)
    ask: PaymentError = PaymentTokenRequiredError(
        amount=amount,
        currency=pricing.currency,
        accepts=accepts,
        reason=f"agent {ctx.agent.name!r} charges for its answers",
    )
    if ctx.payment_token:
        try:
            return await ctx.payments.verify_for(ctx.payment_token, ask, required=amount)
        except InsufficientTokenBalanceError as exc:
            if ctx.wait_payment is None:
                exc.accepts = exc.accepts or accepts
                exc.details = {"accepts": exc.accepts, **(exc.details or {})}
                raise
            ask = exc
        except PaymentError:
            if ctx.wait_payment is None:
                raise
            # A stale or bad session token: ask for a new one, like when there is none.
    if ctx.wait_payment is None:
        raise ask
    with trio.move_on_after(ctx.config.payment_timeout):
        return await _negotiate(ctx, ask, amount)
    raise PaymentTimeoutError(
        f"no payment within {ctx.config.payment_timeout:g} s",
        amount=ask.amount,
        currency=ask.currency,
        action="pay",
    )


async def _negotiate(ctx: Context, err: PaymentError, required: Decimal) -> VerifiedPayment:
    """In-band negotiation: ``payment.required`` for ``err``, then verify each submitted token
    (``payment.error{can_retry:true}`` for a bad one) until one holds ``required``
    (``payment.accepted``). The caller bounds it with ``payment_timeout``."""
    assert ctx.payments is not None and ctx.wait_payment is not None
    sid = ctx.session_id
    if not err.accepts and err.amount is not None:
        err.accepts = ctx.payments.accepts(err.amount, err.currency or "credits")
    await ctx.emit(render_payment_required(err, response_id=ctx.response_id, session_id=sid))
    while True:
        token = await ctx.wait_payment(err)
        try:
            verified = await ctx.payments.verify_for(token, err, required=required)
        except PaymentError as bad:
            await ctx.emit(render_payment_error(bad, can_retry=True, session_id=sid))
            continue
        await ctx.emit(
            render_payment_accepted(
                ctx.ids.new("pay"),
                verified.balance.balance,
                expires_at=verified.balance.expires_at,
                session_id=sid,
            )
        )
        return verified


async def _emit_balance(ctx: Context, pay: TurnPayment) -> None:
    """``payment.balance`` after a paid ``response.done`` (best effort, bounded)."""
    assert ctx.payments is not None
    with trio.move_on_after(ctx.config.cleanup_timeout):
        try:
            balance = await ctx.payments.backend.balance(pay.token_id)
        except PaymentError:
            log.warning("could not read the balance of payment token %s", pay.token_id)
            return
        await ctx.emit(
            render_payment_balance(
                balance.balance,
                balance.currency,
                initial_amount=balance.initial_amount,
                expires_at=balance.expires_at,
                session_id=ctx.session_id,
            )
        )


def _close_conversation(ctx: Context) -> None:
    # After a cancel the conversation must stay valid for the next turn: every tool call the
    # assistant made gets an answer, and text the client already saw (but that no assistant
    # message holds yet) stays in the conversation.
    for call in ctx.open_calls:
        ctx.session.messages.append(
            Message(role="tool", content="error: the response was cancelled", tool_call_id=call.id)
        )
    ctx.open_calls = []
    unsaid = "".join(ctx.text[ctx.committed_chunks :])
    if unsaid:
        ctx.session.messages.append(Message(role="assistant", content=unsaid))
        ctx.committed_chunks = len(ctx.text)


async def _finalize(ctx: Context) -> None:
    try:
        await ctx.agent.run_hooks("finalize", ctx)
    except Exception:
        log.exception("finalize hook of agent %r failed", ctx.agent.name)


async def _steps(ctx: Context) -> None:
    max_steps = ctx.agent.max_steps or ctx.config.max_steps
    for _ in range(max_steps):
        agent = ctx.agent  # a handoff may change it between steps
        calls = await _llm_step(ctx)
        if not calls:
            return
        client_names = {t["function"]["name"] for t in ctx.tools_of_client if "function" in t}
        agent_calls = [c for c in calls if c.name in agent.tools or c.name in agent.handoffs]
        client_calls = [c for c in calls if c not in agent_calls and c.name in client_names]
        unknown = [c for c in calls if c not in agent_calls and c not in client_calls]
        results: dict[str, uamp.ToolResultInfo] = {}
        if agent_calls:
            results.update(await _run_agent_tools(ctx, agent_calls))
        for c in unknown:
            info = uamp.ToolResultInfo(
                call_id=c.id,
                result=f"error: there is no tool named {c.name!r}",
                is_error=True,
                status="error",
            )
            results[c.id] = info
            # The client sees the attempt and its failure, like any agent tool call.
            rid, sid = ctx.response_id, ctx.session_id
            await ctx.emit(
                uamp.ResponseDelta(response_id=rid, session_id=sid, delta=uamp.ToolCallDelta(c))
            )
            await ctx.emit(
                uamp.ResponseDelta(
                    response_id=rid, session_id=sid, delta=uamp.ToolResultDelta(info)
                )
            )
        if client_calls:
            for c in client_calls:
                await ctx.emit(
                    uamp.ResponseDelta(
                        response_id=ctx.response_id,
                        session_id=ctx.session_id,
                        delta=uamp.ToolCallDelta(c),
                    )
                )
                await ctx.emit(
                    uamp.ToolCall(
                        response_id=ctx.response_id,
                        session_id=ctx.session_id,
                        call_id=c.id,
                        name=c.name,
                        arguments=c.arguments,
                    )
                )
            if ctx.client_tool_mode == "return" or ctx.wait_tool_results is None:
                # Completions: the caller runs them and comes back with a new request; the
                # agent tools that ran this step are already in the conversation it resends.
                ctx.returned_calls.extend(client_calls)
                ctx.finish_reason = "tool_calls"
                return
            with trio.move_on_after(ctx.config.tool_result_timeout) as timeout:
                results.update(await ctx.wait_tool_results(client_calls))
            if timeout.cancelled_caught:
                raise ToolTimeout(
                    f"no tool.result for {', '.join(c.id for c in client_calls)} within "
                    f"{ctx.config.tool_result_timeout:g} s"
                )
        for c in calls:
            r = results[c.id]
            ctx.session.messages.append(Message(role="tool", content=r.result, tool_call_id=c.id))
        ctx.open_calls = []
    raise MaxStepsExceeded(
        f"the agent reached max_steps ({max_steps}) without a final answer",
        details={"max_steps": max_steps},
    )


async def _llm_step(ctx: Context) -> list[uamp.ToolCallInfo]:
    agent = ctx.agent
    system = await agent.system_prompt(ctx)
    messages = tuple(ctx.session.messages)
    if system:
        messages = (Message(role="system", content=system), *messages)
    # Scoped tools (``@tool(scopes=…)``) are offered only to a caller whose principal holds
    # their scopes; anonymous callers (no principal) get only the unscoped ones.
    principal = _principal(ctx)
    tools = tuple(t.openai for t in agent.tools.values() if t.allows(principal))
    tools += tuple(h.tool.openai for h in agent.handoffs.values())
    tools += tuple(ctx.tools_of_client)
    request = ModelRequest(
        messages=messages, tools=tools, options=ctx.options, response_format=ctx.response_format
    )
    replaced = await agent.run_hooks("before_llm", ctx, request)
    if isinstance(replaced, ModelRequest):
        request = replaced
    step_text: list[str] = []
    calls: list[uamp.ToolCallInfo] = []
    chunk_hooks = agent.has_hooks("on_chunk")
    rid, sid = ctx.response_id, ctx.session_id
    step_in = step_out = 0
    async with aclosing(agent.model.stream(request)) as stream:
        async for event in stream:
            if isinstance(event, TextChunk):
                text = event.text
                if chunk_hooks:
                    replaced = await agent.run_hooks("on_chunk", ctx, text)
                    if isinstance(replaced, str):
                        text = replaced
                    if not text:
                        continue
                step_text.append(text)
                ctx.text.append(text)
                await ctx.emit_text(text)
            elif isinstance(event, ThinkingChunk):
                await ctx.emit(
                    uamp.Thinking(
                        response_id=rid, session_id=sid, content=event.text, is_delta=True
                    )
                )
            elif isinstance(event, ToolCallRequest):
                calls.append(
                    uamp.ToolCallInfo(id=event.id, name=event.name, arguments=event.arguments)
                )
            elif isinstance(event, Usage):
                _add_usage(ctx, event)
                step_in += event.input_tokens
                step_out += event.output_tokens
    if ctx.payment is not None and (step_in or step_out):
        await ctx.payment.charge_usage(input_tokens=step_in, output_tokens=step_out)
    await agent.run_hooks("after_llm", ctx, "".join(step_text), calls)
    if step_text or calls:
        ctx.session.messages.append(
            Message(role="assistant", content="".join(step_text), tool_calls=tuple(calls))
        )
    ctx.committed_chunks = len(ctx.text)
    ctx.open_calls = list(calls)
    return calls


class _InsufficientScope(Exception):
    """The caller lacks a scope the called tool needs (becomes the tool's error result)."""


def _principal(ctx: Context) -> Any:
    """The caller's principal as the transport recorded it (``None``: anonymous). Duck-typed:
    only its ``scopes`` are read, so the agent layer does not depend on ``trioagents.auth``."""
    return ctx.session.metadata.get("principal")


def _add_usage(ctx: Context, u: Usage) -> None:
    prev = ctx.usage or uamp.UsageInfo()
    inp = prev.input_tokens + u.input_tokens
    out = prev.output_tokens + u.output_tokens
    cached = None
    if u.cached_tokens is not None or prev.cached_tokens is not None:
        cached = (prev.cached_tokens or 0) + (u.cached_tokens or 0)
    ctx.usage = uamp.UsageInfo(
        input_tokens=inp, output_tokens=out, total_tokens=inp + out, cached_tokens=cached
    )


async def _run_agent_tools(
    ctx: Context, calls: list[uamp.ToolCallInfo]
) -> dict[str, uamp.ToolResultInfo]:
    rid, sid = ctx.response_id, ctx.session_id
    for c in calls:
        await ctx.emit(
            uamp.ResponseDelta(response_id=rid, session_id=sid, delta=uamp.ToolCallDelta(c))
        )
    results: dict[str, uamp.ToolResultInfo] = {}

    async def run_one(call: uamp.ToolCallInfo, scope: trio.CancelScope) -> None:
        _current_call.set(call.id)  # this task's context only: ctx.call_id / ctx.progress()
        agent = ctx.agent
        is_error = False
        result = ""
        with scope:
            try:
                handoff = agent.handoffs.get(call.name)
                if handoff is not None:
                    target = await _maybe_await(handoff.target(ctx))
                    if not isinstance(target, Agent):
                        raise AgentError(f"handoff {call.name!r} returned no agent")
                    ctx.session.agent = target
                    result = f"Transferred to {target.name}."
                else:
                    spec = agent.tools[call.name]
                    if not spec.allows(_principal(ctx)):
                        raise _InsufficientScope
                    if ctx.payment is not None:  # before it runs; may wait for a top-up here
                        await ctx.payment.charge_tool(call.name, cast(Any, spec))
                    result = await spec.call(ctx, call.arguments)
            except PaymentError:
                raise  # ends (or already suspended and resumed) the turn, never a tool result
            except _InsufficientScope:
                is_error, result = True, "error: insufficient scope"
            except ToolArgumentError as exc:
                is_error, result = True, f"error: {exc}"
            except Exception as exc:
                log.info("tool %r of agent %r raised", call.name, agent.name, exc_info=True)
                is_error, result = True, f"error: {type(exc).__name__}: {exc}"
        if scope.cancelled_caught:  # this one tool was cancelled, the response goes on
            is_error, result = True, "error: the tool call was cancelled"
        if agent.has_hooks("on_tool"):
            replaced = await agent.run_hooks("on_tool", ctx, call, result)
            if isinstance(replaced, str):
                result = replaced
        info = uamp.ToolResultInfo(
            call_id=call.id,
            result=result,
            is_error=True if is_error else None,
            status="error" if is_error else "completed",
        )
        results[call.id] = info
        ctx.tool_scopes.pop(call.id, None)
        await ctx.emit(
            uamp.ResponseDelta(response_id=rid, session_id=sid, delta=uamp.ToolResultDelta(info))
        )
        await ctx.emit(uamp.ToolCallDone(response_id=rid, session_id=sid, call_id=call.id))

    async with trio.open_nursery() as nursery:
        for c in calls:
            scope = trio.CancelScope()
            ctx.tool_scopes[c.id] = scope
            nursery.start_soon(run_one, c, scope)
    return results
