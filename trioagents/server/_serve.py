"""``serve()``: run an :class:`AgentServer` on Hypercorn's trio worker."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import struct
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Any, Protocol

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ..agent import Agent
from ..config import Config
from ..transports import Runtime
from ..transports._outbox import WRITE_BATCH
from ._app import AgentServer

__all__ = ["serve", "hypercorn_config"]

log = logging.getLogger("trioagents.server")


class _Served(Protocol):
    """An ASGI app with a runtime (its config and draining event)."""

    runtime: Runtime

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


def _guard_hypercorn() -> None:
    """Patch Hypercorn's per-connection send (``TCPServer.protocol_send``), once.

    Three things, all on the one function every byte Hypercorn writes goes through:

    * **A crash guard.** Hypercorn 0.18's ``TCPServer._close`` sends EOF outside its send
      lock; if that overlaps a send (both ends closing a WebSocket at once) ``send_all``
      raises ``BusyResourceError``, which nothing catches, and the whole server's task group
      goes down. Treat it as what it is: the connection is closing.
    * **A direct send.** Hypercorn writes each frame under its send lock, inside a shielded
      cancel scope, through ``SocketStream.send_all`` (conflict detector, non-blocking
      helper): ~20 µs of CPU per frame before the ``send`` system call. When nobody holds
      the lock we write to the (non-blocking) socket at once; whatever the kernel does not
      take, and every error, goes through Hypercorn's own path, which waits, retries and
      maps errors exactly as before. Still one schedule point per send, never a cancel
      point (like the shielded original).
    * **Write batching.** While a connection's writer sends one batch (``WRITE_BATCH`` is
      set, see :mod:`trioagents.transports._outbox`), the frames' bytes are collected
      instead of written, and the writer flushes them with one ``send`` when the batch is
      done. Nothing yields in between, so no other write can come between them: the bytes
      and their order are exactly what separate writes would have produced.
    * **A bounded slow path.** Whatever the direct send cannot write (the socket is full, or
      another write holds the lock) goes through :func:`_send_bounded`: Hypercorn's locked,
      shielded ``send_all`` with its error mapping, plus a deadline. Hypercorn's own shield
      has no bound, so a peer that keeps its socket open but stops reading would block that
      write, the connection's tasks and the server's shutdown forever; instead a peer that
      takes no bytes for ``trioagents_write_timeout`` seconds (set on the Hypercorn config by
      :func:`hypercorn_config`: ``send_timeout + 3 * cleanup_timeout``, so a stuck
      WebSocket is first closed with 1013 the usual way) has its connection reset.
      Without that attribute (``None``) Hypercorn's original path is used.

    And one on the read side, ``TCPServer._read_data``: without a ``read_timeout`` (the
    default) Hypercorn still enters ``trio.fail_after(inf)`` around every read, a cancel
    scope per frame received (~4 % of a busy WebSocket server's CPU). The patched loop is
    the same loop without it; with a ``read_timeout`` the original runs.
    """
    from hypercorn.events import Closed, RawData
    from hypercorn.trio.tcp_server import MAX_RECV, TCPServer

    if getattr(TCPServer.protocol_send, "_trioagents_guarded", False):
        return
    original = TCPServer.protocol_send

    async def guarded(self: Any, event: Any) -> None:
        try:
            await original(self, event)
        except trio.BusyResourceError:
            await self.protocol.handle(Closed())

    async def send_raw(self: Any, data: bytes) -> None:
        sock = getattr(self.stream, "socket", None)  # None: TLS (an SSLStream)
        if sock is not None and not self.send_lock.locked():
            try:
                sent = os.write(sock.fileno(), data)
            except OSError:  # would block, or the peer is gone: Hypercorn's path decides
                sent = 0
            if sent == len(data):
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            data = data[sent:]
        timeout = getattr(self.config, "trioagents_write_timeout", None)
        if timeout is None:
            await guarded(self, RawData(data=data))
        else:
            await _send_bounded(self, data, timeout, Closed)

    async def flush(self: Any) -> None:
        pending = self._trioagents_pending
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            await send_raw(self, data)

    async def protocol_send(self: Any, event: Any) -> None:
        if type(event) is RawData:
            batch = WRITE_BATCH.get()
            if batch is not None:
                pending = self.__dict__.setdefault("_trioagents_pending", [])
                if not pending:
                    batch.append(partial(flush, self))
                pending.append(event.data)
                return
            if self.__dict__.get("_trioagents_pending"):
                await flush(self)  # collected bytes always go first (order kept)
            await send_raw(self, event.data)
            return
        if self.__dict__.get("_trioagents_pending"):
            await flush(self)  # ... also before a close
        await guarded(self, event)

    protocol_send._trioagents_guarded = True  # type: ignore[attr-defined]
    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]

    original_read = TCPServer._read_data

    async def read_data(self: Any) -> None:
        if self.config.read_timeout:
            await original_read(self)
            return
        receive, handle = self.stream.receive_some, self.protocol.handle
        while True:
            try:
                data = await receive(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            await handle(RawData(bytes(data)))
            if not data:
                break
        await handle(Closed())

    TCPServer._read_data = read_data  # type: ignore[method-assign]


_guard_hypercorn()


async def _send_bounded(self: Any, data: bytes, stall: float, closed: Callable[[], Any]) -> None:
    """Hypercorn's slow-path write (``TCPServer.protocol_send``), with a progress deadline.

    Same semantics as Hypercorn's: under the connection's send lock, shielded from outside
    cancellation (a frame is never cut while the connection lives), a peer that is gone
    becomes ``protocol.handle(Closed())``. But if the peer takes no bytes for ``stall``
    seconds, the connection is aborted (reset) and closed: nothing waits on it forever.
    """
    async with self.send_lock:
        try:
            with trio.CancelScope(shield=True):
                if await _write_or_stall(self.stream, data, stall):
                    return
                if not self.__dict__.get("_trioagents_aborted"):
                    self._trioagents_aborted = True
                    log.info(
                        "peer took no bytes for %.1f s (not reading?); aborting the connection",
                        stall,
                    )
                _reset_on_close(self.stream)
                await trio.aclose_forcefully(self.stream)
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            trio.BusyResourceError,
            OSError,
        ):
            pass
        await self.protocol.handle(closed())


async def _write_or_stall(stream: Any, data: bytes, stall: float) -> bool:
    """Write ``data``; False if the peer took no bytes for ``stall`` s (part may be sent).

    A plain socket is written directly, so every byte the peer takes pushes the deadline
    back. A TLS stream has no byte count: it is written in chunks, each within ``stall``.
    """
    sock = getattr(stream, "socket", None)
    with trio.CancelScope(deadline=trio.current_time() + stall) as scope:
        if sock is not None:
            view = memoryview(data)
            while view:
                sent = await sock.send(view)
                view = view[sent:]
                scope.deadline = trio.current_time() + stall
        else:
            for start in range(0, len(data), _TLS_CHUNK):
                await stream.send_all(data[start : start + _TLS_CHUNK])
                scope.deadline = trio.current_time() + stall
            if not data:
                await stream.send_all(data)
        return True
    return False


_TLS_CHUNK = 64 * 1024


def _reset_on_close(stream: Any) -> None:
    """Make closing the stream's socket reset the connection (drop unsent bytes at once)."""
    sock: Any = getattr(stream, "socket", None) or getattr(
        getattr(stream, "transport_stream", None), "socket", None
    )
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except (AttributeError, OSError):
        pass


def hypercorn_config(config: Config) -> HypercornConfig:
    """Map our :class:`Config` onto Hypercorn's."""
    hc = HypercornConfig()
    host = (
        f"[{config.host}]"
        if ":" in config.host and not config.host.startswith("[")
        else config.host
    )
    hc.bind = [f"{host}:{config.port}"]
    hc.graceful_timeout = config.graceful_timeout
    # Hypercorn's own limit sits above ours so the app answers oversized frames itself
    # (an `error` event, then close 1009) instead of Hypercorn dropping the connection.
    hc.websocket_max_message_size = 2 * config.max_message_size + 1024
    hc.websocket_ping_interval = config.ws_ping_interval
    hc.h11_max_incomplete_size = 64 * 1024
    # Hypercorn's default accept backlog is 100. With 1,000 clients connecting at once the
    # kernel's accept queue overflows, and a client whose handshake looked complete waits
    # for a reply to a request the server never saw (read timeouts in the SSE benchmark at
    # c=1,000). 2048 is uvicorn's default; the kernel clamps it to net.core.somaxconn.
    hc.backlog = 2048
    hc.accesslog = logging.getLogger("trioagents.access") if config.access_log else None
    hc.errorlog = logging.getLogger("trioagents.hypercorn")
    # Read by the patched send (_guard_hypercorn): a peer that takes no bytes for this long
    # is not reading, and its connection is aborted instead of blocking a write forever. A
    # backstop behind the transports' own bound, never ahead of it: a producer waits
    # send_timeout before the connection is declared stuck (1013), then a deliberate close
    # has three stages bounded by cleanup_timeout (sessions unwind, the writer drains, the
    # close frame); a peer that resumes reading in time still gets its 1013. Only one that
    # is still not reading after all that is reset.
    hc.trioagents_write_timeout = (  # type: ignore[attr-defined]
        config.send_timeout + 3 * config.cleanup_timeout
    )
    return hc


@contextmanager
def _signals() -> Iterator[Callable[[], Awaitable[None]]]:
    # The receiver is installed before Hypercorn binds and reports "started": a SIGINT or
    # SIGTERM that arrives the instant the URLs are printed still starts a graceful shutdown.
    if threading.current_thread() is not threading.main_thread():
        yield trio.sleep_forever
        return
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

        async def wait() -> None:
            async for signum in signals:
                log.info("received %s; shutting down gracefully", signal.Signals(signum).name)
                return

        yield wait


async def serve(
    app: AgentServer | Agent | Iterable[Agent] | _Served,
    config: Config | None = None,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve agents over HTTP and WebSocket until shut down.

    Reports the listening URLs with ``task_status.started(urls)`` once the sockets are bound,
    so ``urls = await nursery.start(serve, agent, Config(port=0))`` is ready to use.

    Shutdown is graceful when ``shutdown_trigger`` returns (default: SIGINT or SIGTERM): the
    server stops accepting, long-lived connections end their sessions with reason
    ``shutdown`` and close with 1001, and in-flight requests get ``config.graceful_timeout``
    to finish. Returns only after every connection has been cleaned up.

    Cancelling ``serve`` stops everything at once (still cleaning up every task it started).

    Args:
        app: an :class:`AgentServer` (or another app with a ``runtime``, like the hub), or
            agents to build one from.
        config: used when ``app`` is not already an :class:`AgentServer`.
        shutdown_trigger: an async function; when it returns, shutdown begins.
    """
    # Anything with a runtime is already an app (AgentServer, the hub); else build one.
    server: Any = app if hasattr(app, "runtime") else AgentServer(app, config=config)  # type: ignore[arg-type]
    cfg = server.config
    hc = hypercorn_config(cfg)

    async def shutdown() -> None:
        await trigger()
        server.runtime.start_draining()

    old_threshold = gc.get_threshold()
    if cfg.gc_gen0_threshold is not None:
        gc.set_threshold(cfg.gc_gen0_threshold, *old_threshold[1:])
    if cfg.gc_freeze:
        gc.collect()
        gc.freeze()
    try:
        with ExitStack() as stack:
            trigger = shutdown_trigger or stack.enter_context(_signals())
            await hypercorn_serve(server, hc, shutdown_trigger=shutdown, task_status=task_status)  # type: ignore[arg-type]
    finally:
        if cfg.gc_freeze:
            gc.unfreeze()
        gc.set_threshold(*old_threshold)
