"""The model interface the run loop drives, and what a model streams back."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol, runtime_checkable

import attrs

from ._messages import Message

__all__ = [
    "Model",
    "ModelRequest",
    "ModelEvent",
    "TextChunk",
    "ThinkingChunk",
    "ToolCallRequest",
    "Usage",
]


@attrs.frozen
class ModelRequest:
    """What one LLM call is asked.

    Attributes:
        messages: the whole prompt, system message first.
        tools: OpenAI function-tool schemas (agent tools, handoffs and client tools).
        options: sampling options passed through (``temperature``, ``max_tokens``, …).
        response_format: the client's ``response_format``, if any.
    """

    messages: tuple[Message, ...]
    tools: tuple[dict[str, Any], ...] = ()
    options: dict[str, Any] = attrs.field(factory=dict)
    response_format: Any = None


@attrs.frozen
class TextChunk:
    """A piece of the answer."""

    text: str


@attrs.frozen
class ThinkingChunk:
    """A piece of reasoning (never part of the answer text)."""

    text: str


@attrs.frozen
class ToolCallRequest:
    """A complete tool call the model asks for (``arguments`` is JSON text)."""

    id: str
    name: str
    arguments: str


@attrs.frozen
class Usage:
    """Token counts of one LLM call."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int | None = None


ModelEvent = TextChunk | ThinkingChunk | ToolCallRequest | Usage


@runtime_checkable
class Model(Protocol):
    """An LLM provider.

    ``stream`` is an async generator; the run loop closes it (``aclosing``) when the response
    ends or is cancelled, which must release any upstream connection at once.
    """

    name: str

    def stream(self, request: ModelRequest) -> AsyncGenerator[ModelEvent, None]:
        """Stream the answer to ``request``.

        Raises:
            ModelError: the provider failed; ``code`` maps to a UAMP ``response.error`` code.
        """
        ...

    async def aclose(self) -> None:
        """Release pooled connections. Idempotent."""
        ...
