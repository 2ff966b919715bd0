"""The connection-agent wire format (PROTOCOLS.md §4), without I/O.

Framework frames are JSON text frames whose ``type`` is one of ``cf_agent_identity``,
``cf_agent_state``, ``cf_agent_state_error`` or ``rpc``. Everything else a client sends is the
agent's own business and reaches ``on_message`` untouched. :func:`parse_client_frame` tells the
two apart; the ``*_frame`` builders render what the server sends. No trio import: this module is
shared by the server and the Python client and is tested synchronously.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
import orjson

__all__ = [
    "RESERVED_SEGMENTS",
    "INSTANCE_NAME",
    "kebab_case",
    "valid_instance_name",
    "StateUpdate",
    "RpcRequest",
    "RpcCancel",
    "BadFrame",
    "parse_client_frame",
    "identity_frame",
    "state_frame",
    "state_error_frame",
    "rpc_result_frame",
    "rpc_error_frame",
    "dumps",
]

RESERVED_SEGMENTS = frozenset(
    {
        "uamp",
        "realtime",
        "acp",
        "a2a",
        "tasks",
        "v1",
        "chat",
        "models",
        "capabilities",
        "health",
        ".well-known",
    }
)
"""Path segments that name transports under ``/agents/{agent}``, never instances (§4)."""

INSTANCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""What an instance (or agent) path segment may look like (§0.1)."""

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def kebab_case(name: str) -> str:
    """``ChatAgent`` → ``chat-agent``, ``HTTPBot`` → ``http-bot``; kebab names stay as they are."""
    return _CAMEL.sub("-", name).replace("_", "-").lower()


def valid_instance_name(name: str) -> bool:
    """Whether ``name`` may address an instance: a valid segment that is not reserved."""
    return INSTANCE_NAME.fullmatch(name) is not None and name not in RESERVED_SEGMENTS


@attrs.frozen
class StateUpdate:
    """A client's ``{"type":"cf_agent_state","state":…}``: it proposes a whole new state."""

    state: Any


@attrs.frozen
class RpcRequest:
    """``{"type":"rpc","id","method","args"}``: call an ``@rpc`` method."""

    id: str
    method: str
    args: list[Any]


@attrs.frozen
class RpcCancel:
    """``{"type":"rpc","id","cancel":true}``: cancel a running call."""

    id: str


@attrs.frozen
class BadFrame:
    """A framework frame that is malformed; ``reply`` is the frame to answer with (or None)."""

    reply: str | None
    message: str


def parse_client_frame(data: str | bytes) -> StateUpdate | RpcRequest | RpcCancel | BadFrame | None:
    """Classify one client frame.

    Returns None for the agent's own messages (anything that is not a JSON object whose
    ``type`` is ``cf_agent_state`` or ``rpc``); those go to ``on_message`` as they are.
    """
    if isinstance(data, bytes) or not data.startswith("{"):
        return None
    if '"cf_agent_state"' not in data and '"rpc"' not in data:
        return None  # fast path: most user messages never need a full parse here
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    kind = obj.get("type")
    if kind == "cf_agent_state":
        if "state" not in obj:
            return BadFrame(state_error_frame("cf_agent_state needs 'state'"), "no state")
        return StateUpdate(obj["state"])
    if kind != "rpc":
        return None
    rid = obj.get("id")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        return BadFrame(None, "rpc frame without a string 'id'")
    rid = str(rid)
    if obj.get("cancel") is True:
        return RpcCancel(rid)
    method = obj.get("method")
    if not isinstance(method, str):
        return BadFrame(rpc_error_frame(rid, "rpc needs a string 'method'"), "no method")
    args = obj.get("args", [])
    if not isinstance(args, list):
        return BadFrame(rpc_error_frame(rid, "rpc 'args' must be an array"), "bad args")
    return RpcRequest(rid, method, args)


def dumps(obj: Any) -> str:
    """Render a JSON frame as text (non-string keys and dataclasses as orjson allows)."""
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS).decode()


def identity_frame(instance: str, agent: str) -> str:
    """``{"type":"cf_agent_identity","name","agent"}``, sent first on accept."""
    return dumps({"type": "cf_agent_identity", "name": instance, "agent": agent})


def state_frame(state: Any, version: int) -> str:
    """``{"type":"cf_agent_state","state","version"}``."""
    return dumps({"type": "cf_agent_state", "state": state, "version": version})


def state_error_frame(error: str) -> str:
    """``{"type":"cf_agent_state_error","error"}``: the sender's state change was refused."""
    return dumps({"type": "cf_agent_state_error", "error": error})


def rpc_result_frame(rid: str, result: Any, *, done: bool) -> str:
    """A successful (possibly partial, ``done: false``) RPC result."""
    return dumps({"type": "rpc", "id": rid, "success": True, "result": result, "done": done})


def rpc_error_frame(rid: str, error: str, *, cancelled: bool = False) -> str:
    """A failed RPC call (``cancelled: true`` when the client cancelled it)."""
    frame: dict[str, Any] = {
        "type": "rpc",
        "id": rid,
        "success": False,
        "error": error,
        "done": True,
    }
    if cancelled:
        frame["cancelled"] = True
    return dumps(frame)
