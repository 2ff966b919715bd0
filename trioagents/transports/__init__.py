"""Transports: each binds a sans-I/O codec to trio I/O and to the agent.

Every transport is a :class:`~trioagents.Skill` whose endpoints are declared with ``@http`` /
``@websocket``, the same registry users' own endpoints go through.
"""

from __future__ import annotations

from ._runtime import Runtime as Runtime, Stats as Stats
from .a2a import A2ATransport as A2ATransport
from .acp import ACPTransport as ACPTransport
from .completions import CompletionsTransport as CompletionsTransport
from .realtime import RealtimeTransport as RealtimeTransport
from .uamp import UampTransport as UampTransport

DEFAULT_TRANSPORTS: tuple[type, ...] = (
    CompletionsTransport,
    UampTransport,
    RealtimeTransport,
    A2ATransport,
    ACPTransport,
)
"""Transport classes every served agent gets unless it already has one of that class."""

__all__ = [
    "DEFAULT_TRANSPORTS",
    "A2ATransport",
    "ACPTransport",
    "CompletionsTransport",
    "RealtimeTransport",
    "Runtime",
    "Stats",
    "UampTransport",
]
