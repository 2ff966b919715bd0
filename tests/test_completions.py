"""Chat Completions end to end (PROTOCOLS.md §5): the real server on 127.0.0.1:0.

Driven by the real ``openai`` client (sync, in a worker thread so no asyncio loop is mixed into
Trio) for interoperability, and by raw httpx for exact status codes, error shapes and SSE lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import openai
import orjson
import pytest
import trio

from tests.upstream import SSEReply, chunk, open_upstream
from trioagents import Agent, BuiltinModel, CallTool, Fail, Reply, Think
from trioagents.agent._openai import OpenAIModel
from trioagents.testing import TestServer, open_test_server

T = TypeVar("T")

TIMEOUT = 10

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}

ERROR_KEYS = {"message", "type", "param", "code"}


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _agents(script: list[Any], *, tools: list[Any] | None = None) -> tuple[Agent, Agent]:
    """The agent under test ("helper") and a second one so ``/v1`` routing needs ``model``."""
    helper = Agent("helper", model=BuiltinModel(script), tools=tools or [])
    other = Agent("other", model=BuiltinModel([Reply("I am the other agent.")]))
    return helper, other


def _base_url(srv: TestServer, kind: str) -> tuple[str, str]:
    """(base_url, model) for the server-level or per-agent OpenAI base URL."""
    if kind == "server":
        return f"{srv.url}/v1", "helper"
    return srv.agent_url("helper", "/v1"), "ignored-by-the-server"


async def _in_thread(fn: Callable[[openai.OpenAI], T], base_url: str) -> T:
    """Run ``fn(client)`` with a sync OpenAI client in a worker thread."""

    def run() -> T:
        with openai.OpenAI(base_url=base_url, api_key="test", max_retries=0, timeout=5) as client:
            return fn(client)

    return await trio.to_thread.run_sync(run)


def _sse(body: str) -> list[tuple[str | None, str]]:
    """(event, data) of every SSE event in ``body`` (comments skipped)."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        event = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith("data: ") else line[5:])
            elif line.startswith("event:"):
                event = line[6:].strip()
        if data:
            events.append((event, "\n".join(data)))
    return events


def _chunks(body: str) -> list[dict[str, Any]]:
    """The JSON ``data:`` payloads of an SSE body, checking it ends with exactly one [DONE]."""
    datas = [d for _, d in _sse(body)]
    assert datas[-1] == "[DONE]"
    assert datas.count("[DONE]") == 1
    return [orjson.loads(d) for d in datas[:-1]]


def _catch(fn: Callable[[], Any]) -> Exception:
    try:
        fn()
    except Exception as exc:
        return exc
    raise AssertionError("no error")


def _assert_openai_error(
    r: httpx.Response, status: int, code: str | None, param: str | None
) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == ERROR_KEYS
    assert isinstance(err["message"], str) and err["message"]
    assert err["code"] == code
    assert err["param"] == param
    return dict(err)


