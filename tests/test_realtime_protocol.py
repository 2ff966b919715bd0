"""The Realtime codec, sans I/O (PROTOCOLS.md §7): GA and beta event sequences and shapes.

Every rendered server event is also validated strictly against the openai SDK's own pydantic
unions, so a shape the SDK would not accept fails here first.
"""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
import pytest
from hypothesis import given, strategies as st
from openai.types.beta.realtime.realtime_server_event import (
    RealtimeServerEvent as BetaServerEvent,
)
from openai.types.realtime.realtime_server_event import RealtimeServerEvent as GAServerEvent

from trioagents import uamp
from trioagents.protocols.realtime import (
    CLIENT_EVENT_TYPES,
    Conversation,
    Flavour,
    RealtimeCodec,
    RealtimeError,
    SessionConfig,
    choose_flavour,
    decode_audio_chunk,
    decode_client_event,
    merge_realtime_deltas,
    normalize_item,
)

ADAPTERS: dict[Flavour, Any] = {
    Flavour.GA: pydantic.TypeAdapter(GAServerEvent),
    Flavour.BETA: pydantic.TypeAdapter(BetaServerEvent),
}
RID = "resp_1"


def codec(flavour: Flavour) -> RealtimeCodec:
    ids = uamp.SequentialIds()
    return RealtimeCodec(flavour, ids.new, "sess_x", "my.agent")


def validate(flavour: Flavour, events: list[dict[str, Any]]) -> None:
    for ev in events:
        check = ev
        if flavour is Flavour.BETA and ev["type"] in ("session.created", "session.updated"):
            # beta's Session.model is a Literal of OpenAI model names (the SDK does not
            # validate it when parsing); everything else must validate strictly.
            check = {**ev, "session": {k: v for k, v in ev["session"].items() if k != "model"}}
        ADAPTERS[flavour].validate_python(check)
        assert ev["event_id"].startswith("evt_")


def render(flavour: Flavour, events: list[Any]) -> tuple[list[dict[str, Any]], Any]:
    r = codec(flavour).renderer(RID)
    out: list[dict[str, Any]] = []
    for ev in events:
        out += r.feed(ev)
    validate(flavour, out)
    return out, r


def created() -> uamp.ResponseCreated:
    return uamp.ResponseCreated(response_id=RID)


def text(t: str) -> uamp.ResponseDelta:
    return uamp.ResponseDelta(response_id=RID, delta=uamp.TextDelta(t))


def done(usage: uamp.UsageInfo | None = None) -> uamp.ResponseDone:
    return uamp.ResponseDone(
        response_id=RID, response=uamp.ResponseInfo(id=RID, output=[], usage=usage)
    )


CALL = uamp.ToolCallInfo(id="call_7", name="get_weather", arguments='{"city":"Paris"}')


def client_call() -> list[Any]:
    return [
        uamp.ResponseDelta(response_id=RID, delta=uamp.ToolCallDelta(CALL)),
        uamp.ToolCall(response_id=RID, call_id=CALL.id, name=CALL.name, arguments=CALL.arguments),
    ]


TEXT_GA = [
    "response.created",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.done",
]


