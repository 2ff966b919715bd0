"""A2A (PROTOCOLS.md §6): versions 1.0 and 0.3 over JSON-RPC, and the seed REST dialect. No I/O.

Theory of operation
-------------------
One request is handled in three pure steps, each of which raises :class:`A2AError` (a JSON-RPC
error with the right A2A code) on bad input:

1. :func:`negotiate` picks the protocol version from the ``A2A-Version`` header and checks that
   the method belongs to it (PascalCase methods are 1.x, slash methods 0.3; a mismatch is
   ``-32009``), returning the version-independent operation (``"send"``, ``"get"``, …).
2. ``parse_*_params`` validate the params and convert the wire shapes into the canonical form
   used everywhere inside trioagents: messages are dicts ``{messageId, role, parts, contextId?,
   taskId?, metadata?}`` with ``role`` ``"user"``/``"agent"`` and 1.0-shaped parts (``{text}``,
   ``{raw, mediaType, filename?}``, ``{url, mediaType?, filename?}``, ``{data}``); task states
   are the 0.3 names (``"working"``, ``"input-required"``, …).
3. ``render_*`` turn canonical tasks, messages and stream events back into the wire shape of
   the caller's version (1.0 wraps stream items as ``{"task"|"statusUpdate"|…: …}``, uses
   ``ROLE_*``/``TASK_STATE_*`` names; 0.3 tags objects with ``kind`` and marks the last status
   update ``final``).

Errors carry the 1.0 ``google.rpc.ErrorInfo`` detail only when answering a 1.x caller.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
import orjson

from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    error as jsonrpc_error,
)

__all__ = [
    "V10",
    "V03",
    "Version",
    "TASK_NOT_FOUND",
    "TASK_NOT_CANCELABLE",
    "PUSH_NOTIFICATION_NOT_SUPPORTED",
    "UNSUPPORTED_OPERATION",
    "CONTENT_TYPE_NOT_SUPPORTED",
    "INVALID_AGENT_RESPONSE",
    "EXTENDED_CARD_NOT_CONFIGURED",
    "EXTENSION_SUPPORT_REQUIRED",
    "VERSION_NOT_SUPPORTED",
    "ERROR_REASONS",
    "STATES",
    "TERMINAL_STATES",
    "INTERRUPTED_STATES",
    "METHODS",
    "A2AError",
    "Task",
    "SendParams",
    "StatusUpdate",
    "ArtifactUpdate",
    "TaskSnapshot",
    "StreamEvent",
    "negotiate",
    "error_message",
    "parse_send_params",
    "parse_task_id_params",
    "parse_list_params",
    "part_from_wire",
    "part_to_wire",
    "message_from_wire",
    "render_message",
    "render_task",
    "render_stream_event",
    "render_send_result",
    "state_name",
    "seed_state",
    "iso_timestamp",
    "agent_card",
    "card_etag",
    "task_to_json",
    "task_from_json",
    "parse_seed_request",
    "seed_event",
    "seed_task",
]

V10 = "1.0"
"""Protocol version 1.0 (``A2A-Version: 1.0``, PascalCase methods)."""
V03 = "0.3"
"""Protocol version 0.3 (no header or ``A2A-Version: 0.3``, slash methods)."""
Version = str
"""A protocol version: :data:`V10` or :data:`V03`."""

TASK_NOT_FOUND = -32001
TASK_NOT_CANCELABLE = -32002
PUSH_NOTIFICATION_NOT_SUPPORTED = -32003
UNSUPPORTED_OPERATION = -32004
CONTENT_TYPE_NOT_SUPPORTED = -32005
INVALID_AGENT_RESPONSE = -32006
EXTENDED_CARD_NOT_CONFIGURED = -32007
EXTENSION_SUPPORT_REQUIRED = -32008
VERSION_NOT_SUPPORTED = -32009

ERROR_REASONS: dict[int, str] = {
    PARSE_ERROR: "PARSE_ERROR",
    INVALID_REQUEST: "INVALID_REQUEST",
    METHOD_NOT_FOUND: "METHOD_NOT_FOUND",
    INVALID_PARAMS: "INVALID_PARAMS",
    INTERNAL_ERROR: "INTERNAL_ERROR",
    TASK_NOT_FOUND: "TASK_NOT_FOUND",
    TASK_NOT_CANCELABLE: "TASK_NOT_CANCELABLE",
    PUSH_NOTIFICATION_NOT_SUPPORTED: "PUSH_NOTIFICATION_NOT_SUPPORTED",
    UNSUPPORTED_OPERATION: "UNSUPPORTED_OPERATION",
    CONTENT_TYPE_NOT_SUPPORTED: "CONTENT_TYPE_NOT_SUPPORTED",
    INVALID_AGENT_RESPONSE: "INVALID_AGENT_RESPONSE",
    EXTENDED_CARD_NOT_CONFIGURED: "EXTENDED_AGENT_CARD_NOT_CONFIGURED",
    EXTENSION_SUPPORT_REQUIRED: "EXTENSION_SUPPORT_REQUIRED",
    VERSION_NOT_SUPPORTED: "VERSION_NOT_SUPPORTED",
}
"""The ``google.rpc.ErrorInfo`` reason of every error code (the names a2a-sdk uses)."""

_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_DOMAIN = "a2a-protocol.org"

STATES = (
    "submitted",
    "working",
    "input-required",
    "auth-required",
    "completed",
    "canceled",
    "failed",
    "rejected",
)
"""Canonical task states (the 0.3 names)."""
TERMINAL_STATES = frozenset({"completed", "canceled", "failed", "rejected"})
"""States a task never leaves."""
INTERRUPTED_STATES = frozenset({"input-required", "auth-required"})
"""States where the turn ended but the task waits for the client."""

_SEED_STATES = {
    "submitted": "pending",
    "working": "running",
    "input-required": "input_required",
    "auth-required": "auth_required",
    "completed": "completed",
    "canceled": "cancelled",
    "failed": "failed",
    "rejected": "failed",
}

METHODS: dict[str, dict[str, str]] = {
    V10: {
        "SendMessage": "send",
        "SendStreamingMessage": "stream",
        "GetTask": "get",
        "CancelTask": "cancel",
        "SubscribeToTask": "subscribe",
        "ListTasks": "list",
        "CreateTaskPushNotificationConfig": "push",
        "GetTaskPushNotificationConfig": "push",
        "ListTaskPushNotificationConfigs": "push",
        "DeleteTaskPushNotificationConfig": "push",
        "GetExtendedAgentCard": "extended_card",
    },
    V03: {
        "message/send": "send",
        "message/stream": "stream",
        "tasks/get": "get",
        "tasks/cancel": "cancel",
        "tasks/resubscribe": "subscribe",
        "tasks/pushNotificationConfig/set": "push",
        "tasks/pushNotificationConfig/get": "push",
        "tasks/pushNotificationConfig/list": "push",
        "tasks/pushNotificationConfig/delete": "push",
        "agent/getAuthenticatedExtendedCard": "extended_card",
    },
}
"""Method name → operation, per version."""


class A2AError(Exception):
    """An A2A request failed: rendered as a JSON-RPC error (HTTP 200).

    Args:
        code: the JSON-RPC / A2A error code (``-32001`` … ``-32009`` or a standard one).
        message: human-readable text.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def error_message(id: Any, code: int, message: str, version: str | None) -> dict[str, Any]:
    """The JSON-RPC error response; 1.x callers also get the ``ErrorInfo`` detail."""
    data = None
    if version == V10:
        data = [
            {"@type": _ERROR_INFO, "reason": ERROR_REASONS.get(code, "UNKNOWN"), "domain": _DOMAIN}
        ]
    return jsonrpc_error(id, code, message, data)