# ---------------------------------------------------------------------------------------------
# The real openai client
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["server", "agent"])
async def test_openai_non_streaming(kind: str) -> None:
    helper, other = _agents([Reply("Hello there, friend.")])
    with trio.fail_after(TIMEOUT):
        async with open_test_server([helper, other]) as srv:
            base_url, model = _base_url(srv, kind)
            completion = await _in_thread(
                lambda c: c.chat.completions.create(
                    model=model,
                    messages=[
                        {"role": "system", "content": "Be nice."},
                        {"role": "user", "content": "Say hello"},
                    ],
                    temperature=0.2,
                    max_tokens=20,
                ),
                base_url,
            )
    assert completion.id.startswith("chatcmpl-")
    assert len(completion.id) > len("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "helper"
    [choice] = completion.choices
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "Hello there, friend."
    assert choice.message.tool_calls is None
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 3  # the built-in model counts words
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    # The agent got the conversation and the sampling options.
    [call] = helper.model.calls  # type: ignore[attr-defined]
    assert [(m.role, m.text) for m in call.messages][-1] == ("user", "Say hello")
    assert call.options["temperature"] == 0.2
    assert call.options["max_tokens"] == 20
    assert other.model.calls == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", ["server", "agent"])
async def test_openai_streaming(kind: str) -> None:
    text = "One two three four five."
    helper, other = _agents([Reply(text)])
    with trio.fail_after(TIMEOUT):
        async with open_test_server([helper, other]) as srv:
            base_url, model = _base_url(srv, kind)

            def run(c: openai.OpenAI) -> list[Any]:
                with c.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "count"}], stream=True
                ) as stream:
                    return list(stream)

            chunks = await _in_thread(run, base_url)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.model == "helper" for c in chunks)
    assert all(c.usage is None for c in chunks)  # no include_usage: no usage anywhere
    assert all(len(c.choices) == 1 for c in chunks)
    first = chunks[0].choices[0]
    assert first.delta.role == "assistant"
    assert first.delta.content == ""
    contents = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert contents == ["One", " two", " three", " four", " five."]  # word by word, in order
    assert "".join(contents) == text
    assert [c.choices[0].finish_reason for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert chunks[-1].choices[0].delta.content is None


async def test_openai_streaming_include_usage() -> None:
    helper, other = _agents([Reply("Hi you")])
    with trio.fail_after(TIMEOUT):
        async with open_test_server([helper, other]) as srv:

            def run(c: openai.OpenAI) -> list[Any]:
                with c.chat.completions.create(
                    model="helper",
                    messages=[{"role": "user", "content": "hello"}],
                    stream=True,
                    stream_options={"include_usage": True},
                ) as stream:
                    return list(stream)

            chunks = await _in_thread(run, f"{srv.url}/v1")
    *body, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 2
    assert last.usage.total_tokens == last.usage.prompt_tokens + 2
    assert last.id == body[0].id
    assert all(c.usage is None for c in body)
    assert body[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in body) == "Hi you"


@pytest.mark.parametrize("kind", ["server", "agent"])
async def test_openai_client_tool_round_trip(kind: str) -> None:
    helper, other = _agents(
        [
            CallTool("get_weather", {"city": "Paris"}, id="call_weather_1"),
            Reply("It is sunny in Paris."),
            CallTool("get_weather", {"city": "Oslo"}, id="call_weather_2"),
            Reply("It snows in Oslo."),
        ]
    )
    with trio.fail_after(TIMEOUT):
        async with open_test_server([helper, other]) as srv:
            base_url, model = _base_url(srv, kind)

            def run(c: openai.OpenAI) -> tuple[Any, ...]:
                question = [{"role": "user", "content": "Weather in Paris?"}]
                first = c.chat.completions.create(model=model, messages=question, tools=[WEATHER])
                calls = first.choices[0].message.tool_calls
                follow_up = [
                    *question,
                    first.choices[0].message.model_dump(exclude_none=True),
                    {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 24 C"},
                ]
                final = c.chat.completions.create(model=model, messages=follow_up, tools=[WEATHER])
                # The same round trip, streaming.
                question2 = [{"role": "user", "content": "Weather in Oslo?"}]
                with c.chat.completions.create(
                    model=model, messages=question2, tools=[WEATHER], stream=True
                ) as stream:
                    streamed = list(stream)
                fragments = [
                    tc
                    for ch in streamed
                    if ch.choices
                    for tc in ch.choices[0].delta.tool_calls or ()
                ]
                follow_up2 = [
                    *question2,
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "id": fragments[0].id,
                                "type": "function",
                                "function": {
                                    "name": fragments[0].function.name,
                                    "arguments": "".join(
                                        f.function.arguments or "" for f in fragments
                                    ),
                                },
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": fragments[0].id, "content": "snow, -3 C"},
                ]
                with c.chat.completions.create(
                    model=model, messages=follow_up2, tools=[WEATHER], stream=True
                ) as stream:
                    final_streamed = list(stream)
                return first, final, streamed, final_streamed

            first, final, streamed, final_streamed = await _in_thread(run, base_url)

    # Non-streaming: the call comes back to the client.
    msg = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls"
    assert msg.content is None
    [tc] = msg.tool_calls
    assert tc.id == "call_weather_1"
    assert tc.type == "function"
    assert tc.function.name == "get_weather"
    assert orjson.loads(tc.function.arguments) == {"city": "Paris"}
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content == "It is sunny in Paris."
    assert final.choices[0].message.tool_calls is None

    # Streaming: one call announced with id and name, then its arguments, then tool_calls.
    fragments = [tc for ch in streamed for tc in ch.choices[0].delta.tool_calls or ()]
    assert [f.index for f in fragments] == [0, 0]
    assert fragments[0].id == "call_weather_2"
    assert fragments[0].type == "function"
    assert fragments[0].function.name == "get_weather"
    assert fragments[0].function.arguments == ""
    assert fragments[1].id is None
    assert orjson.loads(fragments[1].function.arguments) == {"city": "Oslo"}
    assert [ch.choices[0].finish_reason for ch in streamed][-1] == "tool_calls"
    assert not "".join(ch.choices[0].delta.content or "" for ch in streamed)
    assert final_streamed[-1].choices[0].finish_reason == "stop"
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in final_streamed) == "It snows in Oslo."
    )

    # The model saw the client's tool results on the follow-up requests.
    calls = helper.model.calls  # type: ignore[attr-defined]
    assert len(calls) == 4
    for request, call_id, result in (
        (calls[1], "call_weather_1", "sunny, 24 C"),
        (calls[3], "call_weather_2", "snow, -3 C"),
    ):
        assistant, tool_msg = request.messages[-2:]
        assert assistant.role == "assistant"
        assert [c.id for c in assistant.tool_calls] == [call_id]
        assert assistant.tool_calls[0].name == "get_weather"
        assert tool_msg.role == "tool"
        assert tool_msg.tool_call_id == call_id
        assert tool_msg.text == result
    # The client's tool schema reached the model.
    assert WEATHER in calls[0].tools