def test_text_response_ga_exact_sequence_and_fields() -> None:
    usage = uamp.UsageInfo(input_tokens=3, output_tokens=2, total_tokens=5)
    out, r = render(Flavour.GA, [created(), text("Hel"), text("lo"), done(usage)])
    assert [e["type"] for e in out] == TEXT_GA
    assert out[0]["response"] == {
        "id": RID,
        "object": "realtime.response",
        "status": "in_progress",
        "status_details": None,
        "output": [],
        "conversation_id": "sess_x",
        "usage": None,
        "output_modalities": ["text"],
    }
    item_id = out[1]["item"]["id"]
    assert out[1]["item"] == {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    assert out[2]["part"] == {"type": "text", "text": ""}
    loc = {"response_id": RID, "item_id": item_id, "output_index": 0, "content_index": 0}
    for ev in out[2:7]:
        assert {k: ev[k] for k in loc} == loc
    assert [out[3]["delta"], out[4]["delta"]] == ["Hel", "lo"]
    assert out[5]["text"] == "Hello"
    assert out[6]["part"] == {"type": "text", "text": "Hello"}
    final_item = {**out[1]["item"], "status": "completed"}
    final_item["content"] = [{"type": "output_text", "text": "Hello"}]
    assert out[7]["item"] == final_item
    resp = out[8]["response"]
    assert (resp["status"], resp["status_details"], resp["output"]) == (
        "completed",
        None,
        [final_item],
    )
    assert resp["usage"]["total_tokens"] == 5
    assert (resp["usage"]["input_tokens"], resp["usage"]["output_tokens"]) == (3, 2)
    assert r.output == [{k: v for k, v in final_item.items() if k != "object"}]
    assert len({e["event_id"] for e in out}) == len(out)


def test_text_response_beta_names_and_item_shape() -> None:
    out, _ = render(Flavour.BETA, [created(), text("Hel"), text("lo"), done()])
    assert [e["type"] for e in out] == [t.replace("output_text", "text") for t in TEXT_GA]
    assert out[7]["item"]["content"] == [{"type": "text", "text": "Hello"}]
    assert out[8]["response"]["modalities"] == ["text"]
    assert "output_modalities" not in out[8]["response"]


@pytest.mark.parametrize("flavour", list(Flavour))
def test_client_function_call_becomes_a_function_call_item(flavour: Flavour) -> None:
    out, r = render(flavour, [created(), *client_call(), done()])
    assert [e["type"] for e in out] == [
        "response.created",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.done",
    ]
    added, delta, args_done, item_done = out[1:5]
    assert added["item"]["type"] == "function_call"
    assert (added["item"]["status"], added["item"]["arguments"]) == ("in_progress", "")
    assert (delta["call_id"], delta["delta"]) == ("call_7", '{"city":"Paris"}')
    assert (args_done["name"], args_done["arguments"]) == ("get_weather", '{"city":"Paris"}')
    assert item_done["item"] == {
        "id": added["item"]["id"],
        "object": "realtime.item",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_7",
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert out[-1]["response"]["output"] == [item_done["item"]]
    assert [i["type"] for i in r.output] == ["function_call"]


def test_text_then_function_call_closes_the_message_first() -> None:
    out, r = render(Flavour.GA, [created(), text("Checking."), *client_call(), done()])
    assert [e["type"] for e in out] == [
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.done",
    ]
    assert [e.get("output_index") for e in out[1:11]] == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert [i["type"] for i in r.output] == ["message", "function_call"]


def test_agent_tools_thinking_and_progress_are_not_rendered() -> None:
    info = uamp.ToolResultInfo(call_id="call_a", result="42", status="completed")
    agent_call = uamp.ToolCallInfo(id="call_a", name="add", arguments="{}")
    out, r = render(
        Flavour.GA,
        [
            created(),
            uamp.Thinking(response_id=RID, content="hmm", is_delta=True),
            uamp.ResponseDelta(response_id=RID, delta=uamp.ToolCallDelta(agent_call)),
            uamp.ResponseDelta(response_id=RID, delta=uamp.ToolResultDelta(info)),
            uamp.ToolCallDone(response_id=RID, call_id="call_a"),
            text("42"),
            done(),
        ],
    )
    assert [e["type"] for e in out] == [
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    assert r.output[0]["content"] == [{"type": "output_text", "text": "42"}]


@pytest.mark.parametrize("flavour", list(Flavour))
def test_cancelled_mid_text_closes_the_item_incomplete(flavour: Flavour) -> None:
    cancelled = uamp.ResponseCancelled(
        response_id=RID, partial_output=[uamp.TextContent("one two")]
    )
    out, r = render(flavour, [created(), text("one"), text(" two"), cancelled])
    prefix = "response.output_text" if flavour is Flavour.GA else "response.text"
    assert [e["type"] for e in out] == [
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        prefix + ".delta",
        prefix + ".delta",
        "response.output_item.done",
        "response.done",
    ]
    assert out[-2]["item"]["status"] == "incomplete"
    resp = out[-1]["response"]
    assert resp["status"] == "cancelled"
    assert resp["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert resp["output"] == [out[-2]["item"]]
    assert r.output[0]["content"][0]["text"] == "one two"
    assert r.status == "cancelled"


def test_cancelled_before_any_output_is_just_response_done() -> None:
    out, r = render(Flavour.GA, [created(), uamp.ResponseCancelled(response_id=RID)])
    assert [e["type"] for e in out] == ["response.created", "response.done"]
    assert out[1]["response"]["output"] == []
    assert r.output == []


@pytest.mark.parametrize("flavour", list(Flavour))
def test_failed_response_carries_the_error_in_status_details(flavour: Flavour) -> None:
    err = uamp.ResponseError(
        response_id=RID, error=uamp.ErrorInfo(code="agent_error", message="model exploded")
    )
    out, _ = render(flavour, [created(), text("par"), err])
    assert [e["type"] for e in out][-2:] == ["response.output_item.done", "response.done"]
    assert out[-2]["item"]["status"] == "incomplete"
    resp = out[-1]["response"]
    assert resp["status"] == "failed"
    assert resp["status_details"] == {
        "type": "failed",
        "error": {"type": "server_error", "code": "agent_error", "message": "model exploded"},
    }


def test_error_shape_is_exact() -> None:
    c = codec(Flavour.GA)
    ev = c.error("unknown_event", "unknown event type 'x'", param="type", event_id="evt_c1")
    assert ev == {
        "type": "error",
        "event_id": ev["event_id"],
        "error": {
            "type": "invalid_request_error",
            "code": "unknown_event",
            "message": "unknown event type 'x'",
            "param": "type",
            "event_id": "evt_c1",
        },
    }
    validate(Flavour.GA, [ev])
    validate(Flavour.BETA, [codec(Flavour.BETA).from_exception(RealtimeError("c", "m"))])


def test_session_objects_per_flavour() -> None:
    cfg = SessionConfig()
    cfg.update({"instructions": "Be brief.", "tools": [{"type": "function", "name": "f"}]})
    ga = codec(Flavour.GA).session_created(cfg)
    beta = codec(Flavour.BETA).session_updated(cfg)
    validate(Flavour.GA, [ga])
    validate(Flavour.BETA, [beta])
    s = ga["session"]
    assert (s["type"], s["id"], s["object"], s["model"]) == (
        "realtime",
        "sess_x",
        "realtime.session",
        "my.agent",
    )
    assert s["output_modalities"] == ["text"]
    assert s["audio"]["input"]["turn_detection"] is None
    assert s["instructions"] == "Be brief."
    assert s["tools"] == [
        {"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}
    ]
    b = beta["session"]
    assert beta["type"] == "session.updated"
    assert (b["modalities"], b["turn_detection"], b["input_audio_format"]) == (
        ["text"],
        None,
        "pcm16",
    )
    assert "type" not in b and "output_modalities" not in b


def test_session_update_merges_and_a_refused_update_changes_nothing() -> None:
    cfg = SessionConfig()
    cfg.update({"output_modalities": ["text"], "voice": "ash", "payment_token": "tok"})
    cfg.update({"modalities": ["text", "audio"], "turn_detection": {"type": "server_vad"}})
    assert (cfg.modalities, cfg.voice, cfg.payment_token) == (["text", "audio"], "ash", "tok")
    with pytest.raises(RealtimeError) as info:
        cfg.update({"instructions": "new", "tools": [{"type": "function"}]}, event_id="e1")
    assert (info.value.code, info.value.param, info.value.event_id) == (
        "invalid_value",
        "session.tools[0]",
        "e1",
    )
    assert cfg.instructions is None
    with pytest.raises(RealtimeError) as info:
        cfg.update({"output_modalities": ["video"]})
    assert info.value.param == "session.output_modalities"
    # the chat shape of a tool is tolerated and flattened
    cfg.update({"tools": [{"type": "function", "function": {"name": "g", "description": "d"}}]})
    assert cfg.openai_tools() == [
        {
            "type": "function",
            "function": {
                "name": "g",
                "description": "d",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]


def test_item_added_ga_is_added_plus_done_beta_is_created() -> None:
    item = {
        "id": "item_1",
        **normalize_item(
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
        ),
        "status": "completed",
    }
    ga = codec(Flavour.GA).item_added(item, None)
    beta = codec(Flavour.BETA).item_added(item, "item_0")
    validate(Flavour.GA, ga)
    validate(Flavour.BETA, beta)
    assert [e["type"] for e in ga] == ["conversation.item.added", "conversation.item.done"]
    assert [e["type"] for e in beta] == ["conversation.item.created"]
    assert beta[0]["previous_item_id"] == "item_0"
    assert ga[0]["item"] == {
        "id": "item_1",
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "hi"}],
        "status": "completed",
    }


def test_other_item_events_validate() -> None:
    for flavour in Flavour:
        c = codec(flavour)
        item = {"id": "item_9", "type": "function_call_output", "call_id": "c", "output": "o"}
        validate(
            flavour,
            [
                c.item_retrieved(item),
                c.item_deleted("item_9"),
                c.item_truncated("item_9", 0, 1500),
                c.audio_committed("item_9", None),
                c.audio_cleared(),
            ],
        )


def test_normalize_item_accepts_both_flavours_and_refuses_bad_items() -> None:
    assert normalize_item(
        {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "a"}]}
    ) == {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "a"}]}
    assert normalize_item(
        {"type": "function_call_output", "call_id": "c1", "output": "ok", "extra": 1}
    ) == {"type": "function_call_output", "call_id": "c1", "output": "ok"}
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            {"type": "function_call_output", "output": "x"},
            "missing_required_parameter",
            "item.call_id",
        ),
        ({"type": "message", "role": "tool", "content": []}, "invalid_value", "item.role"),
        ({"type": "message", "role": "user"}, "missing_required_parameter", "item.content"),
        (
            {"type": "message", "role": "user", "content": [{"type": "output_text", "text": "x"}]},
            "invalid_value",
            "item.content[0].type",
        ),
        (
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": 3}]},
            "invalid_type",
            "item.content[0].text",
        ),
        ({"type": "mcp_call"}, "invalid_value", "item.type"),
    ]
    for item, code, param in cases:
        with pytest.raises(RealtimeError) as info:
            normalize_item(item, "evt_c")
        assert (info.value.code, info.value.param, info.value.event_id) == (code, param, "evt_c")


