"""``TurnPayment``: lock at turn start, charge as work happens, settle at the end, release on
every failure path.

Theory of operation
-------------------
A turn owns one or more locks on one token (or, after a top-up with another token, several
tokens). ``charge`` first makes sure the open locks cover the amount, extending the turn's
reservation with a new lock from the token's balance when they do not; only when the token
itself is short does it raise :class:`~trioagents.payments.InsufficientTokenBalanceError`
(``action="topup"``, ``amount`` = the shortfall) — or, when a ``topup`` callback was given,
call it *in place* (the charging coroutine, typically a tool, stays suspended with all its
state) and try again once it returns, all within ``payment_timeout``.

Leaving the ``async with`` block normally settles every lock (charges are kept, the rest goes
back); leaving it with any exception — ``trio.Cancelled`` included — releases every lock
(nothing is charged). Both run under a shielded scope bounded by ``cleanup_timeout``, so a
cancelled turn still talks to the ledger, but never for long.

Every ledger call carries an ``op_id`` derived from the turn's random ``op_prefix`` and a
counter that advances only on success, so a retry after an error or a top-up repeats the same
operation and never charges twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal

import trio

from .. import uamp
from ._errors import (
    InsufficientTokenBalanceError,
    PaymentChargingFailedError,
    PaymentTimeoutError,
    to_decimal,
)
from ._ledger import LockInfo, PaymentBackend
from ._pricing import Pricing

__all__ = ["TurnPayment", "TopupCallback"]

log = logging.getLogger("trioagents.payments")

TopupCallback = Callable[[InsufficientTokenBalanceError], Awaitable[str | None]]
"""Asked for more funds mid-turn: signal the client (``payment.required{action:"topup"}``),
wait for a valid submission, and return the token id to charge from now on (``None``: the same
token, topped up). Raising a :class:`~trioagents.payments.PaymentError` ends the turn."""


def _amount(value: Decimal | str | int) -> Decimal:
    d = to_decimal(value)
    assert d is not None
    if d < 0:
        raise ValueError(f"cannot charge a negative amount: {value}")
    return d


class TurnPayment:
    """The money side of one turn, as an async context manager::

        async with TurnPayment(backend, token_id, pricing=pricing) as pay:
            await pay.charge_tool("search")          # before running the tool
            ...
            await pay.charge_usage(output_tokens=n)  # after the model reports usage
        # settled here; released instead if the block raised or was cancelled

    Args:
        backend: the ledger.
        token_id: the verified token to charge.
        pricing: the agent's prices; ``reserve`` and the per-turn charge come from it.
        reserve: amount to lock on entry (default ``pricing.turn_reserve``, else 0).
        topup: called in place when the token runs out (see :data:`TopupCallback`); without
            it, ``charge`` raises ``InsufficientTokenBalanceError(action="topup")``.
        payment_timeout: bound on each ``topup`` wait (``Config.payment_timeout``).
        cleanup_timeout: bound on the shielded settle/release (``Config.cleanup_timeout``).
        op_prefix: globally unique prefix of this turn's ``op_id`` values (default random).
    """

    def __init__(
        self,
        backend: PaymentBackend,
        token_id: str,
        *,
        pricing: Pricing | None = None,
        reserve: Decimal | str | int | None = None,
        topup: TopupCallback | None = None,
        payment_timeout: float = 60.0,
        cleanup_timeout: float = 5.0,
        op_prefix: str | None = None,
    ) -> None:
        self.backend = backend
        self.token_id = token_id
        self.pricing = pricing
        if reserve is not None:
            self.reserve = _amount(reserve)
        else:
            self.reserve = pricing.turn_reserve if pricing is not None else Decimal(0)
        self.topup = topup
        self.payment_timeout = payment_timeout
        self.cleanup_timeout = cleanup_timeout
        self.op_prefix = op_prefix or uamp.RandomIds().new("pay")
        self.state: Literal["new", "open", "settled", "released"] = "new"
        self.locks: list[LockInfo] = []
        self._ops = 0
        self._charge_lock = trio.Lock()

    # -- accounting views ------------------------------------------------------------------

    @property
    def charged(self) -> Decimal:
        """Total charged in this turn (provisional until settled)."""
        return sum((lk.charged for lk in self.locks), Decimal(0))

    @property
    def remaining(self) -> Decimal:
        """What the open locks can still cover without touching the token's balance."""
        return sum((lk.remaining for lk in self.locks), Decimal(0))

    def _op(self, kind: str, *extra: str) -> str:
        return ":".join((self.op_prefix, kind, str(self._ops), *extra))

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Lock the reserve and charge the per-turn price.

        Raises:
            InsufficientTokenBalanceError: the token cannot cover the reserve (``action="pay"``).
            PaymentTokenInvalidError: the token is unknown or expired.
            RuntimeError: already opened.

        On any failure (cancellation included) nothing stays locked.
        """
        if self.state != "new":
            raise RuntimeError(f"turn payment already {self.state}")
        self.state = "open"
        try:
            lock = await self.backend.lock(self.token_id, self.reserve, self._op("lock"))
            self._ops += 1
            self.locks.append(lock)
            if self.pricing is not None and self.pricing.per_turn:
                await self.charge(self.pricing.per_turn, _topup=False)
        except BaseException:
            await self.release()
            raise

    async def charge(self, amount: Decimal | str | int, *, _topup: bool = True) -> Decimal:
        """Charge ``amount`` to this turn.

        Returns:
            The turn's total charged so far.

        Raises:
            InsufficientTokenBalanceError: the token is short (``action="topup"``, ``amount``
                = the shortfall) and there is no ``topup`` callback.
            PaymentTimeoutError: the ``topup`` callback did not return within
                ``payment_timeout``.
            PaymentChargingFailedError: the turn is not open.

        Cancelled while waiting for a top-up, nothing is charged by this call.
        """
        value = _amount(amount)
        async with self._charge_lock:  # concurrent tools: one charge at a time, in order
            if self.state != "open":
                raise PaymentChargingFailedError(f"the turn's payment is {self.state}")
            if value == 0:
                return self.charged
            while True:
                try:
                    await self._cover(value)
                    break
                except InsufficientTokenBalanceError as err:
                    if self.topup is None or not _topup:
                        raise
                    await self._wait_topup(err)
            # The new lock states are kept only once every part went through: a retry after
            # a failure half-way then computes the same parts and replays the same op_ids.
            left = value
            updated: dict[int, LockInfo] = {}
            for i, lock in enumerate(self.locks):
                part = min(left, lock.remaining)
                if part <= 0:
                    continue
                updated[i] = await self.backend.charge(
                    lock.lock_id, part, self._op("charge", lock.lock_id)
                )
                left -= part
                if left == 0:
                    break
            for i, lock in updated.items():
                self.locks[i] = lock
            self._ops += 1
            return self.charged

    async def charge_tool(self, name: str, fn: Callable[..., Any] | None = None) -> Decimal:
        """Charge one call of tool ``name`` at the pricing's rate (no pricing: nothing)."""
        if self.pricing is None:
            return self.charged
        return await self.charge(self.pricing.tool_cost(name, fn))

    async def charge_usage(self, *, input_tokens: int = 0, output_tokens: int = 0) -> Decimal:
        """Charge model tokens at the pricing's rates (no pricing: nothing)."""
        if self.pricing is None:
            return self.charged
        cost = self.pricing.usage_cost(input_tokens=input_tokens, output_tokens=output_tokens)
        return await self.charge(cost)

    async def _cover(self, value: Decimal) -> None:
        missing = value - self.remaining
        if missing <= 0:
            return
        try:
            lock = await self.backend.lock(self.token_id, missing, self._op("lock"))
        except InsufficientTokenBalanceError as err:
            raise InsufficientTokenBalanceError(
                err.message,
                amount=err.amount if err.amount is not None else missing,
                currency=err.currency,
                reason=err.reason,
                action="topup",
                token_id=self.token_id,
                details={"requested": str(value)},
            ) from None
        self._ops += 1
        self.locks.append(lock)

    async def _wait_topup(self, err: InsufficientTokenBalanceError) -> None:
        assert self.topup is not None
        with trio.move_on_after(self.payment_timeout) as scope:
            token_id = await self.topup(err)
        if scope.cancelled_caught:
            raise PaymentTimeoutError(
                f"no payment within {self.payment_timeout:g} s",
                amount=err.amount,
                currency=err.currency,
                action="topup",
                token_id=self.token_id,
            )
        if token_id:
            self.token_id = token_id

    async def settle(self) -> None:
        """Keep the charges and return the rest of every lock. Idempotent (a second call and a
        call after :meth:`release` do nothing).

        Runs shielded, bounded by ``cleanup_timeout``.

        Raises:
            PaymentError: the ledger refused or could not be reached (the locks stay open;
                a repeat retries with the same ``op_id`` values).
            trio.TooSlowError: ``cleanup_timeout`` passed.
        """
        if self.state != "open":
            return
        with trio.CancelScope(shield=True), trio.fail_after(self.cleanup_timeout):
            for i, lock in enumerate(self.locks):
                if lock.state == "open":
                    self.locks[i] = await self.backend.settle(
                        lock.lock_id, f"{self.op_prefix}:settle:{lock.lock_id}"
                    )
        self.state = "settled"

    async def release(self) -> None:
        """Void every lock: the turn costs nothing. Idempotent; never raises (failures are
        logged, and a lock the ledger could not release is left for the ledger's own recovery).

        Runs shielded, bounded by ``cleanup_timeout``, so it works while the turn is being
        cancelled.
        """
        if self.state in ("settled", "released"):
            return
        self.state = "released"
        with trio.CancelScope(shield=True), trio.move_on_after(self.cleanup_timeout) as scope:
            for i, lock in enumerate(self.locks):
                if lock.state != "open":
                    continue
                try:
                    self.locks[i] = await self.backend.release(
                        lock.lock_id, f"{self.op_prefix}:release:{lock.lock_id}"
                    )
                except Exception:
                    log.exception("could not release payment lock %s", lock.lock_id)
        if scope.cancelled_caught:
            log.error("releasing the payment locks of %s timed out", self.op_prefix)

    async def __aenter__(self) -> TurnPayment:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            try:
                await self.settle()
            except BaseException:
                await self.release()
                raise
        else:
            await self.release()
