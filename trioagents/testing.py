"""Helpers for testing agents (and trioagents itself).

* :func:`open_test_server`: the real server (Hypercorn, real sockets) on ``127.0.0.1:0``,
  with deterministic ids and clock, stopped gracefully when the block ends.
* :class:`ScriptedModel`: the built-in model driven by a script of steps.
* :func:`leaked_tasks` / :func:`assert_no_leaked_tasks`: no task of ours outlives a test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import trio

from . import uamp
from .agent import Agent
from .agent._builtin import BuiltinModel, CallTool, Fail, Reply, Think
from .config import Config
from .server import AgentServer, serve

__all__ = [
    "ScriptedModel",
    "Reply",
    "CallTool",
    "Fail",
    "Think",
    "TestServer",
    "open_test_server",
    "leaked_tasks",
    "assert_no_leaked_tasks",
]

ScriptedModel = BuiltinModel
"""The built-in model; pass it a script: ``ScriptedModel([Reply("hi"), CallTool("add", {...})])``."""


@attrs.frozen
class TestServer:
    """A running test server.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        ws_url: ``ws://127.0.0.1:PORT``.
        server: the :class:`~trioagents.AgentServer` (its ``runtime`` holds stats and config).
    """

    __test__ = False  # not a pytest test class

    url: str
    ws_url: str
    server: AgentServer

    def agent_url(self, name: str, path: str = "") -> str:
        """``{url}/agents/{name}{path}``."""
        return f"{self.url}/agents/{name}{path}"

    def agent_ws_url(self, name: str, path: str = "/uamp") -> str:
        """``{ws_url}/agents/{name}{path}``."""
        return f"{self.ws_url}/agents/{name}{path}"


@asynccontextmanager
async def open_test_server(
    agents: Agent | Iterable[Agent] | AgentServer,
    config: Config | None = None,
    **config_overrides: Any,
) -> AsyncIterator[TestServer]:
    """Serve ``agents`` on ``127.0.0.1:0`` for the duration of the block.

    Ids are sequential and the clock is fixed unless an :class:`AgentServer` is passed.
    Leaving the block shuts the server down gracefully and returns only after every
    connection has been cleaned up.
    """
    cfg = (config or Config(gc_freeze=False, gc_gen0_threshold=None, graceful_timeout=5.0)).replace(
        host="127.0.0.1", port=0, **config_overrides
    )
    if isinstance(agents, AgentServer):
        server = agents
    else:
        server = AgentServer(agents, config=cfg, ids=uamp.SequentialIds(), clock=uamp.FixedClock())
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, server, shutdown_trigger=stop.wait))
        url = urls[0]
        try:
            yield TestServer(url=url, ws_url="ws" + url[len("http") :], server=server)
        finally:
            stop.set()


def _walk(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield child
            yield from _walk(child)


def leaked_tasks(prefix: str = "trioagents.") -> list[trio.lowlevel.Task]:
    """Tasks running now whose name starts with ``prefix`` (ours), outside the caller's chain.

    Call it at the end of a test, from inside ``trio.run``.
    """
    current = trio.lowlevel.current_task()
    chain = set()
    t: Any = current
    while t is not None:
        chain.add(t)
        nursery = t.parent_nursery
        t = nursery.parent_task if nursery is not None else None
    root = trio.lowlevel.current_root_task()
    if root is None:
        return []
    return [t for t in _walk(root) if t.name.startswith(prefix) and t not in chain]


def assert_no_leaked_tasks(prefix: str = "trioagents.") -> None:
    """Fail if any task of ours is still running.

    Raises:
        AssertionError: listing the leaked tasks' names.
    """
    leaked = leaked_tasks(prefix)
    assert not leaked, f"tasks outlived the test: {[t.name for t in leaked]}"