def test_decode_client_event_validates_types_and_fields() -> None:
    ev = decode_client_event(b'{"type":"response.cancel","event_id":"e1","response_id":"r"}')
    assert (ev.type, ev.event_id, ev.data["response_id"]) == ("response.cancel", "e1", "r")
    cases = [
        (b"{nope", "invalid_json", None),
        (b"[1,2]", "invalid_json", None),
        (b'{"event_id":"e2"}', "invalid_event", "type"),
        (b'{"type":"voice.start","event_id":"e3"}', "unknown_event", "type"),
        (b'{"type":"session.update","session":[]}', "missing_required_parameter", "session"),
        (b'{"type":"input_audio_buffer.append"}', "missing_required_parameter", "audio"),
        (b'{"type":"conversation.item.create"}', "missing_required_parameter", "item"),
        (b'{"type":"conversation.item.delete","item_id":5}', "invalid_type", "item_id"),
        (
            b'{"type":"conversation.item.truncate","item_id":"i","content_index":0}',
            "missing_required_parameter",
            "audio_end_ms",
        ),
        (b'{"type":"response.create","response":"x"}', "invalid_type", "response"),
    ]
    for raw, code, param in cases:
        with pytest.raises(RealtimeError) as info:
            decode_client_event(raw)
        assert (info.value.code, info.value.param) == (code, param), raw
    with pytest.raises(RealtimeError) as info:
        decode_client_event(b'{"type":"voice.start","event_id":"e3"}')
    assert info.value.event_id == "e3"


