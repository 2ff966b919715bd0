"""Payment errors (PROTOCOLS.md §9.1). Sans-I/O: no trio, no httpx.

::

    TrioAgentsError
    └── PaymentError                      code "payment_failed" (UAMP response.error)
        ├── PaymentTokenRequiredError     PAYMENT_TOKEN_REQUIRED        402
        ├── PaymentTokenInvalidError      PAYMENT_TOKEN_INVALID         402
        │                                 (subcodes TOKEN_EXPIRED, TOKEN_NOT_FOUND, TOKEN_MALFORMED)
        ├── InsufficientTokenBalanceError INSUFFICIENT_TOKEN_BALANCE    402
        ├── InsufficientAccountBalanceError INSUFFICIENT_ACCOUNT_BALANCE 402
        ├── PaymentChargingFailedError    PAYMENT_CHARGING_FAILED       402
        │   └── IdempotencyConflictError  an ``op_id`` reused with other arguments (HTTP 409)
        ├── PaymentPlatformUnavailableError PAYMENT_PLATFORM_UNAVAILABLE 503
        └── PaymentTimeoutError           no valid ``payment.submit`` in time (→ payment_timeout)

Every error carries what each transport needs to render it (§9): ``accepts`` (the x402 list),
``amount`` (what is asked for: the price before work, the *additional* amount for a top-up),
``currency``, ``reason`` (free text: why money is needed) and ``action`` (``"pay"`` before any
work, ``"topup"`` mid-turn). ``error_code`` is the §9 wire code; ``code`` (inherited from
:class:`~trioagents.TrioAgentsError`) is the UAMP ``response.error`` code the run loop uses when
a payment error ends a response.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar, Literal

from .._errors import TrioAgentsError

__all__ = [
    "PaymentError",
    "PaymentTokenRequiredError",
    "PaymentTokenInvalidError",
    "InsufficientTokenBalanceError",
    "InsufficientAccountBalanceError",
    "PaymentChargingFailedError",
    "IdempotencyConflictError",
    "PaymentPlatformUnavailableError",
    "PaymentTimeoutError",
    "TOKEN_EXPIRED",
    "TOKEN_NOT_FOUND",
    "TOKEN_MALFORMED",
    "PAYMENT_ERRORS",
    "payment_error_class",
    "to_decimal",
]

TOKEN_EXPIRED = "TOKEN_EXPIRED"
"""Subcode of ``PAYMENT_TOKEN_INVALID``: the token's ``exp`` has passed."""
TOKEN_NOT_FOUND = "TOKEN_NOT_FOUND"
"""Subcode of ``PAYMENT_TOKEN_INVALID``: the ledger does not know the token."""
TOKEN_MALFORMED = "TOKEN_MALFORMED"
"""Subcode of ``PAYMENT_TOKEN_INVALID``: not a token in any §0.2 format, or a bad signature."""

Action = Literal["pay", "topup"]
"""What a payment signal asks for: pay before work, or top up mid-turn."""


def to_decimal(value: Decimal | str | int | None) -> Decimal | None:
    """Convert a money value to :class:`~decimal.Decimal` (``None`` stays ``None``).

    Floats are refused: money never passes through binary floating point.

    Raises:
        TypeError: ``value`` is a float or another non-money type.
        ValueError: the text is not a finite decimal number.
    """
    if value is None:
        return None
    if isinstance(value, (bool, float)):
        raise TypeError(f"money must be a Decimal, str or int, not {type(value).__name__}")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, (str, int)):
        try:
            d = Decimal(value)
        except ArithmeticError:
            raise ValueError(f"not a decimal amount: {value!r}") from None
    else:
        raise TypeError(f"money must be a Decimal, str or int, not {type(value).__name__}")
    if not d.is_finite():
        raise ValueError(f"not a finite amount: {value!r}")
    return d


