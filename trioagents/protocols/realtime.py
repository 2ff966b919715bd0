"""OpenAI Realtime over WebSocket, sans I/O (PROTOCOLS.md §7): GA and beta naming.

Theory of operation
-------------------
One Realtime connection is one session: a :class:`SessionConfig`, a :class:`Conversation` of
items and at most one response at a time. Everything here is pure: JSON text in, dicts out.

* :func:`decode_client_event` turns one text frame into a validated :class:`ClientEvent`, or
  raises :class:`RealtimeError` carrying the protocol's error shape (``invalid_request_error``
  with a ``code`` and ``param``); the transport answers it with :meth:`RealtimeCodec.error` and
  keeps the socket open.
* :class:`RealtimeCodec` builds every server event of one connection in its :class:`Flavour`
  (GA or beta names, GA or beta session and item shapes) and stamps ``event_id``.
* :class:`ResponseRenderer` maps the UAMP server events of one response (what
  ``run_response`` emits) to the Realtime sequence::

      response.created
      response.output_item.added        (message, in_progress)
      response.content_part.added       (part text "")
      response.output_text.delta  x N   (beta: response.text.delta)
      response.output_text.done         (beta: response.text.done)
      response.content_part.done
      response.output_item.done         (completed)
      [function_call item: output_item.added, function_call_arguments.delta/.done,
       output_item.done]                (one per client tool call)
      response.done                     (completed | cancelled | failed)

  A cancelled response closes its open item as ``incomplete`` (no ``…text.done``) and ends with
  ``response.done{status:"cancelled", status_details{type:"cancelled",
  reason:"client_cancelled"}}``; a failed one ends with ``response.done{status:"failed",
  status_details{type:"failed", error}}``. Agent tools run server-side and do not surface as
  items (the client could not answer them); client tools (session tools) do, as
  ``function_call`` items, and the response ends there.

Items are kept in one canonical (GA) shape; :meth:`RealtimeCodec.item` renders them per flavour
(beta assistant content is ``text``, GA ``output_text``).
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Callable, Iterable
from typing import Any

import attrs
import orjson

from .. import uamp

__all__ = [
    "AUDIO_BUFFER_LIMIT",
    "CLIENT_EVENT_TYPES",
    "ClientEvent",
    "Conversation",
    "Flavour",
    "RealtimeCodec",
    "RealtimeError",
    "ResponseRenderer",
    "SessionConfig",
    "audio_seconds",
    "decode_audio",
    "decode_audio_chunk",
    "input_audio_item",
    "decode_client_event",
    "merge_realtime_deltas",
    "choose_flavour",
    "normalize_item",
    "response_tools",
]

AUDIO_BUFFER_LIMIT = 15 << 20
"""Largest input audio buffer (decoded bytes) a connection may hold (§7: ≤ 15 MiB)."""

NewId = Callable[[str], str]


class Flavour(enum.Enum):
    """The event naming of one connection."""

    GA = "ga"
    BETA = "beta"

    @property
    def text_prefix(self) -> str:
        """``response.output_text`` (GA) or ``response.text`` (beta)."""
        return "response.output_text" if self is Flavour.GA else "response.text"

    @property
    def assistant_text_type(self) -> str:
        """Content part type of assistant text in items: ``output_text`` (GA) or ``text``."""
        return "output_text" if self is Flavour.GA else "text"


def choose_flavour(headers: dict[str, str], query: dict[str, str], *, seed_path: bool) -> Flavour:
    """The flavour of a new connection (§7).

    Header ``OpenAI-Beta: realtime=v1`` ⇒ beta; else query ``flavor=beta|ga``; else GA, except
    that a seed-path connection (``/agents/{name}/realtime``) without a ``model`` query
    parameter is a seed client and gets beta (OpenAI SDKs always send ``model``).

    Args:
        headers: request headers with lower-case names.
        query: query parameters.
        seed_path: the connection came in on the seed route.
    """
    beta = headers.get("openai-beta", "")
    if "realtime=v1" in (v.strip().lower() for v in beta.split(",")):
        return Flavour.BETA
    flavor = query.get("flavor", "").lower()
    if flavor in ("beta", "ga"):
        return Flavour(flavor)
    if seed_path and "model" not in query:
        return Flavour.BETA
    return Flavour.GA


class RealtimeError(Exception):
    """A client event the server refuses; rendered as a Realtime ``error`` event.

    Attributes:
        code: machine-readable code (``unknown_event``, ``invalid_value``…).
        message: human-readable explanation.
        param: the offending parameter, if any.
        event_id: the client's ``event_id`` of the refused event, if it had one.
        type: the error type (``invalid_request_error`` unless the server is at fault).
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id = event_id
        self.type = type


