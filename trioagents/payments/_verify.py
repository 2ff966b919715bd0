"""``PaymentVerifier``: is this payment token genuine, alive, and funded?"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import attrs
import trio

from ._errors import (
    TOKEN_MALFORMED,
    InsufficientTokenBalanceError,
    PaymentTokenInvalidError,
    to_decimal,
)
from ._ledger import PaymentBackend, TokenBalance
from ._signing import PaymentClaims, verify_payment_jwt
from ._wire import parse_payment_token

__all__ = ["PaymentVerifier", "VerifiedPayment"]


@attrs.frozen
class VerifiedPayment:
    """A payment token that passed :meth:`PaymentVerifier.verify`.

    Attributes:
        jwt: the token as a compact JWT (whatever format it arrived in).
        claims: its verified claims.
        balance: its accounts at verification time.
    """

    jwt: str
    claims: PaymentClaims
    balance: TokenBalance

    @property
    def token_id(self) -> str:
        """The ledger id of the token."""
        return self.claims.token_id


class PaymentVerifier:
    """Checks payment tokens: format (§0.2), ES256 signature against the backend's keys,
    ``exp``, then the balance through the backend.

    Keys come from ``backend.jwks()`` and are cached; a token signed by an unknown ``kid``
    refetches them at most once per ``refresh_interval`` (key rotation without restart).

    Args:
        backend: the ledger that issued the tokens.
        issuer: when given, tokens must carry this ``iss``.
        leeway: tolerance on ``exp`` in seconds.
        clock: Unix time in seconds (tests inject one).
        refresh_interval: minimum seconds between key refetches for unknown ``kid`` values.
    """

    def __init__(
        self,
        backend: PaymentBackend,
        *,
        issuer: str | None = None,
        leeway: float = 60.0,
        clock: Callable[[], float] = time.time,
        refresh_interval: float = 60.0,
    ) -> None:
        self.backend = backend
        self.issuer = issuer
        self.leeway = leeway
        self.clock = clock
        self.refresh_interval = refresh_interval
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._fetch_lock = trio.Lock()

    async def _refresh(self, *, force: bool) -> None:
        async with self._fetch_lock:
            now = self.clock()
            fresh = self._fetched_at is not None and (
                not force or now - self._fetched_at < self.refresh_interval
            )
            if fresh:
                return
            jwks = await self.backend.jwks()
            keys = jwks.get("keys") if isinstance(jwks, dict) else None
            self._keys = {
                k["kid"]: k
                for k in keys or ()
                if isinstance(k, dict) and isinstance(k.get("kid"), str)
            }
            self._fetched_at = now

    async def verify_jwt(self, value: str) -> tuple[str, PaymentClaims]:
        """Check format, signature and expiry only (no backend call unless keys are needed).

        Returns:
            ``(jwt, claims)``.

        Raises:
            PaymentTokenInvalidError: ``TOKEN_MALFORMED`` or ``TOKEN_EXPIRED``.
            PaymentPlatformUnavailableError: the keys could not be fetched.
        """
        parsed = parse_payment_token(value)
        await self._refresh(force=False)
        try:
            claims = verify_payment_jwt(
                parsed.jwt, self._keys, now=self.clock(), leeway=self.leeway, issuer=self.issuer
            )
        except PaymentTokenInvalidError as exc:
            if "unknown_kid" not in (exc.details or {}):
                raise
            await self._refresh(force=True)  # rotation: a new kid
            claims = verify_payment_jwt(
                parsed.jwt, self._keys, now=self.clock(), leeway=self.leeway, issuer=self.issuer
            )
        return parsed.jwt, claims

    async def verify(
        self,
        value: str,
        *,
        required: Decimal | str | int | None = None,
        currency: str | None = None,
    ) -> VerifiedPayment:
        """Verify a payment token in any §0.2 format and read its balance.

        Args:
            value: the token as received (raw JWT, base64 JWT, or base64 x402 payload).
            required: the spendable balance the token must have (e.g. the turn's reserve).
            currency: the currency the agent charges in; another currency is refused.

        Returns:
            The verified token and its balance.

        Raises:
            PaymentTokenInvalidError: malformed, forged, expired, unknown to the ledger
                (``TOKEN_NOT_FOUND``) or in another currency.
            InsufficientTokenBalanceError: the balance is below ``required`` (``amount`` = the
                shortfall, ``action="pay"``).
            PaymentPlatformUnavailableError: the backend could not be reached.

        Cancelling it abandons the check; nothing is changed in the ledger.
        """
        jwt, claims = await self.verify_jwt(value)
        balance = await self.backend.balance(claims.token_id)
        if currency is not None and balance.currency != currency:
            raise PaymentTokenInvalidError(
                f"payment token is in {balance.currency!r}, this agent charges in {currency!r}",
                subcode=TOKEN_MALFORMED,
                token_id=claims.token_id,
            )
        need = to_decimal(required)
        if need is not None and balance.balance < need:
            raise InsufficientTokenBalanceError(
                f"token balance {balance.balance} does not cover {need}",
                amount=need - balance.balance,
                currency=balance.currency,
                token_id=claims.token_id,
            )
        return VerifiedPayment(jwt=jwt, claims=claims, balance=balance)
