"""The agent runtime: tools, hooks, prompts, handoffs, the run loop and user endpoints.

The run loop is driven through :func:`run_response` directly (events collected in a list);
user endpoints through the real server on 127.0.0.1:0 (httpx, trio-websocket, UAMP client).
"""

from __future__ import annotations

import re
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal, Optional

import attrs
import httpx
import pytest
import trio
import trio_websocket
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from trioagents import (
    Agent,
    AgentError,
    AgentServer,
    BuiltinModel,
    CallTool,
    Config,
    Context,
    Fail,
    Message,
    ModelRequest,
    Reply,
    Session,
    Skill,
    Think,
    handoff,
    hook,
    http,
    prompt,
    tool,
    uamp,
    websocket,
)
from trioagents.agent import TextChunk, ToolCallRequest, Usage, is_cancellation, run_response
from trioagents.client import open_uamp_client
from trioagents.testing import open_test_server

TIMEOUT = 10


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@attrs.define
class Run:
    """What one ``run_response`` call emitted."""

    events: list[Any]
    terminal: Any
    session: Session
    ctx: Context

    def of(self, cls: type) -> list[Any]:
        return [e for e in self.events if type(e) is cls]

    def deltas(self, cls: type) -> list[Any]:
        return [e.delta for e in self.of(uamp.ResponseDelta) if type(e.delta) is cls]

    @property
    def chunks(self) -> list[str]:
        return [d.text for d in self.deltas(uamp.TextDelta)]

    @property
    def text(self) -> str:
        return "".join(self.chunks)

    @property
    def results(self) -> dict[str, uamp.ToolResultInfo]:
        return {d.tool_result.call_id: d.tool_result for d in self.deltas(uamp.ToolResultDelta)}


def make_ctx(
    agent: Agent,
    text: str = "hi",
    *,
    events: list[Any] | None = None,
    config: Config | None = None,
) -> Context:
    events = [] if events is None else events

    async def emit(event: Any) -> None:
        events.append(event)

    session = Session(id="sess_1", agent=agent, messages=[Message("user", text)])
    ctx = Context(
        session=session,
        response_id="resp_1",
        emit=emit,
        config=config or Config(),
        ids=uamp.SequentialIds(),
        session_id="sess_1",
    )
    return ctx


def make_ctx_with(agent: Agent, text: str = "hi", **kw: Any) -> tuple[Context, list[Any]]:
    events: list[Any] = []
    return make_ctx(agent, text, events=events, **kw), events


async def run(agent: Agent, text: str = "hi", *, config: Config | None = None) -> Run:
    ctx, events = make_ctx_with(agent, text, config=config)
    with trio.fail_after(TIMEOUT):
        terminal = await run_response(ctx)
    return Run(events=events, terminal=terminal, session=ctx.session, ctx=ctx)


async def run_and_cancel(ctx: Context, ready: trio.Event) -> list[str]:
    """Run a response, cancel it once ``ready`` is set; return how ``run_response`` ended."""
    outcome: list[str] = []

    async def runner() -> None:
        try:
            await run_response(ctx)
        except BaseException as exc:
            # trio.Cancelled itself, or (cancelled while tools ran) a group made only of them.
            outcome.append("cancelled" if is_cancellation(exc) else f"raised {exc!r}")
            raise
        outcome.append("returned")

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner)
            await ready.wait()
            nursery.cancel_scope.cancel()
    assert nursery.cancel_scope.cancelled_caught, "trio.Cancelled was swallowed"
    return outcome


class EventModel:
    """A model that streams prepared events, one list per call.

    An item may be an async callable: it is awaited in the middle of the stream (to block).
    """

    name = "events"

    def __init__(self, *steps: list[Any]) -> None:
        self.steps = list(steps)
        self.calls: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[Any]:
        self.calls.append(request)
        for item in self.steps.pop(0) if self.steps else [TextChunk("fallback")]:
            if callable(item):
                await item()
            else:
                yield item

    async def aclose(self) -> None:
        pass


def blocker(ready: trio.Event) -> Callable[[], Any]:
    async def block() -> None:
        ready.set()
        await trio.sleep_forever()

    return block