async def test_openai_agent_tool_is_not_returned() -> None:
    helper, other = _agents(
        [
            CallTool("add", {"a": 2, "b": 3}, id="call_add_1"),
            Reply("The sum is 5."),
            CallTool("add", {"a": 4, "b": 5}, id="call_add_2"),
            Reply("The sum is 9."),
        ],
        tools=[add],
    )
    with trio.fail_after(TIMEOUT):
        async with open_test_server([helper, other]) as srv:

            def run(c: openai.OpenAI) -> tuple[Any, list[Any]]:
                messages = [{"role": "user", "content": "2+3?"}]
                done = c.chat.completions.create(model="helper", messages=messages, tools=[WEATHER])
                with c.chat.completions.create(
                    model="helper", messages=[{"role": "user", "content": "4+5?"}], stream=True
                ) as stream:
                    return done, list(stream)

            done, streamed = await _in_thread(run, f"{srv.url}/v1")
    assert done.choices[0].finish_reason == "stop"
    assert done.choices[0].message.tool_calls is None
    assert done.choices[0].message.content == "The sum is 5."
    assert all(not ch.choices[0].delta.tool_calls for ch in streamed)
    assert streamed[-1].choices[0].finish_reason == "stop"
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed) == "The sum is 9."
    # The tool ran on the server: the model's next call saw its result.
    calls = helper.model.calls  # type: ignore[attr-defined]
    assert [(m.role, m.text, m.tool_call_id) for m in calls[1].messages[-1:]] == [
        ("tool", "5", "call_add_1")
    ]
    assert [(m.role, m.text, m.tool_call_id) for m in calls[3].messages[-1:]] == [
        ("tool", "9", "call_add_2")
    ]


async def test_mixed_step_returns_only_client_calls() -> None:
    helper, other = _agents(
        [
            [
                CallTool("add", {"a": 1, "b": 1}, id="call_add"),
                CallTool("get_weather", {"city": "Rome"}, id="call_w"),
            ]
        ],
        tools=[add],
    )
    with trio.fail_after(TIMEOUT):
        async with open_test_server([helper, other]) as srv, httpx.AsyncClient() as http:
            r = await http.post(
                srv.agent_url("helper", "/chat/completions"),
                json={"messages": [{"role": "user", "content": "both"}], "tools": [WEATHER]},
            )
    assert r.status_code == 200
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert [c["id"] for c in choice["message"]["tool_calls"]] == ["call_w"]
    assert choice["message"]["content"] is None


async def test_openai_errors_raise_in_the_client() -> None:
    helper, other = _agents([Fail("model exploded"), Fail("boom", after_words="partial text")])
    with trio.fail_after(TIMEOUT):
        async with open_test_server([helper, other]) as srv:

            def run(c: openai.OpenAI) -> tuple[Exception, Exception, list[Any]]:
                messages = [{"role": "user", "content": "hi"}]
                try:
                    c.chat.completions.create(model="helper", messages=messages)
                except openai.APIStatusError as exc:
                    before = exc
                else:
                    raise AssertionError("no error")
                received: list[Any] = []
                try:
                    with c.chat.completions.create(
                        model="helper", messages=messages, stream=True
                    ) as s:
                        for ch in s:
                            received.append(ch)
                except openai.APIError as exc:
                    during = exc
                else:
                    raise AssertionError("no error")
                return before, during, received

            before, during, received = await _in_thread(run, f"{srv.url}/v1")
            missing = await _in_thread(
                lambda c: _catch(
                    lambda: c.chat.completions.create(
                        model="nobody", messages=[{"role": "user", "content": "x"}]
                    )
                ),
                f"{srv.url}/v1",
            )
    assert isinstance(before, openai.InternalServerError)
    assert before.status_code == 500
    assert "model exploded" in before.message
    assert "boom" in during.message
    assert "".join(ch.choices[0].delta.content or "" for ch in received) == "partial text"
    assert isinstance(missing, openai.NotFoundError)
    assert missing.code == "model_not_found"


