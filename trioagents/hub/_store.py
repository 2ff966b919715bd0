"""The hub's registrations, tokens and allowlists: SQLite by default, memory for tests.

Tokens are opaque API keys for now, each bound to a *subject* and a *kind*:

=============== ========================================= =================
kind            who presents it                           subject
=============== ========================================= =================
``agent``       a PortalConnect daemon (``/ws``)          the agent name
``relay_agent`` a Relay agent connector (``/v1/ws/agent``) the agent id
``relay_app``   a Relay app (``/v1/ws/app``)              the app id
=============== ========================================= =================

Verification goes through the :class:`TokenVerifier` interface so JWT verification (§10) can
replace :class:`StoreTokenVerifier` later without touching the hub.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from pathlib import Path
from typing import Protocol

import attrs
import trio

__all__ = [
    "AgentRecord",
    "TokenRecord",
    "Identity",
    "HubStore",
    "MemoryHubStore",
    "SQLiteHubStore",
    "TokenVerifier",
    "StoreTokenVerifier",
    "TOKEN_KINDS",
]

TOKEN_KINDS = frozenset({"agent", "relay_agent", "relay_app"})
"""The kinds of token a hub store holds."""


@attrs.frozen
class AgentRecord:
    """A registered agent.

    Attributes:
        name: the agent's name (``/agents/{name}``).
        agent_url: where the agent is served directly (``…/agents/{name}``), if anywhere: the
            hub falls back to its ``/uamp`` then ``/chat/completions`` when no daemon is online.
        agent_token: bearer token the hub presents to ``agent_url``.
    """

    name: str
    agent_url: str | None = None
    agent_token: str | None = None


@attrs.frozen
class TokenRecord:
    """A stored token: ``kind`` (see :data:`TOKEN_KINDS`) and the ``subject`` it names."""

    token: str
    kind: str
    subject: str


@attrs.frozen
class Identity:
    """Who a verified token belongs to."""

    subject: str
    kind: str


class HubStore(Protocol):
    """Where a hub keeps agents, tokens and allowlists. Every method is async."""

    async def add_token(self, token: str, subject: str, kind: str = "agent") -> None:
        """Store ``token`` for ``subject`` (an ``agent`` token also registers the agent)."""
        ...

    async def revoke_token(self, token: str) -> None:
        """Forget ``token`` (no error when unknown)."""
        ...

    async def lookup_token(self, token: str) -> TokenRecord | None:
        """The record of ``token``, or None."""
        ...

    async def put_agent(self, record: AgentRecord) -> None:
        """Register or update an agent."""
        ...

    async def get_agent(self, name: str) -> AgentRecord | None:
        """The agent called ``name``, or None."""
        ...

    async def list_agents(self) -> list[AgentRecord]:
        """Every registered agent, sorted by name."""
        ...

    async def allow(self, agent: str, app_id: str) -> None:
        """Let Relay app ``app_id`` send events to ``agent``."""
        ...

    async def disallow(self, agent: str, app_id: str) -> None:
        """Stop Relay app ``app_id`` from sending events to ``agent``."""
        ...

    async def is_allowed(self, agent: str, app_id: str) -> bool:
        """Whether ``app_id`` is on ``agent``'s allowlist."""
        ...

    async def aclose(self) -> None:
        """Release the store (idempotent)."""
        ...


class MemoryHubStore:
    """A :class:`HubStore` in memory (tests, throwaway hubs)."""

    def __init__(self) -> None:
        self._tokens: dict[str, TokenRecord] = {}
        self._agents: dict[str, AgentRecord] = {}
        self._allow: set[tuple[str, str]] = set()

    async def add_token(self, token: str, subject: str, kind: str = "agent") -> None:
        """Store ``token`` for ``subject``."""
        _check_kind(kind)
        self._tokens[token] = TokenRecord(token, kind, subject)
        if kind in ("agent", "relay_agent") and subject not in self._agents:
            self._agents[subject] = AgentRecord(subject)
        await trio.lowlevel.checkpoint()

    async def revoke_token(self, token: str) -> None:
        """Forget ``token``."""
        self._tokens.pop(token, None)
        await trio.lowlevel.checkpoint()

    async def lookup_token(self, token: str) -> TokenRecord | None:
        """The record of ``token``."""
        await trio.lowlevel.checkpoint()
        return self._tokens.get(token)

    async def put_agent(self, record: AgentRecord) -> None:
        """Register or update an agent."""
        self._agents[record.name] = record
        await trio.lowlevel.checkpoint()

    async def get_agent(self, name: str) -> AgentRecord | None:
        """The agent called ``name``."""
        await trio.lowlevel.checkpoint()
        return self._agents.get(name)

    async def list_agents(self) -> list[AgentRecord]:
        """Every registered agent."""
        await trio.lowlevel.checkpoint()
        return sorted(self._agents.values(), key=lambda r: r.name)

    async def allow(self, agent: str, app_id: str) -> None:
        """Allowlist ``app_id`` for ``agent``."""
        self._allow.add((agent, app_id))
        await trio.lowlevel.checkpoint()

    async def disallow(self, agent: str, app_id: str) -> None:
        """Remove ``app_id`` from ``agent``'s allowlist."""
        self._allow.discard((agent, app_id))
        await trio.lowlevel.checkpoint()

    async def is_allowed(self, agent: str, app_id: str) -> bool:
        """Whether ``app_id`` may reach ``agent``."""
        await trio.lowlevel.checkpoint()
        return (agent, app_id) in self._allow

    async def aclose(self) -> None:
        """Nothing to release."""
        await trio.lowlevel.checkpoint()


