"""The sans-I/O parts of PortalConnect and Relay: fast, synchronous, fuzzed."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, strategies as st

from trioagents import uamp
from trioagents.protocols import relay as rp
from trioagents.protocols.portal import (
    backoff_delay,
    decode_frame,
    is_terminal_close,
    registration,
    with_token,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


def test_decode_frame_reads_both_directions() -> None:
    created = decode_frame(
        '{"type":"session.created","session_id":"s","agent":"a","session":{"id":"s"}}'
    )
    assert isinstance(created, uamp.SessionCreated) and created.agent == "a"
    text = decode_frame('{"type":"input.text","session_id":"s","text":"hi"}')
    assert isinstance(text, uamp.InputText)
    delta = decode_frame(
        '{"type":"response.delta","response_id":"r","delta":{"type":"text","text":"x"}}',
        prefer="server",
    )
    assert isinstance(delta, uamp.ResponseDelta)
    create = decode_frame('{"type":"session.create","agent":"a"}', prefer="server")
    assert isinstance(create, uamp.SessionCreate)
    assert isinstance(decode_frame('{"type":"nope"}'), uamp.UnknownEvent)
    with pytest.raises(uamp.DecodeError) as info:
        decode_frame('{"type":"session.created"}')
    assert info.value.code == "invalid_event"


@given(json_values)
def test_decode_frame_never_crashes(value: object) -> None:
    for prefer in ("client", "server"):
        try:
            decode_frame(orjson.dumps(value), prefer=prefer)
        except uamp.DecodeError:
            pass


@given(json_values)
def test_relay_parse_never_crashes(value: object) -> None:
    try:
        obj = rp.parse(orjson.dumps(value))
    except rp.RelayProtocolError as exc:
        assert exc.code == "INVALID_MESSAGE"
        return
    for fn in (rp.parse_agent_event, rp.parse_app_event):
        try:
            fn(obj)
        except rp.RelayProtocolError as exc:
            assert exc.code in rp.RELAY_ERROR_STATUS


@given(st.integers(1, 10_000), st.floats(0.01, 100), st.floats(0, 0.999999))
def test_backoff_stays_in_bounds(attempt: int, base: float, u: float) -> None:
    delay = backoff_delay(attempt, base, lambda: u)
    raw = min(base * 2 ** min(attempt - 1, 62), 60.0)
    assert raw * 0.5 <= delay <= raw


def test_token_url_registration_and_close_codes() -> None:
    assert with_token("wss://h/ws", "a b&c") == "wss://h/ws?token=a+b%26c"
    assert with_token("ws://h/ws?x=1&token=old", "new") == "ws://h/ws?x=1&token=new"
    assert with_token("ws://h/ws", None) == "ws://h/ws"
    ev = registration("bot", "jwt", event_id="evt_1")
    d = uamp.Encoder(ids=uamp.SequentialIds(), clock=uamp.FixedClock()).to_dict(ev)
    assert d["agent"] == d["session"]["agent"] == "bot"
    assert d["token"] == d["session"]["token"] == "jwt"
    assert d["uamp_version"] == "1.0" and d["event_id"] == "evt_1"
    assert [is_terminal_close(c) for c in (1000, 1001, 1008, 1011, 4001, 4002, 4003)] == [
        False,
        False,
        True,
        False,
        True,
        False,
        True,
    ]
