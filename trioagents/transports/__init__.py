"""Transports: each binds a sans-I/O codec to trio I/O and to the agent.

Every transport is a :class:`~trioagents.Skill` whose endpoints are declared with ``@http`` /
``@websocket``, the same registry users' own endpoints go through.
"""

from __future__ import annotations

from ._runtime import Runtime as Runtime
from ._runtime import Stats as Stats
from .completions import CompletionsTransport as CompletionsTransport
from .uamp import UampTransport as UampTransport

DEFAULT_TRANSPORTS = (CompletionsTransport, UampTransport)
"""Transport classes every served agent gets unless it already has one of that class."""

__all__ = ["DEFAULT_TRANSPORTS", "CompletionsTransport", "Runtime", "Stats", "UampTransport"]
