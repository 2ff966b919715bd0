"""``serve()``: run an :class:`AgentServer` on Hypercorn's trio worker."""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Protocol

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ..agent import Agent
from ..config import Config
from ..transports import Runtime
from ._app import AgentServer

__all__ = ["serve", "hypercorn_config"]

log = logging.getLogger("trioagents.server")


class _Served(Protocol):
    """An ASGI app with a runtime (its config and draining event)."""

    runtime: Runtime

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None: ...


def _guard_hypercorn() -> None:
    # Hypercorn 0.18's TCPServer._close sends EOF outside its send lock; if that overlaps a
    # send (both ends closing a WebSocket at once) send_all raises BusyResourceError, which
    # nothing catches, and the whole server's task group goes down. Treat it as what it is:
    # the connection is closing.
    from hypercorn.events import Closed
    from hypercorn.trio.tcp_server import TCPServer

    if getattr(TCPServer.protocol_send, "_trioagents_guarded", False):
        return
    original = TCPServer.protocol_send

    async def protocol_send(self: Any, event: Any) -> None:
        try:
            await original(self, event)
        except trio.BusyResourceError:
            await self.protocol.handle(Closed())

    protocol_send._trioagents_guarded = True  # type: ignore[attr-defined]
    TCPServer.protocol_send = protocol_send  # type: ignore[method-assign]


_guard_hypercorn()


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
    hc.accesslog = logging.getLogger("trioagents.access") if config.access_log else None
    hc.errorlog = logging.getLogger("trioagents.hypercorn")
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
        server.runtime.draining.set()

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
