"""OpenAI Chat Completions: request validation and response/chunk rendering (PROTOCOLS.md §5).

``parse_request`` turns a request body into a :class:`CompletionRequest` or raises
:class:`CompletionsError` carrying the exact OpenAI error body and status. :class:`Renderer`
builds the JSON completion and the streaming chunks from UAMP events. No I/O.
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

from .. import uamp
from .sse import sse_event

__all__ = [
    "CompletionRequest",
    "CompletionsError",
    "parse_request",
    "Renderer",
    "error_body",
    "DONE",
]

DONE = b"data: [DONE]\n\n"

_OPTIONS = (
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
    "metadata",
)
_NUMBERS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTS = ("max_tokens", "max_completion_tokens", "seed")

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(
    message: str, *, status: int = 400, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An OpenAI-shaped error body: ``{"error": {message, type, param, code}}``."""
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class CompletionsError(Exception):
    """A request the Completions endpoint refuses, with its HTTP status and OpenAI error body."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = "invalid_value",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, status=status, param=param, code=code)


@attrs.frozen
class CompletionRequest:
    """A validated Chat Completions request.

    Attributes:
        messages: the raw OpenAI messages (validated as a non-empty array of objects).
        model: the requested model (an agent name on ``/v1/chat/completions``).
        stream: whether to answer with SSE.
        include_usage: ``stream_options.include_usage``.
        include_agent_events: ``stream_options.include_agent_events`` (agent tool activity).
        tools: client tools in the OpenAI shape.
        options: sampling options passed to the model.
        response_format: passed to the model.
    """

    messages: list[dict[str, Any]]
    model: str | None = None
    stream: bool = False
    include_usage: bool = False
    include_agent_events: bool = False
    tools: list[dict[str, Any]] = attrs.field(factory=list)
    options: dict[str, Any] = attrs.field(factory=dict)
    response_format: Any = None


def parse_request(body: bytes) -> CompletionRequest:
    """Validate a request body.

    Raises:
        CompletionsError: the body is not JSON (``invalid_json``) or a field is invalid
            (``invalid_value`` with ``param`` naming it).
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CompletionsError(
            f"request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise CompletionsError("request body must be a JSON object", code="invalid_json")
    messages = data.get("messages")
    if messages is None:
        raise CompletionsError(
            "'messages' is required", param="messages", code="missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise CompletionsError("'messages' must be a non-empty array", param="messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise CompletionsError(f"'messages[{i}]' must be an object", param=f"messages[{i}]")
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise CompletionsError("'model' must be a string", param="model")
    stream = data.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise CompletionsError("'stream' must be a boolean", param="stream")
    so = data.get("stream_options")
    so = {} if so is None else so
    if not isinstance(so, dict):
        raise CompletionsError("'stream_options' must be an object", param="stream_options")
    n = data.get("n")
    if n is not None and (type(n) is not int or n != 1):
        raise CompletionsError("only n=1 is supported", param="n", code="unsupported_value")
    if data.get("logprobs") is not None and data.get("logprobs") is not False:
        raise CompletionsError(
            "logprobs are not supported", param="logprobs", code="unsupported_value"
        )
    options: dict[str, Any] = {}
    for key in _OPTIONS:
        if key in data and data[key] is not None:
            value = data[key]
            if key in _NUMBERS and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise CompletionsError(f"'{key}' must be a number", param=key)
            if key in _INTS and (isinstance(value, bool) or not isinstance(value, int)):
                raise CompletionsError(f"'{key}' must be an integer", param=key)
            options[key] = value
    tools = data.get("tools")
    tools = [] if tools is None else tools
    if not isinstance(tools, list):
        raise CompletionsError("'tools' must be an array", param="tools")
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if (
            not isinstance(t, dict)
            or t.get("type", "function") != "function"
            or not isinstance(fn, dict)
        ):
            raise CompletionsError(f"'tools[{i}]' must be a function tool", param=f"tools[{i}]")
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            raise CompletionsError(
                f"'tools[{i}].function.name' is required", param=f"tools[{i}].function.name"
            )
    return CompletionRequest(
        messages=messages,
        model=model,
        stream=stream,
        include_usage=bool(so.get("include_usage")),
        include_agent_events=bool(so.get("include_agent_events")),
        tools=tools,
        options=options,
        response_format=data.get("response_format"),
    )


def _usage(u: uamp.UsageInfo | None) -> dict[str, Any]:
    if u is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    out: dict[str, Any] = {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens or u.input_tokens + u.output_tokens,
    }
    if u.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": u.cached_tokens}
    return out


@attrs.define
class Renderer:
    """Renders one completion (JSON or chunks) for one response.

    Args:
        id: the ``chatcmpl-…`` id.
        created: Unix seconds.
        model: the agent name reported as ``model``.
    """

    id: str
    created: int
    model: str
    _tool_index: int = 0
    _prefix: bytes = b""

    def __attrs_post_init__(self) -> None:
        head = orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
            }
        )
        self._prefix = head[:-1] + b',"choices":[{"index":0,"delta":'

    def _chunk(self, delta: dict[str, Any] | bytes, finish: str | None = None) -> bytes:
        d = delta if isinstance(delta, bytes) else orjson.dumps(delta)
        tail = (
            b',"logprobs":null,"finish_reason":null}]}'
            if finish is None
            else (b',"logprobs":null,"finish_reason":"' + finish.encode() + b'"}]}')
        )
        return sse_event(self._prefix + d + tail)

    def role(self) -> bytes:
        """The first chunk: ``delta{role:"assistant", content:""}``."""
        return self._chunk(b'{"role":"assistant","content":""}')

    def content(self, text: str) -> bytes:
        """A text chunk."""
        return self._chunk(b'{"content":' + orjson.dumps(text) + b"}")

    def reasoning(self, text: str) -> bytes:
        """A reasoning chunk (``delta.reasoning_content``)."""
        return self._chunk(b'{"reasoning_content":' + orjson.dumps(text) + b"}")

    def tool_call(self, call_id: str, name: str, arguments: str) -> bytes:
        """Two chunks announcing a client tool call, then its arguments."""
        i = self._tool_index
        self._tool_index += 1
        start = {
            "tool_calls": [
                {
                    "index": i,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        }
        args = {"tool_calls": [{"index": i, "function": {"arguments": arguments}}]}
        return self._chunk(start) + self._chunk(args)

    def finish(self, reason: str) -> bytes:
        """The chunk with ``finish_reason``."""
        return self._chunk(b"{}", reason)

    def usage(self, usage: uamp.UsageInfo | None) -> bytes:
        """The usage chunk (``choices: []``), sent only with ``include_usage``."""
        return sse_event(
            orjson.dumps(
                {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": _usage(usage),
                }
            )
        )

    def agent_event(self, payload: dict[str, Any]) -> bytes:
        """An extra ``data:`` line with agent tool activity (``include_agent_events``)."""
        return sse_event(orjson.dumps(payload))

    @staticmethod
    def error(message: str, code: str | None, *, kind: str = "server_error") -> bytes:
        """An error chunk after the 200, followed by ``[DONE]``."""
        return (
            sse_event(
                orjson.dumps(
                    {"error": {"message": message, "type": kind, "param": None, "code": code}}
                )
            )
            + DONE
        )

    def completion(
        self,
        text: str | None,
        tool_calls: list[uamp.ToolCallInfo],
        finish_reason: str,
        usage: uamp.UsageInfo | None,
        reasoning: str | None = None,
    ) -> dict[str, Any]:
        """The non-streaming ``chat.completion`` object."""
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not tool_calls else None,
            "refusal": None,
        }
        if tool_calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in tool_calls
            ]
        if reasoning:
            message["reasoning_content"] = reasoning
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": _usage(usage),
        }
