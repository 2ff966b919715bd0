"""``serve_hub()``: run a :class:`Hub` on Hypercorn's trio worker."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.trio import serve as hypercorn_serve

from ..server._serve import hypercorn_config
from ._hub import Hub

__all__ = ["serve_hub"]

log = logging.getLogger("trioagents.hub")


async def _signal_trigger() -> None:
    if threading.current_thread() is not threading.main_thread():
        await trio.sleep_forever()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s; shutting down gracefully", signal.Signals(signum).name)
            return


async def serve_hub(
    hub: Hub,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``hub`` on ``hub.config.host``/``port`` until shut down.

    Reports the listening URLs with ``task_status.started(urls)`` once bound (port 0 picks a
    free port). When ``shutdown_trigger`` returns (default: SIGINT or SIGTERM) the hub drains:
    daemon and Relay sockets close with 1001 (daemons reconnect elsewhere or later), callers'
    sessions end with reason ``shutdown``, and in-flight requests get ``graceful_timeout``.
    Returns only after every connection has been cleaned up; cancelling stops everything.
    """
    hc = hypercorn_config(hub.config)
    trigger = shutdown_trigger or _signal_trigger

    async def shutdown() -> None:
        await trigger()
        hub.runtime.draining.set()

    await hypercorn_serve(hub, hc, shutdown_trigger=shutdown, task_status=task_status)  # type: ignore[arg-type]
