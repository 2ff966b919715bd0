"""The hub's registrations, tokens and allowlists: SQLite by default, memory for tests.

Tokens are opaque API keys for now, each bound to a *subject* and a *kind*:

=============== ========================================= =================
kind            who presents it                           subject
=============== ========================================= =================
``agent``       a PortalConnect daemon (``/ws``)          the agent name
``relay_agent`` a Relay agent connector (``/v1/ws/agent``) the agent id
``relay_app``   a Relay app (``/v1/ws/app``)              the app id
=============== ========================================= =================

Verification goes through the :class:`TokenVerifier` interface: :class:`StoreTokenVerifier`
(the stored opaque tokens above), :class:`JWTTokenVerifier` (AOAuth JWTs of trusted issuers for
PortalConnect daemons, PROTOCOLS.md §2/§10: ``sub`` = the agent name) and
:class:`ChainTokenVerifier` (the first verifier that knows the token wins).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import attrs
import httpx
import trio

from .. import uamp
from ..auth import AuthError, JWKSCache, JWTVerifier, KeyResolver, VerifierConfig

__all__ = [
    "AgentRecord",
    "TokenRecord",
    "Identity",
    "HubStore",
    "MemoryHubStore",
    "SQLiteHubStore",
    "TokenVerifier",
    "StoreTokenVerifier",
    "JWTTokenVerifier",
    "ChainTokenVerifier",
    "TOKEN_KINDS",
]

log = logging.getLogger("trioagents.hub")

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
    """Who a verified token belongs to.

    Attributes:
        subject: the agent name, Relay agent id or app id the token names.
        kind: one of :data:`TOKEN_KINDS`.
        issuer: the JWT issuer (``None`` for stored opaque tokens).
        expires_at: the JWT's ``exp`` in Unix seconds (``None`` for stored tokens).
    """

    subject: str
    kind: str
    issuer: str | None = None
    expires_at: int | None = None


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
    """Turns a presented token into an :class:`Identity` (or None: refuse).

    A verifier that needs resources for its lifetime (an HTTP client for JWKS) may also offer
    ``lifespan() -> AsyncContextManager``; the :class:`~trioagents.hub.Hub` enters it for as
    long as it serves.
    """

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


class JWTTokenVerifier:
    """Verifies PortalConnect daemon tokens that are AOAuth JWTs (PROTOCOLS.md §2, §10).

    Built on :class:`~trioagents.auth.JWTVerifier` (algorithms, ``iss``, ``aud``, ``exp``/``nbf``,
    key choice by ``kid``) and, unless ``keys`` is given, a :class:`~trioagents.auth.JWKSCache`
    that follows the issuers' key rotation (its HTTP client lives in :meth:`lifespan`, which
    the hub enters). A verified token is an :class:`Identity` of kind ``agent`` whose subject
    is the token's ``sub``: the hub then requires it to equal the agent being registered. Only
    the ``agent`` kind is answered (Relay tokens stay opaque ``rla_``/``rlk_`` keys).

    Args:
        trusted_issuers: issuers whose daemon tokens are accepted.
        audiences: accepted ``aud`` values (e.g. the hub's public URL).
        keys: where issuers' keys come from (default: a JWKS cache over HTTP).
        jwks_uris: issuer → ``jwks_uri`` for the default cache.
        self_issued_allow: ``fnmatch`` patterns of further accepted issuers.
        self_issued_deny: ``fnmatch`` patterns of refused issuers.
        algorithms: accepted algorithms (``none``/``HS*`` are refused at construction).
        clock: wall clock for ``exp``/``nbf`` (the hub's, so tests can fix time).
        http_timeout: seconds bounding each JWKS fetch of the default cache.

    Raises:
        ValueError: no issuer at all, no audience, or a forbidden algorithm.
    """

    kinds = frozenset({"agent"})

    def __init__(
        self,
        *,
        trusted_issuers: Collection[str] = (),
        audiences: Collection[str],
        keys: KeyResolver | None = None,
        jwks_uris: Mapping[str, str] | None = None,
        self_issued_allow: Collection[str] = (),
        self_issued_deny: Collection[str] = (),
        algorithms: Collection[str] | None = None,
        clock: uamp.Clock | None = None,
        http_timeout: float = 10.0,
    ) -> None:
        if not trusted_issuers and not self_issued_allow:
            raise ValueError("JWTTokenVerifier needs trusted_issuers or self_issued_allow")
        if not audiences:
            raise ValueError("JWTTokenVerifier needs at least one audience")
        extra: dict[str, Any] = {}
        if algorithms is not None:
            extra["algorithms"] = tuple(algorithms)
        self.config = VerifierConfig(
            audiences=tuple(audiences),
            trusted_issuers=frozenset(trusted_issuers),
            self_issued_allow=tuple(self_issued_allow),
            self_issued_deny=tuple(self_issued_deny),
            **extra,
        )
        self.keys = keys
        self.jwks_uris = dict(jwks_uris or {})
        self.clock: uamp.Clock = clock or uamp.SystemClock()
        self.http_timeout = http_timeout
        self.last_error: AuthError | None = None
        """Why the last refused token was refused (for logs and tests)."""

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Own the JWKS cache's HTTP client for the block (nothing to do with fixed ``keys``)."""
        if self.keys is not None:
            yield
            return
        async with httpx.AsyncClient(timeout=self.http_timeout) as client:
            self.keys = JWKSCache(client, jwks_uris=self.jwks_uris)
            try:
                yield
            finally:
                self.keys = None

    async def verify(self, token: str, *, kinds: Collection[str]) -> Identity | None:
        """The identity behind a daemon JWT, or None (not a valid JWT of a trusted issuer,
        expired, wrong audience, or a kind other than ``agent`` asked for).

        May fetch an issuer's keys; cancelling it caches nothing.
        """
        if "agent" not in kinds or not token or token.count(".") != 2 or self.keys is None:
            await trio.lowlevel.checkpoint()
            return None
        try:
            principal = await JWTVerifier(self.config, self.keys, clock=self.clock).verify(token)
        except AuthError as err:
            self.last_error = err
            log.info("daemon token refused: %s (%s)", err.message, err.reason)
            return None
        return Identity(
            subject=principal.sub,
            kind="agent",
            issuer=principal.iss,
            expires_at=principal.expires_at,
        )


class ChainTokenVerifier:
    """Tries several :class:`TokenVerifier` in order; the first identity wins.

    E.g. ``ChainTokenVerifier(StoreTokenVerifier(store), JWTTokenVerifier(...))``: stored API
    keys first (a cheap lookup), then JWTs.
    """

    def __init__(self, *verifiers: TokenVerifier) -> None:
        self.verifiers = verifiers

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Enter the lifespan of every verifier that has one."""
        async with AsyncExitStack() as stack:
            for v in self.verifiers:
                lifespan = getattr(v, "lifespan", None)
                if lifespan is not None:
                    await stack.enter_async_context(lifespan())
            yield

    async def verify(self, token: str, *, kinds: Collection[str]) -> Identity | None:
        """The first identity a verifier finds for ``token``, else None."""
        for v in self.verifiers:
            identity = await v.verify(token, kinds=kinds)
            if identity is not None:
                return identity
        await trio.lowlevel.checkpoint()
        return None
