"""Relay messages (PROTOCOLS.md §3): parsing and building both sides' JSON. No I/O.

Agent side (``/v1/ws/agent``)::

    ← {"type":"event","event_id","app_id","thread_id","session_key","payload"}
    → {"type":"token","event_id","token"}          (0..n)
    → {"type":"reply","event_id","content","done":true,"metadata":{…}}   or
    → {"type":"error","event_id","error","code"}
    ↔ {"type":"ping"} / {"type":"pong"}

App side (``/v1/ws/app``)::

    → {"type":"event","agent_id","thread_id","payload"} | {"type":"discover"} | {"type":"ping"}
    ← accepted / token / reply / error / agents / pong
"""

from __future__ import annotations

from typing import Any

import attrs
import orjson

__all__ = [
    "DEFAULT_RELAY_URL",
    "MAX_PAYLOAD",
    "RELAY_ERROR_STATUS",
    "RelayEvent",
    "RelayProtocolError",
    "parse",
    "parse_agent_event",
    "parse_app_event",
    "user_text",
    "agent_session_key",
    "hub_session_key",
    "dumps",
    "token",
    "reply",
    "error",
]

DEFAULT_RELAY_URL = "wss://api.relay.ckgworks.com/v1/ws/agent"
"""Where a Relay connector dials by default."""

MAX_PAYLOAD = 64 * 1024
"""Largest event ``payload`` in bytes (else ``PAYLOAD_TOO_LARGE``)."""

RELAY_ERROR_STATUS = {
    "AGENT_OFFLINE": 503,
    "NOT_ALLOWED": 403,
    "AGENT_NOT_FOUND": 404,
    "AGENT_TIMEOUT": 504,
    "AGENT_ERROR": 500,
    "AGENT_PROCESSING_ERROR": 500,
    "PAYLOAD_TOO_LARGE": 413,
    "RATE_LIMITED": 429,
    "INVALID_MESSAGE": 400,
}
"""Relay error codes and the HTTP status each corresponds to (§3.2)."""


class RelayProtocolError(ValueError):
    """A Relay message that cannot be used; ``code`` is the Relay error code to answer."""

    def __init__(self, message: str, code: str = "INVALID_MESSAGE") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.frozen
class RelayEvent:
    """An ``event`` as an agent receives it."""

    event_id: str
    app_id: str
    thread_id: str
    session_key: str
    payload: Any


def parse(data: str | bytes) -> dict[str, Any]:
    """One frame → a JSON object with a string ``type``.

    Raises:
        RelayProtocolError: not JSON, not an object, or no ``type``.
    """
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RelayProtocolError(f"frame is not JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise RelayProtocolError("frame must be a JSON object with a 'type'")
    return obj


def _str(obj: dict[str, Any], key: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str) or not value:
        raise RelayProtocolError(f"'{key}' must be a non-empty string")
    return value


def _check_payload(payload: Any) -> None:
    if len(orjson.dumps(payload)) > MAX_PAYLOAD:
        raise RelayProtocolError(f"payload exceeds {MAX_PAYLOAD} bytes", code="PAYLOAD_TOO_LARGE")


def parse_agent_event(obj: dict[str, Any]) -> RelayEvent:
    """An ``event`` frame received by an agent connector.

    Raises:
        RelayProtocolError: a required field is missing, or the payload is too large.
    """
    event_id = _str(obj, "event_id")
    app_id = obj.get("app_id") if isinstance(obj.get("app_id"), str) else "app"
    thread_id = obj.get("thread_id") if isinstance(obj.get("thread_id"), str) else event_id
    key = obj.get("session_key")
    payload = obj.get("payload")
    _check_payload(payload)
    return RelayEvent(
        event_id=event_id,
        app_id=str(app_id),
        thread_id=str(thread_id),
        session_key=key if isinstance(key, str) and key else agent_session_key(app_id, thread_id),
        payload=payload,
    )


def parse_app_event(obj: dict[str, Any]) -> tuple[str, str, Any]:
    """An app's ``event`` submission → ``(agent_id, thread_id, payload)``.

    Raises:
        RelayProtocolError: ``INVALID_MESSAGE`` or ``PAYLOAD_TOO_LARGE``.
    """
    agent_id = _str(obj, "agent_id")
    thread_id = _str(obj, "thread_id")
    if "payload" not in obj:
        raise RelayProtocolError("'payload' is required")
    _check_payload(obj["payload"])
    return agent_id, thread_id, obj["payload"]


def user_text(payload: Any) -> str:
    """The user's text: ``payload.message`` when a string, else the payload as JSON."""
    if isinstance(payload, dict) and isinstance(payload.get("message"), str):
        return str(payload["message"])
    if isinstance(payload, str):
        return payload
    return orjson.dumps(payload).decode()


def agent_session_key(app_id: Any, thread_id: Any) -> str:
    """``relay:{app_id}:{thread_id}`` (what the agent sees)."""
    return f"relay:{app_id}:{thread_id}"


def hub_session_key(agent_id: str, app_id: str, thread_id: str) -> str:
    """``relay:{agent_id}:{app_id}:{thread_id}`` (what the app sees)."""
    return f"relay:{agent_id}:{app_id}:{thread_id}"


def dumps(message: dict[str, Any]) -> str:
    """A message as one text frame."""
    return orjson.dumps(message).decode()


def token(event_id: str, text: str, **extra: Any) -> dict[str, Any]:
    """A streamed ``token``."""
    return {"type": "token", "event_id": event_id, "token": text, **extra}


def reply(event_id: str, content: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """The agent's final ``reply``."""
    return {
        "type": "reply",
        "event_id": event_id,
        "content": content,
        "done": True,
        "metadata": metadata,
    }


def error(event_id: str | None, message: str, code: str, **extra: Any) -> dict[str, Any]:
    """An ``error`` (``event_id`` None for errors about a frame without one)."""
    return {"type": "error", "event_id": event_id, "error": message, "code": code, **extra}
