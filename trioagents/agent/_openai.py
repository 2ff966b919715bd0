"""The OpenAI-compatible LLM provider: Chat Completions over httpx, streamed.

Theory of operation
-------------------
:meth:`OpenAIModel.stream` POSTs one ``/chat/completions`` request with ``stream: true`` and
reads the Server-Sent Events of the answer *inside* ``async with client.stream(...)``, so the
HTTP response lives exactly as long as the async generator: when the run loop closes it
(``contextlib.aclosing``) or the response's cancel scope is cancelled, the ``async with`` exits
and httpcore closes the half-read connection at once (it is never returned to the pool), which
is what tells the upstream to stop generating. :func:`_close_body` then unwinds httpx's body
generators so none is left for the garbage collector. A stream read to its end (past
``[DONE]``) returns its connection to the pool. No task is started; this module shields nothing
itself (httpcore shields the socket close).

Each ``chat.completion.chunk`` is turned into model events:

* ``delta.content`` → :class:`TextChunk`; ``delta.reasoning_content`` / ``delta.reasoning``
  → :class:`ThinkingChunk`;
* ``delta.tool_calls`` fragments are assembled by ``index`` (id and name come first, the
  ``arguments`` JSON in pieces) and yielded as complete :class:`ToolCallRequest` events, in
  index order, when the choice finishes (``finish_reason``) or the stream ends;
* ``usage`` → one :class:`Usage` at the end of the stream (the last one seen wins, because some
  servers repeat cumulative usage on every chunk);
* ``{"error": {...}}`` → :class:`~trioagents.ModelError`.

Errors are translated in two places only: HTTP statuses by :func:`_status_error` and httpx
exceptions by the :func:`_map_exceptions` context manager::

    401 → authentication_error     403 → permission_error     429 → rate_limit_exceeded
    400, 404, 413, 422 → invalid_request     other statuses (5xx…) → upstream_error
    httpx.TransportError (refused, reset, timeouts) → upstream_unavailable
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import httpx
import orjson
from httpx_sse import EventSource

from .._errors import ModelError
from ._messages import message_to_openai
from ._model import ModelEvent, ModelRequest, TextChunk, ThinkingChunk, ToolCallRequest, Usage

__all__ = ["DEFAULT_LIMITS", "DEFAULT_TIMEOUT", "OpenAIModel"]

DEFAULT_TIMEOUT = httpx.Timeout(None, connect=10.0)
"""Only connecting is bounded: a stream may legitimately think or talk for many minutes, so the
overall bound belongs to the caller (``trio.fail_after`` around the response)."""

DEFAULT_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=100)
"""No cap on concurrent upstream streams (httpx's default of 100 would make the 101st
concurrent response wait, silently and without a pool timeout, for another to finish: the
server's own session limits bound concurrency); up to 100 idle connections are kept."""

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"

_SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "user",
    "tool_choice",
    "parallel_tool_calls",
)
# OpenAI rejects these when the request has no ``tools``.
_TOOL_ONLY_KEYS = frozenset({"tool_choice", "parallel_tool_calls"})

_MAX_ERROR_BODY = 64 * 1024
"""Bytes of an error response read to find its message (the rest is not worth waiting for)."""

_MAX_JSON_BODY = 16 * 1024 * 1024
"""Largest whole (non-streamed) completion accepted from a server that ignores ``stream``."""

_STATUS_CODES = {
    400: "invalid_request",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request",
    413: "invalid_request",
    422: "invalid_request",
    429: "rate_limit_exceeded",
}


