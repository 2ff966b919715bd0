"""The UAMP event model and its one converter (PROTOCOLS.md §1), synchronously and by property."""

from __future__ import annotations

from typing import Any

import attrs
import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from trioagents import uamp

FIXED_MS = uamp.FixedClock().ms


def encoder() -> uamp.Encoder:
    return uamp.Encoder(uamp.SequentialIds(), uamp.FixedClock())


TOOL_CALL = uamp.ToolCallInfo(id="call_1", name="add", arguments='{"a":1}')
TOOL_RESULT = uamp.ToolResultInfo(call_id="call_1", result="3", is_error=True, status="error")

# One instance of every content item (with every optional field set, to round-trip them all).
CONTENT_ITEMS: list[Any] = [
    uamp.TextContent("hello", content_id="c1"),
    uamp.ImageContent({"url": "https://x/i.png"}, format="png", detail="low", content_id="c2"),
    uamp.AudioContent("UklGRg==", format="wav", content_id="c3"),
    uamp.VideoContent("AAAA", format="mp4", content_id="c4"),
    uamp.FileContent({"url": "https://x/f.pdf"}, filename="f.pdf", mime_type="application/pdf"),
    uamp.ToolCallContent(TOOL_CALL),
    uamp.ToolResultContent(TOOL_RESULT),
]

DELTAS: list[Any] = [
    uamp.TextDelta("hi "),
    uamp.AudioDelta("AAAA"),
    uamp.ToolCallDelta(TOOL_CALL),
    uamp.ToolResultDelta(TOOL_RESULT),
    uamp.ToolProgressDelta(uamp.ToolProgressInfo(call_id="call_1", text="half way")),
]

CLIENT_EVENTS: list[Any] = [
    uamp.SessionCreate(),
    uamp.SessionCreate(
        uamp_version="1.1",
        session={"modalities": ["text"], "instructions": "be brief", "agent": "a"},
        client_capabilities={"audio": False},
        agent="alice.my-bot",
        chat="chat_1",
        token="tok",
        payment_token="pay",
        event_id="e1",
        timestamp=5,
    ),
    uamp.SessionUpdate(session_id="sess_1", session={"instructions": "x"}, token="t"),
    uamp.SessionEnd(session_id="sess_1", reason="client_request"),
    uamp.CapabilitiesQuery(),
    uamp.ClientCapabilities(capabilities={"tools": True}, session_id="sess_1"),
    uamp.InputText(
        "hi",
        role="system",
        messages=[{"role": "user", "content": "earlier"}],
        payment_token="p",
        context={"k": [1, 2.5, None, True]},
        session_id="sess_1",
    ),
    uamp.InputAudio("AAAA", format="pcm16", is_final=False, content_id="a1"),
    uamp.InputImage({"url": "https://x/i.png"}, format="png", detail="high"),
    uamp.InputVideo("AAAA", format="mp4"),
    uamp.InputFile("JVBERi0=", filename="a.pdf", mime_type="application/pdf"),
    uamp.InputTyping(is_typing=False, chat_id="chat_9"),
    uamp.ResponseCreate(response={"instructions": "short"}, response_format={"type": "json"}),
    uamp.ResponseCancel(response_id="resp_1"),
    uamp.ToolResult("call_1", result='{"ok":true}', is_error=False),
    uamp.PaymentSubmit(
        uamp.PaymentInfo(network="base", token="tok", proof={"sig": "x"}, amount="1.00"),
        response_id="resp_1",
    ),
    uamp.Ping(),
    uamp.Pong(reply_to="evt_1"),
]

