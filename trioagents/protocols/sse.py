"""Server-Sent Events framing (the subset every SSE client parses)."""

from __future__ import annotations

__all__ = ["sse_event", "sse_comment", "SSE_HEADERS"]

SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
"""Response headers for an SSE stream (no proxy buffering, no caching)."""


def sse_event(data: bytes | str, *, event: str | None = None, id: str | None = None) -> bytes:
    """Frame one event. Multi-line ``data`` becomes several ``data:`` lines, as the spec says."""
    if isinstance(data, str):
        data = data.encode()
    head = b""
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    if id is not None:
        head += b"id: " + id.encode() + b"\n"
    if b"\n" not in data and b"\r" not in data:
        return head + b"data: " + data + b"\n\n"
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


def sse_comment(text: str = "keepalive") -> bytes:
    """A comment line (ignored by clients; keeps proxies from timing the stream out)."""
    return b": " + text.encode() + b"\n\n"
