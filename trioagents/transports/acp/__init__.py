"""Zed's Agent Client Protocol (PROTOCOLS.md §8): stdio, Streamable HTTP and WebSocket.

* :func:`serve_acp_stdio` / :func:`main_acp`: one agent for the editor that launched the
  process (``trioagents acp TARGET``, ``python -m trioagents.transports.acp TARGET``).
* :class:`ACPTransport`: the draft HTTP + WebSocket carriers on ``/agents/{name}/acp``.
* :class:`AcpConnection`: the engine every carrier binds (messages in through a channel, out
  through one writer).
"""

from __future__ import annotations

from ._engine import AcpConnection as AcpConnection, Outgoing as Outgoing
from ._http import ACPTransport as ACPTransport, serve_acp_websocket as serve_acp_websocket
from ._stdio import main_acp as main_acp, serve_acp_stdio as serve_acp_stdio

__all__ = [
    "ACPTransport",
    "AcpConnection",
    "Outgoing",
    "main_acp",
    "serve_acp_stdio",
    "serve_acp_websocket",
]
