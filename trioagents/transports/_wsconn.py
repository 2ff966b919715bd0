"""The lifecycle every server-side WebSocket transport shares (UAMP, Realtime).

Theory of operation
-------------------
::

    connection nursery
    ├── writer (Outbox.run): the only task that writes frames
    └── self.scope: everything that must stop when the connection closes
        └── work nursery: sessions, responses, …
            (the handler's own task reads frames and calls handle_frame, which never waits)

No task waits for the server's shutdown: the connection registers :meth:`on_shutdown` as a
drain hook on the runtime for as long as it is served (an idle connection is two tasks, its
reader and its writer, plus one per session).

When the peer leaves, the outbox drops further sends and the connection nursery is cancelled.
On a deliberate close (:meth:`close`: shutdown 1001, oversized frame 1009, stuck client
1013), ``self.scope`` is cancelled first so every session unwinds and queues its last events
(``response.cancelled``, ``session.end``), then the writer drains them within
``cleanup_timeout`` before the handler sends the close frame. Either way :meth:`serve` returns
only after every task of the connection has finished.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from starlette.websockets import WebSocket

from ._outbox import Outbox, merge_text_deltas
from ._runtime import Runtime

__all__ = ["SEND_TEXTS", "WebSocketConnection", "send_close", "text_senders"]

log = logging.getLogger("trioagents.transports")

SEND_TEXTS = "trioagents.websocket.send_texts"
"""ASGI scope extension (``scope["extensions"][SEND_TEXTS]``) a server may offer on WebSockets.

Its value is ``await send_texts([text, …])``: each text is one text frame, in order, as if
sent with one ``websocket.send`` each, but written together (trioagents' own server does it
with one system call, see :mod:`trioagents.server._wsframes`). Valid once the socket is
accepted. On servers without it, frames go one ``websocket.send`` at a time.
"""

SendText = Callable[[str], Awaitable[None]]
SendTexts = Callable[[list[str]], Awaitable[None]]


def text_senders(ws: WebSocket) -> tuple[SendText, SendTexts | None]:
    """``(send_text, send_texts)`` for an accepted WebSocket.

    ``send_text`` sends one text frame through ASGI; ``send_texts`` is the server's
    :data:`SEND_TEXTS` extension, or None where the server does not offer it.
    """
    send = ws._send

    async def send_text(text: str) -> None:
        await send({"type": "websocket.send", "text": text})

    extensions = ws.scope.get("extensions") or {}
    return send_text, extensions.get(SEND_TEXTS)


class WebSocketConnection:
    """Base class of one accepted WebSocket: outbox, reader loop and deliberate closes.

    Subclasses implement :meth:`handle_frame` and may override :meth:`on_open` and
    :meth:`on_shutdown`.

    Args:
        runtime: the server's runtime (config, stats, draining).
        send_text: writes one text frame to the peer.
        render: turns one queued event into the frame's text.
        merge: combines a batch of queued events before writing.
        send_texts: writes several text frames at once (the server's :data:`SEND_TEXTS`);
            the writer then sends each batch with one call instead of a frame at a time.
    """

    name = "WebSocket"

    def __init__(
        self,
        runtime: Runtime,
        send_text: Callable[[str], Awaitable[None]],
        render: Callable[[Any], str],
        *,
        merge: Callable[[list[Any]], list[Any]] = merge_text_deltas,
        send_texts: SendTexts | None = None,
    ) -> None:
        self.runtime = runtime
        self.close_code: int | None = None
        self.close_reason = ""
        self.scope = trio.CancelScope()
        write_batch: Callable[[list[Any]], Awaitable[None]] | None = None
        if send_texts is not None:

            async def write_texts(batch: list[Any]) -> None:
                await send_texts([render(event) for event in batch])

            write_batch = write_texts
        self.outbox = Outbox(
            send_text if write_batch is None else None,
            render,
            write_batch=write_batch,
            size=runtime.config.outbound_queue_size,
            send_timeout=runtime.config.send_timeout,
            on_stuck=self._stuck,
            merge=merge,
        )
        self._nursery: trio.Nursery | None = None

    def _stuck(self) -> None:
        log.warning(
            "%s client stopped reading for %g s; closing with 1013",
            self.name,
            self.runtime.config.send_timeout,
        )
        self.close(1013, "send queue stuck")

    def close(self, code: int, reason: str = "") -> None:
        """Close the connection with ``code`` once its tasks have unwound."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self.scope.cancel()

    def reply(self, event: Any) -> None:
        """Queue a reply from the reader (control lane: never waits, goes ahead of data).

        The lane is bounded by the reader: after each frame it waits for room before reading
        the next (:meth:`serve`), so a client that sends faster than it reads is slowed down.
        """
        self.outbox.put_control(event)

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start a task that lives as long as the connection's work (cancelled on close).

        Raises:
            RuntimeError: the connection is not being served.
        """
        if self._nursery is None:
            raise RuntimeError("the connection is not being served")
        self._nursery.start_soon(fn, *args)

    def handle_frame(self, message: dict[str, Any]) -> None:
        """Handle one ``websocket.receive`` ASGI message. Must not block."""
        raise NotImplementedError

    async def on_open(self) -> None:
        """Called in the work nursery before the first frame is read."""

    def on_shutdown(self) -> None:
        """The server is draining (must not block): the default closes with 1001."""
        self.close(1001, "server shutting down")

    async def serve(self, receive: Callable[[], Awaitable[Any]]) -> None:
        """Run the connection until the peer leaves or the connection is closed on purpose.

        Returns only after every task of this connection has finished.
        """
        stats = self.runtime.stats
        stats.connections += 1
        stats.connections_open += 1
        try:
            async with trio.open_nursery() as connection:
                connection.start_soon(self.outbox.run)
                with self.scope, self.runtime.drain_hook(self.on_shutdown):
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        await self.on_open()
                        while True:
                            message = await receive()
                            if message["type"] != "websocket.receive":
                                self.outbox.close()
                                break
                            self.handle_frame(message)
                            if self.outbox.control_full:  # backpressure on the client
                                await self.outbox.wait_control_room()
                        nursery.cancel_scope.cancel()
                if self.outbox.closed:
                    connection.cancel_scope.cancel()
                else:
                    self.outbox.finish()
                    connection.cancel_scope.deadline = (
                        trio.current_time() + self.runtime.config.cleanup_timeout
                    )
        finally:
            stats.connections_open -= 1


async def send_close(
    send: Callable[[dict[str, Any]], Awaitable[None]], code: int, reason: str, bound: float
) -> None:
    """Send the close frame, shielded and bounded (the peer may be gone already)."""
    with trio.CancelScope(shield=True), trio.move_on_after(bound):
        try:
            await send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception:
            log.debug("close frame not sent", exc_info=True)