def test_decode_audio_chunk() -> None:
    assert decode_audio_chunk("AAAA") == 3
    with pytest.raises(RealtimeError) as info:
        decode_audio_chunk("not base64!", "e")
    assert (info.value.code, info.value.param, info.value.event_id) == (
        "invalid_value",
        "audio",
        "e",
    )


@given(st.one_of(st.text(), st.binary()))
def test_decode_never_raises_anything_but_realtime_error(data: str | bytes) -> None:
    try:
        decode_client_event(data)
    except RealtimeError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.sampled_from(sorted(CLIENT_EVENT_TYPES)),
    st.dictionaries(
        st.sampled_from(
            [
                "session",
                "audio",
                "item",
                "item_id",
                "content_index",
                "audio_end_ms",
                "response",
                "response_id",
                "previous_item_id",
                "payment",
            ]
        ),
        json_values,
    ),
)
def test_decode_known_types_with_arbitrary_fields(kind: str, fields: dict[str, Any]) -> None:
    raw = orjson.dumps({"type": kind, **fields})
    try:
        ev = decode_client_event(raw)
    except RealtimeError as exc:
        assert exc.type == "invalid_request_error"
        return
    if kind == "conversation.item.create":
        try:
            normalize_item(ev.data["item"])
        except RealtimeError:
            pass
    if kind == "session.update":
        try:
            SessionConfig().update(ev.data["session"])
        except RealtimeError:
            pass


