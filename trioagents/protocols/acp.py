"""Zed's Agent Client Protocol (PROTOCOLS.md §8): the JSON-RPC method table, no I/O.

Theory of operation
-------------------
ACP is JSON-RPC 2.0 (:mod:`trioagents.protocols.jsonrpc` parses and builds the messages). This
module holds everything about ACP itself that does not need I/O:

* **Inbound:** :func:`classify` names what a request is (``acp``, ``seed``, ``client_only``,
  ``unknown``); ``parse_*`` validate params and raise :class:`~.jsonrpc.JsonRpcError`
  (``-32602``) with the request id; :func:`content_from_blocks` turns ACP content blocks into
  UAMP content items for the agent.
* **Outbound:** :class:`UpdateRenderer` turns the UAMP server events of one prompt into
  ``session/update`` notifications; :func:`prompt_reply` turns the terminal event into the
  ``session/prompt`` answer (``stopReason`` + ``usage``, or a JSON-RPC error);
  :class:`SeedRenderer` does the same for the seed ``prompt/submit`` dialect (§8.3).
* **Framing:** :class:`LineDecoder` splits newline-delimited JSON (stdio) with a size bound;
  :func:`merge_chunks` combines consecutive text chunks of one session while a writer is behind.

A transport binds these to trio: it feeds messages in, runs ``run_response`` for prompts, and
writes what the renderers return.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from typing import Any, Literal

import attrs
import orjson

from .. import uamp
from .jsonrpc import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    JsonRpcError,
    Request,
    error,
    notification,
    result,
)

__all__ = [
    "PROTOCOL_VERSION",
    "PAYMENT_REQUIRED",
    "with_payment_token",
    "SESSION_SCOPED_METHODS",
    "SEED_METHODS",
    "Kind",
    "ACP_METHODS",
    "classify",
    "protocol_version",
    "unknown_method",
    "busy",
    "initialize_result",
    "seed_initialize_result",
    "NewSessionParams",
    "parse_new_session",
    "PromptParams",
    "parse_prompt",
    "parse_session_id",
    "content_from_blocks",
    "UpdateRenderer",
    "stop_reason",
    "usage_json",
    "prompt_reply",
    "error_reply",
    "SeedRenderer",
    "parse_seed_submit",
    "parse_tool_call",
    "tools_list_result",
    "tool_call_result",
    "merge_chunks",
    "LineDecoder",
    "LineTooLong",
]

PROTOCOL_VERSION = 1
"""The ACP protocol version this agent speaks (an integer on the wire)."""

PAYMENT_REQUIRED = -32402
"""JSON-RPC error code for a turn that needs payment (§8.1)."""

SESSION_SCOPED_METHODS = frozenset(
    {
        "session/prompt",
        "session/cancel",
        "session/set_mode",
        "session/set_config_option",
        "session/close",
    }
)
"""Methods whose HTTP POST must carry ``Acp-Session-Id`` (§8.2)."""

SEED_METHODS = frozenset({"prompt/submit", "chat/submit", "tools/list", "tools/call"})
"""The seed dialect's synchronous methods (§8.3); ``initialize`` without a version is one too."""

ACP_METHODS = frozenset(
    {
        "initialize",
        "authenticate",
        "session/new",
        "session/load",
        "session/prompt",
        "session/cancel",
        "session/close",
    }
)

_CLIENT_ONLY_PREFIXES = ("fs/", "terminal/")

_PAID_METHODS = frozenset({"session/prompt", "prompt/submit", "chat/submit"})

_PAYMENT_CODES = frozenset({"payment_required", "payment_failed", "payment_timeout"})

Kind = Literal["acp", "seed", "client_only", "unknown"]


def classify(req: Request) -> Kind:
    """What ``req`` is: an ACP method, a seed method, a client-side method, or unknown.

    ``initialize`` without ``protocolVersion`` is the seed ``initialize`` (§8.3).
    """
    method = req.method
    if method == "initialize":
        params = req.params if isinstance(req.params, dict) else {}
        return "acp" if "protocolVersion" in params else "seed"
    if method in ACP_METHODS:
        return "acp"
    if method in SEED_METHODS:
        return "seed"
    if method.startswith(_CLIENT_ONLY_PREFIXES):
        return "client_only"
    return "unknown"