# ---------------------------------------------------------------------------------------------
# Bad input: exact statuses and the OpenAI error shape
# ---------------------------------------------------------------------------------------------

GOOD = {"messages": [{"role": "user", "content": "ping"}]}

BAD_REQUESTS: list[tuple[str, bytes, int, str, str | None]] = [
    ("malformed-json", b'{"messages": [', 400, "invalid_json", None),
    ("not-an-object", b"[1, 2]", 400, "invalid_json", None),
    ("empty-messages", b'{"messages": []}', 400, "invalid_value", "messages"),
    ("missing-messages", b'{"temperature": 1}', 400, "missing_required_parameter", "messages"),
    ("messages-not-array", b'{"messages": "hi"}', 400, "invalid_value", "messages"),
    ("n-2", orjson.dumps({**GOOD, "n": 2}), 400, "unsupported_value", "n"),
    ("non-object-message", b'{"messages": ["hi"]}', 400, "invalid_value", "messages[0]"),
    ("bad-stream", orjson.dumps({**GOOD, "stream": "yes"}), 400, "invalid_value", "stream"),
    (
        "bad-temperature",
        orjson.dumps({**GOOD, "temperature": "hot"}),
        400,
        "invalid_value",
        "temperature",
    ),
    (
        "bad-role",
        b'{"messages": [{"role": "wizard", "content": "x"}]}',
        400,
        "invalid_value",
        "messages",
    ),
    (
        "tool-name-conflict",
        orjson.dumps({**GOOD, "tools": [{"type": "function", "function": {"name": "add"}}]}),
        400,
        "tool_name_conflict",
        "tools",
    ),
]


@pytest.mark.parametrize("route", ["agent", "agent-v1", "server"])
async def test_bad_requests(route: str) -> None:
    helper, other = _agents([], tools=[add])
    with trio.fail_after(TIMEOUT):
        async with open_test_server([helper, other]) as srv, httpx.AsyncClient() as http:
            url = {
                "agent": srv.agent_url("helper", "/chat/completions"),
                "agent-v1": srv.agent_url("helper", "/v1/chat/completions"),
                "server": f"{srv.url}/v1/chat/completions",
            }[route]
            sent = 0
            for name, body, status, code, param in BAD_REQUESTS:
                if route == "server":
                    if not body.startswith(b"{"):
                        continue  # no model to route by: see test_server_level_non_object_body
                    body = b'{"model": "helper", ' + body[1:]  # names the agent, stays as bad
                sent += 1
                r = await http.post(url, content=body, headers={"content-type": "application/json"})
                err = _assert_openai_error(r, status, code, param)
                assert err["type"] == "invalid_request_error", name
                # The server still answers a good request.
                good = {**GOOD, "model": "helper"} if route == "server" else GOOD
                r = await http.post(url, json=good)
                assert r.status_code == 200, name
                assert r.json()["choices"][0]["message"]["content"] == "You said: ping"
    # Only the good requests reached the model.
    assert len(helper.model.calls) == sent  # type: ignore[attr-defined]
    assert sent >= len(BAD_REQUESTS) - 1


async def test_server_level_routing_errors() -> None:
    helper, other = _agents([])
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server([helper, other]) as srv,
            httpx.AsyncClient(base_url=srv.url) as http,
        ):
            r = await http.post("/v1/chat/completions", json={**GOOD, "model": "nobody"})
            err = _assert_openai_error(r, 404, "model_not_found", "model")
            assert err["type"] == "invalid_request_error"
            assert "nobody" in err["message"]
            r = await http.post("/v1/chat/completions", json=GOOD)  # two agents: model required
            _assert_openai_error(r, 400, "missing_required_parameter", "model")
            r = await http.post("/v1/chat/completions", content=b"{nope")
            _assert_openai_error(r, 400, "invalid_json", None)
            # The other agent answers under its own name.
            r = await http.post("/v1/chat/completions", json={**GOOD, "model": "other"})
            assert r.status_code == 200
            assert r.json()["model"] == "other"
            assert r.json()["choices"][0]["message"]["content"] == "I am the other agent."
            # Unknown agent under /agents/x/…: the generic error shape.
            for path in ("/agents/nobody/chat/completions", "/agents/nobody/v1/chat/completions"):
                r = await http.post(path, json=GOOD)
                assert r.status_code == 404
                body = r.json()
                assert set(body) == {"error"}
                assert body["error"]["code"] == "agent_not_found"
                assert isinstance(body["error"]["message"], str)
                assert body["error"]["details"] == {}
            r = await http.post("/v1/chat/completions", json={**GOOD, "model": "helper"})
            assert r.json()["choices"][0]["message"]["content"] == "You said: ping"


