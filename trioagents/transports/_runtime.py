"""What every transport shares at run time: config, agents, ids, clock, encoder, shutdown."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import trio

from .. import uamp
from ..agent import Agent
from ..config import Config

__all__ = ["Runtime", "Stats"]

log = logging.getLogger("trioagents.transports")


@attrs.define
class Stats:
    """Counters for ``/metrics`` and benchmarks (monotonic, never reset)."""

    connections: int = 0
    connections_open: int = 0
    sessions: int = 0
    sessions_open: int = 0
    responses: int = 0
    responses_cancelled: int = 0
    responses_failed: int = 0
    deltas: int = 0
    frames_sent: int = 0
    errors: int = 0


@attrs.define(eq=False)
class Runtime:
    """Shared state of one server, reachable from every request as ``Runtime.of(scope)``.

    Attributes:
        config: limits and time bounds.
        agents: the served agents by name.
        ids: id factory (random in production, sequential in tests).
        clock: wall clock for timestamps and ``created``.
        encoder: the UAMP encoder (stamps ``event_id``/``timestamp``).
        draining: set when the server starts a graceful shutdown (:meth:`start_draining`);
            long-lived connections end their sessions (``session.end{reason:"shutdown"}``)
            and close with 1001.
        nursery: the app-services nursery owned by the ASGI lifespan (None outside it).
        services: per-server state transports create in their ``lifespan`` hook.
    """

    config: Config
    agents: dict[str, Agent]
    ids: uamp.IdFactory = attrs.field(factory=uamp.RandomIds)
    clock: uamp.Clock = attrs.field(factory=uamp.SystemClock)
    encoder: uamp.Encoder = attrs.field(default=None)
    draining: trio.Event = attrs.field(factory=trio.Event)
    nursery: trio.Nursery | None = None
    stats: Stats = attrs.field(factory=Stats)
    services: dict[str, Any] = attrs.field(factory=dict)
    """Per-server state that transports set up in their ``lifespan`` (e.g. a task store)."""

    _drain_hooks: set[Callable[[], None]] = attrs.field(factory=set, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.encoder is None:
            self.encoder = uamp.Encoder(ids=self.ids, clock=self.clock)

    def start_draining(self) -> None:
        """Begin the graceful shutdown: set :attr:`draining` and call every drain hook once.

        Idempotent. A hook that raises is logged; the others still run.
        """
        if self.draining.is_set():
            return
        self.draining.set()
        for hook in list(self._drain_hooks):
            _call_hook(hook)

    @contextmanager
    def drain_hook(self, hook: Callable[[], None]) -> Iterator[None]:
        """Call ``hook`` (synchronous, must not block) if the server drains during the block.

        Called at once if the server is draining already. This is how a long-lived connection
        hears of the shutdown without a task of its own waiting on :attr:`draining` (one task
        fewer per connection: memory at thousands of idle sockets).
        """
        self._drain_hooks.add(hook)
        try:
            if self.draining.is_set():
                _call_hook(hook)
            yield
        finally:
            self._drain_hooks.discard(hook)

    @property
    def default_agent(self) -> Agent | None:
        """The agent served at the root (single-agent mode), if any."""
        if self.config.default_agent is not None:
            return self.agents.get(self.config.default_agent)
        if len(self.agents) == 1:
            return next(iter(self.agents.values()))
        return None

    def resolve(self, name: str | None) -> Agent | None:
        """The agent called ``name``; in single-agent mode any name (or none) is the default."""
        if name is not None and name in self.agents:
            return self.agents[name]
        if name is None or self.default_agent is not None:
            return self.default_agent
        return None

    @staticmethod
    def of(scope: Any) -> Runtime:
        """The runtime of the app serving ``scope`` (a Starlette request/websocket or scope)."""
        app = scope["app"] if isinstance(scope, dict) else scope.app
        runtime: Runtime = app.state.trioagents
        return runtime


def _call_hook(hook: Callable[[], None]) -> None:
    try:
        hook()
    except Exception:
        log.exception("drain hook %r failed", hook)