# --------------------------------------------------------------------------------------------
# Version negotiation
# --------------------------------------------------------------------------------------------


def _header_version(header: str | None) -> Version:
    value = (header or "").strip()
    if not value:
        return V03
    head = value.split(".")
    if head[0] == "1" and all(p.isdigit() for p in head[1:]):
        return V10
    if len(head) >= 2 and head[0] == "0" and head[1] == "3" and all(p.isdigit() for p in head[2:]):
        return V03
    raise A2AError(
        VERSION_NOT_SUPPORTED,
        f"A2A-Version {value!r} is not supported (supported: 1.0, 0.3)",
    )


def negotiate(header: str | None, method: str, *, lenient: bool = False) -> tuple[Version, str]:
    """The protocol version and operation of a request.

    The version is the ``A2A-Version`` header (absent or empty ⇒ ``0.3``; any ``1.x`` ⇒
    ``1.0``). PascalCase methods need 1.x and slash methods 0.3; with ``lenient`` the method
    decides instead.

    Returns:
        ``(version, operation)``: operation is ``send``, ``stream``, ``get``, ``cancel``,
        ``subscribe``, ``list``, ``push`` or ``extended_card``.

    Raises:
        A2AError: ``-32009`` for an unsupported header or a method of the other version,
            ``-32601`` for an unknown method.
    """
    try:
        version = _header_version(header)
    except A2AError:
        if not lenient:
            raise
        version = V10 if method in METHODS[V10] else V03
    op = METHODS[version].get(method)
    if op is not None:
        return version, op
    other: Version = V03 if version == V10 else V10
    if method in METHODS[other]:
        if lenient:
            return other, METHODS[other][method]
        raise A2AError(
            VERSION_NOT_SUPPORTED,
            f"method {method!r} belongs to A2A {other}, but the request is A2A {version} "
            f"(A2A-Version header {'absent' if not (header or '').strip() else repr(header)})",
        )
    raise A2AError(METHOD_NOT_FOUND, f"Method not found: {method!r}")