async def test_server_level_non_object_body() -> None:
    helper, other = _agents([])
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server([helper, other]) as srv,
            httpx.AsyncClient(base_url=srv.url) as http,
        ):
            for body in (b"[1, 2]", b'"helper"', b"null"):
                r = await http.post("/v1/chat/completions", content=body)
                _assert_openai_error(r, 400, "invalid_json", None)


async def test_single_agent_mode_takes_any_model() -> None:
    agent = Agent("solo", model=BuiltinModel([Reply("solo here")]))
    with trio.fail_after(TIMEOUT):
        async with open_test_server(agent) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.post("/v1/chat/completions", json={**GOOD, "model": "gpt-4o"})
            assert r.status_code == 200
            assert r.json()["model"] == "solo"
            assert r.json()["choices"][0]["message"]["content"] == "solo here"


async def test_body_too_large() -> None:
    agent = Agent("small")
    big = {"messages": [{"role": "user", "content": "x" * 2000}]}
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(agent, max_body_size=1000) as srv,
            httpx.AsyncClient(base_url=srv.url) as http,
        ):
            for path in ("/agents/small/chat/completions", "/v1/chat/completions"):
                r = await http.post(path, json=big)
                err = _assert_openai_error(r, 413, "request_too_large", None)
                assert err["type"] == "invalid_request_error"
                r = await http.post(path, json=GOOD)
                assert r.status_code == 200
                assert r.json()["choices"][0]["message"]["content"] == "You said: ping"


async def test_body_too_large_chunked() -> None:
    """Without a Content-Length (chunked upload) the limit holds as well, cleanly."""
    agent = Agent("small")

    async def gen() -> Any:
        for _ in range(4):
            yield b" " * 400
        yield orjson.dumps(GOOD)

    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(agent, max_body_size=1000) as srv,
            httpx.AsyncClient(base_url=srv.url) as http,
        ):
            for path in ("/agents/small/chat/completions", "/v1/chat/completions"):
                r = await http.post(path, content=gen())
                _assert_openai_error(r, 413, "request_too_large", None)
                r = await http.post(path, json=GOOD)
                assert r.status_code == 200


# ---------------------------------------------------------------------------------------------
# Model failures
# ---------------------------------------------------------------------------------------------


async def test_failure_before_output_is_a_json_error() -> None:
    agent = Agent("f", model=BuiltinModel([Fail("model down"), Fail("model down again")]))
    with trio.fail_after(TIMEOUT):
        async with open_test_server(agent) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            for stream in (False, True):
                r = await http.post("/agents/f/chat/completions", json={**GOOD, "stream": stream})
                err = _assert_openai_error(r, 500, "agent_error", None)
                assert err["type"] == "server_error"
                assert err["message"] == "model down" + (" again" if stream else "")
            r = await http.post("/agents/f/chat/completions", json=GOOD)
            assert r.status_code == 200
            assert srv.server.runtime.stats.responses == 3


async def test_rate_limit_failure_maps_to_429() -> None:
    agent = Agent("f", model=BuiltinModel([Fail("slow down", code="rate_limit_exceeded")]))
    with trio.fail_after(TIMEOUT):
        async with open_test_server(agent) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.post("/agents/f/chat/completions", json=GOOD)
    err = _assert_openai_error(r, 429, "rate_limit_exceeded", None)
    assert err["type"] == "rate_limit_error"


