"""OpenAIModel against a real OpenAI-compatible HTTP server (tests/upstream.py)."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import httpx
import orjson
import pytest
import trio

from tests.upstream import (
    Chunk,
    JSONReply,
    SSEReply,
    chunk,
    error_body,
    open_upstream,
    text_stream,
    tool_call_fragment,
    usage_chunk,
)
from trioagents import uamp
from trioagents._errors import ModelError
from trioagents.agent import Agent, Context, Message, Session, run_response
from trioagents.agent._model import (
    ModelEvent,
    ModelRequest,
    TextChunk,
    ThinkingChunk,
    ToolCallRequest,
    Usage,
)
from trioagents.agent._openai import OpenAIModel

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _request(text: str = "hi", **kw: Any) -> ModelRequest:
    return ModelRequest(
        messages=(Message(role="system", content="Be brief."), Message(role="user", content=text)),
        **kw,
    )


async def _collect(model: OpenAIModel, request: ModelRequest) -> list[ModelEvent]:
    async with aclosing(model.stream(request)) as stream:
        return [event async for event in stream]


async def test_text_streaming_and_request_body() -> None:
    replies: list[SSEReply | JSONReply] = [
        SSEReply(
            [
                chunk({"role": "assistant", "content": ""}),
                chunk({"reasoning_content": "Thinking"}),
                chunk({"content": "Hello"}),
                chunk({"content": ", "}),
                chunk({"content": "world"}),
                chunk(finish_reason="stop"),
                usage_chunk(12, 3, cached=4),
            ]
        )
    ]
    with trio.fail_after(10):
        async with open_upstream(replies) as upstream:
            model = OpenAIModel(
                "my-model",
                base_url=upstream.url,
                api_key="sk-test",
                extra_body={"reasoning_effort": "low"},
                headers={"X-Trace": "t1"},
            )
            try:
                events = await _collect(
                    model,
                    _request(
                        tools=(WEATHER_TOOL,),
                        options={"temperature": 0.5, "max_tokens": 50, "stream": False, "n": 3},
                        response_format={"type": "json_object"},
                    ),
                )
            finally:
                await model.aclose()
            await model.aclose()  # idempotent

    assert model.name == "my-model"
    assert events == [
        ThinkingChunk("Thinking"),
        TextChunk("Hello"),
        TextChunk(", "),
        TextChunk("world"),
        Usage(input_tokens=12, output_tokens=3, cached_tokens=4),
    ]
    assert upstream.completed == 1
    assert not upstream.disconnected.is_set()
    [body] = upstream.requests
    assert body == {
        "model": "my-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "tools": [WEATHER_TOOL],
        "response_format": {"type": "json_object"},
        "temperature": 0.5,
        "max_tokens": 50,
        "reasoning_effort": "low",
    }
    [headers] = upstream.headers
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["x-trace"] == "t1"
    assert headers["accept"] == "text/event-stream"


async def test_env_defaults_and_no_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(10):
        async with open_upstream([SSEReply(text_stream("ok", usage=None))]) as upstream:
            monkeypatch.setenv("OPENAI_BASE_URL", upstream.url + "/")
            monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
            monkeypatch.setenv("OPENAI_MODEL", "env-model")
            model = OpenAIModel()
            try:
                events = await _collect(model, _request(options={"tool_choice": "auto", "seed": 7}))
            finally:
                await model.aclose()
    assert events == [TextChunk("ok")]  # no usage chunk, no Usage event
    [body] = upstream.requests
    assert body["model"] == "env-model"
    assert "tools" not in body
    assert "tool_choice" not in body  # OpenAI rejects it without tools
    assert body["seed"] == 7
    assert upstream.headers[0]["authorization"] == "Bearer sk-env"


async def test_one_pooled_connection_and_other_dialects() -> None:
    replies: list[SSEReply | JSONReply] = [
        SSEReply([chunk({"reasoning": "hmm"}), chunk({"content": "one"})]),
        JSONReply(
            200,
            {
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": "two",
                            "tool_calls": [
                                {
                                    "id": "call_x",
                                    "type": "function",
                                    "function": {"name": "weather", "arguments": "{}"},
                                }
                            ],
                        },
                        "finish_reason": "tool_calls",
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 1},
            },
        ),
        SSEReply(text_stream("three", usage=None)),
    ]
    with trio.fail_after(10):
        async with open_upstream(replies) as upstream:
            model = OpenAIModel("m", base_url=upstream.url, api_key="k")
            try:
                first = await _collect(model, _request())
                # a server that ignores ``stream: true`` answers with one whole completion
                second = await _collect(model, _request())
                third = await _collect(model, _request())
            finally:
                await model.aclose()
    assert first == [ThinkingChunk("hmm"), TextChunk("one")]
    assert second == [
        TextChunk("two"),
        ToolCallRequest(id="call_x", name="weather", arguments="{}"),
        Usage(input_tokens=5, output_tokens=1),
    ]
    assert third == [TextChunk("three")]
    # every stream was read to its end, so one pooled connection served all three
    assert len(upstream.clients) == 3
    assert len(set(upstream.clients)) == 1
    assert upstream.completed == 2
    assert not upstream.disconnected.is_set()


async def test_tool_call_fragments_are_assembled() -> None:
    stream: list[Chunk] = [
        chunk({"role": "assistant", "content": None}),
        tool_call_fragment(0, id="call_a", name="weather"),
        tool_call_fragment(0, arguments='{"ci'),
        tool_call_fragment(1, id="call_b", name="weather", arguments=""),
        tool_call_fragment(0, arguments='ty": "Pa'),
        tool_call_fragment(1, arguments='{"city": '),
        tool_call_fragment(0, arguments='ris"}'),
        tool_call_fragment(1, arguments='"Oslo"}'),
        chunk(finish_reason="tool_calls"),
        usage_chunk(20, 30),
    ]
    with trio.fail_after(10):
        async with open_upstream([SSEReply(stream)]) as upstream, httpx.AsyncClient() as client:
            model = OpenAIModel("m", base_url=upstream.url, api_key="k", client=client)
            events = await _collect(model, _request("weather?", tools=(WEATHER_TOOL,)))
            await model.aclose()
            assert not client.is_closed  # a given client stays the caller's
    assert events == [
        ToolCallRequest(id="call_a", name="weather", arguments='{"city": "Paris"}'),
        ToolCallRequest(id="call_b", name="weather", arguments='{"city": "Oslo"}'),
        Usage(input_tokens=20, output_tokens=30, cached_tokens=None),
    ]
    assert [orjson.loads(e.arguments) for e in events if isinstance(e, ToolCallRequest)] == [
        {"city": "Paris"},
        {"city": "Oslo"},
    ]


async def test_tool_calls_flushed_when_stream_ends_without_finish_reason() -> None:
    stream: list[Chunk] = [
        tool_call_fragment(1, id="call_2", name="b", arguments="{}"),
        tool_call_fragment(0, id="call_1", name="a"),
    ]
    with trio.fail_after(10):
        async with open_upstream([SSEReply(stream, done=False)]) as upstream:
            model = OpenAIModel("m", base_url=upstream.url, api_key="k")
            try:
                events = await _collect(model, _request(tools=(WEATHER_TOOL,)))
            finally:
                await model.aclose()
    assert events == [
        ToolCallRequest(id="call_1", name="a", arguments="{}"),
        ToolCallRequest(id="call_2", name="b", arguments="{}"),
    ]


@pytest.mark.parametrize(
    ("status", "body", "code", "message"),
    [
        (
            401,
            error_body("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
            "authentication_error",
            "Incorrect API key provided",
        ),
        (
            403,
            error_body("Not allowed", "permission_error"),
            "permission_error",
            "Not allowed",
        ),
        (
            429,
            error_body("Rate limit reached", "rate_limit_error", "rate_limit_exceeded"),
            "rate_limit_exceeded",
            "Rate limit reached",
        ),
        (
            400,
            error_body("bad messages", "invalid_request_error", "invalid_value"),
            "invalid_request",
            "bad messages",
        ),
        (
            500,
            error_body("The server had an error", "server_error"),
            "upstream_error",
            "The server had an error",
        ),
        (503, ["not", "openai"], "upstream_error", "the model provider answered HTTP 503"),
    ],
)
async def test_http_errors_are_mapped(status: int, body: Any, code: str, message: str) -> None:
    with trio.fail_after(10):
        async with open_upstream([JSONReply(status, body)]) as upstream:
            model = OpenAIModel("m", base_url=upstream.url, api_key="k")
            try:
                with pytest.raises(ModelError) as info:
                    await _collect(model, _request())
            finally:
                await model.aclose()
    assert info.value.code == code
    assert info.value.status == status
    assert info.value.message == message
    assert len(upstream.requests) == 1


async def test_error_chunk_mid_stream() -> None:
    stream: list[Chunk] = [
        chunk({"content": "Partial"}),
        {
            "error": {
                "message": "The model overloaded",
                "type": "server_error",
                "code": "overloaded",
            }
        },
        chunk({"content": "never seen"}),
    ]
    events: list[ModelEvent] = []
    with trio.fail_after(10):
        async with open_upstream([SSEReply(stream)]) as upstream:
            model = OpenAIModel("m", base_url=upstream.url, api_key="k")
            try:
                with pytest.raises(ModelError) as info:
                    async with aclosing(model.stream(_request())) as events_stream:
                        async for event in events_stream:
                            events.append(event)
            finally:
                await model.aclose()
    assert events == [TextChunk("Partial")]
    assert info.value.code == "overloaded"
    assert info.value.message == "The model overloaded"
    assert info.value.status is None


async def test_connection_refused_is_upstream_unavailable() -> None:
    with trio.fail_after(10):
        sock = trio.socket.socket()
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()  # nothing listens there any more
        model = OpenAIModel("m", base_url=f"http://127.0.0.1:{port}/v1", api_key="k")
        try:
            with pytest.raises(ModelError) as info:
                await _collect(model, _request())
        finally:
            await model.aclose()
    assert info.value.code == "upstream_unavailable"
    assert info.value.status is None
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("consumer_busy", [False, True], ids=["in-stream", "in-consumer"])
async def test_cancelling_the_consumer_closes_the_upstream_stream(consumer_busy: bool) -> None:
    """Cancellation reaches the stream either inside its read (the model is waiting for the
    upstream) or at its ``yield`` (the consumer is busy, e.g. emitting, and ``aclosing`` closes
    the generator in the cancelled scope). Both must close the upstream connection."""
    never = trio.Event()
    stream: list[Chunk] = [chunk({"content": "first"}), never, chunk({"content": "second"})]
    received: list[ModelEvent] = []
    with trio.fail_after(10):
        async with open_upstream([SSEReply(stream)]) as upstream:
            model = OpenAIModel("m", base_url=upstream.url, api_key="k")
            try:
                with trio.CancelScope() as scope:
                    async with aclosing(model.stream(_request())) as events:
                        async for event in events:
                            received.append(event)
                            scope.cancel()  # the response is cancelled mid-stream
                            if consumer_busy:
                                await trio.sleep_forever()  # raises Cancelled at once
                assert scope.cancelled_caught
                await upstream.disconnected.wait()  # the server saw the connection go away
            finally:
                await model.aclose()
    assert received == [TextChunk("first")]
    assert upstream.completed == 0
    assert not never.is_set()


async def test_closing_the_generator_closes_the_upstream_stream() -> None:
    stream: list[Chunk] = [chunk({"content": "first"}), trio.Event(), chunk({"content": "second"})]
    with trio.fail_after(10):
        async with open_upstream([SSEReply(stream)]) as upstream:
            model = OpenAIModel("m", base_url=upstream.url, api_key="k")
            try:
                async with aclosing(model.stream(_request())) as events:
                    first = await events.__anext__()
                # the run loop's aclosing exited: the connection must be gone now
                await upstream.disconnected.wait()
            finally:
                await model.aclose()
    assert first == TextChunk("first")


async def test_end_to_end_through_an_agent() -> None:
    with trio.fail_after(10):
        async with open_upstream([SSEReply(text_stream("Hi", " there", usage=(7, 2)))]) as upstream:
            model = OpenAIModel(base_url=upstream.url, api_key="k")
            agent = Agent("a", "You are terse.", model=model)
            session = Session(id="s1", agent=agent, messages=[Message("user", "hello")])
            emitted: list[Any] = []

            async def emit(event: Any) -> None:
                emitted.append(event)

            try:
                terminal = await run_response(
                    Context(session=session, response_id="resp_1", emit=emit)
                )
            finally:
                await model.aclose()

    deltas = [
        e.delta.text
        for e in emitted
        if isinstance(e, uamp.ResponseDelta) and isinstance(e.delta, uamp.TextDelta)
    ]
    assert deltas == ["Hi", " there"]
    assert isinstance(emitted[0], uamp.ResponseCreated)
    assert emitted[-1] is terminal
    assert isinstance(terminal, uamp.ResponseDone)
    assert terminal.response.usage is not None
    assert terminal.response.usage.input_tokens == 7
    assert terminal.response.usage.output_tokens == 2
    assert terminal.response.usage.total_tokens == 9
    assert session.messages[-1] == Message(role="assistant", content="Hi there")
    [body] = upstream.requests
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "hello"},
    ]


async def test_more_concurrent_streams_than_httpx_default_pool_all_start() -> None:
    """One model serves a server's many sessions: the 101st concurrent stream must start at
    once, not wait (silently, without a pool timeout) for one of the first 100 to end."""
    n = 120
    release = trio.Event()
    stream: list[Chunk] = [chunk({"content": "first"}), release, chunk({"content": "done"})]
    started = 0
    all_started = trio.Event()
    texts: list[str] = []

    async def consume(model: OpenAIModel) -> None:
        nonlocal started
        out = []
        async with aclosing(model.stream(_request())) as events:
            async for event in events:
                if isinstance(event, TextChunk):
                    out.append(event.text)
                    if event.text == "first":
                        started += 1
                        if started == n:
                            all_started.set()
        texts.append("".join(out))

    with trio.fail_after(20):
        async with open_upstream([SSEReply(stream)] * n) as upstream:
            model = OpenAIModel("m", base_url=upstream.url, api_key="k")
            try:
                async with trio.open_nursery() as nursery:
                    for _ in range(n):
                        nursery.start_soon(consume, model)
                    await all_started.wait()  # every stream is open at the same time
                    release.set()
            finally:
                await model.aclose()
    assert texts == ["firstdone"] * n
    assert upstream.completed == n