@contextmanager
def _map_exceptions() -> Iterator[None]:
    """Translate httpx's exceptions into :class:`ModelError` (the one place that does)."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise ModelError(
            f"the model provider timed out: {type(exc).__name__}", code="upstream_unavailable"
        ) from exc
    except httpx.TransportError as exc:
        raise ModelError(
            f"cannot reach the model provider: {type(exc).__name__}: {exc}",
            code="upstream_unavailable",
        ) from exc
    except httpx.RequestError as exc:  # DecodingError, TooManyRedirects
        raise ModelError(
            f"the model provider's answer was unusable: {type(exc).__name__}: {exc}",
            code="upstream_error",
        ) from exc


def _error_from_body(error: Any, fallback: str) -> tuple[str, dict[str, Any] | None]:
    """The message and details of an OpenAI-shaped ``error`` value."""
    if isinstance(error, dict):
        message = error.get("message")
        return (message if isinstance(message, str) and message else fallback), {"upstream": error}
    if isinstance(error, str) and error:
        return error, None
    return fallback, None


def _status_error(status: int, body: bytes) -> ModelError:
    """The :class:`ModelError` for a non-2xx HTTP answer."""
    code = _STATUS_CODES.get(status, "upstream_error")
    fallback = f"the model provider answered HTTP {status}"
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()[:500]
        return ModelError(f"{fallback}: {text}" if text else fallback, code=code, status=status)
    error = data.get("error") if isinstance(data, dict) else None
    message, details = _error_from_body(error, fallback)
    return ModelError(message, code=code, status=status, details=details)


def _chunk_error(error: Any) -> ModelError:
    """The :class:`ModelError` for an ``{"error": …}`` chunk inside a 200 stream."""
    message, details = _error_from_body(error, "the model provider failed mid-stream")
    code = error.get("code") if isinstance(error, dict) else None
    status = error.get("status") if isinstance(error, dict) else None
    return ModelError(
        message,
        code=code if isinstance(code, str) and code else "upstream_error",
        status=status if isinstance(status, int) else None,
        details=details,
    )


async def _close_body(response: httpx.Response, body: AsyncIterator[Any]) -> None:
    """Close ``response`` and unwind every async generator reading its ``body``.

    httpx 0.28, httpcore 1.0 and httpx-sse 0.4 read a body through a stack of async generators
    that do not close the ones they iterate (encode/httpx#3686, #3777): closing the outermost
    one leaves the inner ones suspended for the garbage collector, which Trio reports with a
    ``ResourceWarning`` and finalizes in a system task. So the response is closed first (httpcore
    shields the part that closes the connection), which makes the innermost read fail at once,
    and the outermost generator is pulled until that failure has unwound every level (a fully
    read body just ends). Not shielded on purpose: under cancellation the first checkpoint deep
    inside raises ``trio.Cancelled``, which unwinds the stack just as well and propagates.
    """
    try:
        await response.aclose()
    finally:
        try:
            async for _ in body:  # at most what was already buffered, then the read fails
                pass
        except Exception:  # the expected ReadError / StreamClosed after the close
            pass


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``response``'s body."""
    out = bytearray()
    pieces = response.aiter_bytes()
    try:
        async for piece in pieces:
            out += piece
            if len(out) >= limit:
                break
    finally:
        await _close_body(response, pieces)
    return bytes(out[:limit])


def _parse_chunk(data: str, event: str) -> dict[str, Any]:
    """Decode one SSE ``data`` payload; raise the upstream's error if it is one."""
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ModelError(
            f"the model provider sent an invalid chunk: {data[:200]!r}", code="upstream_error"
        ) from None
    if not isinstance(chunk, dict):
        raise ModelError(
            f"the model provider sent a chunk that is not an object: {data[:200]!r}",
            code="upstream_error",
        )
    if "error" in chunk or event == "error":
        raise _chunk_error(chunk.get("error", chunk))
    return chunk


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=int(raw.get("prompt_tokens") or 0),
        output_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=cached if isinstance(cached, int) else None,
    )


@attrs.define
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = attrs.field(factory=list)