async def test_failure_mid_stream_is_an_error_event() -> None:
    agent = Agent("f", model=BuiltinModel([Fail("boom", after_words="partial text")]))
    with trio.fail_after(TIMEOUT):
        async with open_test_server(agent) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.post("/agents/f/chat/completions", json={**GOOD, "stream": True})
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
            chunks = _chunks(r.text)
            r2 = await http.post("/agents/f/chat/completions", json=GOOD)
            assert r2.status_code == 200
    *content, error = chunks
    assert content[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"] for c in content[1:]] == [
        {"content": "partial"},
        {"content": " text"},
    ]
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    assert error == {
        "error": {"message": "boom", "type": "server_error", "param": None, "code": "agent_error"}
    }
    assert "response_signature" not in r.text


# ---------------------------------------------------------------------------------------------
# Cancellation: a client that goes away cancels the turn and the upstream stream
# ---------------------------------------------------------------------------------------------


async def test_client_disconnect_cancels_turn_and_upstream() -> None:
    never = trio.Event()
    reply = SSEReply(
        [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hello"}), never],
        done=False,
    )
    with trio.fail_after(TIMEOUT):
        async with open_upstream([reply]) as upstream:
            agent = Agent(
                "proxy", model=OpenAIModel("fake-model", base_url=upstream.url, api_key="k")
            )
            finalized: list[str] = []
            agent.add_hook("finalize", lambda ctx: finalized.append(ctx.output_text))
            async with open_test_server(agent) as srv, httpx.AsyncClient() as http:
                stats = srv.server.runtime.stats
                before = stats.responses_cancelled
                first: dict[str, Any] | None = None
                async with http.stream(
                    "POST",
                    srv.agent_url("proxy", "/v1/chat/completions"),
                    json={**GOOD, "stream": True},
                ) as r:
                    assert r.status_code == 200
                    # Stop reading at the first content chunk. Cancelling the blocked read (not
                    # ``break``) unwinds httpx's nested body generators instead of leaving them
                    # suspended for the garbage collector.
                    with trio.CancelScope() as reading:
                        async for line in r.aiter_lines():
                            if line.startswith("data: "):
                                data = orjson.loads(line[6:])
                                if data["choices"][0]["delta"].get("content"):
                                    assert first is None  # nothing else arrives: upstream hangs
                                    first = data
                                    reading.cancel()
                # Leaving the block closed the connection mid-stream.
                await upstream.disconnected.wait()
                assert stats.responses_cancelled == before + 1
                assert upstream.completed == 0
                # The server is fine afterwards.
                assert (await http.get(f"{srv.url}/health")).status_code == 200
    assert first is not None
    assert first["choices"][0]["delta"] == {"content": "Hello"}
    assert finalized == ["Hello"]  # the cancelled turn was finalized with what it had said
    [sent] = upstream.requests
    assert sent["stream"] is True
    assert sent["model"] == "fake-model"


async def _disconnect_during_tool(stream: bool) -> tuple[int, list[str], bool]:
    """Start a turn whose agent tool awaits forever, go away, stop the server.

    Returns (responses_cancelled, finalized response ids, whether the tool was cancelled).
    """
    started = trio.Event()
    tool_cancelled = trio.Event()
    finalized: list[str] = []

    async def wait_forever() -> str:
        """Never returns."""
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            tool_cancelled.set()
        return "unreachable"  # pragma: no cover

    agent = Agent(
        "slow",
        model=BuiltinModel([CallTool("wait_forever", {}), Reply("still here")]),
        tools=[wait_forever],
    )
    agent.add_hook("finalize", lambda ctx: finalized.append(ctx.response_id))
    with trio.fail_after(TIMEOUT):
        async with open_test_server(agent) as srv, httpx.AsyncClient(base_url=srv.url) as http:

            async def request() -> None:
                body = {**GOOD, "stream": stream}
                async with http.stream("POST", "/agents/slow/chat/completions", json=body) as r:
                    await r.aread()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(request)
                await started.wait()
                nursery.cancel_scope.cancel()  # the client goes away: its connection closes
            await tool_cancelled.wait()
            cancelled = srv.server.runtime.stats.responses_cancelled
            # The server is fine afterwards.
            r = await http.post("/agents/slow/chat/completions", json=GOOD)
            assert r.json()["choices"][0]["message"]["content"] == "still here"
        # Leaving open_test_server waited for every request to finish its cleanup.
    return cancelled, finalized, tool_cancelled.is_set()


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_cancels_agent_tool(stream: bool) -> None:
    """A disconnect cancels the turn's tool and still runs ``finalize``, JSON and SSE alike."""
    cancelled, finalized, tool_cancelled = await _disconnect_during_tool(stream)
    assert tool_cancelled
    assert cancelled == 1
    # ``finalize`` runs whatever the outcome: the cancelled turn and the good one after it.
    assert len(finalized) == 2
    assert len(set(finalized)) == 2


# ---------------------------------------------------------------------------------------------
# Reasoning and agent events
# ---------------------------------------------------------------------------------------------


async def test_reasoning_content() -> None:
    agent = Agent(
        "thinker",
        model=BuiltinModel(
            [[Think("Let me think. "), Think("Done."), Reply("42")], [Think("Hmm."), Reply("43")]]
        ),
    )
    with trio.fail_after(TIMEOUT):
        async with open_test_server(agent) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.post("/agents/thinker/chat/completions", json={**GOOD, "stream": True})
            chunks = _chunks(r.text)
            r2 = await http.post("/agents/thinker/chat/completions", json=GOOD)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"reasoning_content": "Let me think. "},
        {"reasoning_content": "Done."},
        {"content": "42"},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    message = r2.json()["choices"][0]["message"]
    assert message["content"] == "43"
    assert message["reasoning_content"] == "Hmm."


