"""The one converter that owns UAMP's wire format, plus injected ids and clocks.

``decode_client`` / ``decode_server`` turn one JSON text into an event (or raise
:class:`DecodeError` with the UAMP error code to answer with); ``Encoder.encode`` turns one
event into JSON bytes, stamping ``event_id`` and ``timestamp`` from the injected
:class:`IdFactory` and :class:`Clock` when the event carries none.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs
import orjson
from cattrs import ClassValidationError
from cattrs.gen import make_dict_unstructure_fn, override
from cattrs.preconf.orjson import make_converter
from cattrs.strategies import configure_tagged_union

from . import _events as ev

__all__ = [
    "DecodeError",
    "Clock",
    "SystemClock",
    "FixedClock",
    "IdFactory",
    "RandomIds",
    "SequentialIds",
    "Encoder",
    "converter",
    "decode_client",
    "decode_server",
    "CLIENT_EVENT_TYPES",
    "SERVER_EVENT_TYPES",
]


class DecodeError(ValueError):
    """A client frame could not be turned into an event.

    ``code`` is the UAMP ``error`` code to answer with: ``invalid_json`` (not JSON, or not an
    object) or ``invalid_event`` (no ``type``, or missing/ill-typed required fields).
    """

    def __init__(self, code: str, message: str, *, event_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event_id = event_id


# --------------------------------------------------------------------------------------------
# Injected ids and clocks (§0.3)
# --------------------------------------------------------------------------------------------


class Clock(Protocol):
    """A wall clock. Injected so tests and recordings are deterministic."""

    def now_ms(self) -> int:
        """Unix time in milliseconds."""

    def now_s(self) -> int:
        """Unix time in seconds."""


class SystemClock:
    """The real wall clock."""

    def now_ms(self) -> int:
        """Unix time in milliseconds."""
        return time.time_ns() // 1_000_000

    def now_s(self) -> int:
        """Unix time in seconds."""
        return int(time.time())


@attrs.define
class FixedClock:
    """A clock that always reads ``ms`` (tests advance it by assigning)."""

    ms: int = 1_767_225_600_000

    def now_ms(self) -> int:
        """Unix time in milliseconds."""
        return self.ms

    def now_s(self) -> int:
        """Unix time in seconds."""
        return self.ms // 1000


class IdFactory(Protocol):
    """Makes opaque ids: ``new("resp")`` → ``resp_`` + 24 hex."""

    def new(self, prefix: str) -> str:
        """Return a fresh id with ``prefix`` and an underscore."""

    def hex(self, nbytes: int) -> str:
        """Return ``nbytes`` of fresh randomness as hex (for ``chatcmpl-`` and similar)."""


_POOL_BYTES = 2048
_fork_generation = 0


def _after_fork_in_child() -> None:
    # A forked child must never hand out the parent's pooled randomness again.
    global _fork_generation
    _fork_generation += 1


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class RandomIds:
    """Ids with 96 random bits, as §0.3 requires.

    The randomness is the operating system's CSPRNG (``os.urandom``), drawn 2 KiB at a time
    and handed out in 96-bit slices: one id per event is on the streaming hot path, and one
    ``getrandom`` call per id cost more than the rest of encoding an event. A forked child
    starts with a fresh pool.
    """

    def __init__(self) -> None:
        self._pool = ""
        self._pos = 0
        self._generation = _fork_generation

    def _hex24(self) -> str:
        pos = self._pos
        if pos + 24 > len(self._pool) or self._generation != _fork_generation:
            self._pool = os.urandom(_POOL_BYTES).hex()
            self._generation = _fork_generation
            pos = 0
        self._pos = pos + 24
        return self._pool[pos : pos + 24]

    def new(self, prefix: str) -> str:
        """Return ``prefix_`` + 24 random hex digits."""
        return prefix + "_" + self._hex24()

    def hex(self, nbytes: int) -> str:
        """Return ``nbytes`` random bytes as hex."""
        return secrets.token_hex(nbytes)


class SequentialIds:
    """Deterministic ids for tests: ``resp_000000000000000000000001``, …"""

    def __init__(self) -> None:
        self._counter: Iterator[int] = iter(range(1, 1 << 62))

    def new(self, prefix: str) -> str:
        """Return ``prefix_`` + the next counter value as 24 hex digits."""
        return f"{prefix}_{next(self._counter):024x}"

    def hex(self, nbytes: int) -> str:
        """Return the next counter value as ``2 * nbytes`` hex digits."""
        return f"{next(self._counter):0{2 * nbytes}x}"


# --------------------------------------------------------------------------------------------
# The converter
# --------------------------------------------------------------------------------------------

converter = make_converter()
"""The cattrs converter for every UAMP class (orjson preconfigured)."""

_INT_RANGE = range(-(1 << 63), 1 << 63)


def _strict(kind: type, check: Callable[[Any], bool]) -> Callable[[Any, Any], Any]:
    # The wire is JSON: a field of the wrong JSON type is an invalid event, never coerced
    # (``null`` must not become the string "None", nor "false" the boolean True).
    def hook(value: Any, _: Any) -> Any:
        if not check(value):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return hook


converter.register_structure_hook(str, _strict(str, lambda v: isinstance(v, str)))
converter.register_structure_hook(bool, _strict(bool, lambda v: isinstance(v, bool)))
converter.register_structure_hook(
    int, _strict(int, lambda v: isinstance(v, int) and not isinstance(v, bool) and v in _INT_RANGE)
)
converter.register_structure_hook(
    float,
    _strict(float, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
)


def _tag(cls: type) -> str:
    return str(attrs.fields_dict(cls)["type"].default)


def _omit_none_fields(cls: type) -> Callable[[Any], dict[str, Any]]:
    # Optional fields (default None) are dropped when None; all others are always written.
    overrides = {
        a.name: override(omit_if_default=True) for a in attrs.fields(cls) if a.default is None
    }
    return make_dict_unstructure_fn(
        cls,
        converter,
        _cattrs_include_init_false=True,
        **overrides,  # type: ignore[arg-type]
    )


converter.register_unstructure_hook_factory(
    lambda t: attrs.has(t) and t.__module__ == ev.__name__, _omit_none_fields
)
configure_tagged_union(ev.ContentItem, converter, tag_generator=_tag, tag_name="type")
configure_tagged_union(ev.Delta, converter, tag_generator=_tag, tag_name="type")

CLIENT_EVENT_TYPES: dict[str, type] = {_tag(c): c for c in ev.ClientEvent.__args__}  # type: ignore[attr-defined]
SERVER_EVENT_TYPES: dict[str, type] = {_tag(c): c for c in ev.ServerEvent.__args__}  # type: ignore[attr-defined]


def _load_object(data: str | bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("invalid_json", f"frame is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError("invalid_json", "frame must be a JSON object")
    return obj


def _explain(exc: ClassValidationError) -> str:
    parts = []
    for sub in exc.exceptions:
        note = getattr(sub, "__notes__", None) or [""]
        if isinstance(sub, KeyError):
            parts.append(f"missing required field {sub.args[0]!r}")
        else:
            parts.append(f"{note[0]}: {sub}".strip(": "))
    return "; ".join(parts) or str(exc)


def _decode(data: str | bytes, table: dict[str, type]) -> Any:
    obj = _load_object(data)
    event_id = obj.get("event_id") if isinstance(obj.get("event_id"), str) else None
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        raise DecodeError("invalid_event", "event has no 'type'", event_id=event_id)
    cls = table.get(kind)
    if cls is None:
        sid = obj.get("session_id")
        return ev.UnknownEvent(
            type=kind, raw=obj, event_id=event_id, session_id=sid if isinstance(sid, str) else None
        )
    try:
        return converter.structure(obj, cls)
    except ClassValidationError as exc:
        raise DecodeError(
            "invalid_event", f"invalid {kind!r} event: {_explain(exc)}", event_id=event_id
        ) from None
    except (ValueError, TypeError) as exc:
        raise DecodeError(
            "invalid_event", f"invalid {kind!r} event: {exc}", event_id=event_id
        ) from None


def decode_client(data: str | bytes) -> ev.ClientEvent | ev.UnknownEvent:
    """Decode one client→server frame.

    Unknown fields are ignored; an unknown ``type`` gives :class:`~trioagents.uamp.UnknownEvent`.

    Raises:
        DecodeError: the frame is not a JSON object, has no ``type``, or misses a required field.
    """
    return _decode(data, CLIENT_EVENT_TYPES)  # type: ignore[no-any-return]


def decode_server(data: str | bytes) -> ev.ServerEvent | ev.UnknownEvent:
    """Decode one server→client frame (used by clients and hubs); same rules as the client side."""
    return _decode(data, SERVER_EVENT_TYPES)  # type: ignore[no-any-return]


@attrs.define
class Encoder:
    """Encodes events as JSON, stamping missing ``event_id`` / ``timestamp``.

    Args:
        ids: where ``evt_`` ids come from.
        clock: where ``timestamp`` (Unix ms) comes from.
    """

    ids: IdFactory = attrs.field(factory=RandomIds)
    clock: Clock = attrs.field(factory=SystemClock)

    def to_dict(self, event: Any) -> dict[str, Any]:
        """Unstructure ``event`` and stamp its envelope."""
        if type(event) is ev.ResponseDelta and type(event.delta) is ev.TextDelta:
            # The hot path (one per streamed word): the same dict, key order included, that
            # the converter builds, without its generic dispatch.
            d: dict[str, Any] = {
                "response_id": event.response_id,
                "delta": {"text": event.delta.text, "type": "text"},
                "type": "response.delta",
            }
            if event.session_id is not None:
                d["session_id"] = event.session_id
            eid, ts = event.event_id, event.timestamp
            if eid is not None:
                d["event_id"] = eid
            if ts is not None:
                d["timestamp"] = ts
            if eid is None:
                d["event_id"] = self.ids.new("evt")
            if ts is None:
                d["timestamp"] = self.clock.now_ms()
            return d
        d = converter.unstructure(event)  # type: ignore[no-redef]
        if "event_id" not in d:
            d["event_id"] = self.ids.new("evt")
        if "timestamp" not in d:
            d["timestamp"] = self.clock.now_ms()
        return d

    def encode(self, event: Any) -> bytes:
        """Return ``event`` as JSON bytes with its envelope stamped."""
        return orjson.dumps(self.to_dict(event))

    def encode_text(self, event: Any) -> str:
        """Return ``event`` as a JSON string (for WebSocket text frames)."""
        return orjson.dumps(self.to_dict(event)).decode()