def test_conversation_order_insert_delete_and_hidden_entries() -> None:
    conv = Conversation()
    assert conv.add({"id": "a"}) is None
    assert conv.add({"id": "b"}) == "a"
    assert conv.add({"id": "z"}, "root") is None
    assert conv.add({"id": "c"}, "a") == "a"
    conv.add_hidden(["tool exchange"])
    assert conv.add({"id": "d"}) == "b"
    assert [i["id"] for i in conv.items()] == ["z", "a", "c", "b", "d"]
    assert [h for i, h in conv.entries() if i is None] == [["tool exchange"]]
    with pytest.raises(KeyError):
        conv.add({"id": "e"}, "missing")
    with pytest.raises(ValueError):
        conv.add({"id": "a"})
    assert conv.delete("c") and not conv.delete("c")
    assert conv.get("c") is None and conv.get("d") == {"id": "d"}
    assert len(conv) == 4 and conv.last_id() == "d"


def test_merge_deltas_only_within_one_item() -> None:
    def d(item: str, t: str) -> dict[str, Any]:
        return {
            "type": "response.output_text.delta",
            "event_id": "evt_" + t,
            "item_id": item,
            "content_index": 0,
            "delta": t,
            "response_id": "r",
            "output_index": 0,
        }

    other = {"type": "response.output_text.done", "event_id": "evt_x"}
    merged = merge_realtime_deltas(
        [d("i1", "a"), d("i1", "b"), other, d("i1", "c"), d("i2", "d"), d("i2", "e")]
    )
    assert [(e["type"], e.get("delta")) for e in merged] == [
        ("response.output_text.delta", "ab"),
        ("response.output_text.done", None),
        ("response.output_text.delta", "c"),
        ("response.output_text.delta", "de"),
    ]
    assert merged[0]["event_id"] == "evt_a"