def _params(req: Request) -> dict[str, Any]:
    if req.params is None:
        return {}
    if not isinstance(req.params, dict):
        raise JsonRpcError(INVALID_PARAMS, "Invalid params: expected an object", id=req.id)
    return req.params


def _bad(req: Request, message: str) -> JsonRpcError:
    return JsonRpcError(INVALID_PARAMS, f"Invalid params: {message}", id=req.id)


# --------------------------------------------------------------------------------------------
# initialize / authenticate / sessions
# --------------------------------------------------------------------------------------------


def protocol_version(req: Request) -> int:
    """The client's ``protocolVersion`` (``"1"`` is tolerated).

    Raises:
        JsonRpcError: ``-32602`` when it is not an integer (or a string of one).
    """
    raw = _params(req).get("protocolVersion")
    if isinstance(raw, bool):
        raise _bad(req, "protocolVersion must be an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw.strip())
    raise _bad(req, "protocolVersion must be an integer")


def initialize_result(
    req: Request, *, name: str, version: str, load_session: bool = False
) -> dict[str, Any]:
    """The ``initialize`` result: our version, capabilities, no auth methods, agent info.

    We answer with :data:`PROTOCOL_VERSION` whatever the client asked for; a client that does
    not speak it disconnects (that is how ACP negotiates).

    Raises:
        JsonRpcError: ``-32602`` for a malformed ``protocolVersion``.
    """
    protocol_version(req)
    return {
        "protocolVersion": PROTOCOL_VERSION,
        "agentCapabilities": {
            "loadSession": load_session,
            "promptCapabilities": {"image": True, "audio": True, "embeddedContext": True},
        },
        "authMethods": [],
        "agentInfo": {"name": name, "version": version},
    }


def seed_initialize_result(*, name: str, version: str) -> dict[str, Any]:
    """The seed ``initialize`` result (§8.3)."""
    return {
        "protocolVersion": "1.0",
        "serverInfo": {"name": name, "version": version},
        "capabilities": {"streaming": True, "tools": True},
    }


@attrs.frozen
class NewSessionParams:
    """``session/new`` params: the working directory and the client's MCP servers."""

    cwd: str
    mcp_servers: list[Any]


def parse_new_session(req: Request) -> NewSessionParams:
    """Validate ``session/new``.

    Raises:
        JsonRpcError: ``-32602`` when ``cwd`` is not a string or ``mcpServers`` not a list.
    """
    p = _params(req)
    cwd = p.get("cwd")
    if not isinstance(cwd, str):
        raise _bad(req, "cwd must be a string")
    servers = p.get("mcpServers", [])
    if servers is None:
        servers = []
    if not isinstance(servers, list):
        raise _bad(req, "mcpServers must be an array")
    return NewSessionParams(cwd=cwd, mcp_servers=servers)


def parse_session_id(req: Request) -> str:
    """The ``sessionId`` of a session-scoped request or notification.

    Raises:
        JsonRpcError: ``-32602`` when it is missing or not a string.
    """
    sid = _params(req).get("sessionId")
    if not isinstance(sid, str) or not sid:
        raise _bad(req, "sessionId must be a non-empty string")
    return sid


@attrs.frozen
class PromptParams:
    """``session/prompt`` params, with the content already in UAMP form.

    Attributes:
        session_id: the session.
        content: the user message: text alone, or a list of content items.
        payment_token: the per-turn payment token (§0.2), if any.
    """

    session_id: str
    content: str | list[uamp.ContentItem]
    payment_token: str | None = None


def parse_prompt(req: Request) -> PromptParams:
    """Validate ``session/prompt`` and convert its content blocks.

    Raises:
        JsonRpcError: ``-32602`` for a missing session id, an empty or malformed prompt.
    """
    sid = parse_session_id(req)
    p = _params(req)
    blocks = p.get("prompt")
    if not isinstance(blocks, list) or not blocks:
        raise _bad(req, "prompt must be a non-empty array of content blocks")
    try:
        items = content_from_blocks(blocks)
    except ValueError as exc:
        raise _bad(req, str(exc)) from None
    token = _payment_token(p)
    content: str | list[uamp.ContentItem]
    if all(isinstance(i, uamp.TextContent) for i in items):
        content = "".join(i.text for i in items if isinstance(i, uamp.TextContent))
    else:
        content = items
    return PromptParams(session_id=sid, content=content, payment_token=token)


def _payment_token(params: dict[str, Any]) -> str | None:
    """``payment_token``, else ``_meta.payment_token`` (§9.1); empty values do not count."""
    value = params.get("payment_token")
    if isinstance(value, str) and value:
        return value
    meta = params.get("_meta")
    if isinstance(meta, dict):
        value = meta.get("payment_token")
        if isinstance(value, str) and value:
            return value
    return None


def with_payment_token(data: Any, token: str | None) -> Any:
    """``data`` (a raw JSON-RPC request) with ``params.payment_token`` set to ``token`` when
    its params carry no token of their own (the ``X-PAYMENT`` header over HTTP, §9.1).

    Only prompts (``session/prompt``, seed ``prompt/submit``/``chat/submit``) take a token;
    anything else is returned unchanged.
    """
    if not token or not isinstance(data, dict) or data.get("method") not in _PAID_METHODS:
        return data
    params = data.get("params")
    if not isinstance(params, dict) or _payment_token(params) is not None:
        return data
    return {**data, "params": {**params, "payment_token": token}}


def _str(block: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = block.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{where}.{key} must be a string")
    return value


def _subtype(mime: str | None) -> str | None:
    if not mime or "/" not in mime:
        return None
    return mime.split("/", 1)[1].split(";", 1)[0].strip() or None


def content_from_blocks(blocks: Iterable[Any]) -> list[uamp.ContentItem]:
    """Convert ACP content blocks to UAMP content items.

    ``text`` stays text; ``image`` and ``audio`` keep their base64 data (or ``uri``) and the
    MIME subtype as ``format``; an embedded text ``resource`` and a ``resource_link`` (also
    ``resourceLink``) become text the model can read (``<resource uri="…">…</resource>``,
    ``[name](uri)``), each on its own line; a ``blob`` resource becomes a file item.

    Raises:
        ValueError: a block is not an object, has an unknown type or misses a field.
    """
    out: list[uamp.ContentItem] = []
    for i, block in enumerate(blocks):
        where = f"prompt[{i}]"
        if not isinstance(block, dict):
            raise ValueError(f"{where} must be an object")
        kind = block.get("type")
        sep = "\n" if out else ""
        if kind == "text":
            out.append(uamp.TextContent(text=_str(block, "text", where) or ""))
        elif kind == "image":
            data = _str(block, "data", where, required=False)
            uri = _str(block, "uri", where, required=False)
            if data is None and uri is None:
                raise ValueError(f"{where} needs data or uri")
            mime = _str(block, "mimeType", where, required=data is not None)
            image: Any = data if data is not None else {"url": uri}
            out.append(uamp.ImageContent(image=image, format=_subtype(mime)))
        elif kind == "audio":
            data = _str(block, "data", where)
            mime = _str(block, "mimeType", where)
            out.append(uamp.AudioContent(audio=data or "", format=_subtype(mime)))
        elif kind == "resource":
            res = block.get("resource")
            if not isinstance(res, dict):
                raise ValueError(f"{where}.resource must be an object")
            uri = _str(res, "uri", where + ".resource") or ""
            mime = _str(res, "mimeType", where + ".resource", required=False)
            if isinstance(res.get("text"), str):
                out.append(
                    uamp.TextContent(
                        text=f'{sep}<resource uri="{uri}">\n{res["text"]}\n</resource>'
                    )
                )
            elif isinstance(res.get("blob"), str):
                out.append(
                    uamp.FileContent(
                        file=res["blob"],
                        filename=posixpath.basename(uri.rstrip("/")) or uri,
                        mime_type=mime,
                    )
                )
            else:
                raise ValueError(f"{where}.resource needs text or blob")
        elif kind in ("resource_link", "resourceLink"):
            uri = _str(block, "uri", where) or ""
            name = _str(block, "name", where, required=False) or uri
            out.append(uamp.TextContent(text=f"{sep}[{name}]({uri})"))
        else:
            raise ValueError(f"{where}.type {kind!r} is not supported")
    return out


# --------------------------------------------------------------------------------------------
# session/update and the prompt's answer
# --------------------------------------------------------------------------------------------


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


class UpdateRenderer:
    """Renders the UAMP events of one prompt as ``session/update`` notifications.

    It remembers the tool calls it announced, so progress of an unknown call is dropped
    instead of reaching the client as an update for a call it never saw.
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._calls: set[str] = set()

    def _update(self, update: dict[str, Any]) -> dict[str, Any]:
        return notification("session/update", {"sessionId": self.session_id, "update": update})

    def render(self, event: Any) -> list[dict[str, Any]]:
        """The notifications for one UAMP server event (often none)."""
        t = type(event)
        if t is uamp.ResponseDelta:
            d = event.delta
            dt = type(d)
            if dt is uamp.TextDelta:
                if not d.text:
                    return []
                return [
                    self._update(
                        {"sessionUpdate": "agent_message_chunk", "content": _text_block(d.text)}
                    )
                ]
            if dt is uamp.ToolCallDelta:
                c = d.tool_call
                self._calls.add(c.id)
                update: dict[str, Any] = {
                    "sessionUpdate": "tool_call",
                    "toolCallId": c.id,
                    "title": c.name,
                    "kind": "other",
                    "status": "in_progress",
                }
                try:
                    update["rawInput"] = orjson.loads(c.arguments or "{}")
                except orjson.JSONDecodeError:
                    update["rawInput"] = c.arguments
                return [self._update(update)]
            if dt is uamp.ToolResultDelta:
                r = d.tool_result
                if r.call_id not in self._calls:
                    return []
                failed = bool(r.is_error) or r.status == "error"
                return [
                    self._update(
                        {
                            "sessionUpdate": "tool_call_update",
                            "toolCallId": r.call_id,
                            "status": "failed" if failed else "completed",
                            "content": [{"type": "content", "content": _text_block(r.result)}],
                        }
                    )
                ]
            if dt is uamp.ToolProgressDelta:
                p = d.tool_progress
                if p.call_id not in self._calls:
                    return []
                return [
                    self._update(
                        {
                            "sessionUpdate": "tool_call_update",
                            "toolCallId": p.call_id,
                            "status": "in_progress",
                            "content": [{"type": "content", "content": _text_block(p.text)}],
                        }
                    )
                ]
            return []
        if t is uamp.Thinking:
            if not event.content:
                return []
            return [
                self._update(
                    {"sessionUpdate": "agent_thought_chunk", "content": _text_block(event.content)}
                )
            ]
        return []


def stop_reason(terminal: Any, *, finish_reason: str = "stop", cancelled: bool = False) -> str:
    """The ``stopReason`` for a finished prompt.

    ``cancelled`` wins (the client asked); a ``length`` finish is ``max_tokens``; a
    ``content_filter``/``refusal`` finish is ``refusal``; otherwise ``end_turn``.
    """
    if cancelled or terminal is None or type(terminal) is uamp.ResponseCancelled:
        return "cancelled"
    if finish_reason in ("length", "max_tokens"):
        return "max_tokens"
    if finish_reason in ("content_filter", "refusal"):
        return "refusal"
    return "end_turn"


def usage_json(usage: uamp.UsageInfo | None) -> dict[str, Any] | None:
    """ACP ``usage`` (camelCase token counts), or None when unknown."""
    if usage is None:
        return None
    out: dict[str, Any] = {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.total_tokens,
    }
    if usage.cached_tokens is not None:
        out["cachedReadTokens"] = usage.cached_tokens
    return out


def error_reply(id: Any, err: uamp.ErrorInfo) -> dict[str, Any]:
    """A JSON-RPC error for a failed turn: ``-32402`` for payment, else ``-32603``.

    The UAMP code and details travel in ``data`` so clients can tell failures apart.
    """
    data: dict[str, Any] = {"code": err.code}
    if err.details:
        data["details"] = err.details
    reason = (err.details or {}).get("reason")
    code = (
        PAYMENT_REQUIRED
        if err.code in _PAYMENT_CODES or reason in _PAYMENT_CODES
        else INTERNAL_ERROR
    )
    return error(id, code, err.message, data)


def prompt_reply(
    id: Any, terminal: Any, *, finish_reason: str = "stop", cancelled: bool = False
) -> dict[str, Any]:
    """The answer to ``session/prompt``.

    Args:
        id: the request id.
        terminal: the response's terminal UAMP event (None if it was cancelled).
        finish_reason: the run's finish reason (``Context.finish_reason``).
        cancelled: the client sent ``session/cancel`` for this prompt.

    A ``response.error`` becomes a JSON-RPC error (:func:`error_reply`) unless the prompt was
    cancelled, which always resolves ``{"stopReason": "cancelled"}`` (§8.1).
    """
    if not cancelled and type(terminal) is uamp.ResponseError:
        return error_reply(id, terminal.error)
    value: dict[str, Any] = {
        "stopReason": stop_reason(terminal, finish_reason=finish_reason, cancelled=cancelled)
    }
    if not cancelled and type(terminal) is uamp.ResponseDone:
        usage = usage_json(terminal.response.usage)
        if usage is not None:
            value["usage"] = usage
    return result(id, value)


# --------------------------------------------------------------------------------------------
# Seed methods (§8.3)
# --------------------------------------------------------------------------------------------


def parse_seed_submit(req: Request) -> tuple[list[Any], str | None]:
    """``prompt/submit`` params: the OpenAI-shaped ``messages`` and the payment token.

    A bare ``prompt``/``content`` string is accepted as one user message.

    Raises:
        JsonRpcError: ``-32602`` when there are no messages.
    """
    p = _params(req)
    messages = p.get("messages")
    if messages is None:
        text = p.get("prompt", p.get("content"))
        if isinstance(text, str):
            messages = [{"role": "user", "content": text}]
    if not isinstance(messages, list) or not messages:
        raise _bad(req, "messages must be a non-empty array")
    return messages, _payment_token(p)


class SeedRenderer:
    """Renders one seed ``prompt/submit`` turn: ``prompt/started``, ``prompt/progress``…"""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id

    def started(self) -> dict[str, Any]:
        """The ``prompt/started`` notification."""
        return notification("prompt/started", {"requestId": self.request_id})

    def render(self, event: Any) -> list[dict[str, Any]]:
        """``prompt/progress`` for each text delta; other events are not part of the dialect."""
        if (
            type(event) is uamp.ResponseDelta
            and type(event.delta) is uamp.TextDelta
            and event.delta.text
        ):
            return [
                notification(
                    "prompt/progress",
                    {
                        "content": event.delta.text,
                        "role": "assistant",
                        "requestId": self.request_id,
                    },
                )
            ]
        return []

    def final(self, id: Any, terminal: Any, text: str) -> dict[str, Any]:
        """The final answer: ``{"status":"complete","content"}`` or a JSON-RPC error."""
        if type(terminal) is uamp.ResponseError:
            return error_reply(id, terminal.error)
        return result(id, {"status": "complete", "content": text})


def parse_tool_call(req: Request) -> tuple[str, str]:
    """``tools/call`` params: the tool name and its arguments as a JSON string.

    Raises:
        JsonRpcError: ``-32602`` for a missing name or arguments that are not an object.
    """
    p = _params(req)
    name = p.get("name")
    if not isinstance(name, str) or not name:
        raise _bad(req, "name must be a non-empty string")
    args = p.get("arguments", {})
    if args is None:
        args = {}
    if isinstance(args, str):
        return name, args
    if not isinstance(args, dict):
        raise _bad(req, "arguments must be an object")
    return name, orjson.dumps(args).decode()


def tools_list_result(tools: Iterable[tuple[str, str, dict[str, Any]]]) -> dict[str, Any]:
    """The ``tools/list`` result from ``(name, description, parameters)`` triples."""
    return {
        "tools": [
            {"name": n, "description": d, "inputSchema": p, "parameters": p} for n, d, p in tools
        ]
    }


def tool_call_result(text: str, *, is_error: bool) -> dict[str, Any]:
    """The ``tools/call`` result."""
    return {"result": text, "content": [_text_block(text)], "isError": is_error}


def unknown_method(req: Request) -> JsonRpcError:
    """``-32601`` for a method we do not serve (client-side ``fs/*``/``terminal/*`` too)."""
    if classify(req) == "client_only":
        msg = f"Method not found: {req.method} is served by the client, not by the agent"
    else:
        msg = f"Method not found: {req.method}"
    return JsonRpcError(METHOD_NOT_FOUND, msg, id=req.id)


def busy(req: Request, session_id: str) -> JsonRpcError:
    """``-32600`` for a prompt sent while the session is still answering another."""
    return JsonRpcError(
        INVALID_REQUEST,
        f"Invalid Request: session {session_id} is already running a prompt",
        id=req.id,
    )


# --------------------------------------------------------------------------------------------
# Framing helpers
# --------------------------------------------------------------------------------------------


def _chunk_text(msg: dict[str, Any]) -> tuple[str, str] | None:
    """(sessionId, text) of an ``agent_message_chunk`` text notification, else None."""
    if msg.get("method") != "session/update" or "id" in msg:
        return None
    params = msg.get("params")
    if not isinstance(params, dict):
        return None
    update = params.get("update")
    if not isinstance(update, dict) or update.get("sessionUpdate") != "agent_message_chunk":
        return None
    content = update.get("content")
    if not isinstance(content, dict) or content.get("type") != "text" or len(update) != 2:
        return None
    sid, text = params.get("sessionId"), content.get("text")
    if not isinstance(sid, str) or not isinstance(text, str) or len(params) != 2:
        return None
    return sid, text


def merge_chunks(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge runs of ``agent_message_chunk`` text updates of the same session (order kept).

    Used by writers that fell behind: fewer frames, same text, never across sessions.
    """
    if len(messages) < 2:
        return messages
    out: list[dict[str, Any]] = []
    run_sid: str | None = None
    run: list[str] = []

    def flush() -> None:
        if run_sid is None:
            return
        out.append(
            notification(
                "session/update",
                {
                    "sessionId": run_sid,
                    "update": {
                        "sessionUpdate": "agent_message_chunk",
                        "content": _text_block("".join(run)),
                    },
                },
            )
        )

    for msg in messages:
        chunk = _chunk_text(msg)
        if chunk is not None and chunk[0] == run_sid:
            run.append(chunk[1])
            continue
        flush()
        run_sid, run = None, []
        if chunk is not None:
            run_sid, run = chunk[0], [chunk[1]]
        else:
            out.append(msg)
    flush()
    return out


@attrs.frozen
class LineTooLong:
    """Marker returned by :class:`LineDecoder` for a line over the size bound (dropped)."""

    size: int


class LineDecoder:
    """Splits newline-delimited JSON into lines, bounded by ``max_size`` bytes per line.

    A line over the bound is dropped (up to its newline) and reported once as
    :class:`LineTooLong`, so one oversized message never grows memory or desynchronises the
    stream. Blank lines are skipped; ``\\r\\n`` endings are accepted.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = bytearray()
        self._skipping = 0

    def feed(self, data: bytes) -> list[bytes | LineTooLong]:
        """Add ``data``; return the complete lines (and overflow markers) in order."""
        out: list[bytes | LineTooLong] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            piece = data[start:nl]
            start = nl + 1
            if self._skipping:
                out.append(LineTooLong(self._skipping + len(piece)))
                self._skipping = 0
                continue
            if len(self._buf) + len(piece) > self.max_size:
                out.append(LineTooLong(len(self._buf) + len(piece)))
                self._buf.clear()
                continue
            self._buf += piece
            line = bytes(self._buf).strip()
            self._buf.clear()
            if line:
                out.append(line)
        rest = data[start:]
        if self._skipping:
            self._skipping += len(rest)
        elif len(self._buf) + len(rest) > self.max_size:
            self._skipping = len(self._buf) + len(rest)
            self._buf.clear()
        else:
            self._buf += rest
        return out

    def finish(self) -> list[bytes | LineTooLong]:
        """End of input: the last unterminated line, if any."""
        if self._skipping:
            size, self._skipping = self._skipping, 0
            return [LineTooLong(size)]
        line = bytes(self._buf).strip()
        self._buf.clear()
        return [line] if line else []