def check_terminal_rule(events: list[Any]) -> Any:
    """Exactly one ``response.created`` first, exactly one terminal event, and it is last."""
    assert type(events[0]) is uamp.ResponseCreated
    assert [type(e) for e in events].count(uamp.ResponseCreated) == 1
    terminals = [e for e in events if e.type in uamp.TERMINAL_TYPES]
    assert len(terminals) == 1, [e.type for e in events]
    assert events[-1] is terminals[0]
    assert all(getattr(e, "response_id", "resp_1") == "resp_1" for e in events)
    return terminals[0]


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first.
        b: the second.
    """
    return a + b


# --------------------------------------------------------------------------------------------
# @tool: schema
# --------------------------------------------------------------------------------------------


@tool
def search(
    query: str,
    count: int,
    ratio: float,
    exact: bool,
    tags: list[str],
    mode: Literal["fast", "slow"],
    ctx: Context,
    note: Optional[str] = None,  # noqa: UP045 - the Optional spelling is part of the test
    limit: int | None = 5,
    label: Annotated[str, "the label shown to users"] = "x",
) -> str:
    """Search the catalogue.

    Results come back best first.

    Args:
        query: what to look for,
            continued on a second line.
        count (int): how many results.
        ratio: a ratio.
        exact: exact matches only.
        tags: tags to filter by.
        mode: how hard to try.
        ctx: the running response (never shown to the model).
        note: an optional note.
        limit: upper bound.
        label: ignored: the Annotated description wins.

    Returns:
        The results.
    """
    return ""


def test_tool_schema_from_signature_and_docstring() -> None:
    spec = Agent("schema", tools=[search]).tools["search"]
    assert spec.name == "search"
    assert spec.description == "Search the catalogue.\n\nResults come back best first."
    assert spec.context_param == "ctx"
    assert spec.parameters == {
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "description": "what to look for, continued on a second line.",
            },
            "count": {"type": "integer", "description": "how many results."},
            "ratio": {"type": "number", "description": "a ratio."},
            "exact": {"type": "boolean", "description": "exact matches only."},
            "tags": {
                "type": "array",
                "items": {"type": "string"},
                "description": "tags to filter by.",
            },
            "mode": {"type": "string", "enum": ["fast", "slow"], "description": "how hard to try."},
            "note": {
                "type": ["string", "null"],
                "description": "an optional note.",
                "default": None,
            },
            "limit": {"type": ["integer", "null"], "description": "upper bound.", "default": 5},
            "label": {"type": "string", "description": "the label shown to users", "default": "x"},
        },
        "required": ["query", "count", "ratio", "exact", "tags", "mode"],
        "additionalProperties": False,
    }
    assert spec.openai == {
        "type": "function",
        "function": {
            "name": "search",
            "description": spec.description,
            "parameters": spec.parameters,
        },
    }


def test_tool_options_and_context_injection_by_annotation() -> None:
    @tool(name="lookup", description="Look a thing up.")
    async def find(thing: str, c: Context) -> str:
        """Ignored summary."""
        return thing

    def plain(context, x: float = 1.5) -> float:  # type: ignore[no-untyped-def]
        return x

    agent = Agent("opts", tools=[find, plain])
    assert set(agent.tools) == {"lookup", "plain"}
    lookup = agent.tools["lookup"]
    assert (lookup.description, lookup.context_param) == ("Look a thing up.", "c")
    assert lookup.parameters["properties"] == {"thing": {"type": "string"}}
    assert lookup.parameters["required"] == ["thing"]
    other = agent.tools["plain"]
    assert other.description == "plain"  # no docstring: the name
    assert other.context_param == "context"
    assert other.parameters["properties"] == {"x": {"type": "number", "default": 1.5}}


async def test_sync_async_and_thread_tools_all_run() -> None:
    main = threading.get_ident()
    where: dict[str, int] = {}

    @tool
    def sync_tool(x: int) -> dict[str, int]:
        where["sync"] = threading.get_ident()
        return {"double": x * 2}

    @tool
    async def async_tool(x: int, ctx: Context) -> str:
        await trio.lowlevel.checkpoint()
        where["async"] = threading.get_ident()
        return f"async {x} in {ctx.response_id}"

    @tool(thread=True)
    def thread_tool(x: int) -> list[int]:
        where["thread"] = threading.get_ident()
        return [x, x]

    model = BuiltinModel(
        [
            [
                CallTool("sync_tool", {"x": 2}, id="c1"),
                CallTool("async_tool", {"x": 3}, id="c2"),
                CallTool("thread_tool", {"x": 4}, id="c3"),
            ],
            Reply("ok"),
        ]
    )
    r = await run(Agent("modes", model=model, tools=[sync_tool, async_tool, thread_tool]))
    assert type(r.terminal) is uamp.ResponseDone
    assert {k: (v.result, v.is_error, v.status) for k, v in r.results.items()} == {
        "c1": ('{"double":4}', None, "completed"),
        "c2": ("async 3 in resp_1", None, "completed"),
        "c3": ("[4,4]", None, "completed"),
    }
    assert where["sync"] == where["async"] == main
    assert where["thread"] != main
    # Results go back to the model in the order the calls were made.
    tool_msgs = [m for m in model.calls[-1].messages if m.role == "tool"]
    assert [(m.tool_call_id, m.text) for m in tool_msgs] == [
        ("c1", '{"double":4}'),
        ("c2", "async 3 in resp_1"),
        ("c3", "[4,4]"),
    ]
    assert [type(e) for e in r.of(uamp.ToolCallDone)] == [uamp.ToolCallDone] * 3


async def test_raising_tool_gives_error_result_and_response_completes() -> None:
    @tool
    async def explode(reason: str) -> str:
        raise RuntimeError(f"boom: {reason}")

    model = BuiltinModel([CallTool("explode", {"reason": "bad"}, id="c1"), Reply("recovered")])
    r = await run(Agent("err", model=model, tools=[explode]))
    result = r.results["c1"]
    assert (result.result, result.is_error, result.status) == (
        "error: RuntimeError: boom: bad",
        True,
        "error",
    )
    assert model.calls[-1].messages[-1] == Message(
        "tool", "error: RuntimeError: boom: bad", tool_call_id="c1"
    )
    assert type(r.terminal) is uamp.ResponseDone
    assert r.text == "recovered"


async def test_bad_arguments_give_error_results_without_calling_the_tool() -> None:
    called: list[Any] = []

    @tool
    def pair(a: int, b: int = 0) -> int:
        called.append((a, b))
        return a + b

    model = EventModel(
        [
            ToolCallRequest("missing", "pair", '{"b": 1}'),
            ToolCallRequest("unknown", "pair", '{"a": 1, "z": 2}'),
            ToolCallRequest("invalid", "pair", '{"a": 1,'),
            ToolCallRequest("array", "pair", "[1, 2]"),
            ToolCallRequest("empty", "pair", ""),
            ToolCallRequest("good", "pair", '{"a": 5}'),
        ],
        [TextChunk("done")],
    )
    r = await run(Agent("args", model=model, tools=[pair]))
    res = r.results
    assert res["missing"].result == "error: missing required arguments: a"
    assert res["unknown"].result == "error: unknown arguments: z"
    assert res["invalid"].result.startswith("error: arguments are not valid JSON")
    assert res["array"].result == "error: arguments must be a JSON object"
    assert res["empty"].result == "error: missing required arguments: a"
    assert all(res[k].is_error for k in ("missing", "unknown", "invalid", "array", "empty"))
    assert (res["good"].result, res["good"].is_error) == ("5", None)
    assert called == [(5, 0)]
    assert type(r.terminal) is uamp.ResponseDone


async def test_call_to_missing_tool_gives_error_result() -> None:
    model = BuiltinModel([CallTool("nope", {"x": 1}, id="c1"), Reply("sorry")])
    r = await run(Agent("missing", model=model, tools=[add]))
    assert model.calls[-1].messages[-1] == Message(
        "tool", "error: there is no tool named 'nope'", tool_call_id="c1"
    )
    assert type(r.terminal) is uamp.ResponseDone
    assert r.text == "sorry"


# --------------------------------------------------------------------------------------------
# Concurrency and cancellation of tools
# --------------------------------------------------------------------------------------------


async def test_tools_requested_together_run_concurrently() -> None:
    left_started, right_started = trio.Event(), trio.Event()

    @tool
    async def left() -> str:
        left_started.set()
        await right_started.wait()  # deadlocks (fail_after) if tools ran one by one
        return "L"

    @tool
    async def right() -> str:
        right_started.set()
        await left_started.wait()
        return "R"

    model = BuiltinModel([[CallTool("left", id="l"), CallTool("right", id="r")], Reply("both")])
    r = await run(Agent("conc", model=model, tools=[left, right]))
    assert {k: v.result for k, v in r.results.items()} == {"l": "L", "r": "R"}
    kinds = [type(e.delta) for e in r.of(uamp.ResponseDelta)]
    # Both calls are announced before any result arrives.
    assert kinds[:2] == [uamp.ToolCallDelta, uamp.ToolCallDelta]
    assert r.text == "both"


async def test_cancelling_the_response_cancels_running_tools() -> None:
    started, finished = trio.Event(), trio.Event()
    seen: list[str] = []

    @tool
    async def hang() -> str:
        started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            seen.append("cancelled")
            raise
        finally:
            finished.set()
        return "never"

    model = BuiltinModel([[Reply("partial text"), CallTool("hang", id="h")]])
    ctx, events = make_ctx_with(Agent("hang", model=model, tools=[hang]))
    outcome = await run_and_cancel(ctx, started)
    assert outcome == ["cancelled"]
    assert seen == ["cancelled"]
    assert finished.is_set()
    cancelled = check_terminal_rule(events)
    assert type(cancelled) is uamp.ResponseCancelled
    assert cancelled.partial_output == [uamp.TextContent("partial text")]
    assert cancelled.session_id == "sess_1"
    # The cancelled tool never reported a result.
    assert not [e for e in events if type(e) is uamp.ToolCallDone]


async def test_conversation_stays_valid_after_cancel_during_tools() -> None:
    started = trio.Event()

    @tool
    async def hang() -> str:
        started.set()
        await trio.sleep_forever()
        return "never"

    model = BuiltinModel([[Reply("partial text"), CallTool("hang", id="h")]])
    ctx, _ = make_ctx_with(Agent("hang2", model=model, tools=[hang]))
    await run_and_cancel(ctx, started)
    msgs = ctx.session.messages
    # The streamed text stays in the conversation exactly once.
    assert [m.text for m in msgs if m.role == "assistant"].count("partial text") == 1
    # Every assistant tool call is answered (providers reject dangling tool_calls).
    answered = {m.tool_call_id for m in msgs if m.role == "tool"}
    asked = {c.id for m in msgs for c in m.tool_calls}
    assert asked <= answered


async def test_cancel_tool_cancels_one_tool_and_the_response_goes_on() -> None:
    slow_started = trio.Event()
    seen: list[str] = []

    @tool
    async def slow() -> str:
        slow_started.set()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            seen.append("slow cancelled")
            raise
        return "never"

    @tool
    async def stopper(ctx: Context) -> str:
        await slow_started.wait()
        return f"first={ctx.cancel_tool('call_slow')} unknown={ctx.cancel_tool('call_nope')}"

    model = BuiltinModel(
        [[CallTool("slow", id="call_slow"), CallTool("stopper", id="call_stop")], Reply("carry on")]
    )
    r = await run(Agent("stop", model=model, tools=[slow, stopper]))
    assert seen == ["slow cancelled"]
    slow_result = r.results["call_slow"]
    assert (slow_result.result, slow_result.is_error, slow_result.status) == (
        "error: the tool call was cancelled",
        True,
        "error",
    )
    assert r.results["call_stop"].result == "first=True unknown=False"
    assert r.results["call_stop"].is_error is None
    assert type(r.terminal) is uamp.ResponseDone
    assert r.text == "carry on"
    assert r.ctx.tool_scopes == {}
    assert r.ctx.cancel_tool("call_slow") is False  # finished tools cannot be cancelled


# --------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------


class Hooked(Agent):
    """An agent with a hook at every point of a response."""

    def __init__(self, log: list[Any], events: list[Any], **kw: Any) -> None:
        self.log = log
        self.seen_events = events
        super().__init__("hooked", "Base.", tools=[add], **kw)

    @hook("on_message", priority=90)
    def late(self, ctx: Context) -> None:
        self.log.append("on_message:90")

    @hook("on_message")
    async def middle(self, ctx: Context) -> None:
        await trio.lowlevel.checkpoint()
        self.log.append("on_message:50")

    @hook("on_message", priority=10)
    def early(self, ctx: Context) -> None:
        self.log.append("on_message:10")

    @hook("before_llm")
    def before(self, ctx: Context, request: ModelRequest) -> ModelRequest:
        self.log.append(("before_llm", len(request.messages)))
        extra = Message("system", "injected by before_llm")
        return attrs.evolve(request, messages=(*request.messages, extra))

    @hook("after_llm")
    async def after(self, ctx: Context, text: str, calls: list[uamp.ToolCallInfo]) -> None:
        self.log.append(("after_llm", text, [c.name for c in calls]))

    @hook("on_chunk")
    def shout(self, ctx: Context, text: str) -> str:
        return text.upper()

    @hook("on_tool")
    async def wrap(self, ctx: Context, call: uamp.ToolCallInfo, result: str) -> str:
        self.log.append(("on_tool", call.name, result))
        return f"[{result}]"

    @hook("finalize")
    def done(self, ctx: Context) -> None:
        self.log.append(("finalize", self.seen_events[-1].type))


async def test_hooks_run_at_every_point_in_order() -> None:
    log: list[Any] = []
    events: list[Any] = []
    model = BuiltinModel([CallTool("add", {"a": 1, "b": 2}, id="c1"), Reply("all done")])
    agent = Hooked(log, events, model=model)
    ctx = make_ctx(agent, "add please", events=events)
    with trio.fail_after(TIMEOUT):
        terminal = await run_response(ctx)
    assert type(terminal) is uamp.ResponseDone
    assert log == [
        "on_message:10",
        "on_message:50",
        "on_message:90",
        ("before_llm", 2),
        ("after_llm", "", ["add"]),
        ("on_tool", "add", "3"),
        ("before_llm", 4),
        ("after_llm", "ALL DONE", []),
        ("finalize", "response.done"),  # finalize runs after the terminal event
    ]
    # before_llm replaced the request the model received.
    assert model.calls[0].messages[-1] == Message("system", "injected by before_llm")
    assert model.calls[1].messages[-1] == Message("system", "injected by before_llm")
    # on_tool replaced the result the client and the model saw.
    deltas = [e.delta for e in events if type(e) is uamp.ResponseDelta]
    result = next(d.tool_result for d in deltas if type(d) is uamp.ToolResultDelta)
    assert result.result == "[3]"
    assert model.calls[1].messages[-2] == Message("tool", "[3]", tool_call_id="c1")
    # on_chunk transformed the streamed text, the final output and the conversation.
    texts = [
        e.delta.text for e in events if type(e) is uamp.ResponseDelta and e.delta.type == "text"
    ]
    assert texts == ["ALL", " DONE"]
    assert terminal.response.output == [uamp.TextContent("ALL DONE")]
    assert ctx.session.messages[-1].text == "ALL DONE"


async def test_on_chunk_returning_empty_string_drops_the_chunk() -> None:
    class Filter(Agent):
        @hook("on_chunk")
        def drop_secret(self, ctx: Context, text: str) -> str | None:
            return "" if "secret" in text else None

    r = await run(Filter("filter", model=BuiltinModel([Reply("the secret word")])))
    assert r.text == "the word"


class Audit(Skill):
    """A skill with hooks, a tool and a prompt section."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    @hook("on_message", priority=5)
    def first(self, ctx: Context) -> None:
        self.log.append(("skill", 5, self.agent.name))

    @hook("on_message")
    async def same_priority(self, ctx: Context) -> None:
        self.log.append(("skill", 50))

    @hook("finalize")
    def bye(self, ctx: Context) -> None:
        self.log.append(("skill", "finalize"))

    @tool
    def audit_count(self) -> int:
        """How many entries the audit log has."""
        return len(self.log)