async def test_include_agent_events() -> None:
    script = [CallTool("add", {"a": 20, "b": 22}, id="call_add"), Reply("It is 42.")]
    agent = Agent("calc", model=BuiltinModel(script * 2), tools=[add])
    with trio.fail_after(TIMEOUT):
        async with open_test_server(agent) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            body = {
                **GOOD,
                "stream": True,
                "stream_options": {"include_agent_events": True, "include_usage": True},
            }
            r = await http.post("/agents/calc/chat/completions", json=body)
            plain = await http.post("/agents/calc/chat/completions", json={**GOOD, "stream": True})
    payloads = _chunks(r.text)
    agent_events = [p for p in payloads if "type" in p]
    assert agent_events == [
        {"type": "tool_call", "call_id": "call_add", "name": "add", "arguments": '{"a":20,"b":22}'},
        {"type": "tool_result", "call_id": "call_add", "status": "completed", "result": "42"},
    ]
    kinds = ["agent" if "type" in p else "usage" if not p["choices"] else "chunk" for p in payloads]
    # role chunk, tool activity, then the answer, finish, usage.
    assert kinds[:3] == ["chunk", "agent", "agent"]
    assert kinds[-1] == "usage"
    text = "".join(
        p["choices"][0]["delta"].get("content", "")
        for p in payloads
        if kinds[payloads.index(p)] == "chunk"
    )
    assert text == "It is 42."
    assert all(not p["choices"][0]["delta"].get("tool_calls") for p in payloads if p.get("choices"))
    # Without the option: no agent lines at all.
    plain_payloads = _chunks(plain.text)
    assert all("type" not in p for p in plain_payloads)
    assert (
        "".join(p["choices"][0]["delta"].get("content", "") for p in plain_payloads) == "It is 42."
    )


async def test_streaming_wire_format() -> None:
    """Exact chunk keys and headers, as strict OpenAPI-schema validators expect."""
    agent = Agent("w", model=BuiltinModel([Reply("a b")]))
    with trio.fail_after(TIMEOUT):
        async with open_test_server(agent) as srv, httpx.AsyncClient(base_url=srv.url) as http:
            r = await http.post(
                "/agents/w/chat/completions",
                json={**GOOD, "stream": True, "stream_options": {"include_usage": True}},
            )
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["x-accel-buffering"] == "no"
    chunks = _chunks(r.text)
    *choice_chunks, usage = chunks
    for c in choice_chunks:
        assert set(c) == {"id", "object", "created", "model", "choices"}
        assert c["object"] == "chat.completion.chunk"
        assert c["model"] == "w"
        assert isinstance(c["created"], int)
        [choice] = c["choices"]
        assert set(choice) == {"index", "delta", "logprobs", "finish_reason"}
        assert choice["index"] == 0
        assert choice["logprobs"] is None
    assert [c["choices"][0]["finish_reason"] for c in choice_chunks] == [None, None, None, "stop"]
    assert set(usage) == {"id", "object", "created", "model", "choices", "usage"}
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 2
    assert len({c["id"] for c in chunks}) == 1


