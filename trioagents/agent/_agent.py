"""``Agent``, ``Skill``, tool specs, sessions and the per-response context."""

from __future__ import annotations

import contextvars
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

import attrs
import orjson
import trio

from .. import uamp
from ..config import Config
from ._builtin import BuiltinModel
from ._decorators import (
    HandoffMeta,
    HookMeta,
    HttpMeta,
    PromptMeta,
    ToolMeta,
    WebSocketMeta,
    metadata,
)
from ._messages import Message
from ._model import Model
from ._schema import function_schema

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.websockets import WebSocket

    from ..payments import PaymentError, PaymentsService, Pricing, TurnPayment

__all__ = [
    "Agent",
    "Skill",
    "ToolSpec",
    "Session",
    "Context",
    "HttpEndpoint",
    "WebSocketEndpoint",
    "AGENT_NAME_RE",
]

AGENT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Valid agent names (PROTOCOLS.md §0.1): dots are ordinary characters."""

Emit = Callable[[Any], Awaitable[None]]
TextSink = Callable[[str], Awaitable[None]]

_current_call: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "trioagents_tool_call", default=None
)
"""The tool call running in this task; each agent tool runs in its own task."""


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


# --------------------------------------------------------------------------------------------
# Tools
# --------------------------------------------------------------------------------------------


class ToolArgumentError(ValueError):
    """The model called a tool with arguments that do not fit its signature."""


@attrs.frozen
class ToolSpec:
    """A tool the model can call.

    Attributes:
        name: tool name the model uses.
        description: what the tool does (from the docstring unless given).
        parameters: JSON schema of the arguments.
        fn: the function (bound method for skill tools).
        context_param: name of the parameter that receives the :class:`Context`, if any.
        thread: run a synchronous ``fn`` in a worker thread.
        price: what one call costs on a paid agent (``@tool(price=…)``), else ``None``.
        scopes: scopes the caller's principal must all hold (``@tool(scopes=…)``); empty:
            anyone may use the tool.
    """

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    context_param: str | None = None
    thread: bool = False
    price: Decimal | None = None
    scopes: tuple[str, ...] = ()

    def allows(self, principal: Any) -> bool:
        """Whether ``principal`` (duck-typed: its ``scopes``; ``None`` holds none) may use
        this tool."""
        if not self.scopes:
            return True
        held = getattr(principal, "scopes", None) or ()
        return set(self.scopes) <= set(held)

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        thread: bool = False,
        price: Decimal | None = None,
        scopes: Iterable[str] = (),
    ) -> ToolSpec:
        """Build a spec from ``fn``'s signature and docstring."""
        ctx_param = None
        for pname, param in inspect.signature(fn).parameters.items():
            ann = param.annotation
            if pname in ("ctx", "context") or ann is Context or ann == "Context":
                ctx_param = pname
        skip = frozenset({ctx_param}) if ctx_param else frozenset()
        doc, params = function_schema(fn, skip=skip)
        return cls(
            name=name or fn.__name__,
            description=description or doc or fn.__name__,
            parameters=params,
            fn=fn,
            context_param=ctx_param,
            thread=thread,
            price=price,
            scopes=tuple(scopes),
        )

    @property
    def openai(self) -> dict[str, Any]:
        """The OpenAI function-tool schema."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    async def call(self, ctx: Context, arguments: str) -> str:
        """Run the tool with JSON ``arguments`` and return its result as text.

        Raises:
            ToolArgumentError: the arguments are not a JSON object or miss required names.
            Exception: whatever the tool raises.
        """
        try:
            args = orjson.loads(arguments or "{}")
        except orjson.JSONDecodeError as exc:
            raise ToolArgumentError(f"arguments are not valid JSON: {exc}") from None
        if not isinstance(args, dict):
            raise ToolArgumentError("arguments must be a JSON object")
        props = self.parameters.get("properties", {})
        missing = [r for r in self.parameters.get("required", ()) if r not in args]
        if missing:
            raise ToolArgumentError(f"missing required arguments: {', '.join(missing)}")
        unknown = [k for k in args if k not in props]
        if unknown:
            raise ToolArgumentError(f"unknown arguments: {', '.join(unknown)}")
        if self.context_param:
            args[self.context_param] = ctx
        if inspect.iscoroutinefunction(self.fn):
            result = await self.fn(**args)
        elif self.thread:
            result = await trio.to_thread.run_sync(lambda: self.fn(**args))
        else:
            result = await _maybe_await(self.fn(**args))
        if isinstance(result, str):
            return result
        return orjson.dumps(result, default=str).decode()


@attrs.frozen
class HttpEndpoint:
    """An HTTP route of an agent: ``handler(request) -> Response | JSON``."""

    path: str
    methods: tuple[str, ...]
    handler: Callable[[Request], Awaitable[Any]]
    scopes: tuple[str, ...] = ()
    """Scopes the caller must hold; the server checks them before calling the handler."""


@attrs.frozen
class WebSocketEndpoint:
    """A WebSocket route of an agent: ``handler(websocket)``."""

    path: str
    handler: Callable[[WebSocket], Awaitable[None]]
    scopes: tuple[str, ...] = ()
    """Scopes the caller must hold; the server checks them before calling the handler."""


# --------------------------------------------------------------------------------------------
# Skills and agents
# --------------------------------------------------------------------------------------------


class Skill:
    """A bundle of tools, hooks, prompts, handoffs and endpoints, added to agents.

    Subclass it and decorate methods with :func:`~trioagents.tool`, :func:`~trioagents.hook`,
    :func:`~trioagents.prompt`, :func:`~trioagents.handoff`, :func:`~trioagents.http` and
    :func:`~trioagents.websocket`. ``self.agent`` is set when the skill is added.
    """

    agent: Agent

    def attach(self, agent: Agent) -> None:
        """Called once when the skill is added to ``agent``."""
        self.agent = agent


@attrs.frozen
class _Handoff:
    tool: ToolSpec
    target: Callable[[Context], Any]


class Agent:
    """An agent: instructions, a model, tools, skills and the endpoints that serve it.

    Args:
        name: the agent's name in URLs (``[A-Za-z0-9][A-Za-z0-9._-]*``, dots allowed).
        instructions: the system prompt.
        model: the LLM; defaults to the offline :class:`~trioagents.BuiltinModel`.
        tools: functions to expose as tools (``@tool``-decorated or plain).
        skills: :class:`Skill` instances to add.
        handoffs: other agents the model may transfer the conversation to.
        description: one line for agent cards and ``/agents``.
        max_steps: bound on LLM calls per response (default from :class:`~trioagents.Config`).
        pricing: what the agent charges (:class:`~trioagents.payments.Pricing`); a paid agent
            needs a payment token per turn when the server has a payment backend
            (PROTOCOLS.md §9). Tools may add their own ``@tool(price=…)``.

    Subclasses may decorate their own methods exactly like a :class:`Skill`.

    Raises:
        ValueError: the name is not valid, or two tools share a name.
    """

    def __init__(
        self,
        name: str,
        instructions: str = "",
        *,
        model: Model | None = None,
        tools: Iterable[Callable[..., Any]] = (),
        skills: Iterable[Skill] = (),
        handoffs: Iterable[Agent] = (),
        description: str = "",
        max_steps: int | None = None,
        pricing: Pricing | None = None,
    ) -> None:
        if not AGENT_NAME_RE.fullmatch(name):
            raise ValueError(
                f"invalid agent name {name!r}: use letters, digits, '.', '_' and '-' (max 128)"
            )
        self.name = name
        self.instructions = instructions
        self.description = description or (instructions.splitlines()[0] if instructions else "")
        self.model: Model = model if model is not None else BuiltinModel()
        self.max_steps = max_steps
        self.pricing: Pricing | None = pricing
        self.skills: list[Skill] = []
        self.tools: dict[str, ToolSpec] = {}
        self.handoffs: dict[str, _Handoff] = {}
        self.http_endpoints: list[HttpEndpoint] = []
        self.websocket_endpoints: list[WebSocketEndpoint] = []
        self._hooks: dict[str, list[tuple[int, int, Callable[..., Any]]]] = {}
        self._prompts: list[tuple[int, int, Callable[..., Any]]] = []
        self._order = 0
        self._collect(self)
        for skill in skills:
            self.add_skill(skill)
        for fn in tools:
            self.add_tool(fn)
        for other in handoffs:
            self.add_handoff(other)

    def __repr__(self) -> str:
        return f"<Agent {self.name!r} model={getattr(self.model, 'name', '?')!r}>"

    # -- registration ----------------------------------------------------------------------

    def add_skill(self, skill: Skill) -> None:
        """Add ``skill``: its decorated members join this agent's registry."""
        skill.attach(self)
        self.skills.append(skill)
        self._collect(skill)

    def has_skill(self, cls: type[Skill]) -> bool:
        """Whether a skill of class ``cls`` (or a subclass) was added."""
        return any(isinstance(s, cls) for s in self.skills)

    def add_tool(self, fn: Callable[..., Any] | ToolSpec) -> ToolSpec:
        """Expose ``fn`` as a tool (its ``@tool`` options apply if decorated)."""
        if isinstance(fn, ToolSpec):
            spec = fn
        else:
            meta = next((m for m in metadata(fn) if isinstance(m, ToolMeta)), None)
            spec = ToolSpec.from_function(
                fn,
                name=meta.name if meta else None,
                description=meta.description if meta else None,
                thread=meta.thread if meta else False,
                price=meta.price if meta else None,
                scopes=meta.scopes if meta else (),
            )
        if spec.name in self.tools or spec.name in self.handoffs:
            raise ValueError(f"agent {self.name!r} already has a tool named {spec.name!r}")
        self.tools[spec.name] = spec
        return spec

    def add_handoff(
        self,
        target: Agent | Callable[[Context], Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        """Let the model transfer the conversation to ``target`` (an agent or ``fn(ctx)``)."""
        if isinstance(target, Agent):
            agent = target
            label = name or agent.name
            desc = description or f"Transfer the conversation to {agent.name}. {agent.description}"

            def resolve(ctx: Context) -> Agent:
                return agent
        else:
            label = name or target.__name__
            desc = description or (inspect.getdoc(target) or f"Transfer to {label}")
            resolve = target  # type: ignore[assignment]
        tool_name = "transfer_to_" + re.sub(r"[^A-Za-z0-9_-]", "_", label)
        spec = ToolSpec(
            name=tool_name,
            description=desc.strip(),
            parameters={"type": "object", "properties": {}, "required": []},
            fn=resolve,
        )
        if tool_name in self.tools or tool_name in self.handoffs:
            raise ValueError(f"agent {self.name!r} already has a tool named {tool_name!r}")
        self.handoffs[tool_name] = _Handoff(tool=spec, target=resolve)

    def add_hook(self, point: str, fn: Callable[..., Any], *, priority: int = 50) -> None:
        """Run ``fn`` at lifecycle ``point`` (see :func:`~trioagents.hook`)."""
        self._order += 1
        self._hooks.setdefault(point, []).append((priority, self._order, fn))
        self._hooks[point].sort(key=lambda t: (t[0], t[1]))

    def add_prompt(self, fn: Callable[..., Any], *, priority: int = 50) -> None:
        """Add a dynamic system-prompt section ``fn(ctx) -> str``."""
        self._order += 1
        self._prompts.append((priority, self._order, fn))
        self._prompts.sort(key=lambda t: (t[0], t[1]))

    def add_http(
        self,
        path: str,
        handler: Callable[..., Any],
        methods: Iterable[str] = ("GET",),
        *,
        scopes: Iterable[str] = (),
    ) -> None:
        """Serve ``handler`` at ``/agents/{name}{path}`` (callers need all of ``scopes``)."""
        self.http_endpoints.append(
            HttpEndpoint(path, tuple(m.upper() for m in methods), handler, tuple(scopes))
        )

    def add_websocket(
        self, path: str, handler: Callable[..., Any], *, scopes: Iterable[str] = ()
    ) -> None:
        """Serve WebSocket ``handler`` at ``/agents/{name}{path}`` (callers need all of
        ``scopes``)."""
        self.websocket_endpoints.append(WebSocketEndpoint(path, handler, tuple(scopes)))

    def _collect(self, owner: object) -> None:
        seen: set[str] = set()
        for klass in type(owner).__mro__:
            for attr, raw in vars(klass).items():
                if attr in seen:
                    continue
                metas = metadata(raw)
                if not metas:
                    continue
                seen.add(attr)
                bound = getattr(owner, attr)
                for meta in metas:
                    if isinstance(meta, ToolMeta):
                        self.add_tool(
                            ToolSpec.from_function(
                                bound,
                                name=meta.name,
                                description=meta.description,
                                thread=meta.thread,
                                price=meta.price,
                                scopes=meta.scopes,
                            )
                        )
                    elif isinstance(meta, HookMeta):
                        self.add_hook(meta.point, bound, priority=meta.priority)
                    elif isinstance(meta, PromptMeta):
                        self.add_prompt(bound, priority=meta.priority)
                    elif isinstance(meta, HandoffMeta):
                        self.add_handoff(bound, name=meta.name, description=meta.description)
                    elif isinstance(meta, HttpMeta):
                        self.add_http(meta.path, bound, meta.methods, scopes=meta.scopes)
                    elif isinstance(meta, WebSocketMeta):
                        self.add_websocket(meta.path, bound, scopes=meta.scopes)

    # -- running ---------------------------------------------------------------------------

    def has_hooks(self, point: str) -> bool:
        """Whether any hook is registered at ``point``."""
        return bool(self._hooks.get(point))

    async def run_hooks(self, point: str, *args: Any) -> Any:
        """Run the hooks at ``point`` in priority order; return the last non-None result."""
        result = None
        for _, _, fn in self._hooks.get(point, ()):
            value = await _maybe_await(fn(*args))
            if value is not None:
                result = value
        return result

    async def system_prompt(self, ctx: Context) -> str:
        """The system prompt for one response: instructions, then ``@prompt`` sections."""
        parts = [self.instructions] if self.instructions else []
        for _, _, fn in self._prompts:
            text = await _maybe_await(fn(ctx))
            if text:
                parts.append(str(text))
        if ctx.session.instructions:
            parts.append(ctx.session.instructions)
        if ctx.instructions:
            parts.append(ctx.instructions)
        return "\n\n".join(parts)

    def capabilities(self) -> dict[str, Any]:
        """UAMP ``capabilities`` of this agent (§1.3)."""
        return {
            "id": self.name,
            "provider": "trioagents",
            "model_id": getattr(self.model, "name", "unknown"),
            "modalities": ["text"],
            "supports_streaming": True,
            "supports_thinking": True,
            "supports_caching": False,
            "tools": {"supports_tools": True, "supports_parallel_tools": True},
            "provides": sorted(self.tools),
            "endpoints": sorted(
                {e.path for e in self.http_endpoints} | {e.path for e in self.websocket_endpoints}
            ),
        }

    async def aclose(self) -> None:
        """Release the model's connections. Idempotent."""
        await self.model.aclose()


# --------------------------------------------------------------------------------------------
# Sessions and per-response context
# --------------------------------------------------------------------------------------------


@attrs.define(eq=False)
class Session:
    """One conversation with an agent.

    Attributes:
        id: the session id (``sess_…``).
        agent: the agent answering now (a handoff changes it).
        messages: the conversation so far (no system prompt: that is built per response).
        client_tools: OpenAI-shaped tools the client runs itself.
        instructions: extra instructions from the client (UAMP ``session.instructions``).
        data: free per-session state for tools and hooks.
        metadata: transport facts (``transport``, ``headers``, ``auth``…).
    """

    id: str
    agent: Agent
    messages: list[Message] = attrs.field(factory=list)
    client_tools: list[dict[str, Any]] = attrs.field(factory=list)
    instructions: str | None = None
    data: dict[str, Any] = attrs.field(factory=dict)
    metadata: dict[str, Any] = attrs.field(factory=dict)


WaitToolResults = Callable[[list[uamp.ToolCallInfo]], Awaitable[dict[str, uamp.ToolResultInfo]]]

WaitPayment = Callable[["PaymentError"], Awaitable[str]]
"""How an in-band transport receives a payment token: called after the run loop emitted
``payment.required`` for the error, it returns the next token the client submits for this
response (raw, any §0.2 format). The run loop verifies it and calls again after a bad one."""


@attrs.define(eq=False)
class Context:
    """Everything one response needs; tools and hooks receive it as ``ctx``.

    Attributes:
        session: the conversation.
        response_id: this response's id.
        emit: sends one UAMP server event to the caller (the transport renders it).
        config: time bounds and limits.
        ids: id factory.
        session_id: stamped on every emitted event (None for sessionless transports).
        client_tool_mode: ``"wait"`` (pause for ``tool.result``) or ``"return"`` (end the
            response with the calls, as Chat Completions does).
        wait_tool_results: how ``"wait"`` mode receives results.
        options: sampling options from the request.
        response_format: the client's ``response_format``.
        instructions: extra instructions for this response only.
        client_tools: client tools for this response only (None: the session's).
        text: the answer text streamed so far, in chunks.
        usage: token counts so far.
        finish_reason: ``stop`` or ``tool_calls`` once done.
        returned_calls: client tool calls handed back to the caller (``return`` mode).
        committed_chunks: how many of ``text``'s chunks an assistant message already holds.
        open_calls: tool calls of the last assistant message still waiting for results.
        payments: the server's payment service (``runtime.services["payments"]``); ``None``
            means nothing is charged, whatever the agent's pricing.
        payment_token: the payment token the client gave for this turn (raw, §0.2 formats).
        wait_payment: set by transports that negotiate payment in-band (UAMP): how to wait
            for ``payment.submit``; ``None`` (Completions) ends the response with the payment
            error instead.
        payment: the turn's :class:`~trioagents.payments.TurnPayment` while a paid turn runs
            (and after it, for its totals); ``None`` for free turns.
        context: the client's per-turn context (UAMP/PortalConnect ``input.text.context``) for
            this response only; ``None`` when the turn brought none. It is what the client
            sent, unverified: never take identity or permissions from it (a PortalConnect
            daemon's hub-verified caller is in ``session.metadata["caller"]``).
        text_sink: how the transport takes one piece of this response's streamed text
            without an event object (the hot path: one call per model delta). Used only
            while ``emit`` is still the one the context was made with: a hook that replaces
            ``ctx.emit`` sees every text delta as an event. ``None``: :meth:`emit_text`
            emits a ``response.delta`` through ``emit``.
    """

    session: Session
    response_id: str
    emit: Emit
    config: Config = attrs.field(factory=Config)
    ids: uamp.IdFactory = attrs.field(factory=uamp.RandomIds)
    session_id: str | None = None
    client_tool_mode: Literal["wait", "return"] = "wait"
    wait_tool_results: WaitToolResults | None = None
    options: dict[str, Any] = attrs.field(factory=dict)
    response_format: Any = None
    instructions: str | None = None
    client_tools: list[dict[str, Any]] | None = None
    text: list[str] = attrs.field(factory=list)
    usage: uamp.UsageInfo | None = None
    finish_reason: str = "stop"
    returned_calls: list[uamp.ToolCallInfo] = attrs.field(factory=list)
    committed_chunks: int = 0
    open_calls: list[uamp.ToolCallInfo] = attrs.field(factory=list)
    tool_scopes: dict[str, trio.CancelScope] = attrs.field(factory=dict)
    payments: PaymentsService | None = None
    payment_token: str | None = None
    wait_payment: WaitPayment | None = None
    payment: TurnPayment | None = None
    context: dict[str, Any] | None = None
    text_sink: TextSink | None = None
    _sink_emit: Emit | None = attrs.field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        self._sink_emit = self.emit  # the emit text_sink stands for

    @property
    def agent(self) -> Agent:
        """The agent answering now."""
        return self.session.agent

    @property
    def tools_of_client(self) -> list[dict[str, Any]]:
        """The client tools in force for this response."""
        return self.session.client_tools if self.client_tools is None else self.client_tools

    @property
    def output_text(self) -> str:
        """The full answer text streamed so far."""
        return "".join(self.text)

    @property
    def call_id(self) -> str | None:
        """The id of the tool call running in the current task (None outside a tool)."""
        return _current_call.get()

    async def progress(self, text: str, *, call_id: str | None = None) -> None:
        """Report progress of the running tool to the caller (a ``tool_progress`` delta).

        Args:
            text: what to show.
            call_id: the tool call it belongs to (default: the call running in this task).

        Raises:
            RuntimeError: called outside a tool without ``call_id``.
        """
        call_id = call_id or _current_call.get()
        if call_id is None:
            raise RuntimeError("Context.progress() outside a tool call needs call_id=")
        await self.emit(
            uamp.ResponseDelta(
                response_id=self.response_id,
                session_id=self.session_id,
                delta=uamp.ToolProgressDelta(uamp.ToolProgressInfo(call_id=call_id, text=text)),
            )
        )

    async def emit_text(self, text: str) -> None:
        """Stream a piece of this response's text (a text ``response.delta``)."""
        if self.text_sink is not None and self.emit is self._sink_emit:
            await self.text_sink(text)
            return
        await self.emit(
            uamp.ResponseDelta(
                response_id=self.response_id,
                session_id=self.session_id,
                delta=uamp.TextDelta(text),
            )
        )

    def cancel_tool(self, call_id: str) -> bool:
        """Cancel one running agent tool; it reports an error result. Returns whether it ran."""
        scope = self.tool_scopes.get(call_id)
        if scope is None:
            return False
        scope.cancel()
        return True