# --------------------------------------------------------------------------------------------
# Client events
# --------------------------------------------------------------------------------------------

CLIENT_EVENT_TYPES = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.delete",
        "conversation.item.truncate",
        "response.create",
        "response.cancel",
        "payment.submit",
    }
)
"""The client event types a Realtime connection accepts (others: ``unknown_event``)."""


@attrs.frozen
class ClientEvent:
    """One validated client event.

    Attributes:
        type: the event type (one of :data:`CLIENT_EVENT_TYPES`).
        event_id: the client's ``event_id``, if any.
        data: the whole event object (validated for this type).
    """

    type: str
    event_id: str | None
    data: dict[str, Any] = attrs.field(eq=False, repr=False)


def _opt_str(obj: dict[str, Any], key: str, where: str, eid: str | None) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise RealtimeError(
            "invalid_type", f"'{where}{key}' must be a string", param=where + key, event_id=eid
        )
    return value


def _req_str(obj: dict[str, Any], key: str, where: str, eid: str | None) -> str:
    value = _opt_str(obj, key, where, eid)
    if value is None:
        raise RealtimeError(
            "missing_required_parameter",
            f"missing required parameter '{where}{key}'",
            param=where + key,
            event_id=eid,
        )
    return value


def _opt_obj(obj: dict[str, Any], key: str, eid: str | None) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RealtimeError("invalid_type", f"'{key}' must be an object", param=key, event_id=eid)
    return value


def _opt_int(obj: dict[str, Any], key: str, eid: str | None, *, required: bool = False) -> int:
    value = obj.get(key)
    if value is None and not required:
        return 0
    if value is None:
        raise RealtimeError(
            "missing_required_parameter",
            f"missing required parameter '{key}'",
            param=key,
            event_id=eid,
        )
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RealtimeError(
            "invalid_value", f"'{key}' must be a non-negative integer", param=key, event_id=eid
        )
    return value