class _ToolCallAssembler:
    """Collects ``delta.tool_calls`` fragments into complete calls, keyed by ``index``."""

    def __init__(self, new_id: Callable[[], str]) -> None:
        self._new_id = new_id
        self._calls: dict[int, _PendingCall] = {}
        self._last: int | None = None

    def feed(self, fragment: Any) -> None:
        if not isinstance(fragment, dict):
            return
        index = fragment.get("index")
        call_id = fragment.get("id")
        if not isinstance(index, int):
            # A few servers omit ``index``: a new id starts a new call, else continue the last.
            known = {c.id for c in self._calls.values()}
            if self._last is None or (
                isinstance(call_id, str) and call_id and call_id not in known
            ):
                index = max(self._calls, default=-1) + 1
            else:
                index = self._last
        self._last = index
        call = self._calls.setdefault(index, _PendingCall())
        if isinstance(call_id, str) and call_id and not call.id:
            call.id = call_id
        fn = fragment.get("function")
        if isinstance(fn, dict):
            name = fn.get("name")
            if isinstance(name, str) and name and not call.name:
                call.name = name
            args = fn.get("arguments")
            if isinstance(args, str):
                call.arguments.append(args)
            elif isinstance(args, dict):  # some servers send the object itself
                call.arguments.append(orjson.dumps(args).decode())

    def flush(self) -> list[ToolCallRequest]:
        out = [
            ToolCallRequest(
                id=c.id or self._new_id(),
                name=c.name,
                arguments="".join(c.arguments) or "{}",
            )
            for _, c in sorted(self._calls.items())
        ]
        self._calls.clear()
        self._last = None
        return out