# --------------------------------------------------------------------------------------------
# Parts and messages
# --------------------------------------------------------------------------------------------


def _bad(message: str) -> A2AError:
    return A2AError(INVALID_PARAMS, f"Invalid params: {message}")


def _opt_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(f"{where}.{key} must be a string")
    return value


def _metadata(obj: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    value = obj.get("metadata")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(f"{where}.metadata must be an object")
    return value


def part_from_wire(version: str, obj: Any, where: str = "part") -> dict[str, Any]:
    """Convert one wire part into the canonical (1.0-shaped) part.

    Raises:
        A2AError: ``-32602`` when the part is not valid for ``version``.
    """
    if not isinstance(obj, dict):
        raise _bad(f"{where} must be an object")
    meta = _metadata(obj, where)
    out: dict[str, Any]
    if version == V03:
        kind = obj.get("kind")
        if kind == "text" or (kind is None and "text" in obj):
            text = obj.get("text")
            if not isinstance(text, str):
                raise _bad(f"{where}.text must be a string")
            out = {"text": text}
        elif kind == "file" or (kind is None and "file" in obj):
            file = obj.get("file")
            if not isinstance(file, dict):
                raise _bad(f"{where}.file must be an object")
            name = _opt_str(file, "name", f"{where}.file")
            mime = _opt_str(file, "mimeType", f"{where}.file")
            if isinstance(file.get("bytes"), str):
                out = {"raw": file["bytes"], "mediaType": mime or "application/octet-stream"}
            elif isinstance(file.get("uri"), str):
                out = {"url": file["uri"]}
                if mime:
                    out["mediaType"] = mime
            else:
                raise _bad(f"{where}.file needs 'bytes' or 'uri' (a string)")
            if name:
                out["filename"] = name
        elif kind == "data" or (kind is None and "data" in obj):
            if "data" not in obj:
                raise _bad(f"{where}.data is required")
            out = {"data": obj["data"]}
        else:
            raise _bad(f"{where}.kind must be 'text', 'file' or 'data'")
    else:
        present = [k for k in ("text", "raw", "url", "data") if k in obj]
        if len(present) != 1:
            raise _bad(f"{where} needs exactly one of 'text', 'raw', 'url', 'data'")
        key = present[0]
        value = obj[key]
        if key != "data" and not isinstance(value, str):
            raise _bad(f"{where}.{key} must be a string")
        out = {key: value}
        mime = _opt_str(obj, "mediaType", where)
        name = _opt_str(obj, "filename", where)
        if key == "raw":
            out["mediaType"] = mime or "application/octet-stream"
        elif mime:
            out["mediaType"] = mime
        if name:
            out["filename"] = name
    if meta:
        out["metadata"] = meta
    return out


def part_to_wire(version: str, part: Mapping[str, Any]) -> dict[str, Any]:
    """Render one canonical part for ``version``."""
    if version == V10:
        return dict(part)
    out: dict[str, Any]
    if "text" in part:
        out = {"kind": "text", "text": part["text"]}
    elif "raw" in part or "url" in part:
        file: dict[str, Any] = {"bytes": part["raw"]} if "raw" in part else {"uri": part["url"]}
        if part.get("mediaType"):
            file["mimeType"] = part["mediaType"]
        if part.get("filename"):
            file["name"] = part["filename"]
        out = {"kind": "file", "file": file}
    else:
        data = part.get("data")
        out = {"kind": "data", "data": data if isinstance(data, dict) else {"value": data}}
    if part.get("metadata"):
        out["metadata"] = part["metadata"]
    return out


_ROLES = {
    V10: {"ROLE_USER": "user", "ROLE_AGENT": "agent"},
    V03: {"user": "user", "agent": "agent"},
}


def message_from_wire(version: str, obj: Any, where: str = "message") -> dict[str, Any]:
    """Validate a wire message and return the canonical message.

    Raises:
        A2AError: ``-32602`` for a missing ``messageId``, bad role, no parts, bad parts.
    """
    if not isinstance(obj, dict):
        raise _bad(f"{where} must be an object")
    message_id = obj.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        raise _bad(f"{where}.messageId is required (a non-empty string)")
    role = _ROLES[version].get(obj.get("role"))  # type: ignore[arg-type]
    if role is None:
        raise _bad(f"{where}.role must be one of {sorted(_ROLES[version])}")
    parts = obj.get("parts")
    if not isinstance(parts, list) or not parts:
        raise _bad(f"{where}.parts must be a non-empty array")
    out: dict[str, Any] = {
        "messageId": message_id,
        "role": role,
        "parts": [part_from_wire(version, p, f"{where}.parts[{i}]") for i, p in enumerate(parts)],
    }
    for key in ("contextId", "taskId"):
        value = _opt_str(obj, key, where)
        if value:
            out[key] = value
    meta = _metadata(obj, where)
    if meta:
        out["metadata"] = meta
    return out


def render_message(version: str, msg: Mapping[str, Any]) -> dict[str, Any]:
    """Render a canonical message for ``version``."""
    out: dict[str, Any] = {}
    if version == V03:
        out["kind"] = "message"
    out["messageId"] = msg["messageId"]
    if version == V10:
        out["role"] = "ROLE_USER" if msg["role"] == "user" else "ROLE_AGENT"
    else:
        out["role"] = msg["role"]
    out["parts"] = [part_to_wire(version, p) for p in msg["parts"]]
    for key in ("contextId", "taskId", "metadata"):
        if msg.get(key):
            out[key] = msg[key]
    return out


# --------------------------------------------------------------------------------------------
# Params
# --------------------------------------------------------------------------------------------


@attrs.frozen
class SendParams:
    """Validated ``SendMessage`` / ``message/send`` params.

    Attributes:
        message: the canonical user message.
        return_immediately: 1.0 ``configuration.returnImmediately`` / 0.3 ``blocking:false``.
        history_length: how many history messages to return (None: all).
        metadata: request metadata.
    """

    message: dict[str, Any]
    return_immediately: bool = False
    history_length: int | None = None
    metadata: dict[str, Any] | None = None


def _params_object(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise _bad("params must be an object")
    return params


def _history_length(obj: Mapping[str, Any], where: str) -> int | None:
    value = obj.get("historyLength")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(f"{where}historyLength must be a non-negative integer")
    return value


def parse_send_params(version: str, params: Any) -> SendParams:
    """Validate send/stream params.

    Raises:
        A2AError: ``-32602`` when they are not valid for ``version``.
    """
    p = _params_object(params)
    if "message" not in p:
        raise _bad("'message' is required")
    message = message_from_wire(version, p["message"])
    if message["role"] != "user":
        raise _bad("message.role must be the user role")
    config = p.get("configuration")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise _bad("configuration must be an object")
    if version == V10:
        flag = config.get("returnImmediately", False)
        if not isinstance(flag, bool):
            raise _bad("configuration.returnImmediately must be a boolean")
        immediate = flag
    else:
        blocking = config.get("blocking", True)
        if blocking is None:
            blocking = True
        if not isinstance(blocking, bool):
            raise _bad("configuration.blocking must be a boolean")
        immediate = not blocking
    return SendParams(
        message=message,
        return_immediately=immediate,
        history_length=_history_length(config, "configuration."),
        metadata=_metadata(p, "params"),
    )


def parse_task_id_params(params: Any) -> tuple[str, int | None]:
    """``{id, historyLength?}`` of get / cancel / subscribe (both versions).

    Raises:
        A2AError: ``-32602`` without a string ``id``.
    """
    p = _params_object(params)
    task_id = p.get("id")
    if not isinstance(task_id, str) or not task_id:
        raise _bad("'id' is required (a non-empty string)")
    return task_id, _history_length(p, "")


def parse_list_params(params: Any) -> tuple[str | None, int]:
    """``ListTasks`` params: ``(contextId, pageSize)`` (page size 1 to 100, default 50).

    Raises:
        A2AError: ``-32602`` for wrong types.
    """
    p = _params_object(params if params is not None else {})
    context_id = _opt_str(p, "contextId", "params")
    size = p.get("pageSize", 50) or 50
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise _bad("pageSize must be a positive integer")
    return context_id, min(size, 100)


# --------------------------------------------------------------------------------------------
# Tasks and stream events
# --------------------------------------------------------------------------------------------


def iso_timestamp(ms: int) -> str:
    """RFC 3339 UTC with milliseconds (``2026-01-01T00:00:00.000Z``) for Unix ``ms``."""
    dt = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def state_name(version: str, state: str) -> str:
    """The wire name of canonical ``state``: ``TASK_STATE_*`` for 1.0, itself for 0.3."""
    if version == V10:
        return "TASK_STATE_" + state.upper().replace("-", "_")
    return state


def seed_state(state: str) -> str:
    """The seed REST dialect's name of canonical ``state``."""
    return _SEED_STATES[state]


@attrs.define(eq=False)
class Task:
    """One A2A task (canonical form; mutable while its turn runs, stored as JSON).

    Attributes:
        id: UUID.
        context_id: the conversation (one agent session per context).
        agent: the agent's name.
        state: canonical state (see :data:`STATES`).
        timestamp: RFC 3339 time of the last status change.
        created_at: Unix seconds.
        updated_at: Unix seconds.
        history: canonical messages (user and agent).
        artifacts: ``{artifactId, name, parts}`` dicts.
        status_message: the agent message of the current status, if any.
        error: error text of a failed task.
        error_code: UAMP error code of a failed task.
        metadata: task metadata.
    """

    id: str
    context_id: str
    agent: str
    state: str
    timestamp: str
    created_at: float
    updated_at: float
    history: list[dict[str, Any]] = attrs.field(factory=list)
    artifacts: list[dict[str, Any]] = attrs.field(factory=list)
    status_message: dict[str, Any] | None = None
    error: str | None = None
    error_code: str | None = None
    metadata: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        """Whether the task reached a terminal state."""
        return self.state in TERMINAL_STATES

    @property
    def result_text(self) -> str:
        """The text of the task's artifacts."""
        return "".join(p.get("text", "") for a in self.artifacts for p in a.get("parts", ()))


def task_to_json(task: Task) -> bytes:
    """Serialize a task for a store."""
    return orjson.dumps(attrs.asdict(task, recurse=False))


def task_from_json(data: bytes | str) -> Task:
    """Load a task a store saved with :func:`task_to_json`."""
    obj = orjson.loads(data)
    fields = {f.name for f in attrs.fields(Task)}
    return Task(**{k: v for k, v in obj.items() if k in fields})


def _status(version: str, task: Task) -> dict[str, Any]:
    status: dict[str, Any] = {"state": state_name(version, task.state)}
    if task.status_message is not None:
        status["message"] = render_message(version, task.status_message)
    status["timestamp"] = task.timestamp
    return status


def render_task(version: str, task: Task, history_length: int | None = None) -> dict[str, Any]:
    """Render a task (``history_length``: keep only the last N history messages)."""
    out: dict[str, Any] = {}
    if version == V03:
        out["kind"] = "task"
    out["id"] = task.id
    out["contextId"] = task.context_id
    out["status"] = _status(version, task)
    history = task.history
    if history_length is not None:
        history = history[len(history) - history_length :] if history_length else []
    if history:
        out["history"] = [render_message(version, m) for m in history]
    if task.artifacts:
        out["artifacts"] = [_artifact(version, a) for a in task.artifacts]
    if task.metadata:
        out["metadata"] = task.metadata
    return out


def _artifact(version: str, artifact: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in artifact.items() if k != "parts"}
    out["parts"] = [part_to_wire(version, p) for p in artifact.get("parts", ())]
    return out


@attrs.frozen
class TaskSnapshot:
    """Stream item: the whole task (the first item of a stream or subscription)."""

    task: Task


@attrs.frozen
class StatusUpdate:
    """Stream item: the task's status changed (``final`` ends the stream)."""

    task: Task
    final: bool


@attrs.frozen
class ArtifactUpdate:
    """Stream item: one chunk of an artifact."""

    task_id: str
    context_id: str
    artifact: dict[str, Any]
    append: bool
    last_chunk: bool


StreamEvent = TaskSnapshot | StatusUpdate | ArtifactUpdate


def render_stream_event(version: str, event: StreamEvent) -> dict[str, Any]:
    """The JSON-RPC ``result`` of one stream item for ``version``."""
    if isinstance(event, TaskSnapshot):
        task = render_task(version, event.task)
        return {"task": task} if version == V10 else task
    if isinstance(event, StatusUpdate):
        out: dict[str, Any] = {}
        if version == V03:
            out["kind"] = "status-update"
        out["taskId"] = event.task.id
        out["contextId"] = event.task.context_id
        out["status"] = _status(version, event.task)
        if version == V03:
            out["final"] = event.final
            return out
        return {"statusUpdate": out}
    art: dict[str, Any] = {}
    if version == V03:
        art["kind"] = "artifact-update"
    art["taskId"] = event.task_id
    art["contextId"] = event.context_id
    art["artifact"] = _artifact(version, event.artifact)
    art["append"] = event.append
    art["lastChunk"] = event.last_chunk
    return {"artifactUpdate": art} if version == V10 else art


def render_send_result(version: str, task: Task, history_length: int | None = None) -> Any:
    """The result of a unary send: ``{"task": …}`` (1.0) or the task with ``kind`` (0.3)."""
    rendered = render_task(version, task, history_length)
    return {"task": rendered} if version == V10 else rendered


# --------------------------------------------------------------------------------------------
# Agent card
# --------------------------------------------------------------------------------------------


def agent_card(
    *,
    name: str,
    description: str,
    base_url: str,
    skills: Iterable[tuple[str, str]],
    version: str = "1.0.0",
    auth_required: bool = False,
) -> dict[str, Any]:
    """The hybrid A2A 1.0 + 0.3 agent card (§6.1).

    Args:
        name: agent name.
        description: one line (a default is used when empty).
        base_url: absolute server base (``public_url`` or scheme + Host), no trailing slash.
        skills: ``(name, description)`` of each tool; an agent without tools gets one
            ``chat`` skill so the card is never empty.
        version: the agent's version.
        auth_required: add the bearer security scheme.
    """
    url = f"{base_url.rstrip('/')}/agents/{name}/a2a"
    desc = description or f"The {name} agent."
    skill_list = [{"id": n, "name": n, "description": d or n, "tags": ["tool"]} for n, d in skills]
    if not skill_list:
        skill_list = [{"id": "chat", "name": "chat", "description": desc, "tags": ["chat"]}]
    card: dict[str, Any] = {
        "name": name,
        "description": desc,
        "version": version,
        "supportedInterfaces": [
            {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": V10},
            {"url": url, "protocolBinding": "JSONRPC", "protocolVersion": V03},
        ],
        "url": url,
        "preferredTransport": "JSONRPC",
        "protocolVersion": "0.3.0",
        "capabilities": {"streaming": True, "pushNotifications": False},
        "defaultInputModes": ["text"],
        "defaultOutputModes": ["text"],
        "skills": skill_list,
    }
    if auth_required:
        card["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        }
        card["security"] = [{"bearer": []}]
    return card


def card_etag(body: bytes) -> str:
    """A strong ETag for a serialized card."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


# --------------------------------------------------------------------------------------------
# Seed REST dialect
# --------------------------------------------------------------------------------------------


def _seed_part(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _bad(f"{where} must be an object")
    kind = obj.get("type") or obj.get("kind")
    if kind == "text" or (kind is None and isinstance(obj.get("text"), str)):
        if not isinstance(obj.get("text"), str):
            raise _bad(f"{where}.text must be a string")
        return {"text": obj["text"]}
    if kind == "file":
        file = obj.get("file", obj)
        if not isinstance(file, dict):
            raise _bad(f"{where}.file must be an object")
        mime = _opt_str(file, "mimeType", where)
        name = _opt_str(file, "name", where)
        out: dict[str, Any]
        if isinstance(file.get("data"), str):
            out = {"raw": file["data"], "mediaType": mime or "application/octet-stream"}
        elif isinstance(file.get("uri"), str):
            out = {"url": file["uri"]}
            if mime:
                out["mediaType"] = mime
        else:
            raise _bad(f"{where}.file needs 'data' or 'uri'")
        if name:
            out["filename"] = name
        return out
    if kind == "data":
        if "data" not in obj:
            raise _bad(f"{where}.data is required")
        return {"data": obj["data"]}
    raise _bad(f"{where}.type must be 'text', 'file' or 'data'")


def _seed_message(obj: Any, where: str) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(obj, dict):
        raise _bad(f"{where} must be an object")
    role = obj.get("role", "user")
    if role not in ("user", "agent", "assistant", "system"):
        raise _bad(f"{where}.role must be 'user', 'agent', 'assistant' or 'system'")
    parts = obj.get("parts")
    if parts is None and isinstance(obj.get("content"), str):
        parts = [{"type": "text", "text": obj["content"]}]
    if not isinstance(parts, list) or not parts:
        raise _bad(f"{where}.parts must be a non-empty array")
    return ("agent" if role == "assistant" else role), [
        _seed_part(p, f"{where}.parts[{i}]") for i, p in enumerate(parts)
    ]


def parse_seed_request(body: Any) -> list[tuple[str, list[dict[str, Any]]]]:
    """``POST /tasks`` body → ``[(role, canonical parts)]``, the last one from the user.

    Raises:
        A2AError: ``-32602`` (rendered by the caller as HTTP 400) when the body is invalid.
    """
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object")
    if "messages" in body:
        raw = body["messages"]
        if not isinstance(raw, list) or not raw:
            raise _bad("'messages' must be a non-empty array")
        messages = [_seed_message(m, f"messages[{i}]") for i, m in enumerate(raw)]
    elif "message" in body:
        messages = [_seed_message(body["message"], "message")]
    else:
        raise _bad("'message' or 'messages' is required")
    if messages[-1][0] != "user":
        raise _bad("the last message must come from the user")
    return messages


def seed_event(event: str, data: Mapping[str, Any]) -> tuple[str, bytes]:
    """``(event name, JSON data)`` of one seed SSE event (``task.started`` …)."""
    return event, orjson.dumps(data)


def seed_task(task: Task) -> dict[str, Any]:
    """``GET /tasks/{id}``: ``{id, status, createdAt, updatedAt, result, error}``."""
    done = task.state == "completed"
    return {
        "id": task.id,
        "status": seed_state(task.state),
        "createdAt": task.created_at,
        "updatedAt": task.updated_at,
        "result": {"content": task.result_text} if done else None,
        "error": task.error,
    }
