"""PortalConnect (PROTOCOLS.md §2): the pure parts shared by the daemon and the hub. No I/O.

A PortalConnect socket carries UAMP in *both* directions: the daemon opens sessions like a
client (``session.create``, ``ping``) but serves their turns like a server (``input.text`` in,
``response.*`` out). :func:`decode_frame` therefore accepts client and server event types on
either side. The rest is arithmetic: the reconnect backoff of §0.5, the terminal close codes,
the hub URL with its ``?token=``, and the registration event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import uamp

__all__ = [
    "DEFAULT_PORTAL_WS_URL",
    "TERMINAL_CLOSE_CODES",
    "TERMINAL_HANDSHAKE_STATUSES",
    "BACKOFF_CAP",
    "backoff_delay",
    "decode_frame",
    "is_terminal_close",
    "registration",
    "with_token",
]

DEFAULT_PORTAL_WS_URL = "wss://roborum.ai/ws"
"""The hub used when neither ``portal_ws_url`` nor ``PORTAL_WS_URL`` is set (§2)."""

TERMINAL_CLOSE_CODES = frozenset({1008, 4001, 4003})
"""Close codes after which a PortalConnect daemon stops reconnecting (auth/policy)."""

TERMINAL_HANDSHAKE_STATUSES = frozenset({401, 403})
"""Handshake refusals after which a PortalConnect daemon stops reconnecting."""

BACKOFF_CAP = 60.0
"""Upper bound of one backoff sleep before jitter, in seconds (§0.5)."""


def backoff_delay(
    attempt: int, base: float, random: Callable[[], float], *, cap: float = BACKOFF_CAP
) -> float:
    """The sleep before reconnect attempt ``attempt`` (§0.5).

    ``min(base * 2**(attempt-1), cap) * U(0.5, 1)``, with the uniform draw taken from
    ``random()`` (a float in ``[0, 1)``), injected so tests are deterministic.

    Raises:
        ValueError: ``attempt`` is smaller than 1.
    """
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    # 2**(attempt-1) overflows floats for huge counters; the cap is reached long before.
    exponent = min(attempt - 1, 62)
    raw = min(base * float(2**exponent), cap)
    return raw * (0.5 + 0.5 * random())


def is_terminal_close(code: int | None) -> bool:
    """Whether a close with ``code`` means "do not reconnect" (auth or policy)."""
    return code in TERMINAL_CLOSE_CODES


def with_token(url: str, token: str | None) -> str:
    """``url`` with ``?token=`` set (URL-encoded), replacing any ``token`` already there."""
    if not token:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit(parts._replace(query=urlencode(query)))


def registration(agent: str, token: str | None, *, event_id: str) -> uamp.SessionCreate:
    """The ``session.create`` a daemon sends for one agent entry.

    ``agent`` and ``token`` go both at top level and inside ``session`` (§2), so hubs that read
    either place find them.
    """
    session: dict[str, Any] = {"agent": agent, "modalities": ["text"]}
    if token:
        session["token"] = token
    return uamp.SessionCreate(agent=agent, token=token, session=session, event_id=event_id)


def decode_frame(text: str | bytes, *, prefer: str = "client") -> Any:
    """Decode one PortalConnect frame, whichever direction its type belongs to.

    Args:
        text: the frame.
        prefer: ``"client"`` (the hub reading a daemon… and the daemon reading hub *inputs*)
            or ``"server"``: which table decides for types both directions share
            (``ping``, ``pong``, ``session.end`` are client events either way).

    Returns:
        A UAMP event, or :class:`~trioagents.uamp.UnknownEvent` for a type neither side knows.

    Raises:
        uamp.DecodeError: not a JSON object, no ``type``, or missing/ill-typed fields.
    """
    first, second = (
        (uamp.decode_client, uamp.SERVER_EVENT_TYPES)
        if prefer == "client"
        else (uamp.decode_server, uamp.CLIENT_EVENT_TYPES)
    )
    event = first(text)
    if isinstance(event, uamp.UnknownEvent):
        cls = second.get(event.type)
        if cls is not None:
            try:
                return uamp.converter.structure(event.raw, cls)
            except Exception as exc:  # cattrs raises ClassValidationError / TypeError / …
                raise uamp.DecodeError(
                    "invalid_event",
                    f"invalid {event.type!r} event: {exc}",
                    event_id=event.event_id,
                ) from None
    return event
