"""``serve_hub()``: run a :class:`Hub` on Hypercorn's trio worker."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..server._serve import serve
from ._hub import Hub

__all__ = ["serve_hub"]

log = logging.getLogger("trioagents.hub")


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
    await serve(hub, shutdown_trigger=shutdown_trigger, task_status=task_status)
