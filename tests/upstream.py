"""A real, scriptable OpenAI-compatible upstream for tests: Starlette on ``hypercorn.trio``.

Usage::

    async with open_upstream([SSEReply(text_stream("Hello", " world"))]) as upstream:
        model = OpenAIModel(base_url=upstream.url, api_key="k")
        ...
        assert upstream.requests[0]["stream"] is True

``script`` is a list of replies, one per ``POST /v1/chat/completions`` in order (a request past
the end gets a 500), or a function from the request body to a reply.

* :class:`SSEReply` streams ``chunks`` as Server-Sent Events: a ``dict`` is sent as
  ``data: <json>``, a ``str`` as ``data: <str>``, ``bytes`` verbatim, and a ``trio.Event`` is
  *awaited* before the next chunk (an event that never fires makes a stream that hangs until
  the client goes away). ``[DONE]`` is sent at the end unless ``done=False``.
* :class:`JSONReply` answers with a status and a JSON body (see :func:`error_body`).

Disconnect detection: while a stream is being sent, a watcher task waits on ASGI ``receive()``
for ``http.disconnect`` (Hypercorn sends it as soon as it reads EOF on the socket) and cancels
the stream. A stream that does not run to its end for any reason (disconnect, failed send,
cancellation) sets :attr:`Upstream.disconnected` in a ``finally``, so the event fires even when
the stream is parked on a ``trio.Event`` that never comes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import httpx
import hypercorn.config
import hypercorn.trio
import orjson
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = [
    "JSONReply",
    "Chunk",
    "SSEReply",
    "Upstream",
    "chunk",
    "close_response",
    "error_body",
    "open_upstream",
    "text_stream",
    "tool_call_fragment",
    "usage_chunk",
]

Chunk = dict[str, Any] | str | bytes | trio.Event


@attrs.frozen
class SSEReply:
    """A ``200 text/event-stream`` answer (see the module docstring for ``chunks``)."""

    chunks: Sequence[Chunk]
    done: bool = True


@attrs.frozen
class JSONReply:
    """A JSON answer with ``status``."""

    status: int
    body: Any


Reply = SSEReply | JSONReply
Script = Sequence[Reply] | Callable[[dict[str, Any]], Reply]


@attrs.define(eq=False)
class Upstream:
    """What a test sees of the fake upstream.

    Attributes:
        url: base URL ending in ``/v1``.
        requests: JSON bodies received, in order.
        headers: request headers received (lower-case names), in order.
        clients: the client address (host, port) of each request: equal ports mean one reused
            connection.
        streaming: set when a stream has sent its first chunk.
        disconnected: set when a stream was cut short (the client went away).
        completed: number of streams sent to their end.
    """

    url: str = ""
    requests: list[dict[str, Any]] = attrs.field(factory=list)
    headers: list[dict[str, str]] = attrs.field(factory=list)
    clients: list[tuple[str, int]] = attrs.field(factory=list)
    streaming: trio.Event = attrs.field(factory=trio.Event)
    disconnected: trio.Event = attrs.field(factory=trio.Event)
    completed: int = 0


def chunk(
    delta: dict[str, Any] | None = None,
    *,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    choices: bool = True,
    model: str = "fake-model",
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` object."""
    out: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": (
            [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason}] if choices else []
        ),
        "usage": usage,
    }
    return out