class WithOwnHook(Agent):
    @hook("on_message")
    def mine(self, ctx: Context) -> None:
        self.log.append(("agent", 50))


async def test_skill_hooks_interleave_with_agent_hooks_by_priority() -> None:
    log: list[Any] = []
    skill = Audit(log)
    model = BuiltinModel([CallTool("audit_count", id="c1"), Reply("ok")])
    agent = WithOwnHook("audited", model=model, skills=[skill])
    agent.log = log  # type: ignore[attr-defined]
    assert skill.agent is agent
    assert agent.has_skill(Audit) and agent.has_skill(Skill)
    r = await run(agent)
    # Lower priority first; equal priorities in registration order (the agent's own first).
    assert log == [("skill", 5, "audited"), ("agent", 50), ("skill", 50), ("skill", "finalize")]
    assert r.results["c1"].result == "3"
    assert "audit_count" in {t["function"]["name"] for t in model.calls[0].tools}
    assert agent.tools["audit_count"].description == "How many entries the audit log has."


async def test_finalize_runs_after_error_and_after_cancel() -> None:
    log: list[Any] = []
    events: list[Any] = []

    class Final(Agent):
        @hook("finalize")
        async def fin(self, ctx: Context) -> None:
            # Awaiting here only works because finalize runs shielded after a cancel.
            await trio.lowlevel.checkpoint()
            log.append(events[-1].type)

    failing = Final("fin1", model=BuiltinModel([Fail("model down")]))
    ctx = make_ctx(failing, events=events)
    with trio.fail_after(TIMEOUT):
        terminal = await run_response(ctx)
    assert type(terminal) is uamp.ResponseError
    assert log == ["response.error"]

    events.clear()
    ready = trio.Event()
    blocked = Final("fin2", model=EventModel([TextChunk("so far"), blocker(ready)]))
    ctx = make_ctx(blocked, events=events)
    assert await run_and_cancel(ctx, ready) == ["cancelled"]
    assert log == ["response.error", "response.cancelled"]