class PaymentError(TrioAgentsError):
    """Base of every payment error.

    Args:
        message: human-readable text (default: the class's standard message).
        subcode: refines ``error_code`` (``PAYMENT_TOKEN_INVALID`` uses it).
        accepts: x402 ``accepts`` entries (see :func:`~trioagents.payments.x402_accepts`).
        amount: the amount asked for (price, or the shortfall for a top-up).
        currency: the currency of ``amount``.
        reason: why money is needed or what went wrong, for people and logs.
        action: ``"pay"`` (before work) or ``"topup"`` (mid-turn).
        token_id: the payment token concerned, when known.
        user_message: text safe to show an end user.
        details: extra JSON data.

    Attributes:
        error_code: the §9 wire code (``PAYMENT_TOKEN_REQUIRED``…).
        status_code: the HTTP status this error is served with (402, or 503).
    """

    code = "payment_failed"
    error_code: ClassVar[str] = "PAYMENT_ERROR"
    status_code: ClassVar[int] = 402
    default_message: ClassVar[str] = "Payment failed"
    default_user_message: ClassVar[str] = "The payment could not be completed."

    def __init__(
        self,
        message: str | None = None,
        *,
        subcode: str | None = None,
        accepts: list[dict[str, Any]] | None = None,
        amount: Decimal | str | int | None = None,
        currency: str | None = None,
        reason: str | None = None,
        action: Action = "pay",
        token_id: str | None = None,
        user_message: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message or self.default_message, details=details)
        if action not in ("pay", "topup"):
            raise ValueError(f"action must be 'pay' or 'topup', not {action!r}")
        self.subcode = subcode
        self.accepts: list[dict[str, Any]] = list(accepts or [])
        self.amount = to_decimal(amount)
        self.currency = currency
        self.reason = reason
        self.action: Action = action
        self.token_id = token_id
        self.user_message = user_message or self.default_user_message
        # What the run loop puts into response.error details if this error ends a response.
        info: dict[str, Any] = {"error": self.error_code, "action": action}
        if subcode:
            info["subcode"] = subcode
        if self.amount is not None:
            info["amount"] = str(self.amount)
        if currency:
            info["currency"] = currency
        if reason:
            info["reason"] = reason
        if token_id:
            info["token_id"] = token_id
        if self.accepts:
            info["accepts"] = self.accepts
        self.details = {**info, **(details or {})}

    def __repr__(self) -> str:
        extra = f", subcode={self.subcode!r}" if self.subcode else ""
        return f"{type(self).__name__}({self.message!r}{extra}, amount={self.amount!r})"


class PaymentTokenRequiredError(PaymentError):
    """The turn needs a payment token and none was given (``PAYMENT_TOKEN_REQUIRED``)."""

    error_code = "PAYMENT_TOKEN_REQUIRED"
    default_message = "Payment token required"
    default_user_message = "This agent requires payment."


class PaymentTokenInvalidError(PaymentError):
    """The payment token is expired, unknown or malformed (``PAYMENT_TOKEN_INVALID``).

    ``subcode`` is one of ``TOKEN_EXPIRED``, ``TOKEN_NOT_FOUND``, ``TOKEN_MALFORMED``.
    """

    error_code = "PAYMENT_TOKEN_INVALID"
    default_message = "Payment token invalid"
    default_user_message = "The payment token is not valid."


class InsufficientTokenBalanceError(PaymentError):
    """The token's balance (or the turn's lock) does not cover the amount.

    ``amount`` is the shortfall: how much more the token needs.
    """

    error_code = "INSUFFICIENT_TOKEN_BALANCE"
    default_message = "Insufficient token balance"
    default_user_message = "The payment token does not have enough balance."


class InsufficientAccountBalanceError(PaymentError):
    """The payer's account at the payment platform cannot fund the token."""

    error_code = "INSUFFICIENT_ACCOUNT_BALANCE"
    default_message = "Insufficient account balance"
    default_user_message = "Your account does not have enough balance."


class PaymentChargingFailedError(PaymentError):
    """A lock, charge or settlement was refused (unknown or closed lock, ledger failure)."""

    error_code = "PAYMENT_CHARGING_FAILED"
    default_message = "Payment charging failed"


class IdempotencyConflictError(PaymentChargingFailedError):
    """An ``op_id`` was reused for a different operation or different arguments."""

    default_message = "op_id already used for a different operation"


class PaymentPlatformUnavailableError(PaymentError):
    """The payment backend could not be reached or failed (HTTP 503)."""

    error_code = "PAYMENT_PLATFORM_UNAVAILABLE"
    status_code = 503
    default_message = "Payment platform unavailable"
    default_user_message = "Payments are temporarily unavailable; try again later."


class PaymentTimeoutError(PaymentError):
    """No valid ``payment.submit`` arrived within ``payment_timeout`` (→ ``payment_timeout``)."""

    code = "payment_timeout"
    error_code = "PAYMENT_TIMEOUT"
    default_message = "No payment within the payment timeout"


PAYMENT_ERRORS: dict[str, type[PaymentError]] = {
    cls.error_code: cls
    for cls in (
        PaymentTokenRequiredError,
        PaymentTokenInvalidError,
        InsufficientTokenBalanceError,
        InsufficientAccountBalanceError,
        PaymentChargingFailedError,
        PaymentPlatformUnavailableError,
        PaymentTimeoutError,
    )
}
"""Wire code → error class (``IdempotencyConflictError`` travels as ``PAYMENT_CHARGING_FAILED``)."""


def payment_error_class(error_code: str) -> type[PaymentError]:
    """The error class for a §9 wire code (unknown codes → :class:`PaymentError`)."""
    return PAYMENT_ERRORS.get(error_code, PaymentError)