def usage_chunk(prompt: int, completion: int, cached: int | None = None) -> dict[str, Any]:
    """The final ``include_usage`` chunk (no choices)."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return chunk(usage=usage, choices=False)


def text_stream(
    *texts: str, usage: tuple[int, int] | None = (3, 2), finish_reason: str = "stop"
) -> list[Chunk]:
    """Chunks of a plain text answer: role, one chunk per text, finish, usage."""
    out: list[Chunk] = [chunk({"role": "assistant", "content": ""})]
    out.extend(chunk({"content": t}) for t in texts)
    out.append(chunk(finish_reason=finish_reason))
    if usage is not None:
        out.append(usage_chunk(*usage))
    return out


def tool_call_fragment(
    index: int, *, id: str | None = None, name: str | None = None, arguments: str = ""
) -> dict[str, Any]:
    """One ``delta.tool_calls`` chunk carrying one fragment."""
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if id is not None:
        fragment["id"] = id
        fragment["type"] = "function"
    if name is not None:
        fragment["function"]["name"] = name
    return chunk({"tool_calls": [fragment]})


def error_body(message: str, type: str, code: str | None = None) -> dict[str, Any]:
    """An OpenAI-shaped error body."""
    return {"error": {"message": message, "type": type, "param": None, "code": code}}


async def close_response(response: httpx.Response, body: AsyncIterator[Any]) -> None:
    """Close a streamed httpx ``response`` whose ``body`` iterator was left before its end.

    httpx 0.28 / httpcore 1.0 read a body through nested async generators that do not close the
    ones they iterate, so leaving ``r.aiter_lines()`` early (even under ``aclosing``) leaves the
    inner ones to the garbage collector, and Trio's finalizer warns (an error under
    ``filterwarnings = error``). Closing the response makes the innermost read fail; pulling on
    ``body`` until then unwinds every level. Use it instead of ``aclosing(r.aiter_lines())``::

        lines = r.aiter_lines()
        try:
            async for line in lines:
                ...
                break
        finally:
            await close_response(r, lines)
    """
    try:
        await response.aclose()
    finally:
        try:
            async for _ in body:
                pass
        except Exception:  # the expected ReadError / StreamClosed after the close
            pass


def _encode(item: dict[str, Any] | str | bytes) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return b"data: " + item.encode() + b"\n\n"
    return b"data: " + orjson.dumps(item) + b"\n\n"


class _SSEResponse(Response):
    """Streams an :class:`SSEReply`, watching for the client going away."""

    def __init__(self, reply: SSEReply, upstream: Upstream) -> None:
        super().__init__(media_type="text/event-stream")
        self.reply = reply
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        upstream = self.upstream
        finished = False
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                    ],
                }
            )
            async with trio.open_nursery() as nursery:

                async def watch_disconnect() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch_disconnect)
                items = list(self.reply.chunks)
                if self.reply.done:
                    items.append("[DONE]")
                for item in items:
                    if isinstance(item, trio.Event):
                        await item.wait()
                        continue
                    await send(
                        {"type": "http.response.body", "body": _encode(item), "more_body": True}
                    )
                    upstream.streaming.set()
                # Counted as sent before the terminating empty chunk: a client that has read
                # everything may close (and the test end) while that last send is in flight.
                finished = True
                upstream.completed += 1
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                nursery.cancel_scope.cancel()
        finally:
            if not finished:
                upstream.disconnected.set()


def _app(upstream: Upstream, script: Script) -> Starlette:
    queue = [] if callable(script) else list(script)

    async def completions(request: Request) -> Response:
        body = await request.json()
        upstream.requests.append(body)
        upstream.headers.append(dict(request.headers))
        client = request.client
        upstream.clients.append((client.host, client.port) if client else ("", 0))
        if callable(script):
            reply = script(body)
        elif queue:
            reply = queue.pop(0)
        else:
            reply = JSONReply(
                500, error_body("the test script has no more replies", "server_error")
            )
        if isinstance(reply, JSONReply):
            return JSONResponse(reply.body, status_code=reply.status)
        return _SSEResponse(reply, upstream)

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


def _quiet_logger() -> logging.Logger:
    log = logging.getLogger("tests.upstream.hypercorn")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    return log


@asynccontextmanager
async def open_upstream(script: Script = ()) -> AsyncIterator[Upstream]:
    """Serve a fake OpenAI-compatible upstream on ``127.0.0.1:0`` for the block's duration.

    The server is stopped (its tasks cancelled) when the block exits.
    """
    upstream = Upstream()
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = _quiet_logger()
    app: Any = _app(upstream, script)  # hypercorn's ASGI types do not cover Starlette's
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn.trio.serve, app, config))
        upstream.url = f"{binds[0]}/v1"
        try:
            yield upstream
        finally:
            nursery.cancel_scope.cancel()
