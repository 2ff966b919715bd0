"""The sans-I/O A2A codec (PROTOCOLS.md §6): versions, params, parts, rendering, card, errors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, strategies as st

from trioagents.protocols import a2a

TASK = a2a.Task(
    id="t1",
    context_id="c1",
    agent="bot",
    state="input-required",
    timestamp="2026-01-01T00:00:00.000Z",
    created_at=1.0,
    updated_at=2.0,
    history=[
        {"messageId": "m1", "role": "user", "parts": [{"text": "hi"}]},
        {"messageId": "m2", "role": "agent", "parts": [{"text": "which?"}]},
    ],
    artifacts=[{"artifactId": "a1", "name": "response", "parts": [{"text": "x"}]}],
    status_message={"messageId": "m2", "role": "agent", "parts": [{"text": "which?"}]},
)


@pytest.mark.parametrize(
    ("header", "method", "expected"),
    [
        (None, "message/send", ("0.3", "send")),
        ("", "tasks/get", ("0.3", "get")),
        ("0.3", "tasks/resubscribe", ("0.3", "subscribe")),
        ("0.3.0", "message/stream", ("0.3", "stream")),
        ("1.0", "SendMessage", ("1.0", "send")),
        ("1", "SendStreamingMessage", ("1.0", "stream")),
        ("1.2", "CancelTask", ("1.0", "cancel")),
        ("1.0", "SubscribeToTask", ("1.0", "subscribe")),
        ("1.0", "ListTasks", ("1.0", "list")),
        ("1.0", "CreateTaskPushNotificationConfig", ("1.0", "push")),
        ("0.3", "tasks/pushNotificationConfig/set", ("0.3", "push")),
        ("1.0", "GetExtendedAgentCard", ("1.0", "extended_card")),
    ],
)
def test_negotiate(header: str | None, method: str, expected: tuple[str, str]) -> None:
    assert a2a.negotiate(header, method) == expected


@pytest.mark.parametrize(
    ("header", "method", "code"),
    [
        (None, "SendMessage", a2a.VERSION_NOT_SUPPORTED),  # no header = 0.3
        ("0.3", "GetTask", a2a.VERSION_NOT_SUPPORTED),
        ("1.0", "message/send", a2a.VERSION_NOT_SUPPORTED),
        ("2.0", "SendMessage", a2a.VERSION_NOT_SUPPORTED),
        ("0.2", "message/send", a2a.VERSION_NOT_SUPPORTED),
        ("banana", "tasks/get", a2a.VERSION_NOT_SUPPORTED),
        ("1.0", "Nope", -32601),
        (None, "tasks/list", -32601),  # no ListTasks in 0.3
    ],
)
def test_negotiate_errors(header: str | None, method: str, code: int) -> None:
    with pytest.raises(a2a.A2AError) as info:
        a2a.negotiate(header, method)
    assert info.value.code == code


def test_negotiate_lenient_lets_the_method_decide() -> None:
    assert a2a.negotiate(None, "SendMessage", lenient=True) == ("1.0", "send")
    assert a2a.negotiate("1.0", "tasks/get", lenient=True) == ("0.3", "get")
    assert a2a.negotiate("9", "GetTask", lenient=True) == ("1.0", "get")


def test_error_data_only_for_1_0() -> None:
    e10 = a2a.error_message(7, a2a.TASK_NOT_FOUND, "Task not found", "1.0")
    assert e10 == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {
            "code": -32001,
            "message": "Task not found",
            "data": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "TASK_NOT_FOUND",
                    "domain": "a2a-protocol.org",
                }
            ],
        },
    }
    e03 = a2a.error_message("x", a2a.TASK_NOT_CANCELABLE, "no", "0.3")
    assert e03 == {"jsonrpc": "2.0", "id": "x", "error": {"code": -32002, "message": "no"}}
    assert set(a2a.ERROR_REASONS) >= set(range(-32009, -32000))


@pytest.mark.parametrize(
    ("v03", "canonical"),
    [
        ({"kind": "text", "text": "hi"}, {"text": "hi"}),
        (
            {"kind": "file", "file": {"bytes": "AAE=", "mimeType": "image/png", "name": "a.png"}},
            {"raw": "AAE=", "mediaType": "image/png", "filename": "a.png"},
        ),
        (
            {"kind": "file", "file": {"uri": "https://x/y.pdf", "mimeType": "application/pdf"}},
            {"url": "https://x/y.pdf", "mediaType": "application/pdf"},
        ),
        ({"kind": "data", "data": {"a": [1, 2]}}, {"data": {"a": [1, 2]}}),
        ({"kind": "text", "text": "m", "metadata": {"k": 1}}, {"text": "m", "metadata": {"k": 1}}),
    ],
)
def test_parts_round_trip(v03: dict[str, Any], canonical: dict[str, Any]) -> None:
    assert a2a.part_from_wire("0.3", v03) == canonical
    assert a2a.part_to_wire("0.3", canonical) == v03
    assert a2a.part_from_wire("1.0", canonical) == canonical  # 1.0 wire = canonical
    assert a2a.part_to_wire("1.0", canonical) == canonical


def test_part_defaults_and_non_object_data() -> None:
    assert a2a.part_from_wire("1.0", {"raw": "AA=="}) == {
        "raw": "AA==",
        "mediaType": "application/octet-stream",
    }
    assert a2a.part_to_wire("0.3", {"data": [1, 2]}) == {"kind": "data", "data": {"value": [1, 2]}}


@pytest.mark.parametrize(
    ("version", "part"),
    [
        ("1.0", {"text": 1}),
        ("1.0", {"text": "a", "url": "b"}),
        ("1.0", {}),
        ("1.0", "text"),
        ("0.3", {"kind": "image", "image": "x"}),
        ("0.3", {"kind": "file", "file": {"name": "x"}}),
        ("0.3", {"kind": "text"}),
    ],
)
def test_bad_parts(version: str, part: Any) -> None:
    with pytest.raises(a2a.A2AError) as info:
        a2a.part_from_wire(version, part)
    assert info.value.code == -32602


@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.text(),
        st.lists(st.integers()),
        st.dictionaries(st.text(), st.one_of(st.none(), st.text(), st.integers(), st.booleans())),
    )
)
def test_send_params_never_crash(params: Any) -> None:
    for version in ("1.0", "0.3"):
        try:
            a2a.parse_send_params(version, params)
        except a2a.A2AError as exc:
            assert exc.code == -32602


def test_send_params_both_versions() -> None:
    p10 = a2a.parse_send_params(
        "1.0",
        {
            "message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "hi"}]},
            "configuration": {"returnImmediately": True, "historyLength": 2},
        },
    )
    assert p10.message == {"messageId": "m", "role": "user", "parts": [{"text": "hi"}]}
    assert p10.return_immediately and p10.history_length == 2
    p03 = a2a.parse_send_params(
        "0.3",
        {
            "message": {
                "kind": "message",
                "messageId": "m",
                "role": "user",
                "parts": [{"kind": "text", "text": "hi"}],
                "taskId": "t",
                "contextId": "c",
            },
            "configuration": {"blocking": False},
        },
    )
    assert p03.message["taskId"] == "t" and p03.message["contextId"] == "c"
    assert p03.return_immediately
    assert not a2a.parse_send_params(
        "0.3", {"message": p03.message | {"role": "user"}}
    ).return_immediately


@pytest.mark.parametrize(
    ("version", "params"),
    [
        ("1.0", {"message": {"messageId": "m", "role": "user", "parts": [{"text": "x"}]}}),
        ("0.3", {"message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]}}),
        ("1.0", {"message": {"messageId": "m", "role": "ROLE_AGENT", "parts": [{"text": "x"}]}}),
        ("1.0", {"message": {"role": "ROLE_USER", "parts": [{"text": "x"}]}}),
        ("1.0", {"message": {"messageId": "m", "role": "ROLE_USER", "parts": []}}),
        ("1.0", {}),
        ("1.0", []),
        (
            "1.0",
            {
                "message": {"messageId": "m", "role": "ROLE_USER", "parts": [{"text": "x"}]},
                "configuration": {"returnImmediately": "yes"},
            },
        ),
    ],
)
def test_send_params_invalid(version: str, params: Any) -> None:
    with pytest.raises(a2a.A2AError) as info:
        a2a.parse_send_params(version, params)
    assert info.value.code == -32602


def test_task_id_params() -> None:
    assert a2a.parse_task_id_params({"id": "t", "historyLength": 0}) == ("t", 0)
    for bad in ({}, {"id": 3}, {"id": "t", "historyLength": -1}, None):
        with pytest.raises(a2a.A2AError):
            a2a.parse_task_id_params(bad)


@pytest.mark.parametrize(
    ("state", "v10", "seed"),
    [
        ("submitted", "TASK_STATE_SUBMITTED", "pending"),
        ("working", "TASK_STATE_WORKING", "running"),
        ("input-required", "TASK_STATE_INPUT_REQUIRED", "input_required"),
        ("auth-required", "TASK_STATE_AUTH_REQUIRED", "auth_required"),
        ("completed", "TASK_STATE_COMPLETED", "completed"),
        ("canceled", "TASK_STATE_CANCELED", "cancelled"),
        ("failed", "TASK_STATE_FAILED", "failed"),
        ("rejected", "TASK_STATE_REJECTED", "failed"),
    ],
)
def test_state_names(state: str, v10: str, seed: str) -> None:
    assert a2a.state_name("1.0", state) == v10
    assert a2a.state_name("0.3", state) == state
    assert a2a.seed_state(state) == seed


def test_render_task_versions() -> None:
    t10 = a2a.render_task("1.0", TASK)
    assert "kind" not in t10
    assert t10["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    assert t10["status"]["message"]["role"] == "ROLE_AGENT"
    assert [m["role"] for m in t10["history"]] == ["ROLE_USER", "ROLE_AGENT"]
    t03 = a2a.render_task("0.3", TASK)
    assert t03["kind"] == "task"
    assert t03["status"]["state"] == "input-required"
    assert t03["history"][0] == {
        "kind": "message",
        "messageId": "m1",
        "role": "user",
        "parts": [{"kind": "text", "text": "hi"}],
    }
    assert t03["artifacts"][0]["parts"] == [{"kind": "text", "text": "x"}]
    assert [m["messageId"] for m in a2a.render_task("1.0", TASK, 1)["history"]] == ["m2"]
    assert "history" not in a2a.render_task("1.0", TASK, 0)
    assert a2a.render_send_result("1.0", TASK) == {"task": t10}
    assert a2a.render_send_result("0.3", TASK) == t03


def test_render_stream_events() -> None:
    upd = a2a.StatusUpdate(TASK, final=True)
    assert set(a2a.render_stream_event("1.0", upd)) == {"statusUpdate"}
    assert "final" not in a2a.render_stream_event("1.0", upd)["statusUpdate"]
    s03 = a2a.render_stream_event("0.3", upd)
    assert s03["kind"] == "status-update" and s03["final"] is True
    art = a2a.ArtifactUpdate("t1", "c1", {"artifactId": "a", "parts": [{"text": "x"}]}, True, False)
    assert a2a.render_stream_event("1.0", art) == {
        "artifactUpdate": {
            "taskId": "t1",
            "contextId": "c1",
            "artifact": {"artifactId": "a", "parts": [{"text": "x"}]},
            "append": True,
            "lastChunk": False,
        }
    }
    assert a2a.render_stream_event("0.3", art)["kind"] == "artifact-update"
    snap = a2a.render_stream_event("1.0", a2a.TaskSnapshot(TASK))
    assert set(snap) == {"task"}
    assert a2a.render_stream_event("0.3", a2a.TaskSnapshot(TASK))["kind"] == "task"


def test_task_json_round_trip() -> None:
    again = a2a.task_from_json(a2a.task_to_json(TASK))
    assert a2a.render_task("1.0", again) == a2a.render_task("1.0", TASK)
    assert again.result_text == "x"


def test_agent_card_shape() -> None:
    card = a2a.agent_card(
        name="bot",
        description="",
        base_url="https://h.example/",
        skills=[("search", "Search the web.")],
    )
    url = "https://h.example/agents/bot/a2a"
    assert card["supportedInterfaces"] == [
        {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
        {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
    ]
    assert card["url"] == url
    assert card["preferredTransport"] == "JSONRPC"
    assert card["protocolVersion"] == "0.3.0"
    assert card["capabilities"] == {"streaming": True, "pushNotifications": False}
    assert card["skills"] == [
        {"id": "search", "name": "search", "description": "Search the web.", "tags": ["tool"]}
    ]
    assert card["description"]
    assert "security" not in card and "securitySchemes" not in card
    secured = a2a.agent_card(
        name="bot", description="d", base_url="http://h", skills=[], auth_required=True
    )
    assert secured["security"] == [{"bearer": []}]
    assert secured["skills"][0]["id"] == "chat"  # never empty


def test_iso_timestamp() -> None:
    assert a2a.iso_timestamp(1_767_225_600_123) == "2026-01-01T00:00:00.123Z"


def test_seed_request() -> None:
    assert a2a.parse_seed_request(
        {"message": {"role": "user", "parts": [{"type": "text", "text": "hi"}]}}
    ) == [("user", [{"text": "hi"}])]
    msgs = a2a.parse_seed_request(
        {
            "messages": [
                {"role": "user", "parts": [{"type": "text", "text": "a"}]},
                {"role": "assistant", "parts": [{"type": "text", "text": "b"}]},
                {
                    "role": "user",
                    "parts": [
                        {
                            "type": "file",
                            "file": {"name": "f", "mimeType": "text/plain", "data": "eA=="},
                        },
                        {"type": "data", "data": {"k": 1}},
                    ],
                },
            ]
        }
    )
    assert [r for r, _ in msgs] == ["user", "agent", "user"]
    assert msgs[-1][1] == [
        {"raw": "eA==", "mediaType": "text/plain", "filename": "f"},
        {"data": {"k": 1}},
    ]
    for bad in (
        {},
        {"message": {"parts": []}},
        {"messages": [{"role": "agent", "parts": [{"type": "text", "text": "x"}]}]},
        [],
    ):
        with pytest.raises(a2a.A2AError):
            a2a.parse_seed_request(bad)
