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
result (``is_error``), which is what models are trained to recover from.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from typing import Any

import trio

from .. import uamp
from .._errors import AgentError, MaxStepsExceeded, ToolTimeout, TrioAgentsError
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
        await ctx.agent.run_hooks("on_message", ctx)
        await _steps(ctx)
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
    with trio.CancelScope(shield=True), trio.move_on_after(ctx.config.cleanup_timeout):
        await _finalize(ctx)
    return terminal


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
    tools = tuple(t.openai for t in agent.tools.values())
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
                await ctx.emit(
                    uamp.ResponseDelta(response_id=rid, session_id=sid, delta=uamp.TextDelta(text))
                )
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
    await agent.run_hooks("after_llm", ctx, "".join(step_text), calls)
    if step_text or calls:
        ctx.session.messages.append(
            Message(role="assistant", content="".join(step_text), tool_calls=tuple(calls))
        )
    ctx.committed_chunks = len(ctx.text)
    ctx.open_calls = list(calls)
    return calls


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
                    result = await agent.tools[call.name].call(ctx, call.arguments)
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