SERVER_EVENTS: list[Any] = [
    uamp.SessionCreated(
        session_id="sess_1",
        agent="alice",
        session=uamp.SessionInfo(id="sess_1", config={"modalities": ["text"]}, created_at=1),
        chat="chat_1",
        reply_to="e1",
    ),
    uamp.SessionUpdated(session_id="sess_1", session=uamp.SessionInfo(id="sess_1")),
    uamp.SessionError(
        uamp.ErrorInfo("version_mismatch", "no", details={"supported": ["1.0"]}), reply_to="e"
    ),
    uamp.SessionEnd(session_id="sess_1", reason="shutdown"),
    uamp.Capabilities({"id": "alice", "modalities": ["text"]}, session_id="sess_1"),
    uamp.ResponseCreated(response_id="resp_1", session_id="sess_1", reply_to="e2"),
    *[uamp.ResponseDelta(response_id="resp_1", delta=d) for d in DELTAS],
    uamp.ToolCall(response_id="resp_1", call_id="call_1", name="get", arguments="{}"),
    uamp.ToolCallDone(response_id="resp_1", call_id="call_1"),
    uamp.Progress(target="tool", target_id="call_1", stage="s", message="m", percent=50.5),
    uamp.Progress(target="response", step=1, total_steps=3),
    uamp.Thinking(response_id="resp_1", content="hmm", stage="plan", redacted=False, is_delta=True),
    uamp.UsageDelta(response_id="resp_1", delta=uamp.UsageDeltaInfo(input_tokens=3)),
    uamp.AudioOutputDelta(response_id="resp_1", audio="AAAA"),
    uamp.AudioOutputDone(response_id="resp_1", duration_ms=120),
    uamp.TranscriptDelta(transcript="hel", response_id="resp_1", role="assistant"),
    uamp.TranscriptDone(transcript="hello", response_id="resp_1", role="user", content_id="c1"),
    uamp.RateLimit(limit=10, remaining=9, reset_at=1_700_000_000),
    uamp.ResponseDone(
        response_id="resp_1",
        response=uamp.ResponseInfo(
            id="resp_1",
            output=list(CONTENT_ITEMS),
            usage=uamp.UsageInfo(1, 2, 3, cached_tokens=1, cost=0.5),
        ),
        signature="sig",
    ),
    uamp.ResponseError(response_id="resp_1", error=uamp.ErrorInfo("agent_error", "boom")),
    uamp.ResponseCancelled(response_id="resp_1", partial_output=[uamp.TextContent("par")]),
    uamp.Error(uamp.ErrorInfo("invalid_json", "bad"), reply_to="e3"),
    uamp.PaymentRequired(
        response_id="resp_1",
        requirements={"amount": "1"},
        accepts=[{"scheme": "token"}],
        extra={"a": 1},
    ),
    uamp.PaymentAccepted(payment_id="pay_1", balance_remaining="4.00", expires_at=9),
    uamp.PaymentBalance(
        balance="4", currency="USD", threshold="1", low_balance_warning=False, expires_at=1
    ),
    uamp.PaymentError(code="payment_failed", message="no", can_retry=True, balance_required="2"),
    uamp.Ping(session_id="sess_1"),
    uamp.Pong(session_id="sess_1", reply_to="evt_7"),
]


def stamped(event: Any, n: int) -> Any:
    """``event`` as it comes back after encoding: envelope filled in where it was missing."""
    changes: dict[str, Any] = {}
    if event.event_id is None:
        changes["event_id"] = f"evt_{n:024x}"
    if event.timestamp is None:
        changes["timestamp"] = FIXED_MS
    return attrs.evolve(event, **changes)


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------


def test_samples_cover_every_event_type() -> None:
    assert {e.type for e in CLIENT_EVENTS} == set(uamp.CLIENT_EVENT_TYPES)
    assert {e.type for e in SERVER_EVENTS} == set(uamp.SERVER_EVENT_TYPES)
    assert {type(c) for c in CONTENT_ITEMS} == set(uamp._events.CONTENT_TYPES)
    assert {type(d) for d in DELTAS} == set(uamp._events.DELTA_TYPES)


