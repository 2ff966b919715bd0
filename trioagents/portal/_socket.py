"""The dial-out socket: what PortalConnect and the Relay connector need from a WebSocket.

Transport errors are mapped once, here, at the boundary (trio-websocket's habit)::

    TrioAgentsError
    └── DialError
        ├── ConnectFailed        TCP/TLS/handshake failure, handshake timeout (retryable)
        ├── HandshakeRejected    the server answered the upgrade with an HTTP status
        └── SocketClosed         the open socket closed (``code`` from the close frame)

Daemons are written against :class:`DialSocket` and a :data:`Dialer`, so tests can replace
the network with in-memory fakes and drive pings, pong deadlines and backoff with
``autojump_clock``.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol
from urllib.parse import urlsplit

import trio
import trio_websocket

from .._errors import TrioAgentsError
from ..transports._wsconn import WebSocketConnection

__all__ = [
    "DialError",
    "ConnectFailed",
    "HandshakeRejected",
    "SocketClosed",
    "DialSocket",
    "Dialer",
    "dial_websocket",
    "serve_dialed",
]

log = logging.getLogger("trioagents.portal")


class DialError(TrioAgentsError):
    """A dial-out WebSocket failed."""

    code = "connection_failed"


class ConnectFailed(DialError):
    """The connection could not be opened (refused, unreachable, TLS, handshake timeout)."""


class HandshakeRejected(DialError):
    """The server refused the WebSocket upgrade with HTTP ``status``."""

    def __init__(self, status: int, body: bytes = b"") -> None:
        super().__init__(f"handshake refused with HTTP {status}", code="handshake_rejected")
        self.status = status
        self.body = body


class SocketClosed(DialError):
    """The socket is closed; ``close_code`` is the peer's close code, if one arrived."""

    def __init__(self, close_code: int | None, reason: str | None = None) -> None:
        super().__init__(f"socket closed ({close_code}: {reason or ''})", code="connection_closed")
        self.close_code = close_code
        self.reason = reason