async def test_failing_finalize_hook_does_not_change_the_outcome() -> None:
    class Broken(Agent):
        @hook("finalize")
        def fin(self, ctx: Context) -> None:
            raise RuntimeError("finalize broke")

    r = await run(Broken("broken", model=BuiltinModel([Reply("fine")])))
    assert type(r.terminal) is uamp.ResponseDone
    check_terminal_rule(r.events)


def test_unknown_hook_point_raises() -> None:
    with pytest.raises(ValueError, match=r"unknown hook point 'bad_point'"):
        hook("bad_point")
    with pytest.raises(ValueError, match="must start with '/'"):
        http("hello")
    with pytest.raises(ValueError, match="must start with '/'"):
        websocket("echo")


# --------------------------------------------------------------------------------------------
# @prompt
# --------------------------------------------------------------------------------------------


class Prompted(Agent):
    @prompt(priority=90)
    def last(self, ctx: Context) -> str:
        return "third (90)"

    @prompt
    async def middle(self, ctx: Context) -> str:
        await trio.lowlevel.checkpoint()
        return f"second (50) for {ctx.session.id}"

    @prompt(priority=10)
    def first(self, ctx: Context) -> str:
        return "first (10)"

    @prompt(priority=20)
    def nothing(self, ctx: Context) -> None:
        return None  # skipped