@pytest.mark.parametrize("event", CLIENT_EVENTS, ids=lambda e: e.type)
def test_client_event_round_trips(event: Any) -> None:
    data = encoder().encode(event)
    assert isinstance(data, bytes)
    decoded = uamp.decode_client(data)
    assert type(decoded) is type(event)
    assert decoded == stamped(event, 1)
    # The text form (WebSocket text frames) decodes the same.
    assert uamp.decode_client(encoder().encode_text(event)) == decoded


@pytest.mark.parametrize("event", SERVER_EVENTS, ids=lambda e: e.type)
def test_server_event_round_trips(event: Any) -> None:
    decoded = uamp.decode_server(encoder().encode(event))
    assert type(decoded) is type(event)
    assert decoded == stamped(event, 1)


def test_given_envelope_is_kept_and_stamps_are_deterministic() -> None:
    enc = encoder()
    first = orjson.loads(enc.encode(uamp.Ping()))
    second = orjson.loads(enc.encode(uamp.Ping()))
    kept = orjson.loads(enc.encode(uamp.Ping(event_id="mine", timestamp=7)))
    assert (first["event_id"], second["event_id"]) == (
        "evt_000000000000000000000001",
        "evt_000000000000000000000002",
    )
    assert first["timestamp"] == second["timestamp"] == FIXED_MS
    assert (kept["event_id"], kept["timestamp"]) == ("mine", 7)
    clock = uamp.FixedClock(ms=1_000_123)
    assert (clock.now_ms(), clock.now_s()) == (1_000_123, 1000)


def test_encoding_is_byte_exact() -> None:
    enc = encoder()
    event = uamp.ResponseDelta(
        response_id="resp_1", session_id="sess_1", delta=uamp.TextDelta("héllo ")
    )
    assert enc.encode(event) == (
        b'{"response_id":"resp_1","delta":{"text":"h\xc3\xa9llo ","type":"text"},'
        b'"type":"response.delta","session_id":"sess_1",'
        b'"event_id":"evt_000000000000000000000001","timestamp":1767225600000}'
    )
    # Another encoder with the same injected ids and clock produces the same bytes.
    assert encoder().encode(event) == encoder().encode(event)
    assert uamp.SequentialIds().hex(4) == "00000001"


# --------------------------------------------------------------------------------------------
# Wire shape
# --------------------------------------------------------------------------------------------