class DialSocket(Protocol):
    """One open dial-out WebSocket."""

    async def send_message(self, message: str) -> None:
        """Send one text frame.

        Raises:
            SocketClosed: the socket is closed.
        """
        ...

    async def get_message(self) -> str | bytes:
        """Receive one message.

        Raises:
            SocketClosed: the socket is closed.
        """
        ...

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` (idempotent)."""
        ...


Dialer = Callable[[str, Sequence[tuple[str, str]]], AbstractAsyncContextManager[DialSocket]]
"""``dial(url, headers)`` → an async context manager yielding an open :class:`DialSocket`;
it raises :class:`ConnectFailed` or :class:`HandshakeRejected` instead of yielding."""


class _TrioWebSocket:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    async def send_message(self, message: str) -> None:
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def get_message(self) -> str | bytes:
        try:
            return await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _closed(exc) from None

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.aclose(code, reason or None)


def _closed(exc: trio_websocket.ConnectionClosed) -> SocketClosed:
    reason = exc.reason
    return SocketClosed(reason.code if reason else None, reason.reason if reason else None)


def dial_websocket(
    *,
    max_message_size: int = 1 << 20,
    handshake_timeout: float = 30.0,
    cleanup_timeout: float = 5.0,
) -> Dialer:
    """A :data:`Dialer` over trio-websocket.

    Args:
        max_message_size: largest message accepted from the peer.
        handshake_timeout: bound on TCP connect + upgrade (then :class:`ConnectFailed`).
        cleanup_timeout: bound on the shielded close when the block ends.
    """

    @asynccontextmanager
    async def dial(url: str, headers: Sequence[tuple[str, str]]) -> AsyncIterator[DialSocket]:
        extra = [(k.encode(), v.encode()) for k, v in headers]
        # Errors raised inside the holder's nursery come out as groups; callers get the one
        # DialError itself.
        try:
            async with trio.open_nursery() as outer:
                stop = trio.Event()
                refused: list[BaseException] = []
                connecting = trio.CancelScope()
                io: trio.Nursery = await outer.start(_io_holder, stop, connecting, refused)
                ws: trio_websocket.WebSocketConnection | None = None
                stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] | None = None
                try:
                    with connecting, trio.move_on_after(handshake_timeout):
                        try:
                            stream = await _open_stream(url)
                            ws = await trio_websocket.wrap_client_stream(
                                io,
                                stream,
                                _host_header(url),
                                _resource(url),
                                extra_headers=extra,
                                max_message_size=max_message_size,
                            )
                        except trio_websocket.ConnectionRejected as exc:
                            refused.append(exc)
                        except (OSError, ValueError, trio_websocket.HandshakeError) as exc:
                            raise ConnectFailed(f"cannot connect to {_safe(url)}: {exc}") from None
                    if refused:
                        first = refused[0]
                        if isinstance(first, trio_websocket.ConnectionRejected):
                            raise HandshakeRejected(first.status_code, first.body or b"")
                        raise ConnectFailed(f"cannot connect to {_safe(url)}: {first!r}")
                    if ws is None:
                        raise ConnectFailed(
                            f"no handshake from {_safe(url)} within {handshake_timeout} s"
                        )
                    yield _TrioWebSocket(ws)
                finally:
                    # Shielded and bounded: the close handshake talks to a peer that may be
                    # gone. The socket's reader lives in the shielded holder, so it still reads
                    # the peer's close reply when we are being cancelled.
                    with trio.CancelScope(shield=True), trio.move_on_after(cleanup_timeout):
                        if ws is not None:
                            await ws.aclose()
                        # We own the TCP stream: trio-websocket leaves it open after a refused
                        # handshake, and its client waits for the server's TCP close after a
                        # close handshake.
                        if stream is not None:
                            await stream.aclose()
                    stop.set()
        except* DialError as group:
            raise group.exceptions[0] from None

    return dial


async def _io_holder(
    stop: trio.Event,
    connecting: trio.CancelScope,
    refused: list[BaseException],
    *,
    task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED,
) -> None:
    # Holds trio-websocket's background reader outside the caller's cancel scope, so that a
    # cancelled daemon can still complete the close handshake; ``stop`` (always set by the
    # dialer's bounded cleanup) ends it.
    with trio.CancelScope(shield=True):
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(nursery)
                await stop.wait()
                nursery.cancel_scope.cancel()
        except* trio_websocket.HandshakeError as group:
            # A refused upgrade is raised by the reader task, not by connect_websocket_url:
            # hand it to the dialer and stop its wait for the handshake.
            refused.extend(group.exceptions)
            connecting.cancel()


async def _open_stream(url: str) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {_safe(url)}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    if secure:
        return await trio.open_ssl_over_tcp_stream(
            parts.hostname, port, ssl_context=ssl.create_default_context(), https_compatible=True
        )
    return await trio.open_tcp_stream(parts.hostname, port)


def _host_header(url: str) -> str:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "wss" else 80
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def _resource(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def _safe(url: str) -> str:
    """``url`` without its query (tokens never reach logs)."""
    return url.split("?", 1)[0]


async def serve_dialed(
    conn: WebSocketConnection, sock: DialSocket, keepalive: Callable[[], Awaitable[None]]
) -> int | None:
    """Serve ``conn`` over a socket we dialled, with ``keepalive`` running alongside.

    On the way out the socket is closed with the connection's own close code (shielded,
    bounded by ``cleanup_timeout``) unless the peer closed it first.

    Returns:
        The peer's close code when the peer closed first, else None.
    """
    remote: int | None = None

    async def receive() -> dict[str, Any]:
        nonlocal remote
        try:
            message = await sock.get_message()
        except SocketClosed as exc:
            remote = exc.close_code
            return {"type": "websocket.disconnect", "code": exc.close_code}
        key = "bytes" if isinstance(message, bytes) else "text"
        return {"type": "websocket.receive", key: message}

    async with trio.open_nursery() as nursery:
        nursery.start_soon(keepalive)
        await conn.serve(receive)
        nursery.cancel_scope.cancel()
    if conn.close_code is not None and remote is None:
        with trio.CancelScope(shield=True), trio.move_on_after(conn.runtime.config.cleanup_timeout):
            try:
                await sock.aclose(conn.close_code, conn.close_reason)
            except SocketClosed:
                pass
    return remote
