"""One configuration object for every time bound, limit and address (DESIGN.md §5).

Every internal time bound of the framework (handshake, pings, keepalives, payment and tool
waits, graceful shutdown, shielded cleanup) lives here, never as a literal in the code.
A :class:`Config` loads from keyword arguments, the environment (``TRIOAGENTS_*``) and a TOML
file; later sources override earlier ones in the order file → environment → keywords.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

__all__ = ["Config"]

_ENV_PREFIX = "TRIOAGENTS_"


@attrs.frozen(kw_only=True)
class Config:
    """Server and runtime settings. All durations are in seconds.

    Attributes:
        host: address to bind.
        port: port to bind (0 picks a free port).
        public_url: absolute base URL used in agent cards and JWT ``iss`` (else scheme + Host).
        default_agent: serve this agent's routes at the root too (single-agent mode).
        max_message_size: largest WebSocket message accepted (else close 1009).
        max_body_size: largest HTTP request body accepted (else 413).
        outbound_queue_size: events queued per connection before producers wait.
        send_timeout: a producer still waiting for queue room after this closes the socket (1013).
        max_sessions_per_socket: UAMP sessions one socket may open.
        turn_queue_size: inputs one UAMP session may queue behind its running response.
        ws_ping_interval: WebSocket protocol pings from the server (None disables). Off by
            default: Hypercorn's ping task sleeps a whole interval after the socket closes,
            which holds graceful shutdown for up to that long.
        sse_keepalive: idle time before an SSE ``: keepalive`` comment.
        preflight_timeout: how long Completions waits for the first agent event before the 200.
        tool_result_timeout: how long a response waits for client ``tool.result`` events.
        payment_timeout: how long a response waits for ``payment.submit``.
        cleanup_timeout: bound on shielded cleanup (final events, releases) after cancellation.
        graceful_timeout: how long shutdown waits for connections to finish.
        max_steps: default bound on LLM↔tool steps per response.
        gc_freeze: freeze start-up objects out of the cyclic GC when serving.
        gc_gen0_threshold: generation-0 GC threshold while serving (None leaves Python's).
        access_log: log every request.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = None
    default_agent: str | None = None
    max_message_size: int = 1 << 20
    max_body_size: int = 16 << 20
    outbound_queue_size: int = 256
    send_timeout: float = 30.0
    max_sessions_per_socket: int = 64
    turn_queue_size: int = 16
    ws_ping_interval: float | None = None
    sse_keepalive: float = 15.0
    preflight_timeout: float = 30.0
    tool_result_timeout: float = 300.0
    payment_timeout: float = 60.0
    cleanup_timeout: float = 5.0
    graceful_timeout: float = 10.0
    max_steps: int = 10
    gc_freeze: bool = True
    gc_gen0_threshold: int | None = 50_000
    access_log: bool = False

    def replace(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied (values of ``None`` are ignored)."""
        return attrs.evolve(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def load(
        cls,
        *,
        file: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Config:
        """Build a config from a TOML file, then the environment, then keyword overrides.

        The TOML file may hold the keys at top level or under a ``[trioagents]`` table.
        Environment variables are ``TRIOAGENTS_<FIELD>`` in upper case.

        Raises:
            ValueError: an unknown key in the file, or a value that does not parse.
        """
        values: dict[str, Any] = {}
        fields = attrs.fields_dict(cls)
        if file is not None:
            data = tomllib.loads(Path(file).read_text())
            data = data.get("trioagents", data)
            unknown = set(data) - set(fields)
            if unknown:
                raise ValueError(f"unknown config keys in {file}: {sorted(unknown)}")
            values.update(data)
        environ = os.environ if env is None else env
        for name, field in fields.items():
            raw = environ.get(_ENV_PREFIX + name.upper())
            if raw is not None:
                values[name] = _parse(name, raw, field.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - set(fields)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        for name, value in values.items():
            _check(name, value, fields[name].type)
        return cls(**values)


_KINDS: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "str": (str,),
}


def _check(name: str, value: Any, annotation: Any) -> None:
    text = str(annotation)
    if value is None and "None" in text:
        return
    kind = _KINDS.get(text.split(" ")[0])
    ok = kind is not None and isinstance(value, kind)
    if ok and not text.startswith("bool") and isinstance(value, bool):
        ok = False  # True is an int in Python, not a port number
    if not ok:
        raise ValueError(f"config key {name!r} must be {text}, got {value!r}")


def _parse(name: str, raw: str, annotation: Any) -> Any:
    text = str(annotation)
    if raw.lower() in ("", "none", "null") and "None" in text:
        return None
    try:
        if text.startswith("bool"):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if text.startswith("int"):
            return int(raw)
        if text.startswith("float"):
            return float(raw)
    except ValueError:
        raise ValueError(f"{_ENV_PREFIX}{name.upper()}={raw!r} is not a valid {text}") from None
    return raw