def test_none_optionals_are_omitted_but_required_defaults_always_written() -> None:
    done = uamp.converter.unstructure(
        uamp.ResponseDone(response_id="r", response=uamp.ResponseInfo(id="r"))
    )
    assert done == {
        "response_id": "r",
        "response": {"id": "r", "output": [], "status": "completed"},
        "type": "response.done",
    }
    created = uamp.converter.unstructure(
        uamp.SessionCreated(session_id="s", agent="a", session=uamp.SessionInfo(id="s"))
    )
    assert created == {
        "session_id": "s",
        "agent": "a",
        "session": {"id": "s", "status": "active", "config": {}},
        "uamp_version": "1.0",
        "type": "session.created",
    }
    # Zero counts are real values, not "unset".
    usage = uamp.converter.unstructure(uamp.UsageInfo())
    assert usage == {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    err = uamp.converter.unstructure(uamp.ResponseError("r", uamp.ErrorInfo("agent_error", "m")))
    assert err == {
        "response_id": "r",
        "error": {"code": "agent_error", "message": "m"},
        "type": "response.error",
    }
    # A default that is not None (role "user", is_typing True) is always written.
    assert uamp.converter.unstructure(uamp.InputText("x")) == {
        "text": "x",
        "role": "user",
        "type": "input.text",
    }
    # A cancelled response with nothing streamed still says so explicitly.
    assert uamp.converter.unstructure(uamp.ResponseCancelled("r"))["partial_output"] == []


@pytest.mark.parametrize("item", CONTENT_ITEMS, ids=lambda c: c.type)
def test_content_items_carry_their_type(item: Any) -> None:
    raw = uamp.converter.unstructure(item)
    assert raw["type"] == item.type
    assert (
        raw["type"]
        == {
            uamp.TextContent: "text",
            uamp.ImageContent: "image",
            uamp.AudioContent: "audio",
            uamp.VideoContent: "video",
            uamp.FileContent: "file",
            uamp.ToolCallContent: "tool_call",
            uamp.ToolResultContent: "tool_result",
        }[type(item)]
    )
    back = uamp.converter.structure(raw, uamp._events.ContentItem)
    assert type(back) is type(item)
    assert back == item


@pytest.mark.parametrize("delta", DELTAS, ids=lambda d: d.type)
def test_deltas_carry_their_type(delta: Any) -> None:
    raw = uamp.converter.unstructure(uamp.ResponseDelta(response_id="r", delta=delta))["delta"]
    assert raw["type"] == delta.type
    back = uamp.converter.structure(raw, uamp._events.Delta)
    assert type(back) is type(delta)
    assert back == delta


def test_tool_result_delta_wire_shape() -> None:
    raw = uamp.converter.unstructure(uamp.ToolResultDelta(TOOL_RESULT))
    assert raw == {
        "tool_result": {"call_id": "call_1", "result": "3", "is_error": True, "status": "error"},
        "type": "tool_result",
    }


# --------------------------------------------------------------------------------------------
# Decoding rules
# --------------------------------------------------------------------------------------------


def test_unknown_fields_are_ignored() -> None:
    ev = uamp.decode_client(
        b'{"type":"input.text","text":"hi","future":{"x":1},"event_id":"e","extra":[1]}'
    )
    assert ev == uamp.InputText("hi", event_id="e")
    nested = uamp.decode_server(
        b'{"type":"response.done","response_id":"r",'
        b'"response":{"id":"r","status":"completed","output":[{"type":"text","text":"t","x":1}],'
        b'"usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3,"new":9}}}'
    )
    assert nested == uamp.ResponseDone(
        response_id="r",
        response=uamp.ResponseInfo(
            id="r", output=[uamp.TextContent("t")], usage=uamp.UsageInfo(1, 2, 3)
        ),
    )


def test_unknown_type_is_reported_with_raw_object() -> None:
    raw = {"type": "voice.start", "event_id": "e9", "session_id": "s1", "data": [1, {"a": None}]}
    ev = uamp.decode_client(orjson.dumps(raw))
    assert isinstance(ev, uamp.UnknownEvent)
    assert (ev.type, ev.event_id, ev.session_id) == ("voice.start", "e9", "s1")
    assert ev.raw == raw
    # Server-only types are unknown to the client-side decoder, and vice versa.
    assert isinstance(uamp.decode_client(b'{"type":"response.done"}'), uamp.UnknownEvent)
    assert isinstance(uamp.decode_server(b'{"type":"input.text"}'), uamp.UnknownEvent)
    # Ill-typed envelope fields of an unknown event are not trusted.
    odd = uamp.decode_client(b'{"type":"x.y","event_id":5,"session_id":[1]}')
    assert isinstance(odd, uamp.UnknownEvent)
    assert (odd.event_id, odd.session_id) == (None, None)


@pytest.mark.parametrize(
    ("frame", "code", "fragment"),
    [
        (b"not json", "invalid_json", "not valid JSON"),
        (b"", "invalid_json", "not valid JSON"),
        (b"\xff\xfe", "invalid_json", "not valid JSON"),
        (b"[1, 2]", "invalid_json", "JSON object"),
        (b'"input.text"', "invalid_json", "JSON object"),
        (b"{}", "invalid_event", "no 'type'"),
        (b'{"type": ""}', "invalid_event", "no 'type'"),
        (b'{"type": 7}', "invalid_event", "no 'type'"),
        (b'{"type":"tool.result","event_id":"e5"}', "invalid_event", "'call_id'"),
        (b'{"type":"input.audio"}', "invalid_event", "'audio'"),
        (b'{"type":"input.text","role":"robot"}', "invalid_event", "role"),
        (b'{"type":"payment.submit"}', "invalid_event", "'payment'"),
        (b'{"type":"session.create","session":[1]}', "invalid_event", "session"),
    ],
)
def test_bad_frames_raise_decode_error(frame: bytes, code: str, fragment: str) -> None:
    with pytest.raises(uamp.DecodeError) as info:
        uamp.decode_client(frame)
    assert info.value.code == code
    assert fragment in info.value.message
    assert isinstance(info.value, ValueError)
    if b'"e5"' in frame:  # the error can be correlated with the client's event
        assert info.value.event_id == "e5"


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"tool.result","call_id":null}',
        b'{"type":"tool.result","call_id":["a","b"]}',
        b'{"type":"input.text","text":{"a":1}}',
        b'{"type":"input.audio","audio":"AAAA","is_final":"false"}',
        b'{"type":"input.text","text":"x","timestamp":1e100}',
    ],
)
def test_ill_typed_fields_are_invalid_event(frame: bytes) -> None:
    # DecodeError's contract: "missing/ill-typed required fields" -> invalid_event (§1.5.7).
    with pytest.raises(uamp.DecodeError) as info:
        uamp.decode_client(frame)
    assert info.value.code == "invalid_event"