class OpenAIModel:
    """An OpenAI-compatible Chat Completions provider (OpenAI, vLLM, Ollama, OpenRouter…).

    Args:
        model: model name sent upstream; defaults to ``$OPENAI_MODEL`` or ``gpt-4o-mini``.
        api_key: bearer token; defaults to ``$OPENAI_API_KEY`` (no header when unset).
        base_url: API root (``…/v1``); defaults to ``$OPENAI_BASE_URL`` or OpenAI's.
        client: an ``httpx.AsyncClient`` to use; the caller keeps owning it (its timeouts
            apply, :meth:`aclose` leaves it open). Without one, the model lazily creates and
            owns a pooled client.
        extra_body: fields merged into every request body last (provider-specific options).
        headers: extra HTTP headers sent with every request.
        timeout: timeouts of the client the model creates (``None``: none at all). The default
            bounds only connecting; bound whole responses with ``trio.fail_after`` in the caller.

    Attributes:
        name: the model name.
        base_url: the API root, without a trailing slash.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        client: httpx.AsyncClient | None = None,
        extra_body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: httpx.Timeout | None = DEFAULT_TIMEOUT,
    ) -> None:
        self.name: str = model or os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self.base_url = base_url.rstrip("/")
        self.extra_body: dict[str, Any] = dict(extra_body or {})
        self.headers: dict[str, str] = dict(headers or {})
        self._timeout = timeout if timeout is not None else httpx.Timeout(None)
        self._client = client
        self._owns_client = client is None
        self._call_counter = 0

    def __repr__(self) -> str:
        return f"<OpenAIModel {self.name!r} at {self.base_url!r}>"

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, limits=DEFAULT_LIMITS)
        return self._client

    def _new_call_id(self) -> str:
        self._call_counter += 1
        return f"call_openai{self._call_counter:018d}"

    def build_body(self, request: ModelRequest) -> dict[str, Any]:
        """The JSON body of the ``/chat/completions`` request for ``request``."""
        body: dict[str, Any] = {
            "model": self.name,
            "messages": [message_to_openai(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = list(request.tools)
        if request.response_format is not None:
            body["response_format"] = request.response_format
        for key in _SAMPLING_KEYS:
            value = request.options.get(key)
            if value is None or (key in _TOOL_ONLY_KEYS and not request.tools):
                continue
            body[key] = value
        body.update(self.extra_body)
        return body

    async def stream(self, request: ModelRequest) -> AsyncGenerator[ModelEvent, None]:
        """Stream the model's answer to ``request``.

        Closing the generator or cancelling the caller closes the upstream HTTP connection
        before this returns or re-raises ``trio.Cancelled``.

        Raises:
            ModelError: the provider answered with an error status (``status`` set), sent an
                error mid-stream, or could not be reached (``upstream_unavailable``).
        """
        headers = {
            **self.headers,
            "Accept": "text/event-stream",
            "Cache-Control": "no-store",
            "Content-Type": "application/json",
        }
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        content = orjson.dumps(self.build_body(request))
        client = self._get_client()
        tools = _ToolCallAssembler(self._new_call_id)
        usage: Usage | None = None
        with _map_exceptions():
            async with client.stream(
                "POST", f"{self.base_url}/chat/completions", content=content, headers=headers
            ) as response:
                if not response.is_success:
                    raise _status_error(
                        response.status_code, await _read_limited(response, _MAX_ERROR_BODY)
                    )
                ctype = response.headers.get("content-type", "").partition(";")[0].strip()
                if ctype == "application/json":
                    # The server ignored ``stream: true`` and sent one whole completion.
                    body = await _read_limited(response, _MAX_JSON_BODY)
                    for event in self._from_completion(body, tools):
                        yield event
                    return
                if ctype != "text/event-stream":
                    raise ModelError(
                        f"the model provider answered with content-type {ctype!r}, "
                        "not an event stream",
                        code="upstream_error",
                        status=response.status_code,
                    )
                sse_events = EventSource(response).aiter_sse()
                try:
                    done = False
                    async for sse in sse_events:
                        data = sse.data.strip()
                        if done or not data:
                            # After ``[DONE]`` the body is read to its (immediate) end, so the
                            # connection goes back to the pool instead of being closed.
                            continue
                        if data == "[DONE]":
                            done = True
                            continue
                        chunk = _parse_chunk(data, sse.event)
                        for event in self._from_chunk(chunk, tools):
                            yield event
                        usage = _usage(chunk.get("usage")) or usage
                finally:
                    await _close_body(response, sse_events)
        for call in tools.flush():
            yield call
        if usage is not None:
            yield usage

    def _from_chunk(self, chunk: dict[str, Any], tools: _ToolCallAssembler) -> list[ModelEvent]:
        """The events of one ``chat.completion.chunk`` (usage is handled by the caller)."""
        out: list[ModelEvent] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # only the first choice is ever used (n = 1)
            delta = choice.get("delta")
            if isinstance(delta, dict):
                out.extend(self._from_delta(delta, tools))
            if choice.get("finish_reason"):
                out.extend(tools.flush())
        return out

    def _from_delta(self, delta: dict[str, Any], tools: _ToolCallAssembler) -> list[ModelEvent]:
        out: list[ModelEvent] = []
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out.append(ThinkingChunk(reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            out.append(TextChunk(content))
        for fragment in delta.get("tool_calls") or ():
            tools.feed(fragment)
        return out

    def _from_completion(self, body: bytes, tools: _ToolCallAssembler) -> list[ModelEvent]:
        """The events of one whole (non-streamed) completion."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise ModelError(
                "the model provider sent invalid JSON", code="upstream_error"
            ) from None
        if not isinstance(data, dict):
            raise ModelError("the model provider sent no completion", code="upstream_error")
        if "error" in data:
            raise _chunk_error(data["error"])
        out: list[ModelEvent] = []
        choices = data.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        if isinstance(message, dict):
            out.extend(self._from_delta(message, tools))
        out.extend(tools.flush())
        usage = _usage(data.get("usage"))
        if usage is not None:
            out.append(usage)
        return out

    async def aclose(self) -> None:
        """Close the HTTP client this model created (a given client is left open). Idempotent.

        A later :meth:`stream` creates a fresh client.
        """
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
