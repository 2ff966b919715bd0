"""The Relay agent connector: serve an agent to a Relay hub's ``/v1/ws/agent`` (§3.1).

``RelayConnector(agent, config, signer=ResponseSigner(...))`` signs each ``reply``
(``metadata.signature``, PROTOCOLS.md §10) over the exact reply content and event frame.
"""

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
