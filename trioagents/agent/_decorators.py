"""The decorators that turn functions and methods into agent capabilities.

A decorator only attaches metadata; :class:`~trioagents.Agent` collects decorated members from
itself, its skills and its transports into one registry when it is built. That one registry is
what the server mounts: built-in transports and users' ``@http`` / ``@websocket`` endpoints go
through exactly the same path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar, overload

import attrs

__all__ = ["tool", "hook", "handoff", "prompt", "http", "websocket", "HOOK_POINTS"]

F = TypeVar("F", bound=Callable[..., Any])

HOOK_POINTS = frozenset(
    {
        "on_connection",  # a session/connection opened: hook(session)
        "on_message",  # a response starts: hook(ctx)
        "before_llm",  # hook(ctx, request) -> ModelRequest | None
        "after_llm",  # hook(ctx, text, tool_calls)
        "on_chunk",  # hook(ctx, text) -> str | None (replace the streamed text)
        "on_tool",  # hook(ctx, call, result) -> str | None (replace the result)
        "finalize",  # the response ended, any outcome: hook(ctx)
        "on_disconnect",  # a session/connection closed: hook(session)
        "transcribe",  # input audio: hook(session, audio: bytes, format: str) -> str | None
    }
)

_ATTR = "__trioagents__"


@attrs.frozen
class ToolMeta:
    """``@tool`` metadata."""

    name: str | None
    description: str | None
    thread: bool
    price: Decimal | None = None
    scopes: tuple[str, ...] = ()


@attrs.frozen
class HookMeta:
    """``@hook`` metadata."""

    point: str
    priority: int


@attrs.frozen
class PromptMeta:
    """``@prompt`` metadata."""

    priority: int


@attrs.frozen
class HandoffMeta:
    """``@handoff`` metadata."""

    name: str | None
    description: str | None


@attrs.frozen
class HttpMeta:
    """``@http`` metadata."""

    path: str
    methods: tuple[str, ...]
    scopes: tuple[str, ...] = ()


@attrs.frozen
class WebSocketMeta:
    """``@websocket`` metadata."""

    path: str
    scopes: tuple[str, ...] = ()


Meta = ToolMeta | HookMeta | PromptMeta | HandoffMeta | HttpMeta | WebSocketMeta


def _mark(fn: F, meta: Meta) -> F:
    metas: list[Meta] = list(getattr(fn, _ATTR, ()))
    metas.append(meta)
    try:
        setattr(fn, _ATTR, tuple(metas))
    except AttributeError:  # bound methods: mark the function underneath
        setattr(fn.__func__, _ATTR, tuple(metas))  # type: ignore[attr-defined]
    return fn


def metadata(obj: Any) -> tuple[Meta, ...]:
    """Return the decorator metadata attached to ``obj`` (empty if none)."""
    return tuple(getattr(obj, _ATTR, ()))


@overload
def tool(fn: F, /) -> F: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    thread: bool = False,
    price: Decimal | str | int | None = None,
    scopes: Sequence[str] = (),
) -> Callable[[F], F]: ...
def tool(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    thread: bool = False,
    price: Decimal | str | int | None = None,
    scopes: Sequence[str] = (),
) -> F | Callable[[F], F]:
    """Expose a function to the model as a tool.

    The JSON schema comes from the signature (types, defaults) and the Google-style docstring
    (summary and ``Args:``). A parameter named ``ctx`` or ``context``, or annotated with
    :class:`~trioagents.Context`, receives the running response's context instead of a model
    argument. Async tools run in the response's nursery and are cancelled with it; plain
    functions run inline, or in a worker thread with ``thread=True``.

    Args:
        name: tool name (default: the function name).
        description: overrides the docstring summary.
        thread: run a synchronous tool with ``trio.to_thread.run_sync``.
        price: what one call costs on a paid agent (a decimal string, ``Decimal`` or int,
            never a float); charged before the tool runs (PROTOCOLS.md §9, see
            :class:`~trioagents.payments.Pricing`).
        scopes: scopes the caller's principal must all hold
            (``session.metadata["principal"]``): without them the tool is not offered to the
            model, and a call of it anyway gets the error result ``error: insufficient scope``.
            Anonymous callers hold no scopes. Empty (the default): everyone may use it.

    Raises:
        TypeError: ``price`` is a float.
        ValueError: ``price`` is negative or not a number.
    """
    amount: Decimal | None = None
    if price is not None:
        from ..payments._errors import to_decimal  # the money rules live with payments

        amount = to_decimal(price)
        if amount is not None and amount < 0:
            raise ValueError(f"a tool price cannot be negative: {price!r}")

    needed = _scopes(scopes)

    def deco(f: F) -> F:
        return _mark(
            f,
            ToolMeta(
                name=name, description=description, thread=thread, price=amount, scopes=needed
            ),
        )

    return deco(fn) if fn is not None else deco


def hook(point: str, *, priority: int = 50) -> Callable[[F], F]:
    """Run a function at a lifecycle point (lower ``priority`` runs first).

    Points: ``on_connection``, ``on_message``, ``before_llm``, ``after_llm``, ``on_chunk``,
    ``on_tool``, ``finalize``, ``on_disconnect``, ``transcribe`` (see :data:`HOOK_POINTS` for
    the arguments). Hooks may be sync or async. ``finalize`` runs shielded with a deadline after
    cancellation.

    ``transcribe`` makes a text-only agent accept audio input (Realtime
    ``input_audio_buffer.commit``, UAMP final ``input.audio``): ``hook(session, audio, format)``
    gets the decoded audio bytes and the client's format name as the client gave it
    (``input.audio.format`` or the session's ``input_audio_format`` on UAMP, the beta
    ``input_audio_format`` on Realtime), ``"pcm16"`` (16-bit little-endian mono PCM, 24 kHz on
    Realtime) when none was given; it returns the transcript, which becomes the user's text.
    ``None`` means "not handled": the last non-``None`` result wins, and audio no hook handled
    is refused (Realtime ``….failed{audio_not_supported}``, UAMP
    ``response.error{unsupported_modality}``). An exception fails that one input (Realtime
    ``conversation.item.input_audio_transcription.failed``, UAMP ``response.error``). The hook
    runs in a task of the connection or session, never in the socket's reader, and is
    cancelled when the connection (or UAMP session) closes::

        @hook("transcribe")
        async def speech_to_text(session, audio: bytes, format: str) -> str | None:
            return await my_asr(audio, format)

    Raises:
        ValueError: ``point`` is not a known lifecycle point.
    """
    if point not in HOOK_POINTS:
        raise ValueError(f"unknown hook point {point!r}; expected one of {sorted(HOOK_POINTS)}")

    def deco(f: F) -> F:
        return _mark(f, HookMeta(point=point, priority=priority))

    return deco


def prompt(fn: F | None = None, /, *, priority: int = 50) -> Any:
    """Contribute text to the system prompt, computed per response: ``fn(ctx) -> str``."""

    def deco(f: F) -> F:
        return _mark(f, PromptMeta(priority=priority))

    return deco(fn) if fn is not None else deco


def handoff(
    fn: F | None = None, /, *, name: str | None = None, description: str | None = None
) -> Any:
    """Offer the model a transfer to another agent: ``fn(ctx) -> Agent``.

    The model sees a tool ``transfer_to_<name>``; calling it makes the returned agent answer the
    rest of the response and the following turns of the session.
    """

    def deco(f: F) -> F:
        return _mark(f, HandoffMeta(name=name, description=description))

    return deco(fn) if fn is not None else deco


def _scopes(scopes: Sequence[str] | str) -> tuple[str, ...]:
    """Normalise a scopes argument: a sequence of names (a bare string is one scope)."""
    if isinstance(scopes, str):
        scopes = (scopes,)
    out = tuple(dict.fromkeys(str(s) for s in scopes))
    if any(not s or " " in s for s in out):
        raise ValueError(f"scopes must be non-empty names without spaces: {scopes!r}")
    return out


def http(
    path: str, *, methods: Sequence[str] = ("GET",), scopes: Sequence[str] = ()
) -> Callable[[F], F]:
    """Serve an HTTP endpoint at ``/agents/{name}{path}`` (and at ``path`` in single-agent mode).

    The handler receives a Starlette ``Request`` and returns a ``Response`` or a JSON value.

    Args:
        path: the endpoint's path below the agent's URL (starts with ``/``).
        methods: the HTTP methods it serves.
        scopes: scopes the caller must all hold. When given, the server authenticates the
            request (bearer token, PROTOCOLS.md §0.2/§10) before calling the handler: 401
            without a valid token, 403 ``insufficient_scope`` without the scopes.

    Raises:
        ValueError: ``path`` does not start with ``/``, or a scope is empty or has a space.
    """
    if not path.startswith("/"):
        raise ValueError(f"endpoint path must start with '/': {path!r}")
    needed = _scopes(scopes)

    def deco(f: F) -> F:
        return _mark(
            f, HttpMeta(path=path, methods=tuple(m.upper() for m in methods), scopes=needed)
        )

    return deco


def websocket(path: str, *, scopes: Sequence[str] = ()) -> Callable[[F], F]:
    """Serve a WebSocket endpoint at ``/agents/{name}{path}``; the handler gets a Starlette
    ``WebSocket`` and owns it until it returns.

    Args:
        path: the endpoint's path below the agent's URL (starts with ``/``).
        scopes: scopes the caller must all hold: checked before the handshake is accepted
            (HTTP 401 / 403 denial response otherwise), as for :func:`http`.

    Raises:
        ValueError: ``path`` does not start with ``/``, or a scope is empty or has a space.
    """
    if not path.startswith("/"):
        raise ValueError(f"endpoint path must start with '/': {path!r}")
    needed = _scopes(scopes)

    def deco(f: F) -> F:
        return _mark(f, WebSocketMeta(path=path, scopes=needed))

    return deco
