"""JSON-RPC 2.0 messages (used by A2A and ACP): parse one message, build replies. No I/O."""

from __future__ import annotations

from typing import Any

import attrs
import orjson

__all__ = [
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "JsonRpcError",
    "Request",
    "Response",
    "parse_message",
    "result",
    "error",
    "notification",
    "request",
    "dumps",
]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

Id = str | int | None


class JsonRpcError(Exception):
    """An error to answer with: ``{"code", "message", "data"?}``.

    Attributes:
        id: the request id it answers (None when the request could not be read).
    """

    def __init__(self, code: int, message: str, data: Any = None, *, id: Id = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.id = id

    def to_message(self) -> dict[str, Any]:
        """The error response object."""
        return error(self.id, self.code, self.message, self.data)


@attrs.frozen
class Request:
    """A request (``id`` present) or a notification (``is_notification``)."""

    method: str
    params: Any = None
    id: Id = None
    is_notification: bool = False


@attrs.frozen
class Response:
    """A response to one of our requests: ``result`` or ``error``."""

    id: Id
    result: Any = None
    error: dict[str, Any] | None = None


def parse_message(data: str | bytes | dict[str, Any]) -> Request | Response:
    """Parse one JSON-RPC message.

    Raises:
        JsonRpcError: ``PARSE_ERROR`` for invalid JSON, ``INVALID_REQUEST`` for anything that
            is not a JSON-RPC 2.0 object (batches included: callers that support them split
            first).
    """
    if isinstance(data, dict):
        obj: Any = data
    else:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise JsonRpcError(PARSE_ERROR, f"Parse error: {exc}") from None
    if not isinstance(obj, dict):
        raise JsonRpcError(INVALID_REQUEST, "Invalid Request: expected a JSON object")
    msg_id = obj.get("id")
    if msg_id is not None and (isinstance(msg_id, bool) or not isinstance(msg_id, (str, int))):
        raise JsonRpcError(INVALID_REQUEST, "Invalid Request: id must be a string or an integer")
    if obj.get("jsonrpc") != "2.0":
        raise JsonRpcError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"', id=msg_id)
    if "method" in obj:
        method = obj["method"]
        if not isinstance(method, str) or not method:
            raise JsonRpcError(
                INVALID_REQUEST, "Invalid Request: method must be a string", id=msg_id
            )
        params = obj.get("params")
        if params is not None and not isinstance(params, (dict, list)):
            raise JsonRpcError(
                INVALID_PARAMS, "Invalid params: must be an object or an array", id=msg_id
            )
        return Request(method=method, params=params, id=msg_id, is_notification="id" not in obj)
    if "result" in obj or "error" in obj:
        err = obj.get("error")
        return Response(
            id=msg_id, result=obj.get("result"), error=err if isinstance(err, dict) else None
        )
    raise JsonRpcError(INVALID_REQUEST, "Invalid Request: no method, result or error", id=msg_id)


def result(id: Id, value: Any) -> dict[str, Any]:
    """A success response."""
    return {"jsonrpc": "2.0", "id": id, "result": value}


def error(id: Id, code: int, message: str, data: Any = None) -> dict[str, Any]:
    """An error response (``data`` omitted when None)."""
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": id, "error": err}


def notification(method: str, params: Any = None) -> dict[str, Any]:
    """A notification (no id)."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def request(id: Id, method: str, params: Any = None) -> dict[str, Any]:
    """A request we send."""
    msg = notification(method, params)
    msg["id"] = id
    return msg


def dumps(message: dict[str, Any]) -> bytes:
    """Serialize a message."""
    return orjson.dumps(message)