@pytest.mark.parametrize(
    ("headers", "query", "seed", "expected"),
    [
        ({"openai-beta": "realtime=v1"}, {"model": "a"}, False, Flavour.BETA),
        ({"openai-beta": "assistants=v2, realtime=v1"}, {}, False, Flavour.BETA),
        ({}, {"flavor": "beta"}, False, Flavour.BETA),
        ({}, {"flavor": "ga"}, True, Flavour.GA),
        ({}, {"model": "a"}, False, Flavour.GA),
        ({}, {}, False, Flavour.GA),
        ({}, {}, True, Flavour.BETA),
        ({}, {"model": "a"}, True, Flavour.GA),
    ],
)
def test_choose_flavour(
    headers: dict[str, str], query: dict[str, str], seed: bool, expected: Flavour
) -> None:
    assert choose_flavour(headers, query, seed_path=seed) is expected


# --------------------------------------------------------------------------------------------
# Audio input through a transcribe hook
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", list(Flavour))
def test_audio_commit_item_and_transcription_events_validate(flavour: Flavour) -> None:
    from trioagents.protocols.realtime import input_audio_item

    c = codec(flavour)
    item = input_audio_item("item_7")
    committed = c.audio_committed("item_7", "item_6")
    added = c.item_added(item, "item_6")
    completed = c.transcription_completed("item_7", "hello", seconds=0.5)
    failed = c.transcription_failed("item_7", "transcription_failed", "boom")
    item["content"] = [{"type": "input_audio", "transcript": "hello"}]  # as the transport does
    retrieved = c.item_retrieved(item)
    validate(flavour, [committed, *added, completed, failed, retrieved])
    assert {k: v for k, v in committed.items() if k != "event_id"} == {
        "type": "input_audio_buffer.committed",
        "item_id": "item_7",
        "previous_item_id": "item_6",
    }
    assert added[0]["item"] == {
        "id": "item_7",
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "transcript": None}],
    }
    assert {k: v for k, v in completed.items() if k != "event_id"} == {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": "item_7",
        "content_index": 0,
        "transcript": "hello",
        "usage": {"type": "duration", "seconds": 0.5},
    }
    assert {k: v for k, v in failed.items() if k != "event_id"} == {
        "type": "conversation.item.input_audio_transcription.failed",
        "item_id": "item_7",
        "content_index": 0,
        "error": {
            "type": "transcription_error",
            "code": "transcription_failed",
            "message": "boom",
            "param": None,
        },
    }
    assert retrieved["item"]["content"] == [{"type": "input_audio", "transcript": "hello"}]
    # The SDK parses them into its own event classes.
    parsed = ADAPTERS[flavour].validate_python(completed)
    assert type(parsed).__name__ == "ConversationItemInputAudioTranscriptionCompletedEvent"
    assert parsed.transcript == "hello"


def test_decode_audio_and_audio_seconds() -> None:
    from trioagents.protocols.realtime import audio_seconds, decode_audio

    assert decode_audio("AAECAw==") == b"\x00\x01\x02\x03"
    with pytest.raises(RealtimeError) as info:
        decode_audio("@@@@", "e9")
    assert (info.value.code, info.value.event_id) == ("invalid_value", "e9")
    assert audio_seconds(48000) == 1.0  # PCM16 24 kHz mono
    assert audio_seconds(4000, "g711_ulaw") == 0.5
    assert audio_seconds(24000, "opus?") == 0.5  # unknown formats count as PCM16


def test_a_transcribed_audio_item_is_user_text_in_the_conversation() -> None:
    from trioagents.protocols.realtime import input_audio_item

    conv = Conversation()
    first = input_audio_item("item_1")
    assert conv.add(first) is None
    assert conv.add(input_audio_item("item_2", "later")) == "item_1"
    first["content"] = [{"type": "input_audio", "transcript": "now"}]
    assert [i["content"][0]["transcript"] for i in conv.items()] == ["now", "later"]