async def test_keepalive_comments_while_idle() -> None:
    """An idle stream gets ``: keepalive`` comments, which clients ignore."""
    resume = trio.Event()

    async def hold_second_word(ctx: Any, text: str) -> None:
        if text == " tock":
            await resume.wait()  # idle until the client has seen a keepalive

    agent = Agent("slowpoke", model=BuiltinModel([Reply("tick tock")] * 2))
    agent.add_hook("on_chunk", hold_second_word)
    lines: list[str] = []
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(agent, sse_keepalive=0.05) as srv,
            httpx.AsyncClient(base_url=srv.url) as http,
        ):
            body = {**GOOD, "stream": True}
            async with http.stream("POST", "/agents/slowpoke/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    lines.append(line)
                    if line == ": keepalive":
                        resume.set()

            def run(c: openai.OpenAI) -> str:
                with c.chat.completions.create(
                    model="x", messages=[{"role": "user", "content": "hi"}], stream=True
                ) as stream:
                    return "".join(ch.choices[0].delta.content or "" for ch in stream)

            via_openai = await _in_thread(run, srv.agent_url("slowpoke", "/v1"))
    tick = next(i for i, line in enumerate(lines) if '"content":"tick"' in line)
    tock = next(i for i, line in enumerate(lines) if '"content":" tock"' in line)
    assert ": keepalive" in lines[tick:tock]
    assert (
        "".join(c["choices"][0]["delta"].get("content", "") for c in _chunks("\n".join(lines)))
        == "tick tock"
    )
    assert via_openai == "tick tock"  # the openai client skips comments


async def test_preflight_timeout_starts_the_stream() -> None:
    """No agent event within ``preflight_timeout``: the 200 goes out, later errors are in-band."""
    resume = trio.Event()
    agent = Agent("late", model=BuiltinModel([Fail("too late")]))

    async def dawdle(ctx: Any) -> None:
        await resume.wait()

    agent.add_hook("on_message", dawdle)
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(agent, preflight_timeout=0.05) as srv,
            httpx.AsyncClient(base_url=srv.url) as http,
        ):
            body = {**GOOD, "stream": True}
            async with http.stream("POST", "/agents/late/chat/completions", json=body) as r:
                # The status line arrived while the agent has produced nothing yet.
                assert r.status_code == 200
                assert not resume.is_set()
                resume.set()
                text = (await r.aread()).decode()
    *chunks, error = _chunks(text)
    assert [c["choices"][0]["delta"] for c in chunks] == [{"role": "assistant", "content": ""}]
    assert error == {
        "error": {
            "message": "too late",
            "type": "server_error",
            "param": None,
            "code": "agent_error",
        }
    }


# ---------------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------------


async def test_routes_trailing_slash_dotted_names_and_models() -> None:
    dotted = Agent(
        "alice.my-bot.helper", model=BuiltinModel([Reply("dotted one"), Reply("dotted two")])
    )
    plain = Agent("x", model=BuiltinModel([Reply("slash ok")]))
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server([dotted, plain]) as srv,
            httpx.AsyncClient(base_url=srv.url) as http,
        ):
            r = await http.post("/agents/x/chat/completions/", json=GOOD)
            assert r.status_code == 200
            assert r.json()["choices"][0]["message"]["content"] == "slash ok"

            r = await http.post("/agents/alice.my-bot.helper/v1/chat/completions", json=GOOD)
            assert r.status_code == 200
            assert r.json()["model"] == "alice.my-bot.helper"
            assert r.json()["choices"][0]["message"]["content"] == "dotted one"
            r = await http.post(
                "/v1/chat/completions/", json={**GOOD, "model": "alice.my-bot.helper"}
            )
            assert r.json()["choices"][0]["message"]["content"] == "dotted two"

            r = await http.get("/v1/models")
            assert r.status_code == 200
            models = r.json()
            assert models["object"] == "list"
            assert [m["id"] for m in models["data"]] == ["alice.my-bot.helper", "x"]
            for m in models["data"]:
                assert set(m) == {"id", "object", "created", "owned_by"}
                assert m["object"] == "model"
                assert m["owned_by"] == "trioagents"
                assert isinstance(m["created"], int)
            assert (await http.get("/v1/models/")).json() == models

            for path in ("/models", "/v1/models", "/v1/models/"):
                r = await http.get(f"/agents/alice.my-bot.helper{path}")
                assert r.status_code == 200
                assert [m["id"] for m in r.json()["data"]] == ["alice.my-bot.helper"]

            r = await http.get("/agents/x/capabilities")
            assert r.json()["id"] == "x"

            listed = await _in_thread(lambda c: [m.id for m in c.models.list()], f"{srv.url}/v1")
            per_agent = await _in_thread(
                lambda c: [m.id for m in c.models.list()], srv.agent_url("x", "/v1")
            )
    assert listed == ["alice.my-bot.helper", "x"]
    assert per_agent == ["x"]