def _check_kind(kind: str) -> None:
    if kind not in TOKEN_KINDS:
        raise ValueError(f"token kind must be one of {sorted(TOKEN_KINDS)}, got {kind!r}")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS hub_tokens (
    token TEXT PRIMARY KEY, kind TEXT NOT NULL, subject TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS hub_agents (
    name TEXT PRIMARY KEY, agent_url TEXT, agent_token TEXT);
CREATE TABLE IF NOT EXISTS hub_allowlist (
    agent TEXT NOT NULL, app_id TEXT NOT NULL, PRIMARY KEY (agent, app_id));
"""


class SQLiteHubStore:
    """A :class:`HubStore` in one SQLite file (stdlib ``sqlite3`` in a worker thread).

    One connection, used by one thread at a time (a trio lock serialises the calls).

    Args:
        path: the database file (created if missing), or ``":memory:"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db: sqlite3.Connection | None = None
        self._lock = trio.Lock()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    async def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        def work() -> list[tuple[object, ...]]:
            return list(self._conn().execute(sql, args).fetchall())

        async with self._lock:
            return await trio.to_thread.run_sync(work)

    async def add_token(self, token: str, subject: str, kind: str = "agent") -> None:
        """Store ``token`` for ``subject``."""
        _check_kind(kind)
        await self._run(
            "INSERT OR REPLACE INTO hub_tokens (token, kind, subject) VALUES (?, ?, ?)",
            (token, kind, subject),
        )
        if kind in ("agent", "relay_agent"):
            await self._run("INSERT OR IGNORE INTO hub_agents (name) VALUES (?)", (subject,))

    async def revoke_token(self, token: str) -> None:
        """Forget ``token``."""
        await self._run("DELETE FROM hub_tokens WHERE token = ?", (token,))

    async def lookup_token(self, token: str) -> TokenRecord | None:
        """The record of ``token``."""
        rows = await self._run("SELECT kind, subject FROM hub_tokens WHERE token = ?", (token,))
        if not rows:
            return None
        kind, subject = rows[0]
        return TokenRecord(token, str(kind), str(subject))

    async def put_agent(self, record: AgentRecord) -> None:
        """Register or update an agent."""
        await self._run(
            "INSERT OR REPLACE INTO hub_agents (name, agent_url, agent_token) VALUES (?, ?, ?)",
            (record.name, record.agent_url, record.agent_token),
        )

    async def get_agent(self, name: str) -> AgentRecord | None:
        """The agent called ``name``."""
        rows = await self._run(
            "SELECT name, agent_url, agent_token FROM hub_agents WHERE name = ?", (name,)
        )
        return _agent(rows[0]) if rows else None

    async def list_agents(self) -> list[AgentRecord]:
        """Every registered agent."""
        rows = await self._run("SELECT name, agent_url, agent_token FROM hub_agents ORDER BY name")
        return [_agent(r) for r in rows]

    async def allow(self, agent: str, app_id: str) -> None:
        """Allowlist ``app_id`` for ``agent``."""
        await self._run(
            "INSERT OR IGNORE INTO hub_allowlist (agent, app_id) VALUES (?, ?)", (agent, app_id)
        )

    async def disallow(self, agent: str, app_id: str) -> None:
        """Remove ``app_id`` from ``agent``'s allowlist."""
        await self._run("DELETE FROM hub_allowlist WHERE agent = ? AND app_id = ?", (agent, app_id))

    async def is_allowed(self, agent: str, app_id: str) -> bool:
        """Whether ``app_id`` may reach ``agent``."""
        rows = await self._run(
            "SELECT 1 FROM hub_allowlist WHERE agent = ? AND app_id = ?", (agent, app_id)
        )
        return bool(rows)

    async def aclose(self) -> None:
        """Close the database (idempotent)."""
        async with self._lock:
            db, self._db = self._db, None
            if db is not None:
                await trio.to_thread.run_sync(db.close)


def _agent(row: tuple[object, ...]) -> AgentRecord:
    name, url, token = row
    return AgentRecord(
        str(name), str(url) if url is not None else None, str(token) if token is not None else None
    )


class TokenVerifier(Protocol):
    """Turns a presented token into an :class:`Identity` (or None: refuse)."""

    async def verify(self, token: str, *, kinds: Collection[str]) -> Identity | None:
        """Verify ``token`` for one of ``kinds``; None when unknown, revoked or another kind."""
        ...


class StoreTokenVerifier:
    """Verifies opaque API keys against a :class:`HubStore`."""

    def __init__(self, store: HubStore) -> None:
        self.store = store

    async def verify(self, token: str, *, kinds: Collection[str]) -> Identity | None:
        """The identity of ``token`` if the store holds it with one of ``kinds``."""
        if not token:
            await trio.lowlevel.checkpoint()
            return None
        record = await self.store.lookup_token(token)
        if record is None or record.kind not in kinds:
            return None
        return Identity(subject=record.subject, kind=record.kind)
