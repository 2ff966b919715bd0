"""The Relay agent connector: serve an agent to a Relay hub's ``/v1/ws/agent`` (§3.1)."""

from __future__ import annotations

from ._connector import (
    RelayAuthError as RelayAuthError,
    RelayConfig as RelayConfig,
    RelayConnector as RelayConnector,
    RelayError as RelayError,
    connect_relay as connect_relay,
    open_relay as open_relay,
)

__all__ = [
    "RelayAuthError",
    "RelayConfig",
    "RelayConnector",
    "RelayError",
    "connect_relay",
    "open_relay",
]