class PromptSkill(Skill):
    @prompt(priority=60)
    def skill_section(self, ctx: Context) -> str:
        return "skill (60)"


async def test_prompt_sections_join_the_system_prompt_in_priority_order() -> None:
    model = BuiltinModel([Reply("ok")])
    agent = Prompted("prompted", "You are helpful.", model=model, skills=[PromptSkill()])
    ctx, _ = make_ctx_with(agent)
    ctx.session.instructions = "Client instructions."
    with trio.fail_after(TIMEOUT):
        await run_response(ctx)
    system = model.calls[-1].messages[0]
    assert system == Message(
        "system",
        "You are helpful.\n\nfirst (10)\n\nsecond (50) for sess_1\n\nskill (60)\n\nthird (90)"
        "\n\nClient instructions.",
    )
    assert model.calls[-1].messages[1] == Message("user", "hi")


async def test_no_system_message_without_instructions_or_prompts() -> None:
    model = BuiltinModel([Reply("ok")])
    await run(Agent("bare", model=model))
    assert [m.role for m in model.calls[-1].messages] == ["user"]


# --------------------------------------------------------------------------------------------
# Handoffs
# --------------------------------------------------------------------------------------------


async def test_handoff_to_an_agent() -> None:
    billing_model = BuiltinModel([Reply("Billing here: your invoice is paid.")])
    billing = Agent("billing", "You do billing.", model=billing_model, tools=[add])
    triage_model = BuiltinModel([CallTool("transfer_to_billing", id="h1")])
    triage = Agent("triage", "You route.", model=triage_model, handoffs=[billing])
    assert "transfer_to_billing" in triage.handoffs
    r = await run(triage, "my invoice")
    assert r.session.agent is billing
    assert r.text == "Billing here: your invoice is paid."
    assert r.results["h1"].result == "Transferred to billing."
    assert len(triage_model.calls) == 1 and len(billing_model.calls) == 1
    triage_tools = {t["function"]["name"]: t for t in triage_model.calls[0].tools}
    assert set(triage_tools) == {"transfer_to_billing"}
    assert (
        "Transfer the conversation to billing"
        in (triage_tools["transfer_to_billing"]["function"]["description"])
    )
    # The rest of the response is billing's: its prompt and its tools.
    request = billing_model.calls[0]
    assert request.messages[0] == Message("system", "You do billing.")
    assert {t["function"]["name"] for t in request.tools} == {"add"}
    assert request.messages[-1] == Message("tool", "Transferred to billing.", tool_call_id="h1")
    assert type(r.terminal) is uamp.ResponseDone
    # The next turn of the session is billing's too.
    r.session.messages.append(Message("user", "thanks"))
    events: list[Any] = []

    async def emit(event: Any) -> None:
        events.append(event)

    ctx = Context(session=r.session, response_id="resp_2", emit=emit)
    with trio.fail_after(TIMEOUT):
        await run_response(ctx)
    assert len(billing_model.calls) == 2 and len(triage_model.calls) == 1
    assert "".join(e.delta.text for e in events if type(e) is uamp.ResponseDelta) == (
        "You said: thanks"
    )


async def test_handoff_method_returning_an_agent() -> None:
    expert = Agent("expert", model=BuiltinModel([Reply("Expert answer.")]))

    class Triage(Agent):
        @handoff
        def escalate(self, ctx: Context) -> Agent:
            """Hand hard questions to the expert."""
            return expert

        @handoff(name="human", description="Ask a person.")
        async def to_human(self, ctx: Context) -> Agent:
            return Agent("human")

        @handoff(name="broken")
        def nobody(self, ctx: Context) -> Any:
            return "not an agent"

    triage_model = BuiltinModel(
        [CallTool("transfer_to_broken", id="b1"), CallTool("transfer_to_escalate", id="e1")]
    )
    triage = Triage("triage2", model=triage_model)
    assert set(triage.handoffs) == {
        "transfer_to_escalate",
        "transfer_to_human",
        "transfer_to_broken",
    }
    assert (
        triage.handoffs["transfer_to_escalate"].tool.description
        == "Hand hard questions to the expert."
    )
    assert triage.handoffs["transfer_to_human"].tool.description == "Ask a person."
    r = await run(triage, "hard question")
    assert r.results["b1"].is_error
    assert (
        r.results["b1"].result
        == "error: AgentError: handoff 'transfer_to_broken' returned no agent"
    )
    assert r.results["e1"].result == "Transferred to expert."
    assert r.session.agent is expert
    assert r.text == "Expert answer."


