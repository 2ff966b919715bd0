"""The payment backend interface and its embedded ledgers (in memory and SQLite).

Theory of operation
-------------------
A *token* holds money in four buckets, and every operation moves money between them without
ever creating or destroying any (except ``issue`` and ``topup``, which add to both sides)::

    balance + locked + spent == issued + topped_up            (per token, always)

=========  ======================================================================
issue      a new token: ``balance = issued = amount``
topup      ``balance += amount``, ``topped_up += amount``
lock       reserve: ``balance -= amount``, ``locked += amount`` (a new *lock*)
charge     capture part of a lock: ``locked -= x``, ``spent += x``; ``x <= lock remaining``
settle     close the lock, return the uncharged remainder: ``locked -= r``, ``balance += r``
release    void the lock, return everything it took, charges included:
           ``locked -= r``, ``spent -= charged``, ``balance += amount``
=========  ======================================================================

``charge`` is therefore provisional until ``settle``: a turn that fails, is cancelled or loses
its client is *released* and costs nothing, while a completed turn is *settled* and keeps its
charges. A closed lock stays closed: ``settle`` and ``release`` of a closed lock are no-ops
(except ``settle`` after ``release``, which is refused), ``charge`` on it is refused.

Every mutating call takes an ``op_id``. The first call with an ``op_id`` runs in one
transaction together with recording ``op_id`` → (operation and arguments, result); a repeat
returns the recorded result without doing anything, and a repeat with *other* arguments raises
:class:`~trioagents.payments.IdempotencyConflictError`. A call that fails changes nothing and
records nothing, so it may be retried with the same ``op_id`` (after a top-up, say).

The accounting is written once (:class:`_LedgerCore`, synchronous) over a tiny store interface;
the in-memory store journals writes until commit, the SQLite store uses ``BEGIN IMMEDIATE``
transactions in WAL mode from a worker thread (``trio.to_thread.run_sync``, one at a time).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import attrs
import orjson
import trio
from cryptography.hazmat.primitives.asymmetric import ec

from .. import uamp
from ._errors import (
    TOKEN_EXPIRED,
    TOKEN_NOT_FOUND,
    IdempotencyConflictError,
    InsufficientTokenBalanceError,
    PaymentChargingFailedError,
    PaymentTokenInvalidError,
    to_decimal,
)
from ._signing import (
    dump_signing_key,
    generate_signing_key,
    load_signing_key,
    public_jwk,
    sign_payment_token,
)

__all__ = [
    "PaymentBackend",
    "TokenBalance",
    "LockInfo",
    "IssuedToken",
    "MemoryLedger",
    "SqliteLedger",
    "DEFAULT_TOKEN_TTL",
]

DEFAULT_TOKEN_TTL = 30 * 24 * 3600
"""Lifetime of issued tokens unless ``expires_in`` says otherwise (30 days)."""

T = TypeVar("T")


def _dec(value: Decimal | str | int) -> Decimal:
    d = to_decimal(value)
    assert d is not None
    return d


@attrs.frozen
class TokenBalance:
    """A token's accounts.

    Attributes:
        token_id: the token.
        currency: what the amounts are in.
        balance: what can still be locked (spendable now).
        locked: reserved by open locks and not yet charged.
        spent: charged (captured, or provisional under an open lock).
        issued: the initial amount.
        topped_up: the sum of all top-ups.
        expires_at: when the token expires (Unix s).
    """

    token_id: str
    currency: str
    balance: Decimal = attrs.field(converter=_dec)
    locked: Decimal = attrs.field(converter=_dec)
    spent: Decimal = attrs.field(converter=_dec)
    issued: Decimal = attrs.field(converter=_dec)
    topped_up: Decimal = attrs.field(converter=_dec)
    expires_at: int

    @property
    def initial_amount(self) -> Decimal:
        """The amount the token was issued with (``payment.balance`` threshold base)."""
        return self.issued


@attrs.frozen
class LockInfo:
    """A reservation of funds for one turn.

    Attributes:
        lock_id: the lock.
        token_id: the token it reserves from.
        currency: the token's currency.
        amount: reserved.
        charged: captured so far.
        state: ``open``, ``settled`` or ``released``.
    """

    lock_id: str
    token_id: str
    currency: str
    amount: Decimal = attrs.field(converter=_dec)
    charged: Decimal = attrs.field(converter=_dec)
    state: Literal["open", "settled", "released"] = "open"

    @property
    def remaining(self) -> Decimal:
        """What can still be charged (0 once closed)."""
        return self.amount - self.charged if self.state == "open" else Decimal(0)


@attrs.frozen
class IssuedToken:
    """A newly issued payment token.

    Attributes:
        token_id: the ledger id (the JWT's ``jti``).
        token: the signed JWT the payer presents.
        amount: the initial amount.
        currency: what it is in.
        expires_at: Unix s.
    """

    token_id: str
    token: str
    amount: Decimal = attrs.field(converter=_dec)
    currency: str = "credits"
    expires_at: int = 0


def to_json(value: TokenBalance | LockInfo | IssuedToken) -> dict[str, Any]:
    """A result as JSON-ready data (amounts as decimal strings)."""
    data = attrs.asdict(value)
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in data.items()}


class PaymentBackend(Protocol):
    """What a payment ledger offers (embedded :class:`SqliteLedger` / :class:`MemoryLedger`, or
    :class:`~trioagents.payments.RemotePaymentBackend` over the payments HTTP API).

    Every mutating call is idempotent by ``op_id`` (see the module docs). Cancelling a call
    may leave it done or not done; repeating it with the same ``op_id`` is always safe.

    Errors: :class:`~trioagents.payments.PaymentTokenInvalidError` (``TOKEN_NOT_FOUND``,
    ``TOKEN_EXPIRED``), :class:`~trioagents.payments.InsufficientTokenBalanceError` (``amount``
    = the shortfall), :class:`~trioagents.payments.PaymentChargingFailedError` (unknown or
    closed lock, reused ``op_id``), :class:`~trioagents.payments.PaymentPlatformUnavailableError`
    (remote backends), ``ValueError`` for a negative or malformed amount.
    """

    async def issue_token(
        self,
        amount: Decimal | str | int,
        currency: str = "credits",
        *,
        expires_in: int | None = None,
        op_id: str | None = None,
    ) -> IssuedToken:
        """Create a token worth ``amount`` and sign its JWT."""
        ...

    async def balance(self, token_id: str) -> TokenBalance:
        """The token's accounts."""
        ...

    async def lock(self, token_id: str, amount: Decimal | str | int, op_id: str) -> LockInfo:
        """Reserve ``amount`` of the token's balance."""
        ...

    async def charge(self, lock_id: str, amount: Decimal | str | int, op_id: str) -> LockInfo:
        """Capture ``amount`` of the lock (at most its remainder)."""
        ...

    async def settle(self, lock_id: str, op_id: str) -> LockInfo:
        """Close the lock and return its uncharged remainder to the balance."""
        ...

    async def release(self, lock_id: str, op_id: str) -> LockInfo:
        """Void the lock: everything it took, charges included, returns to the balance."""
        ...

    async def topup(self, token_id: str, amount: Decimal | str | int, op_id: str) -> TokenBalance:
        """Add ``amount`` to the token."""
        ...

    async def lock_info(self, lock_id: str) -> LockInfo:
        """A lock's state."""
        ...

    async def jwks(self) -> dict[str, Any]:
        """The public keys that verify this ledger's tokens: ``{"keys": [JWK…]}``."""
        ...


# --------------------------------------------------------------------------------------------
# The accounting, once
# --------------------------------------------------------------------------------------------


class _Store(Protocol):
    def transaction(self) -> Any: ...
    def get_token(self, token_id: str) -> TokenBalance | None: ...
    def put_token(self, token: TokenBalance) -> None: ...
    def get_lock(self, lock_id: str) -> LockInfo | None: ...
    def put_lock(self, lock: LockInfo) -> None: ...
    def get_op(self, op_id: str) -> tuple[str, bytes] | None: ...
    def put_op(self, op_id: str, fingerprint: str, result: bytes) -> None: ...


_KINDS: dict[str, type[Any]] = {"token": TokenBalance, "lock": LockInfo, "issued": IssuedToken}


def _positive(value: Decimal | str | int, *, zero_ok: bool) -> Decimal:
    d = _dec(value)
    if d < 0 or (d == 0 and not zero_ok):
        raise ValueError(f"amount must be {'>= 0' if zero_ok else '> 0'}, got {value}")
    return d


class _LedgerCore:
    """The accounting rules over a store; synchronous, one call = one transaction."""

    def __init__(
        self,
        store: _Store,
        key: ec.EllipticCurvePrivateKey,
        *,
        clock: Callable[[], float],
        ids: uamp.IdFactory,
        issuer: str | None,
        token_ttl: int,
    ) -> None:
        self.store = store
        self.key = key
        self.clock = clock
        self.ids = ids
        self.issuer = issuer
        self.token_ttl = token_ttl

    def _once(self, op_id: str | None, fingerprint: str, fn: Callable[[], T]) -> T:
        with self.store.transaction():
            if op_id is not None:
                done = self.store.get_op(op_id)
                if done is not None:
                    if done[0] != fingerprint:
                        raise IdempotencyConflictError(
                            f"op_id {op_id!r} was used for {done[0]!r}",
                            details={"op_id": op_id},
                        )
                    kind, data = orjson.loads(done[1])
                    return _KINDS[kind](**data)  # type: ignore[no-any-return]
            result = fn()
            if op_id is not None:
                kind = next(k for k, c in _KINDS.items() if isinstance(result, c))
                self.store.put_op(
                    op_id,
                    fingerprint,
                    orjson.dumps([kind, to_json(result)]),  # type: ignore[arg-type]
                )
            return result

    def _token(self, token_id: str) -> TokenBalance:
        token = self.store.get_token(token_id)
        if token is None:
            raise PaymentTokenInvalidError(
                f"unknown payment token {token_id!r}", subcode=TOKEN_NOT_FOUND, token_id=token_id
            )
        return token

    def _lock(self, lock_id: str) -> LockInfo:
        lock = self.store.get_lock(lock_id)
        if lock is None:
            raise PaymentChargingFailedError(
                f"unknown lock {lock_id!r}",
                details={"lock_id": lock_id, "reason": "lock_not_found"},
            )
        return lock

    def _live_token(self, token_id: str) -> TokenBalance:
        token = self._token(token_id)
        if self.clock() >= token.expires_at:
            raise PaymentTokenInvalidError(
                "payment token expired", subcode=TOKEN_EXPIRED, token_id=token_id
            )
        return token

    # -- operations ------------------------------------------------------------------------

    def issue(
        self, amount: Decimal | str | int, currency: str, expires_in: int | None, op_id: str | None
    ) -> IssuedToken:
        value = _positive(amount, zero_ok=True)
        ttl = self.token_ttl if expires_in is None else int(expires_in)
        if ttl <= 0:
            raise ValueError("expires_in must be positive")
        if not currency or len(currency) > 64:
            raise ValueError("currency must be 1-64 characters")

        def run() -> IssuedToken:
            token_id = self.ids.new("tok")
            now = int(self.clock())
            expires_at = now + ttl
            self.store.put_token(
                TokenBalance(
                    token_id=token_id,
                    currency=currency,
                    balance=value,
                    locked=Decimal(0),
                    spent=Decimal(0),
                    issued=value,
                    topped_up=Decimal(0),
                    expires_at=expires_at,
                )
            )
            jwt = sign_payment_token(
                self.key,
                token_id=token_id,
                amount=value,
                currency=currency,
                issued_at=now,
                expires_at=expires_at,
                issuer=self.issuer,
            )
            return IssuedToken(
                token_id=token_id, token=jwt, amount=value, currency=currency, expires_at=expires_at
            )

        return self._once(op_id, f"issue:{value}:{currency}:{expires_in}", run)

    def balance(self, token_id: str) -> TokenBalance:
        with self.store.transaction():
            return self._token(token_id)

    def lock_info(self, lock_id: str) -> LockInfo:
        with self.store.transaction():
            return self._lock(lock_id)

    def topup(self, token_id: str, amount: Decimal | str | int, op_id: str) -> TokenBalance:
        value = _positive(amount, zero_ok=False)

        def run() -> TokenBalance:
            token = self._live_token(token_id)
            new = attrs.evolve(
                token, balance=token.balance + value, topped_up=token.topped_up + value
            )
            self.store.put_token(new)
            return new

        return self._once(op_id, f"topup:{token_id}:{value}", run)

    def lock(self, token_id: str, amount: Decimal | str | int, op_id: str) -> LockInfo:
        value = _positive(amount, zero_ok=True)

        def run() -> LockInfo:
            token = self._live_token(token_id)
            if value > token.balance:
                raise InsufficientTokenBalanceError(
                    f"token balance {token.balance} does not cover {value}",
                    amount=value - token.balance,
                    currency=token.currency,
                    token_id=token_id,
                    details={"balance": str(token.balance), "requested": str(value)},
                )
            self.store.put_token(
                attrs.evolve(token, balance=token.balance - value, locked=token.locked + value)
            )
            lock = LockInfo(
                lock_id=self.ids.new("lock"),
                token_id=token_id,
                currency=token.currency,
                amount=value,
                charged=Decimal(0),
            )
            self.store.put_lock(lock)
            return lock

        return self._once(op_id, f"lock:{token_id}:{value}", run)

    def charge(self, lock_id: str, amount: Decimal | str | int, op_id: str) -> LockInfo:
        value = _positive(amount, zero_ok=True)

        def run() -> LockInfo:
            lock = self._lock(lock_id)
            if lock.state != "open":
                raise PaymentChargingFailedError(
                    f"lock {lock_id!r} is {lock.state}", details={"lock_id": lock_id}
                )
            if value > lock.remaining:
                raise InsufficientTokenBalanceError(
                    f"lock {lock_id!r} has {lock.remaining} left, {value} asked",
                    amount=value - lock.remaining,
                    currency=lock.currency,
                    action="topup",
                    token_id=lock.token_id,
                    details={"lock_id": lock_id, "remaining": str(lock.remaining)},
                )
            token = self._token(lock.token_id)
            self.store.put_token(
                attrs.evolve(token, locked=token.locked - value, spent=token.spent + value)
            )
            new = attrs.evolve(lock, charged=lock.charged + value)
            self.store.put_lock(new)
            return new

        return self._once(op_id, f"charge:{lock_id}:{value}", run)

    def settle(self, lock_id: str, op_id: str) -> LockInfo:
        def run() -> LockInfo:
            lock = self._lock(lock_id)
            if lock.state == "settled":
                return lock
            if lock.state == "released":
                raise PaymentChargingFailedError(
                    f"lock {lock_id!r} was released", details={"lock_id": lock_id}
                )
            rest = lock.remaining
            token = self._token(lock.token_id)
            self.store.put_token(
                attrs.evolve(token, locked=token.locked - rest, balance=token.balance + rest)
            )
            new = attrs.evolve(lock, state="settled")
            self.store.put_lock(new)
            return new

        return self._once(op_id, f"settle:{lock_id}", run)

    def release(self, lock_id: str, op_id: str) -> LockInfo:
        def run() -> LockInfo:
            lock = self._lock(lock_id)
            if lock.state != "open":
                return lock
            rest = lock.remaining
            token = self._token(lock.token_id)
            self.store.put_token(
                attrs.evolve(
                    token,
                    locked=token.locked - rest,
                    spent=token.spent - lock.charged,
                    balance=token.balance + lock.amount,
                )
            )
            new = attrs.evolve(lock, state="released")
            self.store.put_lock(new)
            return new

        return self._once(op_id, f"release:{lock_id}", run)


# --------------------------------------------------------------------------------------------
# In memory
# --------------------------------------------------------------------------------------------


class _MemoryStore:
    def __init__(self) -> None:
        self.tokens: dict[str, TokenBalance] = {}
        self.locks: dict[str, LockInfo] = {}
        self.ops: dict[str, tuple[str, bytes]] = {}
        self._pending: dict[tuple[str, str], Any] | None = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # Writes are journalled and applied only when the operation succeeds: a failure
        # half-way leaves the ledger exactly as it was.
        self._pending = {}
        try:
            yield
            for (table, key), value in self._pending.items():
                getattr(self, table)[key] = value
        finally:
            self._pending = None

    def _get(self, table: str, key: str) -> Any:
        if self._pending is not None and (table, key) in self._pending:
            return self._pending[(table, key)]
        return getattr(self, table).get(key)

    def _put(self, table: str, key: str, value: Any) -> None:
        assert self._pending is not None, "writes happen inside a transaction"
        self._pending[(table, key)] = value

    def get_token(self, token_id: str) -> TokenBalance | None:
        return self._get("tokens", token_id)  # type: ignore[no-any-return]

    def put_token(self, token: TokenBalance) -> None:
        self._put("tokens", token.token_id, token)

    def get_lock(self, lock_id: str) -> LockInfo | None:
        return self._get("locks", lock_id)  # type: ignore[no-any-return]

    def put_lock(self, lock: LockInfo) -> None:
        self._put("locks", lock.lock_id, lock)

    def get_op(self, op_id: str) -> tuple[str, bytes] | None:
        return self._get("ops", op_id)  # type: ignore[no-any-return]

    def put_op(self, op_id: str, fingerprint: str, result: bytes) -> None:
        self._put("ops", op_id, (fingerprint, result))


class _EmbeddedLedger:
    """Shared async surface of the embedded ledgers."""

    _core: _LedgerCore | None

    async def _run(self, fn: Callable[[_LedgerCore], T]) -> T:
        raise NotImplementedError

    async def issue_token(
        self,
        amount: Decimal | str | int,
        currency: str = "credits",
        *,
        expires_in: int | None = None,
        op_id: str | None = None,
    ) -> IssuedToken:
        """Create a token worth ``amount``; its JWT is signed with the ledger's key."""
        return await self._run(lambda c: c.issue(amount, currency, expires_in, op_id))

    async def balance(self, token_id: str) -> TokenBalance:
        """The token's accounts."""
        return await self._run(lambda c: c.balance(token_id))

    async def lock_info(self, lock_id: str) -> LockInfo:
        """A lock's state."""
        return await self._run(lambda c: c.lock_info(lock_id))

    async def lock(self, token_id: str, amount: Decimal | str | int, op_id: str) -> LockInfo:
        """Reserve ``amount`` of the token's balance (``action="pay"`` shortfall if short)."""
        return await self._run(lambda c: c.lock(token_id, amount, op_id))

    async def charge(self, lock_id: str, amount: Decimal | str | int, op_id: str) -> LockInfo:
        """Capture ``amount`` of the lock (``action="topup"`` shortfall if beyond it)."""
        return await self._run(lambda c: c.charge(lock_id, amount, op_id))

    async def settle(self, lock_id: str, op_id: str) -> LockInfo:
        """Close the lock, keeping its charges and returning the rest."""
        return await self._run(lambda c: c.settle(lock_id, op_id))

    async def release(self, lock_id: str, op_id: str) -> LockInfo:
        """Void the lock, returning everything (charges included)."""
        return await self._run(lambda c: c.release(lock_id, op_id))

    async def topup(self, token_id: str, amount: Decimal | str | int, op_id: str) -> TokenBalance:
        """Add ``amount`` to the token."""
        return await self._run(lambda c: c.topup(token_id, amount, op_id))

    async def jwks(self) -> dict[str, Any]:
        """``{"keys": [the ledger's public JWK]}``."""
        return await self._run(lambda c: {"keys": [public_jwk(c.key)]})


class MemoryLedger(_EmbeddedLedger):
    """A ledger in memory, for tests and throwaway servers (same rules as :class:`SqliteLedger`).

    Args:
        signing_key: EC P-256 key for the token JWTs (default: a fresh one).
        clock: Unix time in seconds (tests inject one).
        ids: id factory for ``tok_`` / ``lock_`` ids.
        issuer: ``iss`` of issued tokens.
        token_ttl: default token lifetime in seconds.
    """

    def __init__(
        self,
        *,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        clock: Callable[[], float] = time.time,
        ids: uamp.IdFactory | None = None,
        issuer: str | None = None,
        token_ttl: int = DEFAULT_TOKEN_TTL,
    ) -> None:
        self._store = _MemoryStore()
        self._core = _LedgerCore(
            self._store,
            signing_key or generate_signing_key(),
            clock=clock,
            ids=ids or uamp.RandomIds(),
            issuer=issuer,
            token_ttl=token_ttl,
        )

    async def _run(self, fn: Callable[[_LedgerCore], T]) -> T:
        await trio.lowlevel.checkpoint()
        assert self._core is not None
        return fn(self._core)

    def open_locks(self) -> list[LockInfo]:
        """Every lock still open (tests assert that none leaked)."""
        return [lk for lk in self._store.locks.values() if lk.state == "open"]

    def tokens(self) -> list[TokenBalance]:
        """Every token."""
        return list(self._store.tokens.values())


# --------------------------------------------------------------------------------------------
# SQLite
# --------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, currency TEXT NOT NULL, balance TEXT NOT NULL, locked TEXT NOT NULL,
    spent TEXT NOT NULL, issued TEXT NOT NULL, topped_up TEXT NOT NULL, expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS locks (
    id TEXT PRIMARY KEY, token_id TEXT NOT NULL REFERENCES tokens(id), currency TEXT NOT NULL,
    amount TEXT NOT NULL, charged TEXT NOT NULL, state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS locks_open ON locks(state) WHERE state = 'open';
CREATE TABLE IF NOT EXISTS ops (id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, result BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


class _SqliteStore:
    def __init__(self, path: str, synchronous: str) -> None:
        # Autocommit mode: transactions are explicit BEGIN IMMEDIATE … COMMIT, so a writer
        # takes the write lock before reading what it will change (no lost updates between
        # processes sharing the file).
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(_SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def get_token(self, token_id: str) -> TokenBalance | None:
        row = self.db.execute(
            "SELECT id, currency, balance, locked, spent, issued, topped_up, expires_at "
            "FROM tokens WHERE id = ?",
            (token_id,),
        ).fetchone()
        if row is None:
            return None
        return TokenBalance(*row)

    def put_token(self, t: TokenBalance) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                t.token_id,
                t.currency,
                str(t.balance),
                str(t.locked),
                str(t.spent),
                str(t.issued),
                str(t.topped_up),
                t.expires_at,
            ),
        )

    def get_lock(self, lock_id: str) -> LockInfo | None:
        row = self.db.execute(
            "SELECT id, token_id, currency, amount, charged, state FROM locks WHERE id = ?",
            (lock_id,),
        ).fetchone()
        return None if row is None else LockInfo(*row)

    def put_lock(self, lk: LockInfo) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO locks VALUES (?, ?, ?, ?, ?, ?)",
            (lk.lock_id, lk.token_id, lk.currency, str(lk.amount), str(lk.charged), lk.state),
        )

    def get_op(self, op_id: str) -> tuple[str, bytes] | None:
        row = self.db.execute(
            "SELECT fingerprint, result FROM ops WHERE id = ?", (op_id,)
        ).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def put_op(self, op_id: str, fingerprint: str, result: bytes) -> None:
        self.db.execute("INSERT INTO ops VALUES (?, ?, ?)", (op_id, fingerprint, result))

    def signing_key(self, given: ec.EllipticCurvePrivateKey | None) -> ec.EllipticCurvePrivateKey:
        with self.transaction():
            row = self.db.execute("SELECT value FROM meta WHERE key = 'signing_key'").fetchone()
            if row is not None and given is None:
                return load_signing_key(bytes(row[0]))
            key = given or generate_signing_key()
            if row is None:
                self.db.execute(
                    "INSERT INTO meta VALUES ('signing_key', ?)", (dump_signing_key(key),)
                )
            return key

    def open_locks(self) -> list[LockInfo]:
        rows = self.db.execute(
            "SELECT id, token_id, currency, amount, charged, state FROM locks WHERE state = 'open'"
        ).fetchall()
        return [LockInfo(*r) for r in rows]

    def tokens(self) -> list[TokenBalance]:
        rows = self.db.execute(
            "SELECT id, currency, balance, locked, spent, issued, topped_up, expires_at FROM tokens"
        ).fetchall()
        return [TokenBalance(*r) for r in rows]

    def close(self) -> None:
        self.db.close()


class SqliteLedger(_EmbeddedLedger, trio.abc.AsyncResource):
    """The embedded default ledger: one SQLite file (WAL), survives restarts.

    The file is opened on first use (in a worker thread); the signing key is generated on
    first open and kept in the file unless ``signing_key`` is given. Operations run one at a
    time in a worker thread; a cancelled call finishes its transaction in the thread (it
    cannot be torn) and the cancellation is delivered afterwards.

    Use it as ``async with SqliteLedger(path) as ledger:`` or call :meth:`aclose`.

    Args:
        path: the database file (``":memory:"`` works too).
        signing_key: EC P-256 key for the token JWTs (default: stored in the file).
        clock: Unix time in seconds.
        ids: id factory for ``tok_`` / ``lock_`` ids.
        issuer: ``iss`` of issued tokens.
        token_ttl: default token lifetime in seconds.
        synchronous: SQLite ``PRAGMA synchronous`` (``FULL``: every commit is durable).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        signing_key: ec.EllipticCurvePrivateKey | None = None,
        clock: Callable[[], float] = time.time,
        ids: uamp.IdFactory | None = None,
        issuer: str | None = None,
        token_ttl: int = DEFAULT_TOKEN_TTL,
        synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL",
    ) -> None:
        self.path = str(path)
        self._given_key = signing_key
        self._clock = clock
        self._ids = ids or uamp.RandomIds()
        self._issuer = issuer
        self._token_ttl = token_ttl
        self._synchronous = synchronous
        self._store: _SqliteStore | None = None
        self._core = None
        self._lock = trio.Lock()
        self._closed = False

    def _open(self) -> _LedgerCore:
        if self._core is None:
            store = _SqliteStore(self.path, self._synchronous)
            try:
                key = store.signing_key(self._given_key)
            except BaseException:
                store.close()
                raise
            self._store = store
            self._core = _LedgerCore(
                store,
                key,
                clock=self._clock,
                ids=self._ids,
                issuer=self._issuer,
                token_ttl=self._token_ttl,
            )
        return self._core

    async def _run(self, fn: Callable[[_LedgerCore], T]) -> T:
        async with self._lock:
            if self._closed:
                raise trio.ClosedResourceError("the ledger is closed")
            return await trio.to_thread.run_sync(lambda: fn(self._open()))

    async def open_locks(self) -> list[LockInfo]:
        """Every lock still open (tests assert that none leaked)."""
        return await self._run(lambda c: self._require().open_locks())

    async def tokens(self) -> list[TokenBalance]:
        """Every token."""
        return await self._run(lambda c: self._require().tokens())

    def _require(self) -> _SqliteStore:
        assert self._store is not None
        return self._store

    async def aclose(self) -> None:
        """Close the file. Idempotent; waits for a running operation to finish."""
        with trio.CancelScope(shield=True):
            async with self._lock:
                self._closed = True
                if self._store is not None:
                    store, self._store, self._core = self._store, None, None
                    await trio.to_thread.run_sync(store.close)
