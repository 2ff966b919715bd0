"""The built-in deterministic model: the default, offline, no key.

Without a script it answers from the conversation:

* ``/call NAME {json}`` in the last user message calls tool ``NAME`` with those arguments;
* after tool results it reports them (``NAME returned: …``);
* ``/fail message`` fails the call with a :class:`~trioagents.ModelError`;
* anything else is echoed back: ``You said: …``.

With a script (:class:`Reply`, :class:`CallTool`, :class:`Fail` steps, or a function) each LLM
call takes the next step, so tests and examples can make it do exactly what they need.
Text streams word by word, ``word_delay`` seconds apart (``trio.sleep``: works with
``MockClock`` and is cancelled at once).
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any

import attrs
import orjson
import trio

from .._errors import ModelError
from ._messages import Message, text_of
from ._model import ModelEvent, ModelRequest, TextChunk, ThinkingChunk, ToolCallRequest, Usage

__all__ = ["BuiltinModel", "Reply", "CallTool", "Fail", "Think"]


@attrs.frozen
class Reply:
    """Stream ``text`` word by word (``word_delay`` overrides the model's)."""

    text: str
    word_delay: float | None = None


@attrs.frozen
class Think:
    """Stream reasoning text before the next step's answer."""

    text: str


@attrs.frozen
class CallTool:
    """Ask for one tool call (several ``CallTool`` in a list step ask for them together)."""

    name: str
    arguments: dict[str, Any] = attrs.field(factory=dict)
    id: str | None = None


@attrs.frozen
class Fail:
    """Fail the LLM call with ``ModelError(message, code=code, status=status)``."""

    message: str = "scripted failure"
    code: str = "agent_error"
    status: int | None = None
    after_words: str = ""


Step = Reply | CallTool | Fail | Think | Sequence[Reply | CallTool | Fail | Think]
ScriptFn = Callable[[ModelRequest], Step]

_CALL = re.compile(r"^/call\s+([A-Za-z0-9_.-]+)\s*(.*)$", re.S)


def split_words(text: str) -> list[str]:
    """Split ``text`` into chunks that concatenate back to it exactly, one word each."""
    chunks = re.findall(r"\s*\S+", text)
    tail = text[len("".join(chunks)) :]
    if tail:
        if chunks:
            chunks[-1] += tail
        else:
            chunks.append(tail)
    return chunks


def _count(messages: Iterable[Message]) -> int:
    # Words of every message, plus one per message. Joined with a space, the word count of
    # the whole is the sum of the parts'; one join and one split instead of a Python-level
    # loop over a history that grows with every turn.
    contents = [m.content for m in messages]
    try:
        text = " ".join(contents)  # type: ignore[arg-type]
    except TypeError:  # some content is a list of parts
        text = " ".join([text_of(c) for c in contents])
    return len(text.split()) + len(contents)


class _Latest(list[ModelRequest]):
    """A list that keeps only its ``keep`` latest items (appended at the end)."""

    def __init__(self, keep: int) -> None:
        super().__init__()
        self.keep = keep

    def append(self, item: ModelRequest) -> None:
        super().append(item)
        if len(self) > self.keep:
            del self[0]


class BuiltinModel:
    """A deterministic model that streams word by word and can be scripted.

    Args:
        script: steps taken one per LLM call, or a function from request to step. When a list
            runs out, the model falls back to its default behaviour.
        word_delay: seconds between words (0 streams as fast as the consumer reads).
        name: the model name reported in capabilities.
        keep_calls: how many of the latest requests :attr:`calls` keeps.
    """

    def __init__(
        self,
        script: Sequence[Step] | ScriptFn | None = None,
        *,
        word_delay: float = 0.0,
        name: str = "trioagents-builtin",
        keep_calls: int = 1000,
    ) -> None:
        self.name = name
        self.word_delay = word_delay
        self._fn: ScriptFn | None = script if callable(script) else None
        self._steps: list[Step] = (
            list(script) if script is not None and not callable(script) else []
        )
        self._call_counter = 0
        self.calls: list[ModelRequest] = _Latest(keep_calls)
        """The latest requests this model received, oldest first (for tests). Bounded: a
        server answering with the built-in model for days must not keep every conversation
        it ever saw."""

    def _next_step(self, request: ModelRequest) -> Step:
        if self._fn is not None:
            return self._fn(request)
        if self._steps:
            return self._steps.pop(0)
        return self._default(request)

    def _default(self, request: ModelRequest) -> Step:
        last = request.messages[-1] if request.messages else Message(role="user")
        if last.role == "tool":
            results = []
            names = {c.id: c.name for m in request.messages for c in m.tool_calls}
            for m in reversed(request.messages):
                if m.role != "tool":
                    break
                results.append(f"{names.get(m.tool_call_id or '', 'tool')} returned: {m.text}")
            return Reply(". ".join(reversed(results)))
        text = last.text.strip()
        call = _CALL.match(text)
        if call:
            raw = call.group(2).strip() or "{}"
            try:
                args = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return Reply(f"Cannot call {call.group(1)}: arguments are not JSON.")
            return CallTool(call.group(1), args if isinstance(args, dict) else {"value": args})
        if text.startswith("/fail"):
            return Fail(text[5:].strip() or "failure requested")
        return Reply(f"You said: {text}" if text else "Hello! Send me a message.")

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ModelEvent, None]:
        """Stream the next step's answer (see the module docstring)."""
        self.calls.append(request)
        step = self._next_step(request)
        steps = [step] if isinstance(step, (Reply, CallTool, Fail, Think)) else list(step)
        out_words = 0
        for s in steps:
            if isinstance(s, Think):
                yield ThinkingChunk(s.text)
            elif isinstance(s, Reply):
                delay = self.word_delay if s.word_delay is None else s.word_delay
                for i, word in enumerate(split_words(s.text)):
                    if delay and i:
                        await trio.sleep(delay)
                    out_words += 1
                    yield TextChunk(word)
            elif isinstance(s, CallTool):
                self._call_counter += 1
                yield ToolCallRequest(
                    id=s.id or f"call_{self._call_counter:024x}",
                    name=s.name,
                    arguments=orjson.dumps(s.arguments).decode(),
                )
            elif isinstance(s, Fail):
                for word in split_words(s.after_words):
                    yield TextChunk(word)
                raise ModelError(s.message, code=s.code, status=s.status)
        yield Usage(input_tokens=_count(request.messages), output_tokens=out_words)

    async def aclose(self) -> None:
        """Nothing to release."""
