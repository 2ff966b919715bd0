"""ACP sans-I/O (``trioagents.protocols.acp``): method table, content blocks, renderers, framing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, strategies as st

from trioagents import uamp
from trioagents.protocols import acp, jsonrpc as rpc


def req(method: str, params: Any = None, id: Any = 1) -> rpc.Request:
    return rpc.Request(method=method, params=params, id=id, is_notification=id is None)


def test_classify_acp_seed_client_only_unknown() -> None:
    assert acp.classify(req("initialize", {"protocolVersion": 1})) == "acp"
    assert acp.classify(req("initialize", {})) == "seed"
    assert acp.classify(req("initialize")) == "seed"
    for m in ("session/new", "session/prompt", "session/cancel", "authenticate"):
        assert acp.classify(req(m)) == "acp"
    for m in ("prompt/submit", "chat/submit", "tools/list", "tools/call"):
        assert acp.classify(req(m)) == "seed"
    for m in ("fs/read_text_file", "terminal/create"):
        assert acp.classify(req(m)) == "client_only"
    assert acp.classify(req("session/set_mode")) == "unknown"
    assert acp.unknown_method(req("fs/write_text_file", id=7)).to_message()["error"] == {
        "code": -32601,
        "message": "Method not found: fs/write_text_file is served by the client, not by the agent",
    }


@pytest.mark.parametrize("version", [1, "1", " 1 "])
def test_initialize_result_tolerates_string_version(version: Any) -> None:
    res = acp.initialize_result(
        req("initialize", {"protocolVersion": version}), name="bot", version="9"
    )
    assert res == {
        "protocolVersion": 1,
        "agentCapabilities": {
            "loadSession": False,
            "promptCapabilities": {"image": True, "audio": True, "embeddedContext": True},
        },
        "authMethods": [],
        "agentInfo": {"name": "bot", "version": "9"},
    }


@pytest.mark.parametrize("version", [True, "one", None, 1.5, []])
def test_initialize_rejects_bad_version(version: Any) -> None:
    with pytest.raises(rpc.JsonRpcError) as info:
        acp.initialize_result(
            req("initialize", {"protocolVersion": version}, id=3), name="b", version="1"
        )
    assert (info.value.code, info.value.id) == (-32602, 3)


def test_seed_initialize_result() -> None:
    assert acp.seed_initialize_result(name="bot", version="1") == {
        "protocolVersion": "1.0",
        "serverInfo": {"name": "bot", "version": "1"},
        "capabilities": {"streaming": True, "tools": True},
    }


def test_new_session_params() -> None:
    p = acp.parse_new_session(req("session/new", {"cwd": "/w", "mcpServers": [{"x": 1}]}))
    assert (p.cwd, p.mcp_servers) == ("/w", [{"x": 1}])
    assert acp.parse_new_session(req("session/new", {"cwd": "/w"})).mcp_servers == []
    for bad in ({}, {"cwd": 3}, {"cwd": "/w", "mcpServers": {}}, ["/w"]):
        with pytest.raises(rpc.JsonRpcError) as info:
            acp.parse_new_session(req("session/new", bad))
        assert info.value.code == -32602


def test_prompt_text_only_becomes_a_string() -> None:
    p = acp.parse_prompt(
        req(
            "session/prompt",
            {
                "sessionId": "s",
                "prompt": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                "payment_token": "tok",
            },
        )
    )
    assert (p.session_id, p.content, p.payment_token) == ("s", "ab", "tok")


def test_content_blocks_to_uamp() -> None:
    items = acp.content_from_blocks(
        [
            {"type": "text", "text": "look"},
            {"type": "image", "mimeType": "image/png", "data": "iVBOR"},
            {"type": "image", "uri": "https://x/cat.jpg"},
            {"type": "audio", "mimeType": "audio/wav", "data": "UklGR"},
            {"type": "resource", "resource": {"uri": "file:///a.py", "text": "print(1)"}},
            {
                "type": "resource",
                "resource": {
                    "uri": "file:///d/b.pdf",
                    "blob": "JVBER",
                    "mimeType": "application/pdf",
                },
            },
            {"type": "resource_link", "uri": "file:///c.md", "name": "c.md"},
            {"type": "resourceLink", "uri": "file:///d.md"},
        ]
    )
    assert items == [
        uamp.TextContent("look"),
        uamp.ImageContent(image="iVBOR", format="png"),
        uamp.ImageContent(image={"url": "https://x/cat.jpg"}),
        uamp.AudioContent(audio="UklGR", format="wav"),
        uamp.TextContent('\n<resource uri="file:///a.py">\nprint(1)\n</resource>'),
        uamp.FileContent(file="JVBER", filename="b.pdf", mime_type="application/pdf"),
        uamp.TextContent("\n[c.md](file:///c.md)"),
        uamp.TextContent("\n[file:///d.md](file:///d.md)"),
    ]


@pytest.mark.parametrize(
    "prompt",
    [
        None,
        [],
        "hello",
        [{"type": "video", "data": "x"}],
        [{"type": "text"}],
        [{"type": "image", "mimeType": "image/png"}],
        [{"type": "resource", "resource": {"uri": "x"}}],
        [{"type": "resource_link", "name": "n"}],
        ["text"],
    ],
)
def test_bad_prompts_are_invalid_params(prompt: Any) -> None:
    with pytest.raises(rpc.JsonRpcError) as info:
        acp.parse_prompt(req("session/prompt", {"sessionId": "s", "prompt": prompt}, id="r"))
    assert (info.value.code, info.value.id) == (-32602, "r")


def test_prompt_needs_session_id() -> None:
    with pytest.raises(rpc.JsonRpcError) as info:
        acp.parse_prompt(req("session/prompt", {"prompt": [{"type": "text", "text": "x"}]}))
    assert info.value.code == -32602


def _delta(d: Any) -> uamp.ResponseDelta:
    return uamp.ResponseDelta(response_id="r", delta=d)


def test_update_renderer_maps_every_kind() -> None:
    r = acp.UpdateRenderer("s1")
    call = uamp.ToolCallInfo(id="c1", name="add", arguments='{"a":1}')

    def upd(ev: Any) -> list[Any]:
        out = r.render(ev)
        assert all(
            m["method"] == "session/update" and m["params"]["sessionId"] == "s1" for m in out
        )
        return [m["params"]["update"] for m in out]

    assert upd(uamp.ResponseCreated(response_id="r")) == []
    assert upd(_delta(uamp.TextDelta("hi"))) == [
        {"sessionUpdate": "agent_message_chunk", "content": {"type": "text", "text": "hi"}}
    ]
    assert upd(_delta(uamp.TextDelta(""))) == []
    assert upd(uamp.Thinking(response_id="r", content="hmm")) == [
        {"sessionUpdate": "agent_thought_chunk", "content": {"type": "text", "text": "hmm"}}
    ]
    # Progress for a call the client was never told about is dropped.
    unknown = uamp.ToolProgressInfo(call_id="zz", text="1")
    assert upd(_delta(uamp.ToolProgressDelta(unknown))) == []
    assert upd(_delta(uamp.ToolCallDelta(call))) == [
        {
            "sessionUpdate": "tool_call",
            "toolCallId": "c1",
            "title": "add",
            "kind": "other",
            "status": "in_progress",
            "rawInput": {"a": 1},
        }
    ]
    progress = uamp.ToolProgressInfo(call_id="c1", text="half")
    assert upd(_delta(uamp.ToolProgressDelta(progress)))[0]["status"] == "in_progress"
    ok = uamp.ToolResultInfo(call_id="c1", result="2", status="completed")
    assert upd(_delta(uamp.ToolResultDelta(ok))) == [
        {
            "sessionUpdate": "tool_call_update",
            "toolCallId": "c1",
            "status": "completed",
            "content": [{"type": "content", "content": {"type": "text", "text": "2"}}],
        }
    ]
    bad = uamp.ToolResultInfo(call_id="c1", result="error: x", is_error=True, status="error")
    assert upd(_delta(uamp.ToolResultDelta(bad)))[0]["status"] == "failed"
    assert upd(uamp.ResponseCancelled(response_id="r")) == []


def _done(usage: uamp.UsageInfo | None = None) -> uamp.ResponseDone:
    return uamp.ResponseDone(response_id="r", response=uamp.ResponseInfo(id="r", usage=usage))


def test_prompt_reply_stop_reasons_and_usage() -> None:
    usage = uamp.UsageInfo(input_tokens=3, output_tokens=4, total_tokens=7, cached_tokens=1)
    assert acp.prompt_reply(1, _done(usage)) == rpc.result(
        1,
        {
            "stopReason": "end_turn",
            "usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 7, "cachedReadTokens": 1},
        },
    )
    assert acp.prompt_reply(1, _done()) == rpc.result(1, {"stopReason": "end_turn"})
    assert acp.prompt_reply(2, _done(), finish_reason="length")["result"]["stopReason"] == (
        "max_tokens"
    )
    assert acp.prompt_reply(2, _done(), finish_reason="content_filter")["result"] == {
        "stopReason": "refusal"
    }
    assert acp.prompt_reply(3, None) == rpc.result(3, {"stopReason": "cancelled"})
    # A cancelled prompt resolves "cancelled" even if it finished or failed meanwhile.
    err = uamp.ResponseError(response_id="r", error=uamp.ErrorInfo(code="agent_error", message="x"))
    assert acp.prompt_reply(4, err, cancelled=True) == rpc.result(4, {"stopReason": "cancelled"})
    assert acp.prompt_reply(4, _done(usage), cancelled=True) == rpc.result(
        4, {"stopReason": "cancelled"}
    )


def test_failures_map_to_json_rpc_errors() -> None:
    err = uamp.ResponseError(
        response_id="r", error=uamp.ErrorInfo(code="agent_error", message="boom")
    )
    assert acp.prompt_reply(5, err) == rpc.error(5, -32603, "boom", {"code": "agent_error"})
    pay = uamp.ErrorInfo(code="payment_failed", message="no funds", details={"need": "1"})
    assert acp.error_reply(6, pay) == rpc.error(
        6, -32402, "no funds", {"code": "payment_failed", "details": {"need": "1"}}
    )


def test_seed_renderer_and_params() -> None:
    r = acp.SeedRenderer("resp_1")
    assert r.started() == rpc.notification("prompt/started", {"requestId": "resp_1"})
    assert r.render(_delta(uamp.TextDelta("Hi"))) == [
        rpc.notification(
            "prompt/progress", {"content": "Hi", "role": "assistant", "requestId": "resp_1"}
        )
    ]
    assert r.render(uamp.Thinking(response_id="r", content="x")) == []
    assert r.final(9, _done(), "Hi there") == rpc.result(
        9, {"status": "complete", "content": "Hi there"}
    )
    msgs, token = acp.parse_seed_submit(
        req("prompt/submit", {"messages": [{"role": "user", "content": "x"}], "payment_token": "t"})
    )
    assert (msgs, token) == ([{"role": "user", "content": "x"}], "t")
    assert acp.parse_seed_submit(req("chat/submit", {"prompt": "hey"}))[0] == [
        {"role": "user", "content": "hey"}
    ]
    with pytest.raises(rpc.JsonRpcError):
        acp.parse_seed_submit(req("prompt/submit", {"messages": []}))


def test_tool_call_params_and_results() -> None:
    assert acp.parse_tool_call(req("tools/call", {"name": "add", "arguments": {"a": 1}})) == (
        "add",
        '{"a":1}',
    )
    assert acp.parse_tool_call(req("tools/call", {"name": "t"})) == ("t", "{}")
    for bad in ({}, {"name": ""}, {"name": "t", "arguments": [1]}):
        with pytest.raises(rpc.JsonRpcError) as info:
            acp.parse_tool_call(req("tools/call", bad))
        assert info.value.code == -32602
    assert acp.tool_call_result("5", is_error=False) == {
        "result": "5",
        "content": [{"type": "text", "text": "5"}],
        "isError": False,
    }
    schema = {"type": "object"}
    assert acp.tools_list_result([("add", "Adds.", schema)]) == {
        "tools": [
            {"name": "add", "description": "Adds.", "inputSchema": schema, "parameters": schema}
        ]
    }


def _chunk(sid: str, text: str) -> dict[str, Any]:
    return acp.UpdateRenderer(sid).render(_delta(uamp.TextDelta(text)))[0]


def test_merge_chunks_keeps_order_and_sessions() -> None:
    other = rpc.result(1, {})
    msgs = [_chunk("a", "x"), _chunk("a", "y"), _chunk("b", "z"), other, _chunk("a", "w")]
    assert acp.merge_chunks(msgs) == [
        _chunk("a", "xy"),
        _chunk("b", "z"),
        other,
        _chunk("a", "w"),
    ]


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.text(min_size=1, max_size=5))))
def test_merge_chunks_preserves_text_per_session(parts: list[tuple[str, str]]) -> None:
    merged = acp.merge_chunks([_chunk(s, t) for s, t in parts])
    for sid in ("a", "b"):
        got = "".join(
            m["params"]["update"]["content"]["text"]
            for m in merged
            if m["params"]["sessionId"] == sid
        )
        assert got == "".join(t for s, t in parts if s == sid)
    assert len(merged) <= len(parts)


def test_line_decoder_splits_and_bounds() -> None:
    d = acp.LineDecoder(max_size=10)
    assert d.feed(b'{"a":1}\n\n{"b"') == [b'{"a":1}']
    assert d.feed(b":2}\r\n") == [b'{"b":2}']
    assert d.feed(b"0123456789ABC") == []
    assert d.feed(b"DEF\nok\n") == [acp.LineTooLong(16), b"ok"]
    assert d.feed(b"0123456789AB\n") == [acp.LineTooLong(12)]
    assert d.feed(b"tail") == []
    assert d.finish() == [b"tail"]


@given(
    st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=8),
    st.data(),
)
def test_line_decoder_any_chunking(lines: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(line + b"\n" for line in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    d = acp.LineDecoder(max_size=20)
    out: list[Any] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out.extend(d.feed(stream[prev:cut]))
        prev = cut
    out.extend(d.finish())
    expected = [
        acp.LineTooLong(len(line)) if len(line) > 20 else line.strip()
        for line in lines
        if len(line) > 20 or line.strip()
    ]
    assert out == expected


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=10,
    )
)
def test_parsers_never_crash_on_junk(params: Any) -> None:
    for method, parse in (
        ("session/prompt", acp.parse_prompt),
        ("session/new", acp.parse_new_session),
        ("tools/call", acp.parse_tool_call),
        ("prompt/submit", acp.parse_seed_submit),
    ):
        try:
            parse(req(method, params))  # type: ignore[operator]
        except rpc.JsonRpcError as exc:
            assert exc.code == -32602