# --------------------------------------------------------------------------------------------
# Fuzzing: decode_* only ever returns an event or raises DecodeError
# --------------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _objects_for(table: dict[str, type]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects of known types whose fields hold arbitrary JSON (right or wrong types)."""

    def build(kind: str) -> st.SearchStrategy[dict[str, Any]]:
        fields = [f for f in attrs.fields(table[kind]) if f.name != "type"]
        return st.fixed_dictionaries(
            {"type": st.just(kind)}, optional={f.name: JSON_VALUES for f in fields}
        )

    return st.sampled_from(sorted(table)).flatmap(build)


CLIENT_RESULT_TYPES = (*uamp.CLIENT_EVENT_TYPES.values(), uamp.UnknownEvent)
SERVER_RESULT_TYPES = (*uamp.SERVER_EVENT_TYPES.values(), uamp.UnknownEvent)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check_client(data: str | bytes) -> None:
    try:
        ev = uamp.decode_client(data)
    except uamp.DecodeError as exc:
        assert exc.code in ("invalid_json", "invalid_event")
        assert exc.message
    else:
        assert isinstance(ev, CLIENT_RESULT_TYPES)


@FUZZ
@given(st.text() | st.binary())
def test_decode_client_fuzz_text_and_bytes(data: str | bytes) -> None:
    _check_client(data)


@FUZZ
@given(st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5) | JSON_VALUES)
def test_decode_client_fuzz_arbitrary_json(obj: Any) -> None:
    _check_client(orjson.dumps(obj))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_objects_for(uamp.CLIENT_EVENT_TYPES))
def test_decode_client_fuzz_known_types_with_arbitrary_fields(obj: dict[str, Any]) -> None:
    data = orjson.dumps(obj)
    _check_client(data)
    _check_client(data.decode())


@FUZZ
@given(_objects_for(uamp.SERVER_EVENT_TYPES))
def test_decode_server_fuzz_known_types_with_arbitrary_fields(obj: dict[str, Any]) -> None:
    try:
        ev = uamp.decode_server(orjson.dumps(obj))
    except uamp.DecodeError as exc:
        assert exc.code in ("invalid_json", "invalid_event")
    else:
        assert isinstance(ev, SERVER_RESULT_TYPES)


@FUZZ
@given(st.sampled_from(CLIENT_EVENTS), st.text(max_size=20), st.integers(0, 2**53))
def test_round_trip_keeps_any_envelope(event: Any, event_id: str, ts: int) -> None:
    ev = attrs.evolve(event, event_id=event_id, timestamp=ts)
    assert uamp.decode_client(encoder().encode(ev)) == ev