# --------------------------------------------------------------------------------------------
# Errors: max_steps, model failures, hook failures
# --------------------------------------------------------------------------------------------


async def test_max_steps_ends_with_agent_error() -> None:
    @tool
    def noop() -> str:
        return "again"

    model = BuiltinModel(lambda request: CallTool("noop"))
    r = await run(Agent("loop", model=model, tools=[noop], max_steps=3))
    error = check_terminal_rule(r.events)
    assert type(error) is uamp.ResponseError
    assert error.error.code == "agent_error"
    assert error.error.details == {"max_steps": 3}
    assert "max_steps (3)" in error.error.message
    assert len(model.calls) == 3
    # Without an agent bound, the config's applies.
    model2 = BuiltinModel(lambda request: CallTool("noop"))
    r2 = await run(Agent("loop2", model=model2, tools=[noop]), config=Config(max_steps=2))
    assert r2.terminal.error.details == {"max_steps": 2}
    assert len(model2.calls) == 2


@pytest.mark.parametrize(
    ("step", "code", "message", "details"),
    [
        (Fail("x", code="rate_limit_exceeded"), "rate_limit_exceeded", "x", None),
        (
            Fail("y", code="upstream_unavailable", status=503),
            "agent_error",
            "y",
            {"reason": "upstream_unavailable", "upstream_status": 503},
        ),
        (Fail("z", status=500), "agent_error", "z", {"upstream_status": 500}),
        (Fail("w"), "agent_error", "w", None),
    ],
)
async def test_model_failures_map_to_response_error_codes(
    step: Fail, code: str, message: str, details: dict[str, Any] | None
) -> None:
    r = await run(Agent("fails", model=BuiltinModel([step])))
    error = check_terminal_rule(r.events)
    assert r.terminal is error
    assert type(error) is uamp.ResponseError
    assert (error.error.code, error.error.message, error.error.details) == (code, message, details)
    assert error.session_id == "sess_1"


@pytest.mark.parametrize("point", ["on_message", "before_llm", "on_chunk", "after_llm", "on_tool"])
async def test_unexpected_exception_in_a_hook_is_agent_error(point: str) -> None:
    def bad(*args: Any) -> None:
        raise LookupError("nothing here")

    agent = Agent(
        "hookfail", model=BuiltinModel([CallTool("add", {"a": 1, "b": 1}), Reply("x")]), tools=[add]
    )
    agent.add_hook(point, bad)
    r = await run(agent)
    error = check_terminal_rule(r.events)
    assert type(error) is uamp.ResponseError
    assert error.error.code == "agent_error"
    assert error.error.message == "LookupError: nothing here"


async def test_trioagents_error_in_a_hook_keeps_its_code() -> None:
    class Strict(Agent):
        @hook("on_message")
        def refuse(self, ctx: Context) -> None:
            raise AgentError("no payment", code="payment_failed", details={"amount": "1"})

    r = await run(Strict("strict"))
    assert r.terminal.error == uamp.ErrorInfo("payment_failed", "no payment", {"amount": "1"})


# --------------------------------------------------------------------------------------------
# The terminal rule
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["done", "error", "cancelled"])
async def test_exactly_one_terminal_event_per_response(outcome: str) -> None:
    ready = trio.Event()

    async def fail() -> None:
        raise AgentError("gave up")

    steps = {
        "done": [TextChunk("a"), TextChunk(" b"), Usage(1, 2)],
        "error": [TextChunk("a"), fail],
        "cancelled": [TextChunk("a"), blocker(ready)],
    }[outcome]
    agent = Agent("terminal", model=EventModel(steps))
    ctx, events = make_ctx_with(agent)
    if outcome == "cancelled":
        assert await run_and_cancel(ctx, ready) == ["cancelled"]
    else:
        with trio.fail_after(TIMEOUT):
            returned = await run_response(ctx)
        assert returned is events[-1]
    terminal = check_terminal_rule(events)
    assert (
        terminal.type
        == {
            "done": "response.done",
            "error": "response.error",
            "cancelled": "response.cancelled",
        }[outcome]
    )
    if outcome == "done":
        assert terminal.response.status == "completed"
        assert terminal.response.usage == uamp.UsageInfo(1, 2, 3)
    if outcome == "cancelled":
        assert terminal.partial_output == [uamp.TextContent("a")]
        assert ctx.session.messages[-1] == Message("assistant", "a")


async def test_cancel_before_anything_streamed_has_empty_partial_output() -> None:
    ready = trio.Event()
    ctx, events = make_ctx_with(Agent("early", model=EventModel([blocker(ready)])))
    assert await run_and_cancel(ctx, ready) == ["cancelled"]
    terminal = check_terminal_rule(events)
    assert terminal.partial_output == []
    assert [m.role for m in ctx.session.messages] == ["user"]


# --------------------------------------------------------------------------------------------
# The built-in model
# --------------------------------------------------------------------------------------------


async def test_builtin_model_streams_word_by_word_preserving_whitespace() -> None:
    text = "  Hello,  wide\n world\t!  "
    r = await run(Agent("words", model=BuiltinModel([Reply(text)])))
    assert r.chunks == ["  Hello,", "  wide", "\n world", "\t!  "]
    assert r.text == text
    assert r.terminal.response.output == [uamp.TextContent(text)]


