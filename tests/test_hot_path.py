"""The per-delta fast paths give exactly what the general paths give.

``Encoder.to_dict`` builds text ``response.delta`` events without the converter, ``RandomIds``
hands out pooled OS randomness, and the built-in model counts input words with one join.
"""

from __future__ import annotations

import re

import orjson
from hypothesis import given, strategies as st

from trioagents import BuiltinModel, uamp
from trioagents.agent import Message
from trioagents.agent._builtin import _count
from trioagents.agent._model import ModelRequest
from trioagents.uamp import _codec

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)
optional_ids = st.none() | st.text(min_size=1, max_size=12)


@given(
    text=texts,
    rid=st.text(min_size=1, max_size=12),
    sid=optional_ids,
    eid=optional_ids,
    ts=st.none() | st.integers(min_value=0, max_value=1 << 53),
)
def test_text_delta_fast_path_matches_the_converter(
    text: str, rid: str, sid: str | None, eid: str | None, ts: int | None
) -> None:
    event = uamp.ResponseDelta(
        response_id=rid, session_id=sid, delta=uamp.TextDelta(text), event_id=eid, timestamp=ts
    )
    fast = uamp.Encoder(ids=uamp.SequentialIds(), clock=uamp.FixedClock())
    general = uamp.converter.unstructure(event)
    general.setdefault("event_id", "evt_000000000000000000000001")
    general.setdefault("timestamp", uamp.FixedClock().now_ms())
    wire = fast.encode(event)
    assert wire == orjson.dumps(general)  # same bytes, key order included
    assert uamp.decode_server(wire) == uamp.ResponseDelta(
        response_id=rid,
        session_id=sid,
        delta=uamp.TextDelta(text),
        event_id=eid or "evt_000000000000000000000001",
        timestamp=uamp.FixedClock().now_ms() if ts is None else ts,
    )


def test_other_deltas_still_use_the_converter() -> None:
    enc = uamp.Encoder(ids=uamp.SequentialIds(), clock=uamp.FixedClock())
    event = uamp.ResponseDelta(
        response_id="r",
        delta=uamp.ToolProgressDelta(uamp.ToolProgressInfo(call_id="c", text="50%")),
    )
    d = orjson.loads(enc.encode(event))
    assert d["delta"] == {"tool_progress": {"call_id": "c", "text": "50%"}, "type": "tool_progress"}
    assert "session_id" not in d and d["event_id"].startswith("evt_")


def test_random_ids_are_96_bit_hex_and_distinct_across_pool_refills() -> None:
    ids = uamp.RandomIds()
    seen = [ids.new("evt") for _ in range(3 * _codec._POOL_BYTES // 12 + 7)]
    assert all(re.fullmatch(r"evt_[0-9a-f]{24}", i) for i in seen)
    assert len(set(seen)) == len(seen)
    assert re.fullmatch(r"[0-9a-f]{32}", ids.hex(16))


def test_random_ids_draw_a_fresh_pool_after_fork() -> None:
    ids = uamp.RandomIds()
    ids.new("evt")
    pool = ids._pool
    _codec._after_fork_in_child()  # what os.register_at_fork runs in a child
    ids.new("evt")
    assert ids._pool != pool


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["user", "assistant", "tool", "system"]),
            st.text(max_size=30) | st.lists(st.text(max_size=10), max_size=3),
        ),
        max_size=8,
    )
)
def test_word_count_matches_the_per_message_sum(items: list[tuple[str, object]]) -> None:
    messages = [
        Message(
            role=role,
            content=content if isinstance(content, str) else [uamp.TextContent(t) for t in content],  # type: ignore[attr-defined]
        )
        for role, content in items
    ]
    assert _count(messages) == sum(len(m.text.split()) + 1 for m in messages)


def test_builtin_model_keeps_only_the_latest_calls() -> None:
    model = BuiltinModel(keep_calls=3)
    for i in range(5):
        model.calls.append(ModelRequest(messages=(Message("user", str(i)),)))
    assert [c.messages[0].text for c in model.calls] == ["2", "3", "4"]
    assert model.calls[-1].messages[0].text == "4" and len(model.calls) == 3