def decode_client_event(text: str | bytes) -> ClientEvent:
    """Decode and validate one client text frame.

    Unknown fields are ignored. Item contents are validated by :func:`normalize_item` when the
    event is handled; session fields by :meth:`SessionConfig.update`.

    Raises:
        RealtimeError: not a JSON object (``invalid_json``), no ``type`` (``invalid_event``),
            an unknown type (``unknown_event``) or a missing/mistyped field.
    """
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise RealtimeError("invalid_json", f"frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RealtimeError("invalid_json", "frame must be a JSON object")
    raw_eid = obj.get("event_id")
    eid = raw_eid if isinstance(raw_eid, str) else None
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        raise RealtimeError("invalid_event", "event has no 'type'", param="type", event_id=eid)
    if kind not in CLIENT_EVENT_TYPES:
        raise RealtimeError(
            "unknown_event", f"unknown event type {kind!r}", param="type", event_id=eid
        )
    if kind == "session.update":
        if not isinstance(obj.get("session"), dict):
            raise RealtimeError(
                "missing_required_parameter",
                "missing required parameter 'session'",
                param="session",
                event_id=eid,
            )
    elif kind == "input_audio_buffer.append":
        _req_str(obj, "audio", "", eid)
    elif kind == "conversation.item.create":
        if not isinstance(obj.get("item"), dict):
            raise RealtimeError(
                "missing_required_parameter",
                "missing required parameter 'item'",
                param="item",
                event_id=eid,
            )
        _opt_str(obj, "previous_item_id", "", eid)
    elif kind in ("conversation.item.retrieve", "conversation.item.delete"):
        _req_str(obj, "item_id", "", eid)
    elif kind == "conversation.item.truncate":
        _req_str(obj, "item_id", "", eid)
        _opt_int(obj, "content_index", eid, required=True)
        _opt_int(obj, "audio_end_ms", eid, required=True)
    elif kind == "response.create":
        _opt_obj(obj, "response", eid)
    elif kind == "response.cancel":
        _opt_str(obj, "response_id", "", eid)
    elif kind == "payment.submit":
        _opt_obj(obj, "payment", eid)
    return ClientEvent(type=kind, event_id=eid, data=obj)


def decode_audio(audio: str, event_id: str | None = None) -> bytes:
    """Decode one base64 ``input_audio_buffer.append`` chunk.

    Raises:
        RealtimeError: the chunk is not valid base64 (``invalid_value``).
    """
    try:
        return base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise RealtimeError(
            "invalid_value",
            "'audio' must be base64-encoded PCM16",
            param="audio",
            event_id=event_id,
        ) from None


def decode_audio_chunk(audio: str, event_id: str | None = None) -> int:
    """Validate one base64 ``input_audio_buffer.append`` chunk; return its decoded size.

    Raises:
        RealtimeError: the chunk is not valid base64 (``invalid_value``).
    """
    return len(decode_audio(audio, event_id))


_BYTES_PER_SECOND = {"pcm16": 48000, "g711_ulaw": 8000, "g711_alaw": 8000}


def audio_seconds(nbytes: int, format: str = "pcm16") -> float:
    """The duration of ``nbytes`` of input audio (PCM16 24 kHz mono: 48,000 bytes a second;
    G.711: 8,000); an unknown format counts as PCM16."""
    return nbytes / _BYTES_PER_SECOND.get(format, 48000)


def input_audio_item(item_id: str, transcript: str | None = None) -> dict[str, Any]:
    """The canonical user item a committed audio buffer becomes (no audio kept, only the
    transcript once there is one)."""
    return {
        "id": item_id,
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


# --------------------------------------------------------------------------------------------
# Items and the conversation
# --------------------------------------------------------------------------------------------

_USER_PARTS = frozenset({"input_text", "input_audio", "input_image"})
_ASSISTANT_PARTS = frozenset({"output_text", "text", "output_audio", "audio"})


def normalize_item(item: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """Validate a client ``item`` and return it in the canonical (GA) shape, without ``id``.

    Accepts ``message`` (``user``/``system`` with ``input_text``/``input_audio``/
    ``input_image`` parts, ``assistant`` with ``output_text`` or beta ``text`` parts),
    ``function_call`` and ``function_call_output`` items.

    Raises:
        RealtimeError: an unsupported ``type``/``role``/part or a missing field.
    """
    kind = item.get("type", "message")
    where = "item."
    if kind == "function_call_output":
        return {
            "type": "function_call_output",
            "call_id": _req_str(item, "call_id", where, event_id),
            "output": _req_str(item, "output", where, event_id),
        }
    if kind == "function_call":
        return {
            "type": "function_call",
            "call_id": _req_str(item, "call_id", where, event_id),
            "name": _req_str(item, "name", where, event_id),
            "arguments": _opt_str(item, "arguments", where, event_id) or "",
        }
    if kind != "message":
        raise RealtimeError(
            "invalid_value",
            f"item type {kind!r} is not supported; use message, function_call or "
            "function_call_output",
            param="item.type",
            event_id=event_id,
        )
    role = item.get("role")
    if role not in ("user", "system", "assistant"):
        raise RealtimeError(
            "invalid_value",
            "'item.role' must be one of user, system, assistant",
            param="item.role",
            event_id=event_id,
        )
    content = item.get("content")
    if not isinstance(content, list):
        raise RealtimeError(
            "missing_required_parameter",
            "'item.content' must be an array of content parts",
            param="item.content",
            event_id=event_id,
        )
    allowed = _ASSISTANT_PARTS if role == "assistant" else _USER_PARTS
    if role == "system":
        allowed = frozenset({"input_text"})
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        pw = f"item.content[{i}]."
        if not isinstance(part, dict) or part.get("type") not in allowed:
            got = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise RealtimeError(
                "invalid_value",
                f"content part type {got!r} is not valid for a {role} message; "
                f"expected one of {sorted(allowed)}",
                param=pw + "type",
                event_id=event_id,
            )
        ptype = part["type"]
        if ptype in ("input_text", "output_text", "text"):
            text = _req_str(part, "text", pw, event_id)
            parts.append({"type": "output_text" if ptype == "text" else ptype, "text": text})
        elif ptype == "input_audio":
            out: dict[str, Any] = {"type": "input_audio"}
            for key in ("audio", "transcript"):
                value = _opt_str(part, key, pw, event_id)
                if value is not None:
                    out[key] = value
            out.setdefault("transcript", None)
            parts.append(out)
        elif ptype == "input_image":
            parts.append(
                {"type": "input_image", "image_url": _req_str(part, "image_url", pw, event_id)}
                | ({"detail": part["detail"]} if isinstance(part.get("detail"), str) else {})
            )
        else:  # assistant audio: keep only the transcript (text-only server)
            transcript = _opt_str(part, "transcript", pw, event_id)
            parts.append({"type": "output_audio", "transcript": transcript})
    return {"type": "message", "role": role, "content": parts}


@attrs.define(eq=False)
class _Entry:
    item: dict[str, Any] | None
    hidden: Any = None


class Conversation:
    """The ordered items of one Realtime session.

    Items are canonical dicts with an ``id`` (see :func:`normalize_item`). Hidden entries carry
    an opaque payload the transport wants kept in order (agent tool exchanges) without being
    visible, retrievable or deletable as items.
    """

    def __init__(self) -> None:
        self._entries: list[_Entry] = []

    def __len__(self) -> int:
        return sum(1 for e in self._entries if e.item is not None)

    def items(self) -> list[dict[str, Any]]:
        """The visible items, in order."""
        return [e.item for e in self._entries if e.item is not None]

    def entries(self) -> Iterable[tuple[dict[str, Any] | None, Any]]:
        """Every entry in order: ``(item, None)`` or ``(None, hidden_payload)``."""
        return [(e.item, e.hidden) for e in self._entries]

    def get(self, item_id: str) -> dict[str, Any] | None:
        """The item with ``item_id``, if present."""
        for e in self._entries:
            if e.item is not None and e.item["id"] == item_id:
                return e.item
        return None

    def last_id(self) -> str | None:
        """The id of the last visible item (``previous_item_id`` of the next append)."""
        for e in reversed(self._entries):
            if e.item is not None:
                return str(e.item["id"])
        return None

    def add(self, item: dict[str, Any], previous_item_id: str | None = None) -> str | None:
        """Insert ``item`` after ``previous_item_id`` (``"root"``: first; None: last).

        Returns:
            The id of the item now before it (None at the start).

        Raises:
            KeyError: ``previous_item_id`` names no item.
            ValueError: an item with the same id exists.
        """
        if self.get(item["id"]) is not None:
            raise ValueError(item["id"])
        if previous_item_id is None:
            prev = self.last_id()
            self._entries.append(_Entry(item))
            return prev
        if previous_item_id == "root":
            self._entries.insert(0, _Entry(item))
            return None
        for i, e in enumerate(self._entries):
            if e.item is not None and e.item["id"] == previous_item_id:
                self._entries.insert(i + 1, _Entry(item))
                return previous_item_id
        raise KeyError(previous_item_id)

    def add_hidden(self, payload: Any) -> None:
        """Append an invisible entry."""
        self._entries.append(_Entry(None, payload))

    def delete(self, item_id: str) -> bool:
        """Remove the item; False if absent."""
        for i, e in enumerate(self._entries):
            if e.item is not None and e.item["id"] == item_id:
                del self._entries[i]
                return True
        return False


# --------------------------------------------------------------------------------------------
# Session configuration
# --------------------------------------------------------------------------------------------

_MODALITIES = frozenset({"text", "audio"})


@attrs.define
class SessionConfig:
    """What ``session.update`` can change; rendered as the full session object.

    Attributes:
        instructions: extra instructions from the client.
        tools: client functions, flat ``{type:"function", name, description, parameters}``.
        tool_choice: ``auto`` / ``none`` / ``required`` or a function choice (stored, reported).
        modalities: output modalities (text only is produced; ``audio`` needs a speech hook).
        voice: reported back (no audio output without a speech hook).
        payment_token: the session's payment token (§9), never rendered.
        extra: other fields the client set that are reported back unchanged (beta audio
            formats, temperature…).
    """

    instructions: str | None = None
    tools: list[dict[str, Any]] = attrs.field(factory=list)
    tool_choice: Any = "auto"
    modalities: list[str] = attrs.field(factory=lambda: ["text"])
    voice: str = "alloy"
    payment_token: str | None = None
    extra: dict[str, Any] = attrs.field(factory=dict)

    def update(self, session: dict[str, Any], event_id: str | None = None) -> None:
        """Merge a ``session.update`` object (GA or beta field names).

        All fields are validated before any is applied, so a refused update changes nothing.

        Raises:
            RealtimeError: a field has the wrong type or value.
        """
        changes: dict[str, Any] = {}
        if "instructions" in session:
            changes["instructions"] = _opt_str(session, "instructions", "session.", event_id)
        if "tools" in session:
            changes["tools"] = _tools(session["tools"], event_id)
        if "tool_choice" in session:
            tc = session["tool_choice"]
            if not (tc in ("auto", "none", "required") or isinstance(tc, dict)):
                raise RealtimeError(
                    "invalid_value",
                    "'session.tool_choice' must be auto, none, required or a function",
                    param="session.tool_choice",
                    event_id=event_id,
                )
            changes["tool_choice"] = tc
        for key in ("output_modalities", "modalities"):
            if key in session:
                mods = session[key]
                if (
                    not isinstance(mods, list)
                    or not mods
                    or any(m not in _MODALITIES for m in mods)
                ):
                    raise RealtimeError(
                        "invalid_value",
                        f"'session.{key}' must be a non-empty array of 'text' / 'audio'",
                        param=f"session.{key}",
                        event_id=event_id,
                    )
                changes["modalities"] = list(mods)
        if "voice" in session:
            changes["voice"] = _opt_str(session, "voice", "session.", event_id) or "alloy"
        if "payment_token" in session:
            changes["payment_token"] = _opt_str(session, "payment_token", "session.", event_id)
        extra: dict[str, Any] = {
            k: session[k]
            for k in ("input_audio_format", "output_audio_format", "temperature", "speed")
            if k in session
        }
        for key, value in changes.items():
            setattr(self, key, value)
        self.extra.update(extra)

    def openai_tools(self) -> list[dict[str, Any]]:
        """The client functions in the OpenAI chat shape (what the agent core takes)."""
        return [
            {
                "type": "function",
                "function": {k: t[k] for k in ("name", "description", "parameters") if k in t},
            }
            for t in self.tools
        ]


def _tools(raw: Any, event_id: str | None, param: str = "session.tools") -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        raise RealtimeError(
            "invalid_type", f"'{param}' must be an array", param=param, event_id=event_id
        )
    out: list[dict[str, Any]] = []
    for i, t in enumerate(raw):
        if isinstance(t, dict) and isinstance(t.get("function"), dict):
            t = {"type": "function", **t["function"]}  # the chat shape, tolerated
        if (
            not isinstance(t, dict)
            or t.get("type", "function") != "function"
            or not isinstance(t.get("name"), str)
            or not t["name"]
        ):
            raise RealtimeError(
                "invalid_value",
                f"'{param}[{i}]' must be a function tool with a 'name'",
                param=f"{param}[{i}]",
                event_id=event_id,
            )
        tool: dict[str, Any] = {"type": "function", "name": t["name"]}
        if isinstance(t.get("description"), str):
            tool["description"] = t["description"]
        tool["parameters"] = (
            t["parameters"]
            if isinstance(t.get("parameters"), dict)
            else {"type": "object", "properties": {}}
        )
        out.append(tool)
    return out


def response_tools(response: dict[str, Any], event_id: str | None) -> list[dict[str, Any]] | None:
    """The ``response.create.response.tools`` override in the OpenAI chat shape (None: absent).

    Raises:
        RealtimeError: the tools are malformed.
    """
    if "tools" not in response:
        return None
    cfg = SessionConfig(tools=_tools(response["tools"], event_id, "response.tools"))
    return cfg.openai_tools()


# --------------------------------------------------------------------------------------------
# Server events
# --------------------------------------------------------------------------------------------


@attrs.define(eq=False)
class RealtimeCodec:
    """Builds the server events of one connection in its flavour.

    Args:
        flavour: GA or beta naming.
        new_id: id factory (``new_id("evt")`` → ``evt_…``).
        session_id: the session's id.
        model: the ``model`` reported in the session object (the agent's name).
    """

    flavour: Flavour
    new_id: NewId
    session_id: str
    model: str

    def event(self, type: str, **fields: Any) -> dict[str, Any]:
        """One server event with a fresh ``event_id``."""
        return {"type": type, "event_id": self.new_id("evt"), **fields}

    def error(
        self,
        code: str,
        message: str,
        *,
        param: str | None = None,
        event_id: str | None = None,
        type: str = "invalid_request_error",
    ) -> dict[str, Any]:
        """``error``; ``event_id`` is the client event it answers."""
        return self.event(
            "error",
            error={
                "type": type,
                "code": code,
                "message": message,
                "param": param,
                "event_id": event_id,
            },
        )

    def from_exception(self, exc: RealtimeError) -> dict[str, Any]:
        """``error`` for a refused client event."""
        return self.error(
            exc.code, exc.message, param=exc.param, event_id=exc.event_id, type=exc.type
        )

    # -- session -------------------------------------------------------------------------

    def session(self, cfg: SessionConfig) -> dict[str, Any]:
        """The full session object (``turn_detection`` always null: no server VAD)."""
        base: dict[str, Any] = {
            "id": self.session_id,
            "object": "realtime.session",
            "model": self.model,
            "instructions": cfg.instructions or "",
            "tools": [dict(t) for t in cfg.tools],
            "tool_choice": cfg.tool_choice,
        }
        if self.flavour is Flavour.GA:
            pcm = {"type": "audio/pcm", "rate": 24000}
            base.update(
                type="realtime",
                output_modalities=list(cfg.modalities),
                max_output_tokens="inf",
                audio={
                    "input": {"format": pcm, "transcription": None, "turn_detection": None},
                    "output": {"format": dict(pcm), "voice": cfg.voice},
                },
            )
        else:
            base.update(
                modalities=list(cfg.modalities),
                voice=cfg.voice,
                input_audio_format=cfg.extra.get("input_audio_format", "pcm16"),
                output_audio_format=cfg.extra.get("output_audio_format", "pcm16"),
                input_audio_transcription=None,
                turn_detection=None,
                max_response_output_tokens="inf",
            )
            if "temperature" in cfg.extra:
                base["temperature"] = cfg.extra["temperature"]
        return base

    def session_created(self, cfg: SessionConfig) -> dict[str, Any]:
        """``session.created`` (sent first, unprompted)."""
        return self.event("session.created", session=self.session(cfg))

    def session_updated(self, cfg: SessionConfig) -> dict[str, Any]:
        """``session.updated`` with the full session object."""
        return self.event("session.updated", session=self.session(cfg))

    # -- items ---------------------------------------------------------------------------

    def item(self, item: dict[str, Any]) -> dict[str, Any]:
        """Render a canonical item for the wire (beta assistant text parts are ``text``)."""
        out: dict[str, Any] = {"id": item["id"], "object": "realtime.item", **item}
        if item.get("role") == "assistant" and self.flavour is Flavour.BETA:
            out["content"] = [
                {**p, "type": "text"}
                if p.get("type") == "output_text"
                else ({**p, "type": "audio"} if p.get("type") == "output_audio" else p)
                for p in item["content"]
            ]
        out.setdefault("status", "completed")
        return out

    def item_added(
        self, item: dict[str, Any], previous_item_id: str | None
    ) -> list[dict[str, Any]]:
        """GA ``conversation.item.added`` + ``.done``; beta ``conversation.item.created``."""
        wire = self.item(item)
        if self.flavour is Flavour.GA:
            return [
                self.event("conversation.item.added", previous_item_id=previous_item_id, item=wire),
                self.event("conversation.item.done", previous_item_id=previous_item_id, item=wire),
            ]
        return [
            self.event("conversation.item.created", previous_item_id=previous_item_id, item=wire)
        ]

    def item_retrieved(self, item: dict[str, Any]) -> dict[str, Any]:
        """``conversation.item.retrieved``."""
        return self.event("conversation.item.retrieved", item=self.item(item))

    def item_deleted(self, item_id: str) -> dict[str, Any]:
        """``conversation.item.deleted``."""
        return self.event("conversation.item.deleted", item_id=item_id)

    def item_truncated(self, item_id: str, content_index: int, audio_end_ms: int) -> dict[str, Any]:
        """``conversation.item.truncated``."""
        return self.event(
            "conversation.item.truncated",
            item_id=item_id,
            content_index=content_index,
            audio_end_ms=audio_end_ms,
        )

    def audio_committed(self, item_id: str, previous_item_id: str | None) -> dict[str, Any]:
        """``input_audio_buffer.committed``."""
        return self.event(
            "input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id
        )

    def audio_cleared(self) -> dict[str, Any]:
        """``input_audio_buffer.cleared``."""
        return self.event("input_audio_buffer.cleared")

    def transcription_completed(
        self, item_id: str, transcript: str, *, seconds: float
    ) -> dict[str, Any]:
        """``conversation.item.input_audio_transcription.completed`` (both flavours).

        ``usage`` is the duration variant (the SDK requires one): ``seconds`` of audio.
        """
        return self.event(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage={"type": "duration", "seconds": seconds},
        )

    def transcription_failed(
        self, item_id: str, code: str, message: str, *, type: str = "transcription_error"
    ) -> dict[str, Any]:
        """``conversation.item.input_audio_transcription.failed`` (both flavours)."""
        return self.event(
            "conversation.item.input_audio_transcription.failed",
            item_id=item_id,
            content_index=0,
            error={"type": type, "code": code, "message": message, "param": None},
        )

    def renderer(self, response_id: str) -> ResponseRenderer:
        """A renderer for one response of this connection."""
        return ResponseRenderer(self, response_id)


def merge_realtime_deltas(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge runs of text deltas of the same item into one delta event (order kept).

    The merged event keeps the first event's ``event_id``; the text is exactly the
    concatenation, so a client accumulating deltas sees the same text.
    """
    if len(events) < 2:
        return events
    out: list[dict[str, Any]] = []
    for ev in events:
        t = ev["type"]
        if t in ("response.output_text.delta", "response.text.delta") and out:
            prev = out[-1]
            if (
                prev["type"] == t
                and prev["item_id"] == ev["item_id"]
                and prev["content_index"] == ev["content_index"]
            ):
                out[-1] = {**prev, "delta": prev["delta"] + ev["delta"]}
                continue
        out.append(ev)
    return out


_STATUS_ERROR_TYPES = {"rate_limit_exceeded": "rate_limit_error"}


_PAYMENT_EVENTS = (
    uamp.PaymentRequired,
    uamp.PaymentAccepted,
    uamp.PaymentBalance,
    uamp.PaymentError,
)


class ResponseRenderer:
    """Maps the UAMP server events of one response to Realtime server events.

    Feed every event ``run_response`` emits to :meth:`feed`, in order; it returns the Realtime
    events to send (possibly none). After the terminal event, :attr:`output` holds the output
    items in their final state (canonical shape) for the conversation.
    """

    def __init__(self, codec: RealtimeCodec, response_id: str) -> None:
        self.codec = codec
        self.response_id = response_id
        self.output: list[dict[str, Any]] = []
        self.status = "in_progress"
        self._text: list[str] | None = None  # the open message item's text, if one is open
        self._usage: dict[str, Any] | None = None

    def _response(self, status: str, details: dict[str, Any] | None) -> dict[str, Any]:
        codec = self.codec
        body: dict[str, Any] = {
            "id": self.response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": [codec.item(i) for i in self.output],
            "conversation_id": codec.session_id,
            "usage": self._usage,
        }
        if codec.flavour is Flavour.GA:
            body["output_modalities"] = ["text"]
        else:
            body["modalities"] = ["text"]
        return body

    def _loc(self) -> dict[str, Any]:
        return {
            "response_id": self.response_id,
            "item_id": self.output[-1]["id"],
            "output_index": len(self.output) - 1,
        }

    def _open_message(self) -> list[dict[str, Any]]:
        codec = self.codec
        item = {
            "id": codec.new_id("item"),
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        self.output.append(item)
        self._text = []
        return [
            codec.event(
                "response.output_item.added",
                response_id=self.response_id,
                output_index=len(self.output) - 1,
                item=codec.item(item),
            ),
            codec.event(
                "response.content_part.added",
                **self._loc(),
                content_index=0,
                part={"type": "text", "text": ""},
            ),
        ]

    def _close_message(self, status: str) -> list[dict[str, Any]]:
        if self._text is None:
            return []
        codec = self.codec
        text = "".join(self._text)
        self._text = None
        item = self.output[-1]
        item["content"] = [{"type": "output_text", "text": text}]
        item["status"] = status
        out: list[dict[str, Any]] = []
        if status == "completed":
            out += [
                codec.event(
                    codec.flavour.text_prefix + ".done", **self._loc(), content_index=0, text=text
                ),
                codec.event(
                    "response.content_part.done",
                    **self._loc(),
                    content_index=0,
                    part={"type": "text", "text": text},
                ),
            ]
        out.append(
            codec.event(
                "response.output_item.done",
                response_id=self.response_id,
                output_index=len(self.output) - 1,
                item=codec.item(item),
            )
        )
        return out

    def _function_call(self, call_id: str, name: str, arguments: str) -> list[dict[str, Any]]:
        codec = self.codec
        out = self._close_message("completed")
        item = {
            "id": codec.new_id("item"),
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": name,
            "arguments": "",
        }
        self.output.append(item)
        idx = len(self.output) - 1
        out.append(
            codec.event(
                "response.output_item.added",
                response_id=self.response_id,
                output_index=idx,
                item=codec.item(item),
            )
        )
        loc = self._loc()
        if arguments:
            out.append(
                codec.event(
                    "response.function_call_arguments.delta",
                    **loc,
                    call_id=call_id,
                    delta=arguments,
                )
            )
        out.append(
            codec.event(
                "response.function_call_arguments.done",
                **loc,
                call_id=call_id,
                name=name,
                arguments=arguments,
            )
        )
        item["arguments"] = arguments
        item["status"] = "completed"
        out.append(
            codec.event(
                "response.output_item.done",
                response_id=self.response_id,
                output_index=idx,
                item=codec.item(item),
            )
        )
        return out

    def feed(self, event: Any) -> list[dict[str, Any]]:
        """The Realtime events for one UAMP server event of this response."""
        codec = self.codec
        t = type(event)
        if t is uamp.ResponseDelta:
            d = event.delta
            if type(d) is not uamp.TextDelta or not d.text:
                return []  # agent tool calls/results/progress: server-side, not items
            out = self._open_message() if self._text is None else []
            self._text.append(d.text)  # type: ignore[union-attr]
            out.append(
                codec.event(
                    codec.flavour.text_prefix + ".delta",
                    **self._loc(),
                    content_index=0,
                    delta=d.text,
                )
            )
            return out
        if t is uamp.ToolCall:
            return self._function_call(event.call_id, event.name, event.arguments)
        if t is uamp.ResponseCreated:
            return [codec.event("response.created", response=self._response("in_progress", None))]
        if t is uamp.ResponseDone:
            out = self._close_message("completed")
            u = event.response.usage
            if u is not None:
                self._usage = {
                    "total_tokens": u.total_tokens,
                    "input_tokens": u.input_tokens,
                    "output_tokens": u.output_tokens,
                    "input_token_details": {
                        "text_tokens": u.input_tokens,
                        "audio_tokens": 0,
                        "cached_tokens": u.cached_tokens or 0,
                    },
                    "output_token_details": {"text_tokens": u.output_tokens, "audio_tokens": 0},
                }
            self.status = "completed"
            signed = {"signature": event.signature} if event.signature is not None else {}
            out.append(
                codec.event("response.done", response=self._response("completed", None), **signed)
            )
            return out
        if t is uamp.ResponseCancelled:
            out = self._close_message("incomplete")
            self.status = "cancelled"
            cancel_details: dict[str, Any] = {"type": "cancelled", "reason": "client_cancelled"}
            out.append(
                codec.event("response.done", response=self._response("cancelled", cancel_details))
            )
            return out
        if t is uamp.ResponseError:
            out = self._close_message("incomplete")
            self.status = "failed"
            err = event.error
            details: dict[str, Any] = {
                "type": "failed",
                "error": {
                    "type": _STATUS_ERROR_TYPES.get(err.code, "server_error"),
                    "code": err.code,
                    "message": err.message,
                },
            }
            out.append(codec.event("response.done", response=self._response("failed", details)))
            return out
        if t in _PAYMENT_EVENTS:
            # §9.3: the UAMP payment.* events go to the client as they are (JSON events with
            # this connection's session id and a fresh event_id).
            fields = uamp.converter.unstructure(event)
            kind = fields.pop("type")
            for key in ("event_id", "timestamp", "session_id"):
                fields.pop(key, None)
            return [codec.event(kind, session_id=codec.session_id, **fields)]
        return []  # thinking, tool.call_done, usage, progress: no Realtime counterpart