async def test_builtin_model_default_echo_and_think() -> None:
    r = await run(Agent("echo"), "  how are you  ")
    assert r.chunks == ["You", " said:", " how", " are", " you"]
    model = BuiltinModel([[Think("pondering"), Reply("answer")]])
    r2 = await run(Agent("thinker", model=model))
    thinking = r2.of(uamp.Thinking)
    assert [(t.content, t.is_delta) for t in thinking] == [("pondering", True)]
    assert r2.events.index(thinking[0]) < r2.events.index(r2.of(uamp.ResponseDelta)[0])
    assert r2.text == "answer"


async def test_builtin_model_word_delay(autojump_clock: trio.testing.MockClock) -> None:
    times: list[float] = []
    events: list[Any] = []

    async def emit(event: Any) -> None:
        events.append(event)
        if type(event) is uamp.ResponseDelta:
            times.append(trio.current_time())

    model = BuiltinModel(
        [Reply("one two three four"), Reply("a b c", word_delay=2.0)], word_delay=0.25
    )
    agent = Agent("slow", model=model)
    with trio.fail_after(60):
        for expected in ([0.0, 0.25, 0.5, 0.75], [0.0, 2.0, 4.0]):
            times.clear()
            start = trio.current_time()
            session = Session(id="s", agent=agent, messages=[Message("user", "go")])
            await run_response(Context(session=session, response_id="r", emit=emit))
            assert [t - start for t in times] == expected
            # (words - 1) * delay: no sleep before the first word or after the last.
            assert trio.current_time() - start == expected[-1]


async def test_builtin_model_call_command_runs_the_tool() -> None:
    r = await run(Agent("calc", tools=[add]), '/call add {"a":1,"b":2}')
    calls = r.deltas(uamp.ToolCallDelta)
    assert [(c.tool_call.name, c.tool_call.arguments) for c in calls] == [("add", '{"a":1,"b":2}')]
    assert [v.result for v in r.results.values()] == ["3"]
    assert r.text == "add returned: 3"
    assert type(r.terminal) is uamp.ResponseDone


async def test_builtin_model_fail_command() -> None:
    r = await run(Agent("failer"), "/fail the disk is full")
    error = check_terminal_rule(r.events)
    assert error.error == uamp.ErrorInfo("agent_error", "the disk is full")


async def test_builtin_model_reports_usage() -> None:
    r = await run(Agent("usage", model=BuiltinModel([Reply("a b c")])), "hello there")
    # input: 2 words + 1 per message; output: one per streamed word.
    assert r.terminal.response.usage == uamp.UsageInfo(3, 3, 6)
    model = BuiltinModel([CallTool("add", {"a": 1, "b": 2}), Reply("done now")])
    r2 = await run(Agent("usage2", model=model, tools=[add]), "x y")
    # step 1: [user "x y"] -> 3 in, 0 out; step 2: + assistant call (1) + tool "3" (2) -> 6 in.
    assert r2.terminal.response.usage == uamp.UsageInfo(9, 2, 11)
    wire = uamp.converter.unstructure(r2.terminal)["response"]["usage"]
    assert wire == {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}


# --------------------------------------------------------------------------------------------
# Registration rules
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a", "alice.my-bot.helper", "A_1-b.c", "x" * 128, "1.0", "bot.v2"]
)
def test_valid_agent_names(name: str) -> None:
    assert Agent(name).name == name


@pytest.mark.parametrize(
    "name", ["", "has space", ".leading", "-leading", "_leading", "x" * 129, "a/b", "é", "a\n"]
)
def test_invalid_agent_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid agent name"):
        Agent(name)


def test_duplicate_tool_names_are_refused() -> None:
    def first() -> None:
        """One."""

    @tool(name="first")
    def second() -> None:
        """Two."""

    with pytest.raises(ValueError, match=r"already has a tool named 'first'"):
        Agent("dup", tools=[first, second])
    other = Agent("billing")
    with pytest.raises(ValueError, match=r"transfer_to_billing"):
        Agent("dup2", tools=[tool(name="transfer_to_billing")(first)], handoffs=[other])


def test_agent_server_refuses_duplicate_agent_names() -> None:
    with pytest.raises(ValueError, match=r"two agents are named 'same'"):
        AgentServer([Agent("same"), Agent("other"), Agent("same")])
    with pytest.raises(ValueError, match="default_agent"):
        AgentServer([Agent("one")], config=Config(default_agent="two"))


# --------------------------------------------------------------------------------------------
# User endpoints and server routes
# --------------------------------------------------------------------------------------------


