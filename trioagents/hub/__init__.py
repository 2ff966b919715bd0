"""The hub: the platform side that agents without a public URL dial into.

PortalConnect daemons connect on ``/ws`` (PROTOCOLS.md §2) and Relay agents on
``/v1/ws/agent`` (§3); callers reach those agents through the hub's
``/agents/{name}/v1/chat/completions`` and ``/agents/{name}/uamp`` as if they were local.

Auth: ``Hub(auth=AuthService(...))`` authenticates callers like ``AgentServer(auth=...)`` and
passes the verified caller (never its credential) to the agent with each turn; daemon tokens
are stored API keys (:class:`StoreTokenVerifier`) and/or AOAuth JWTs whose ``sub`` is the agent
(:class:`JWTTokenVerifier`, chained with :class:`ChainTokenVerifier`).
"""

from __future__ import annotations

from ._cli import main_hub as main_hub
from ._hub import Hub as Hub, bearer_token as bearer_token
from ._serve import serve_hub as serve_hub
from ._store import (
    TOKEN_KINDS as TOKEN_KINDS,
    AgentRecord as AgentRecord,
    ChainTokenVerifier as ChainTokenVerifier,
    HubStore as HubStore,
    Identity as Identity,
    JWTTokenVerifier as JWTTokenVerifier,
    MemoryHubStore as MemoryHubStore,
    SQLiteHubStore as SQLiteHubStore,
    StoreTokenVerifier as StoreTokenVerifier,
    TokenRecord as TokenRecord,
    TokenVerifier as TokenVerifier,
)

__all__ = [
    "main_hub",
    "TOKEN_KINDS",
    "AgentRecord",
    "ChainTokenVerifier",
    "Hub",
    "HubStore",
    "Identity",
    "JWTTokenVerifier",
    "MemoryHubStore",
    "SQLiteHubStore",
    "StoreTokenVerifier",
    "TokenRecord",
    "TokenVerifier",
    "bearer_token",
    "serve_hub",
]
