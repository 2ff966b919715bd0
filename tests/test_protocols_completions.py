"""Sans-IO Chat Completions codec and SSE framing (PROTOCOLS.md §5): fast synchronous tests.

Unit tests pin the exact shapes; hypothesis checks the properties every input must keep:
``parse_request`` raises nothing but :class:`CompletionsError`, every error body has exactly the
OpenAI keys, SSE framing round-trips through a spec-compliant parser, and every rendered chunk
is one SSE event holding valid JSON with exactly the required keys.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from trioagents import uamp
from trioagents.protocols.completions import (
    DONE,
    CompletionRequest,
    CompletionsError,
    Renderer,
    error_body,
    parse_request,
)
from trioagents.protocols.sse import SSE_HEADERS, sse_comment, sse_event

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ERROR_KEYS = {"message", "type", "param", "code"}
CHUNK_KEYS = {"id", "object", "created", "model", "choices"}
CHOICE_KEYS = {"index", "delta", "logprobs", "finish_reason"}
USER = {"role": "user", "content": "hi"}


# ---------------------------------------------------------------------------------------------
# A WHATWG-conformant SSE parser (what browsers and the openai client implement)
# ---------------------------------------------------------------------------------------------


def parse_sse(stream: bytes) -> list[dict[str, Any]]:
    """Events of ``stream`` per the HTML spec: {event, data, id} dicts; comments are listed too."""
    text = stream.decode()
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    events: list[dict[str, Any]] = []
    data: list[str] = []
    event = ""
    last_id: str | None = None
    comments: list[str] = []
    for line in lines[:-1]:  # the part after the last newline is an incomplete line
        if line == "":
            if data:
                events.append({"event": event or "message", "data": "\n".join(data), "id": last_id})
            elif comments:
                events.append({"comment": comments[-1]})
            data, event, comments = [], "", []
            continue
        if line.startswith(":"):
            comments.append(line[1:].removeprefix(" "))
            continue
        field, sep, value = line.partition(":")
        if sep:
            value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            event = value
        elif field == "id" and "\0" not in value:
            last_id = value
    assert not data, "an event was not terminated by a blank line"
    return events


def one_event(frame: bytes) -> dict[str, Any]:
    [event] = parse_sse(frame)
    return event


def chunk_json(frame: bytes) -> dict[str, Any]:
    """The JSON payload of one rendered chunk (exactly one SSE ``data:`` line)."""
    assert frame.startswith(b"data: ")
    assert frame.endswith(b"\n\n")
    assert frame.count(b"\n") == 2, "a JSON chunk must be one data line"
    payload: dict[str, Any] = orjson.loads(one_event(frame)["data"])
    return payload


# ---------------------------------------------------------------------------------------------
# parse_request: valid requests
# ---------------------------------------------------------------------------------------------


def test_minimal_request_defaults() -> None:
    req = parse_request(b'{"messages": [{"role": "user", "content": "hi"}]}')
    assert req == CompletionRequest(messages=[USER])
    assert req.stream is False  # stream defaults to false
    assert req.model is None
    assert req.include_usage is False
    assert req.include_agent_events is False
    assert req.tools == []
    assert req.options == {}
    assert req.response_format is None


def test_full_request() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    body = {
        "model": "helper",
        "messages": [{"role": "system", "content": "be brief"}, USER],
        "stream": True,
        "stream_options": {"include_usage": True, "include_agent_events": True},
        "temperature": 0.5,
        "top_p": 1,
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "stop": ["\n"],
        "presence_penalty": -1.5,
        "frequency_penalty": 0,
        "seed": 7,
        "user": "u1",
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "metadata": {"k": "v"},
        "response_format": {"type": "json_object"},
        "tools": [tool, {"function": {"name": "g"}}],  # type defaults to function
        "n": 1,
        "logprobs": False,
        "store": True,  # unknown and ignored
        "temperature_unknown": "x",
    }
    req = parse_request(orjson.dumps(body))
    assert req.model == "helper"
    assert req.messages == body["messages"]
    assert req.stream is True
    assert req.include_usage is True
    assert req.include_agent_events is True
    assert req.tools == body["tools"]
    assert req.response_format == {"type": "json_object"}
    assert req.options == {
        "temperature": 0.5,
        "top_p": 1,
        "max_tokens": 10,
        "max_completion_tokens": 20,
        "stop": ["\n"],
        "presence_penalty": -1.5,
        "frequency_penalty": 0,
        "seed": 7,
        "user": "u1",
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "metadata": {"k": "v"},
    }


@pytest.mark.parametrize(
    "extra",
    [
        {"stream": None},
        {"n": None},
        {"logprobs": None},
        {"temperature": None, "max_tokens": None},
        {"tools": None},
        {"tools": []},
        {"stream_options": None},
    ],
)
def test_null_fields_mean_default(extra: dict[str, Any]) -> None:
    req = parse_request(orjson.dumps({"messages": [USER], **extra}))
    assert req.stream is False
    assert req.options == {}
    assert req.tools == []


# ---------------------------------------------------------------------------------------------
# parse_request: invalid requests, exact status, code and param
# ---------------------------------------------------------------------------------------------

M = {"messages": [USER]}

INVALID: list[tuple[bytes, str, str | None]] = [
    (b"", "invalid_json", None),
    (b"{", "invalid_json", None),
    (b'{"messages": [}', "invalid_json", None),
    (b"\xff\xfe", "invalid_json", None),
    (b"[]", "invalid_json", None),
    (b'"messages"', "invalid_json", None),
    (b"null", "invalid_json", None),
    (b"42", "invalid_json", None),
    (b"{}", "missing_required_parameter", "messages"),
    (b'{"messages": null}', "missing_required_parameter", "messages"),
    (b'{"messages": []}', "invalid_value", "messages"),
    (b'{"messages": {}}', "invalid_value", "messages"),
    (b'{"messages": "hi"}', "invalid_value", "messages"),
    (b'{"messages": ["hi"]}', "invalid_value", "messages[0]"),
    (b'{"messages": [{"role": "user"}, 3]}', "invalid_value", "messages[1]"),
    (orjson.dumps({**M, "model": 3}), "invalid_value", "model"),
    (orjson.dumps({**M, "stream": "true"}), "invalid_value", "stream"),
    (orjson.dumps({**M, "stream": 1}), "invalid_value", "stream"),
    (orjson.dumps({**M, "stream_options": "usage"}), "invalid_value", "stream_options"),
    (orjson.dumps({**M, "n": 2}), "unsupported_value", "n"),
    (orjson.dumps({**M, "n": 0}), "unsupported_value", "n"),
    (orjson.dumps({**M, "logprobs": True}), "unsupported_value", "logprobs"),
    (orjson.dumps({**M, "temperature": "hot"}), "invalid_value", "temperature"),
    (orjson.dumps({**M, "temperature": True}), "invalid_value", "temperature"),
    (orjson.dumps({**M, "top_p": [1]}), "invalid_value", "top_p"),
    (orjson.dumps({**M, "max_tokens": 1.5}), "invalid_value", "max_tokens"),
    (orjson.dumps({**M, "max_tokens": False}), "invalid_value", "max_tokens"),
    (orjson.dumps({**M, "seed": "7"}), "invalid_value", "seed"),
    (orjson.dumps({**M, "tools": "f"}), "invalid_value", "tools"),
    (orjson.dumps({**M, "tools": ["f"]}), "invalid_value", "tools[0]"),
    (orjson.dumps({**M, "tools": [{"type": "web_search"}]}), "invalid_value", "tools[0]"),
    (orjson.dumps({**M, "tools": [{"type": "function"}]}), "invalid_value", "tools[0]"),
    (
        orjson.dumps(
            {**M, "tools": [{"type": "function", "function": {"name": "ok"}}, {"function": {}}]}
        ),
        "invalid_value",
        "tools[1].function.name",
    ),
    (
        orjson.dumps({**M, "tools": [{"function": {"name": ""}}]}),
        "invalid_value",
        "tools[0].function.name",
    ),
]


@pytest.mark.parametrize(("body", "code", "param"), INVALID)
def test_invalid_requests(body: bytes, code: str, param: str | None) -> None:
    with pytest.raises(CompletionsError) as info:
        parse_request(body)
    exc = info.value
    assert exc.status == 400
    assert exc.body == {
        "error": {
            "message": str(exc),
            "type": "invalid_request_error",
            "param": param,
            "code": code,
        }
    }
    assert str(exc)


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": True}, "n"),
        ({"logprobs": 0}, "logprobs"),
        ({"tools": {}}, "tools"),
        ({"stream_options": []}, "stream_options"),
    ],
)
def test_wrongly_typed_falsy_or_one_equal_values_are_rejected(
    extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(CompletionsError) as info:
        parse_request(orjson.dumps({**M, **extra}))
    assert info.value.body["error"]["param"] == param


# ---------------------------------------------------------------------------------------------
# parse_request: properties
# ---------------------------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
numbers = st.integers(-5, 5) | st.floats(-2, 2)
valid_tool = st.fixed_dictionaries(
    {"function": st.fixed_dictionaries({"name": st.text(min_size=1, max_size=8)})},
    optional={"type": st.just("function")},
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant", "tool", "x"])},
    optional={"content": json_values, "tool_call_id": json_values},
)
# Each field: usually a plausible value, sometimes anything at all.
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "messages": st.lists(message, min_size=1, max_size=3),
    "model": st.text(max_size=10),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries(
        {}, optional={"include_usage": json_values, "include_agent_events": json_values}
    ),
    "n": st.just(1),
    "logprobs": st.just(False),
    "tools": st.lists(valid_tool | json_values, max_size=3),
    "temperature": numbers,
    "top_p": numbers,
    "presence_penalty": numbers,
    "max_tokens": st.integers(0, 100),
    "max_completion_tokens": st.integers(0, 100),
    "seed": st.integers(),
    "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=2),
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
    "response_format": json_values,
    "metadata": json_values,
}


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """A plausible request in which, half of the time, one field holds any JSON value."""
    fields = draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=8))
    data = {"messages": draw(FIELDS["messages"])}
    data.update({f: draw(FIELDS[f]) for f in fields})
    if draw(st.booleans()):
        data[draw(st.sampled_from(sorted(FIELDS)))] = draw(json_values)
    return data


def check_parse(body: bytes) -> CompletionRequest | None:
    """Parse ``body``: a request, or a CompletionsError with the exact OpenAI error shape."""
    try:
        return parse_request(body)
    except CompletionsError as exc:
        assert exc.status == 400
        assert set(exc.body) == {"error"}
        err = exc.body["error"]
        assert set(err) == ERROR_KEYS
        assert err["type"] == "invalid_request_error"
        assert isinstance(err["message"], str) and err["message"]
        assert isinstance(err["code"], str) and err["code"]
        assert err["param"] is None or isinstance(err["param"], str)
        if err["code"] == "invalid_json":
            assert err["param"] is None
        orjson.dumps(exc.body)  # always serializable
        return None


@FAST
@given(st.binary(max_size=200))
def test_parse_request_arbitrary_bytes(body: bytes) -> None:
    check_parse(body)


@FAST
@given(json_values)
def test_parse_request_arbitrary_json(value: Any) -> None:
    check_parse(json.dumps(value).encode())


@FAST
@given(requests(), st.dictionaries(st.text(max_size=8), json_values, max_size=2))
def test_parse_request_request_like_objects(data: dict[str, Any], unknown: dict[str, Any]) -> None:
    req = check_parse(json.dumps({**unknown, **data}).encode())
    if req is None:
        return
    # What a successful parse guarantees to the transport.
    assert isinstance(req.messages, list) and req.messages
    assert all(isinstance(m, dict) for m in req.messages)
    assert req.model is None or isinstance(req.model, str)
    assert isinstance(req.stream, bool)
    assert isinstance(req.include_usage, bool)
    assert isinstance(req.include_agent_events, bool)
    assert isinstance(req.tools, list)
    for t in req.tools:
        assert isinstance(t["function"]["name"], str) and t["function"]["name"]
    for key in ("temperature", "top_p"):
        if key in req.options:
            assert type(req.options[key]) in (int, float)
    for key in ("max_tokens", "max_completion_tokens", "seed"):
        if key in req.options:
            assert type(req.options[key]) is int
    assert None not in req.options.values()


@FAST
@given(st.lists(st.text(max_size=30), min_size=1, max_size=5), st.booleans())
def test_parse_request_keeps_messages(texts: list[str], stream: bool) -> None:
    messages = [{"role": "user", "content": t} for t in texts]
    req = parse_request(orjson.dumps({"messages": messages, "stream": stream}))
    assert req.messages == messages
    assert req.stream is stream


# ---------------------------------------------------------------------------------------------
# Error bodies
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "invalid_request_error"),
        (413, "invalid_request_error"),
        (429, "rate_limit_error"),
        (500, "server_error"),
        (503, "server_error"),
    ],
)
def test_error_body_types(status: int, kind: str) -> None:
    assert error_body("m", status=status, param="p", code="c") == {
        "error": {"message": "m", "type": kind, "param": "p", "code": "c"}
    }
    exc = CompletionsError("m", status=status)
    assert exc.status == status
    assert exc.body == {
        "error": {"message": "m", "type": kind, "param": None, "code": "invalid_value"}
    }


@FAST
@given(
    st.text(),
    st.integers(400, 599),
    st.none() | st.text(max_size=20),
    st.none() | st.text(max_size=20),
)
def test_error_body_shape(message: str, status: int, param: str | None, code: str | None) -> None:
    body = error_body(message, status=status, param=param, code=code)
    assert set(body) == {"error"}
    assert body["error"] == {
        "message": message,
        "type": body["error"]["type"],
        "param": param,
        "code": code,
    }
    kind = body["error"]["type"]
    if status >= 500:
        assert kind == "server_error"
    else:
        assert kind in {
            "invalid_request_error",
            "authentication_error",
            "permission_error",
            "rate_limit_error",
        }
    assert orjson.loads(orjson.dumps(body)) == body


# ---------------------------------------------------------------------------------------------
# SSE framing
# ---------------------------------------------------------------------------------------------


def test_sse_event_single_line() -> None:
    assert sse_event(b'{"a":1}') == b'data: {"a":1}\n\n'
    assert sse_event("[DONE]") == DONE
    assert sse_event("x", event="response_signature") == b"event: response_signature\ndata: x\n\n"
    assert sse_event("x", event="e", id="7") == b"event: e\nid: 7\ndata: x\n\n"
    assert sse_event("") == b"data: \n\n"


def test_sse_event_multi_line() -> None:
    assert sse_event("a\nb") == b"data: a\ndata: b\n\n"
    assert sse_event("a\r\nb\rc\n") == b"data: a\ndata: b\ndata: c\ndata: \n\n"
    assert parse_sse(sse_event("line one\n\nline three")) == [
        {"event": "message", "data": "line one\n\nline three", "id": None}
    ]


def test_sse_comment_and_headers() -> None:
    assert sse_comment() == b": keepalive\n\n"
    assert sse_comment("hi") == b": hi\n\n"
    assert parse_sse(sse_comment() + sse_event("x")) == [
        {"comment": "keepalive"},
        {"event": "message", "data": "x", "id": None},
    ]
    headers = dict(SSE_HEADERS)
    assert headers[b"content-type"] == b"text/event-stream; charset=utf-8"
    assert headers[b"cache-control"] == b"no-cache"
    assert headers[b"x-accel-buffering"] == b"no"


sse_names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"),
    min_size=1,
    max_size=20,
)


@FAST
@given(st.text(max_size=200), st.none() | sse_names, st.none() | sse_names, st.booleans())
def test_sse_round_trip(data: str, event: str | None, id: str | None, as_bytes: bool) -> None:
    frame = sse_event(data.encode() if as_bytes else data, event=event, id=id)
    assert frame == sse_event(data, event=event, id=id)  # str and bytes frame alike
    assert frame.endswith(b"\n\n")
    # Line ends inside data are normalized to \n, as every SSE parser does.
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert parse_sse(frame) == [{"event": event or "message", "data": expected, "id": id}]


@FAST
@given(st.lists(st.text(max_size=40), max_size=6))
def test_sse_stream_of_events(datas: list[str]) -> None:
    stream = b"".join(sse_event(d) for d in datas) + sse_comment()
    events = parse_sse(stream)
    assert [e["data"] for e in events if "data" in e] == [
        d.replace("\r\n", "\n").replace("\r", "\n") for d in datas
    ]


# ---------------------------------------------------------------------------------------------
# Renderer
# ---------------------------------------------------------------------------------------------


def renderer(model: str = "helper") -> Renderer:
    return Renderer(id="chatcmpl-0123", created=1767225600, model=model)


def assert_chunk(frame: bytes, r: Renderer) -> dict[str, Any]:
    """A rendered chunk: exact keys, one choice with exact keys; returns the choice."""
    c = chunk_json(frame)
    assert set(c) == CHUNK_KEYS
    assert c["id"] == r.id
    assert c["object"] == "chat.completion.chunk"
    assert c["created"] == r.created
    assert c["model"] == r.model
    [choice] = c["choices"]
    assert set(choice) == CHOICE_KEYS
    assert choice["index"] == 0
    assert choice["logprobs"] is None
    return dict(choice)


def test_role_content_reasoning_finish() -> None:
    r = renderer()
    assert assert_chunk(r.role(), r) == {
        "index": 0,
        "delta": {"role": "assistant", "content": ""},
        "logprobs": None,
        "finish_reason": None,
    }
    assert assert_chunk(r.content("Hel"), r)["delta"] == {"content": "Hel"}
    assert assert_chunk(r.reasoning("hmm"), r)["delta"] == {"reasoning_content": "hmm"}
    for reason in ("stop", "tool_calls", "length"):
        choice = assert_chunk(r.finish(reason), r)
        assert choice["delta"] == {}
        assert choice["finish_reason"] == reason


def test_tool_call_chunks() -> None:
    r = renderer()
    frames = r.tool_call("call_1", "get_weather", '{"city":"Paris"}')
    first, second = parse_sse(frames)
    assert frames == sse_event(first["data"]) + sse_event(second["data"])
    c1 = assert_chunk(sse_event(first["data"]), r)
    c2 = assert_chunk(sse_event(second["data"]), r)
    assert c1["delta"] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    assert c2["delta"] == {
        "tool_calls": [{"index": 0, "function": {"arguments": '{"city":"Paris"}'}}]
    }
    assert c1["finish_reason"] is None and c2["finish_reason"] is None
    # The next call gets the next index.
    nxt = parse_sse(r.tool_call("call_2", "f", "{}"))
    assert [
        orjson.loads(e["data"])["choices"][0]["delta"]["tool_calls"][0]["index"] for e in nxt
    ] == [1, 1]


def test_usage_chunk() -> None:
    r = renderer()
    c = chunk_json(r.usage(uamp.UsageInfo(input_tokens=9, output_tokens=2, total_tokens=11)))
    assert c == {
        "id": r.id,
        "object": "chat.completion.chunk",
        "created": r.created,
        "model": r.model,
        "choices": [],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
    assert chunk_json(r.usage(None))["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }
    cached = chunk_json(r.usage(uamp.UsageInfo(input_tokens=5, output_tokens=1, cached_tokens=3)))
    assert cached["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 1,
        "total_tokens": 6,  # computed when the total is unknown
        "prompt_tokens_details": {"cached_tokens": 3},
    }


def test_error_chunk_then_done() -> None:
    frames = Renderer.error("boom", "agent_error")
    err, done = parse_sse(frames)
    assert orjson.loads(err["data"]) == {
        "error": {"message": "boom", "type": "server_error", "param": None, "code": "agent_error"}
    }
    assert done["data"] == "[DONE]"
    assert frames.endswith(DONE)
    kinded = orjson.loads(
        parse_sse(Renderer.error("pay", None, kind="payment_required"))[0]["data"]
    )
    assert kinded["error"] == {
        "message": "pay",
        "type": "payment_required",
        "param": None,
        "code": None,
    }


def test_agent_event_line() -> None:
    payload = {"type": "tool_result", "call_id": "c", "status": "completed", "result": "5"}
    assert orjson.loads(one_event(renderer().agent_event(payload))["data"]) == payload


def test_completion_object() -> None:
    r = renderer()
    usage = uamp.UsageInfo(input_tokens=9, output_tokens=2, total_tokens=11)
    body = r.completion("Hello", [], "stop", usage)
    assert body == {
        "id": "chatcmpl-0123",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "helper",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
    calls = [uamp.ToolCallInfo(id="call_1", name="f", arguments='{"x":1}')]
    tool_body = r.completion("", calls, "tool_calls", None, reasoning="because")
    assert tool_body["choices"][0]["message"] == {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}
        ],
        "reasoning_content": "because",
    }
    assert tool_body["choices"][0]["finish_reason"] == "tool_calls"
    # Text said before a tool call is kept.
    assert (
        r.completion("Let me check.", calls, "tool_calls", None)["choices"][0]["message"]["content"]
        == "Let me check."
    )
    # An empty answer without tool calls is an empty string, not null.
    assert r.completion("", [], "stop", None)["choices"][0]["message"]["content"] == ""


@FAST
@given(st.text(), st.text(min_size=1, max_size=40), st.integers(0, 2**40))
def test_renderer_text_chunks_round_trip(text: str, model: str, created: int) -> None:
    r = Renderer(id="chatcmpl-" + "ab" * 6, created=created, model=model)
    for frame, key in ((r.content(text), "content"), (r.reasoning(text), "reasoning_content")):
        choice = assert_chunk(frame, r)
        assert choice["delta"] == {key: text}
        assert choice["finish_reason"] is None


@FAST
@given(
    st.text(min_size=1, max_size=30),
    st.text(min_size=1, max_size=30),
    json_values,
    st.integers(1, 4),
)
def test_renderer_tool_calls_round_trip(call_id: str, name: str, args: Any, count: int) -> None:
    r = renderer()
    arguments = json.dumps(args)
    for i in range(count):
        events = parse_sse(r.tool_call(call_id, name, arguments))
        assert len(events) == 2
        start, rest = (assert_chunk(sse_event(e["data"]), r)["delta"]["tool_calls"] for e in events)
        assert start == [
            {
                "index": i,
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
        ]
        assert rest == [{"index": i, "function": {"arguments": arguments}}]
        assert (
            json.loads(start[0]["function"]["arguments"] + rest[0]["function"]["arguments"]) == args
        )


@FAST
@given(
    st.integers(0, 2**31),
    st.integers(0, 2**31),
    st.none() | st.integers(0, 2**31),
    st.sampled_from(["stop", "tool_calls", "length"]),
)
def test_renderer_usage_and_completion_shapes(
    inp: int, out: int, cached: int | None, reason: str
) -> None:
    r = renderer()
    usage = uamp.UsageInfo(input_tokens=inp, output_tokens=out, cached_tokens=cached)
    c = chunk_json(r.usage(usage))
    expected_keys = {"prompt_tokens", "completion_tokens", "total_tokens"} | (
        {"prompt_tokens_details"} if cached is not None else set()
    )
    assert set(c["usage"]) == expected_keys
    assert c["usage"]["total_tokens"] == inp + out
    body = r.completion("x", [], reason, usage)
    assert set(body) == {"id", "object", "created", "model", "choices", "usage"}
    assert set(body["choices"][0]) == {"index", "message", "logprobs", "finish_reason"}
    assert body["usage"] == c["usage"]
    assert orjson.loads(orjson.dumps(body)) == body