class Greeter(Agent):
    @tool
    def wave(self, times: int) -> str:
        """Wave ``times`` times."""
        return "o/" * times

    @http("/hello", methods=["GET", "POST"])
    async def hello(self, request: Request) -> dict[str, Any]:
        body = (await request.body()).decode()
        return {"agent": self.name, "method": request.method, "body": body}

    @http("/raw")
    def raw(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse("raw body", status_code=201, headers={"x-raw": "yes"})

    @http("/boom")
    async def boom(self, request: Request) -> None:
        raise RuntimeError("kaboom secret detail")

    @websocket("/echo")
    async def echo(self, ws: WebSocket) -> None:
        await ws.accept()
        while True:
            try:
                text = await ws.receive_text()
            except WebSocketDisconnect:
                return
            await ws.send_text(f"echo: {text}")


class Poster(Agent):
    @http("/hello", methods=["POST"])
    def hello(self, request: Request) -> str:
        return f"posted to {self.name}"


def assert_generic_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def ws_echo(url: str, text: str) -> str:
    async with trio_websocket.open_websocket_url(url) as ws:
        await ws.send_message(text)
        return str(await ws.get_message())


async def test_user_endpoints_under_agents_name() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server([Greeter("greeter.v1"), Agent("plain"), Poster("poster")]) as srv,
            httpx.AsyncClient(base_url=srv.url) as client,
        ):
            r = await client.get("/agents/greeter.v1/hello")
            assert r.status_code == 200
            assert r.headers["content-type"] == "application/json"
            assert r.json() == {"agent": "greeter.v1", "method": "GET", "body": ""}
            r = await client.post("/agents/greeter.v1/hello/", content=b"hi there")
            assert r.json() == {"agent": "greeter.v1", "method": "POST", "body": "hi there"}

            r = await client.get("/agents/greeter.v1/raw")
            assert (r.status_code, r.text, r.headers["x-raw"]) == (201, "raw body", "yes")

            r = await client.get("/agents/greeter.v1/boom")
            assert_generic_error(r, 500, "internal_error")
            assert "kaboom" not in r.text

            assert_generic_error(
                await client.delete("/agents/greeter.v1/hello"), 405, "method_not_allowed"
            )
            assert_generic_error(
                await client.post("/agents/greeter.v1/raw"), 405, "method_not_allowed"
            )
            # Another agent serves GET at this path, this one only POST.
            r = await client.post("/agents/poster/hello")
            assert (r.status_code, r.text) == (200, "posted to poster")
            assert_generic_error(
                await client.get("/agents/poster/hello"), 405, "method_not_allowed"
            )
            assert_generic_error(await client.get("/agents/plain/hello"), 404, "route_not_found")
            assert_generic_error(await client.get("/agents/nobody/hello"), 404, "agent_not_found")
            assert_generic_error(await client.get("/hello"), 404, "not_found")  # two agents

            url = srv.agent_ws_url("greeter.v1", "/echo")
            assert await ws_echo(url, "ping") == "echo: ping"

            listing = (await client.get("/agents")).json()
            assert listing == {
                "agents": [
                    {
                        "name": "greeter.v1",
                        "description": "",
                        "url": "/agents/greeter.v1",
                        "model": "trioagents-builtin",
                        "tools": ["wave"],
                    },
                    {
                        "name": "plain",
                        "description": "",
                        "url": "/agents/plain",
                        "model": "trioagents-builtin",
                        "tools": [],
                    },
                    {
                        "name": "poster",
                        "description": "",
                        "url": "/agents/poster",
                        "model": "trioagents-builtin",
                        "tools": [],
                    },
                ]
            }


async def test_user_endpoints_at_the_root_in_single_agent_mode() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(Greeter("solo")) as srv,
            httpx.AsyncClient(base_url=srv.url) as client,
        ):
            r = await client.get("/hello")
            assert r.json() == {"agent": "solo", "method": "GET", "body": ""}
            r = await client.post("/agents/solo/hello", content=b"x")
            assert r.json() == {"agent": "solo", "method": "POST", "body": "x"}
            assert (await client.get("/raw")).text == "raw body"
            assert_generic_error(await client.get("/boom"), 500, "internal_error")
            assert_generic_error(await client.put("/hello"), 405, "method_not_allowed")
            assert await ws_echo(srv.ws_url + "/echo", "root") == "echo: root"
            assert await ws_echo(srv.agent_ws_url("solo", "/echo"), "agent") == "echo: agent"


METRIC_LINE = re.compile(r"^(?:# TYPE (\w+) (counter|gauge)|(\w+) (\d+(?:\.\d+)?))$")


async def test_metrics_are_prometheus_text_and_count() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(Agent("counted")) as srv,
            httpx.AsyncClient(base_url=srv.url) as client,
        ):
            async with open_uamp_client(srv.agent_ws_url("counted")) as uamp_client:
                session = await uamp_client.create_session()
                assert await session.ask("one") == "You said: one"
                assert await session.ask("two") == "You said: two"
            r = await client.get("/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            typed: dict[str, str] = {}
            values: dict[str, float] = {}
            for line in r.text.splitlines():
                m = METRIC_LINE.match(line)
                assert m, f"not Prometheus text: {line!r}"
                if m.group(1):
                    typed[m.group(1)] = m.group(2)
                else:
                    assert m.group(3) in typed, "sample before its # TYPE line"
                    values[m.group(3)] = float(m.group(4))
            assert set(typed) == set(values)
            assert all(name.startswith("trioagents_") for name in values)
            assert typed["trioagents_responses_total"] == "counter"
            assert typed["trioagents_sessions_open"] == "gauge"
            assert values["trioagents_responses_total"] == 2
            assert values["trioagents_sessions_total"] == 1
            assert values["trioagents_responses_failed_total"] == 0


async def test_metrics_tasks_gauge_counts_live_tasks_and_a_closed_connection_leaves_none() -> None:
    from trioagents.server._app import _live_tasks  # what the gauge reports

    with trio.fail_after(TIMEOUT):
        async with open_test_server(Agent("counted")) as srv:
            # Counted in-process at quiet points: an HTTP read of /metrics would itself leave
            # Hypercorn's keep-alive and close timers running for a while.
            await trio.testing.wait_all_tasks_blocked()
            before = _live_tasks()
            async with open_uamp_client(srv.agent_ws_url("counted")) as uamp_client:
                session = await uamp_client.create_session()
                assert await session.ask("one") == "You said: one"
                during = _live_tasks()
            await trio.testing.wait_all_tasks_blocked()
            assert during > before  # the connection's reader, writer and session tasks
            assert _live_tasks() == before
            async with httpx.AsyncClient(base_url=srv.url) as client:
                text = (await client.get("/metrics")).text
            assert "# TYPE trioagents_tasks gauge" in text
            m = re.search(r"^trioagents_tasks (\d+)$", text, re.M)
            assert m and int(m.group(1)) >= before
