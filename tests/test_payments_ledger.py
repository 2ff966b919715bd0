"""The ledgers: lock → charge → settle / release, idempotency by op_id, no money created or lost."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings, strategies as st

from trioagents.payments import (
    IdempotencyConflictError,
    InsufficientTokenBalanceError,
    LockInfo,
    MemoryLedger,
    PaymentChargingFailedError,
    PaymentError,
    PaymentTokenInvalidError,
    PaymentVerifier,
    SqliteLedger,
)

Ledger = MemoryLedger | SqliteLedger


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
async def ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    clock = Clock()
    if request.param == "memory":
        yield MemoryLedger(clock=clock)
    else:
        async with SqliteLedger(tmp_path / "ledger.db", clock=clock) as db:
            yield db


async def open_locks(ledger: Ledger) -> list[LockInfo]:
    if isinstance(ledger, SqliteLedger):
        return await ledger.open_locks()
    return ledger.open_locks()


async def test_lock_charge_settle(ledger: Ledger) -> None:
    with trio.fail_after(10):
        tok = await ledger.issue_token("10", "credits")
        lock = await ledger.lock(tok.token_id, "4", "op-lock")
        assert (lock.amount, lock.charged, lock.state, lock.remaining) == (4, 0, "open", 4)
        lock = await ledger.charge(lock.lock_id, "1.5", "op-c1")
        lock = await ledger.charge(lock.lock_id, "2.5", "op-c2")
        assert lock.remaining == 0
        with pytest.raises(InsufficientTokenBalanceError) as info:
            await ledger.charge(lock.lock_id, "0.01", "op-c3")
        assert (info.value.amount, info.value.action) == (Decimal("0.01"), "topup")
        lock = await ledger.settle(lock.lock_id, "op-settle")
        assert lock.state == "settled"
        b = await ledger.balance(tok.token_id)
        assert (b.balance, b.locked, b.spent, b.issued) == (6, 0, 4, 10)
        # Settling again (any op_id) changes nothing; charging a settled lock is refused.
        assert (await ledger.settle(lock.lock_id, "op-settle-2")).state == "settled"
        with pytest.raises(PaymentChargingFailedError):
            await ledger.charge(lock.lock_id, "1", "op-c4")
        with pytest.raises(PaymentChargingFailedError):
            await ledger.charge("lock_nope", "1", "op-c5")
        assert (await ledger.release(lock.lock_id, "op-rel")).state == "settled"  # no-op
        assert (await ledger.balance(tok.token_id)).balance == 6
        assert await open_locks(ledger) == []


async def test_release_voids_charges_and_settle_after_release_is_refused(ledger: Ledger) -> None:
    with trio.fail_after(10):
        tok = await ledger.issue_token("1.00")
        lock = await ledger.lock(tok.token_id, "0.60", "l1")
        await ledger.charge(lock.lock_id, "0.25", "c1")
        assert (await ledger.balance(tok.token_id)).balance == Decimal("0.40")
        released = await ledger.release(lock.lock_id, "r1")
        assert released.state == "released" and released.remaining == 0
        b = await ledger.balance(tok.token_id)
        assert (b.balance, b.locked, b.spent) == (1, 0, 0)
        with pytest.raises(PaymentChargingFailedError):
            await ledger.settle(lock.lock_id, "s1")
        assert (await ledger.release(lock.lock_id, "r2")).state == "released"


async def test_lock_beyond_balance_and_unknown_or_expired_tokens(ledger: Ledger) -> None:
    with trio.fail_after(10):
        tok = await ledger.issue_token("1", expires_in=100)
        with pytest.raises(InsufficientTokenBalanceError) as info:
            await ledger.lock(tok.token_id, "1.25", "l1")
        assert (info.value.amount, info.value.action, info.value.token_id) == (
            Decimal("0.25"),
            "pay",
            tok.token_id,
        )
        with pytest.raises(PaymentTokenInvalidError) as nf:
            await ledger.balance("tok_missing")
        assert nf.value.subcode == "TOKEN_NOT_FOUND"
        with pytest.raises(ValueError):
            await ledger.lock(tok.token_id, "-1", "l2")
        with pytest.raises(ValueError):
            await ledger.topup(tok.token_id, "0", "t0")
        with pytest.raises(TypeError):
            await ledger.topup(tok.token_id, 0.5, "t0")  # type: ignore[arg-type]
        core: Any = ledger._core if isinstance(ledger, MemoryLedger) else None
        clock = core.clock if core is not None else ledger._clock  # type: ignore[union-attr]
        clock.now += 100
        with pytest.raises(PaymentTokenInvalidError) as exp:
            await ledger.lock(tok.token_id, "0.5", "l3")
        assert exp.value.subcode == "TOKEN_EXPIRED"


async def test_idempotency_by_op_id(ledger: Ledger) -> None:
    with trio.fail_after(10):
        first = await ledger.issue_token("5", op_id="issue-1")
        again = await ledger.issue_token("5", op_id="issue-1")
        assert again == first  # same id, same JWT
        lock = await ledger.lock(first.token_id, "2", "lock-1")
        assert await ledger.lock(first.token_id, "2", "lock-1") == lock
        c1 = await ledger.charge(lock.lock_id, "1", "charge-1")
        assert await ledger.charge(lock.lock_id, "1", "charge-1") == c1
        await ledger.topup(first.token_id, "3", "top-1")
        await ledger.topup(first.token_id, "3", "top-1")
        b = await ledger.balance(first.token_id)
        assert (b.balance, b.locked, b.spent, b.topped_up) == (6, 1, 1, 3)
        with pytest.raises(IdempotencyConflictError):
            await ledger.charge(lock.lock_id, "0.5", "charge-1")
        with pytest.raises(IdempotencyConflictError):
            await ledger.topup(first.token_id, "3", "lock-1")
        # A failed operation records nothing: the same op_id works once funds are there.
        with pytest.raises(InsufficientTokenBalanceError):
            await ledger.lock(first.token_id, "7", "lock-2")
        await ledger.topup(first.token_id, "1", "top-2")
        big = await ledger.lock(first.token_id, "7", "lock-2")
        assert big.amount == 7 and (await ledger.balance(first.token_id)).balance == 0


async def test_sqlite_survives_reopening(tmp_path: Path) -> None:
    with trio.fail_after(10):
        path = tmp_path / "ledger.db"
        async with SqliteLedger(path) as db:
            tok = await db.issue_token("2.50", "usd")
            lock = await db.lock(tok.token_id, "1", "l1")
            await db.charge(lock.lock_id, "0.75", "c1")
            keys = await db.jwks()
        async with SqliteLedger(path) as db:
            b = await db.balance(tok.token_id)
            assert (b.currency, b.balance, b.locked, b.spent) == (
                "usd",
                Decimal("1.50"),
                Decimal("0.25"),
                Decimal("0.75"),
            )
            assert await db.jwks() == keys  # the signing key was kept
            ok = await PaymentVerifier(db).verify(tok.token)  # old tokens still verify
            assert ok.token_id == tok.token_id
            # Replaying an op recorded before the restart changes nothing.
            assert (await db.charge(lock.lock_id, "0.75", "c1")).charged == Decimal("0.75")
            await db.settle(lock.lock_id, "s1")
            assert await db.open_locks() == []
            assert (await db.balance(tok.token_id)).balance == Decimal("1.75")
        with pytest.raises(trio.ClosedResourceError):
            await db.balance(tok.token_id)


async def test_sqlite_cancelled_call_completes_its_transaction(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with SqliteLedger(tmp_path / "l.db") as db:
            tok = await db.issue_token("1")
            with trio.CancelScope() as scope:
                scope.cancel()
                await db.lock(tok.token_id, "0.5", "l1")
            # Whatever the cancel did, the op is either done or not; repeating it is safe.
            lock = await db.lock(tok.token_id, "0.5", "l1")
            b = await db.balance(tok.token_id)
            assert (b.balance, b.locked) == (Decimal("0.5"), Decimal("0.5"))
            await db.release(lock.lock_id, "r1")


# --------------------------------------------------------------------------------------------
# Property test: random operations, repeats and failures never create or lose money
# --------------------------------------------------------------------------------------------


def cents(top: int) -> st.SearchStrategy[Decimal]:
    return st.integers(min_value=0, max_value=top).map(lambda c: Decimal(c) / 100)


# An op_id is fresh, or (sometimes) one already used by an earlier step: a collision with other
# arguments must be refused; exact replays come from the "repeat" steps.
op_ids = st.one_of(st.just("fresh"), st.just("fresh"), st.just("fresh"), st.just("reuse"))
step = st.one_of(
    st.tuples(st.just("issue"), cents(1000), st.none(), op_ids | st.none()),
    st.tuples(st.just("topup"), cents(150), st.integers(0, 3), op_ids),
    st.tuples(st.just("lock"), cents(300), st.integers(0, 3), op_ids),
    st.tuples(st.just("charge"), cents(60), st.integers(0, 5), op_ids),
    st.tuples(st.just("charge"), cents(60), st.integers(0, 5), op_ids),
    st.tuples(st.just("settle"), st.none(), st.integers(0, 5), op_ids),
    st.tuples(st.just("release"), st.none(), st.integers(0, 5), op_ids),
    st.tuples(st.just("repeat"), st.none(), st.integers(0, 40), st.none()),
    st.tuples(st.just("crash"), st.none(), st.none(), st.none()),
)
# Every run starts with two funded tokens, so the interesting operations happen early.
steps = st.lists(step, min_size=20, max_size=60).map(
    lambda ops: [("issue", Decimal(5), None, None), ("issue", Decimal(3), None, None), *ops]
)


async def snapshot(ledger: Ledger, tokens: list[str], locks: list[str]) -> tuple[Any, ...]:
    return (
        tuple([await ledger.balance(t) for t in tokens]),
        tuple([await ledger.lock_info(lk) for lk in locks]),
    )


async def check_invariants(ledger: Ledger, tokens: list[str], locks: list[str]) -> None:
    infos = [await ledger.lock_info(lk) for lk in locks]
    for t in tokens:
        b = await ledger.balance(t)
        assert b.balance + b.locked + b.spent == b.issued + b.topped_up
        assert min(b.balance, b.locked, b.spent) >= 0
        mine = [lk for lk in infos if lk.token_id == t]
        # The token's buckets are exactly what its locks say.
        assert b.locked == sum((lk.remaining for lk in mine), Decimal(0))
        assert b.spent == sum((lk.charged for lk in mine if lk.state != "released"), Decimal(0))
    for lk in infos:
        assert 0 <= lk.charged <= lk.amount


def crash_next_op_record(ledger: Ledger) -> list[bool]:
    """Make the next op record fail (after the operation's writes, before its commit)."""
    store: Any = ledger._store
    fired: list[bool] = []

    def boom(*args: Any) -> None:
        fired.append(True)
        raise RuntimeError("disk on fire")

    store.put_op = boom
    return fired


def uncrash(ledger: Ledger) -> None:
    store: Any = getattr(ledger, "_store", None)
    if store is not None:
        vars(store).pop("put_op", None)


async def run_steps(ledger: Ledger, ops: list[tuple[Any, ...]]) -> None:
    tokens: list[str] = []
    locks: list[str] = []
    results: dict[str, Any] = {}
    crash = False
    done: list[tuple[Any, ...]] = []  # successful calls, for exact replays
    used: list[str] = []
    for n, (kind, amount, index, op) in enumerate(ops):
        if op == "reuse" and used:
            op = used[(index or 0) % len(used)]
        elif op is not None:
            op = f"op{n}"
            used.append(op)
        if kind == "crash":
            crash = True
            continue
        if kind == "repeat":
            if not done:
                continue
            kind, target, amount, op = done[index % len(done)]
        elif kind in ("topup", "lock"):
            if not tokens:
                continue
            target = tokens[index % len(tokens)]
        elif kind in ("charge", "settle", "release"):
            if not locks:
                continue
            target = locks[-1 - index % len(locks)]  # mostly the newest locks
        else:
            target = None
        before = await snapshot(ledger, tokens, locks)
        armed = crash and getattr(ledger, "_store", None) is not None  # SQLite opens lazily
        fired: list[bool] = crash_next_op_record(ledger) if armed else []
        crash = False
        call: Awaitable[Any]
        if kind == "issue":
            call = ledger.issue_token(amount, op_id=op)
        elif kind in ("topup", "lock", "charge"):
            call = getattr(ledger, kind)(target, amount, op)
        else:
            call = getattr(ledger, kind)(target, op)
        try:
            result = await call
        except (PaymentError, ValueError, RuntimeError) as exc:
            # A failed operation (refused, or crashed half-way) changes nothing at all.
            assert isinstance(exc, RuntimeError) == bool(fired)
            assert await snapshot(ledger, tokens, locks) == before
        else:
            assert not fired
            done.append((kind, target, amount, op))
            if op is not None:
                # A repeated op_id returns the first result.
                assert results.setdefault(op, result) == result
            if kind == "issue" and result.token_id not in tokens:
                tokens.append(result.token_id)
            if isinstance(result, LockInfo) and result.lock_id not in locks:
                locks.append(result.lock_id)
        finally:
            uncrash(ledger)
        await check_invariants(ledger, tokens, locks)
        if isinstance(ledger, MemoryLedger):
            assert {lk.lock_id for lk in ledger.open_locks()} == {
                lk for lk in locks if (await ledger.lock_info(lk)).state == "open"
            }


@settings(max_examples=100, deadline=None)
@given(steps)
def test_memory_ledger_never_creates_or_loses_money(ops: list[tuple[Any, ...]]) -> None:
    async def main() -> None:
        ledger = MemoryLedger()
        await run_steps(ledger, ops)

    trio.run(main)


_files = itertools.count()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps)
def test_sqlite_ledger_never_creates_or_loses_money(
    tmp_path: Path, ops: list[tuple[Any, ...]]
) -> None:
    path = tmp_path / f"prop{next(_files)}.db"

    async def main() -> None:
        async with SqliteLedger(path, synchronous="NORMAL") as ledger:
            await run_steps(ledger, ops)
            before = [attrs.asdict(t) for t in await ledger.tokens()]
        async with SqliteLedger(path) as again:  # and it all survives reopening
            after = [attrs.asdict(t) for t in await again.tokens()]
        assert after == before

    trio.run(main)
