"""PortalConnect: serve agents through a hub over one dial-out WebSocket (PROTOCOLS.md §2).

::

    async with open_portal({"portal_ws_url": "ws://hub:8080/ws",
                            "agents": [{"name": "my-agent", "token": "…"}]}, agent) as portal:
        await portal.wait_registered()
        ...

Agent tokens are stored hub API keys or AOAuth JWTs (``sub`` = the agent's name). Each turn's
verified caller (``session.metadata["caller"]``/``["sub"]``/``["principal"]``) and payment token
apply to that turn only; ``PortalConnect(..., auth=AuthService(...))`` signs responses and
``payments=`` charges paid agents in-band (``payment.*`` relayed by the hub to its caller).
"""

from __future__ import annotations

from ._cli import main_connect as main_connect
from ._daemon import (
    AgentEntry as AgentEntry,
    PortalAuthError as PortalAuthError,
    PortalConfig as PortalConfig,
    PortalConnect as PortalConnect,
    PortalError as PortalError,
    PortalGaveUp as PortalGaveUp,
    PortalStats as PortalStats,
    connect_portal as connect_portal,
    open_portal as open_portal,
)
from ._socket import (
    ConnectFailed as ConnectFailed,
    Dialer as Dialer,
    DialError as DialError,
    DialSocket as DialSocket,
    HandshakeRejected as HandshakeRejected,
    SocketClosed as SocketClosed,
    dial_websocket as dial_websocket,
)

__all__ = [
    "main_connect",
    "AgentEntry",
    "ConnectFailed",
    "DialError",
    "DialSocket",
    "Dialer",
    "HandshakeRejected",
    "PortalAuthError",
    "PortalConfig",
    "PortalConnect",
    "PortalError",
    "PortalGaveUp",
    "PortalStats",
    "SocketClosed",
    "connect_portal",
    "dial_websocket",
    "open_portal",
]
