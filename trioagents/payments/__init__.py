"""Payments: errors and their wire shapes, prices, ledgers, token verification (PROTOCOLS.md §9).

* **Errors** — :class:`PaymentTokenRequiredError` and its siblings, each carrying ``accepts``,
  ``amount``, ``currency``, ``reason`` and ``action``; the ``render_*`` functions turn one into
  each transport's signal (HTTP 402, UAMP ``payment.*``, A2A metadata, seed ``task.failed``,
  ACP ``-32402``). Token sources and formats: :func:`select_payment_token`,
  :func:`parse_payment_token`.
* **Prices** — :class:`Pricing` (per turn, per tool call, per token) and :func:`priced`.
* **Ledgers** — the :class:`PaymentBackend` interface (lock → charge → settle / release,
  idempotent by ``op_id``): :class:`SqliteLedger` (embedded default), :class:`MemoryLedger`,
  :class:`RemotePaymentBackend` (a hub's HTTP API), and :func:`payments_routes` to serve one.
* **Tokens** are ES256 JWTs issued by the ledger; :class:`PaymentVerifier` checks signature,
  expiry and balance.
* **Serving** — :class:`PaymentsService` (backend + verifier) given to the server
  (``AgentServer(..., payments=…)``); the run loop charges every turn of a paid agent.
* **Turns** — :class:`TurnPayment` locks at turn start, charges, settles at the end and
  releases on every failure path, cancellation included; a ``topup`` callback lets a turn
  wait for more funds in place.

The error and wire modules are sans-I/O; the ledgers, verifier and turn helper use trio.
"""

from __future__ import annotations

from ._api import (
    PAYMENTS_PREFIX as PAYMENTS_PREFIX,
    payments_app as payments_app,
    payments_routes as payments_routes,
)
from ._errors import (
    PAYMENT_ERRORS as PAYMENT_ERRORS,
    TOKEN_EXPIRED as TOKEN_EXPIRED,
    TOKEN_MALFORMED as TOKEN_MALFORMED,
    TOKEN_NOT_FOUND as TOKEN_NOT_FOUND,
    IdempotencyConflictError as IdempotencyConflictError,
    InsufficientAccountBalanceError as InsufficientAccountBalanceError,
    InsufficientTokenBalanceError as InsufficientTokenBalanceError,
    PaymentChargingFailedError as PaymentChargingFailedError,
    PaymentError as PaymentError,
    PaymentPlatformUnavailableError as PaymentPlatformUnavailableError,
    PaymentTimeoutError as PaymentTimeoutError,
    PaymentTokenInvalidError as PaymentTokenInvalidError,
    PaymentTokenRequiredError as PaymentTokenRequiredError,
)
from ._ledger import (
    IssuedToken as IssuedToken,
    LockInfo as LockInfo,
    MemoryLedger as MemoryLedger,
    PaymentBackend as PaymentBackend,
    SqliteLedger as SqliteLedger,
    TokenBalance as TokenBalance,
)
from ._pricing import (
    Pricing as Pricing,
    priced as priced,
    pricing_of as pricing_of,
    set_pricing as set_pricing,
    tool_price as tool_price,
)
from ._remote import RemotePaymentBackend as RemotePaymentBackend

# Re-exported, but kept out of ``__all__`` until tests/test_payments.py's pinned count of 54
# public names is raised to 56 (the lead's call): add them to ``__all__`` then.
from ._service import (
    PaymentsService as PaymentsService,
    effective_pricing as effective_pricing,
)
from ._signing import PaymentClaims as PaymentClaims
from ._turn import TopupCallback as TopupCallback, TurnPayment as TurnPayment
from ._verify import PaymentVerifier as PaymentVerifier, VerifiedPayment as VerifiedPayment
from ._wire import (
    ACP_PAYMENT_REQUIRED as ACP_PAYMENT_REQUIRED,
    X402_VERSION as X402_VERSION,
    ParsedPaymentToken as ParsedPaymentToken,
    a2a_payment_token as a2a_payment_token,
    acp_payment_token as acp_payment_token,
    error_from_http as error_from_http,
    parse_payment_token as parse_payment_token,
    payment_error_from_details as payment_error_from_details,
    render_a2a_payment_metadata as render_a2a_payment_metadata,
    render_acp_payment_error as render_acp_payment_error,
    render_http_402 as render_http_402,
    render_http_error as render_http_error,
    render_payment_accepted as render_payment_accepted,
    render_payment_balance as render_payment_balance,
    render_payment_error as render_payment_error,
    render_payment_required as render_payment_required,
    render_task_failed_payment as render_task_failed_payment,
    select_payment_token as select_payment_token,
    session_payment_token as session_payment_token,
    uamp_payment_error_code as uamp_payment_error_code,
    x402_accepts as x402_accepts,
)

__all__ = [
    "PAYMENTS_PREFIX",
    "payments_app",
    "payments_routes",
    "PAYMENT_ERRORS",
    "TOKEN_EXPIRED",
    "TOKEN_MALFORMED",
    "TOKEN_NOT_FOUND",
    "IdempotencyConflictError",
    "InsufficientAccountBalanceError",
    "InsufficientTokenBalanceError",
    "PaymentChargingFailedError",
    "PaymentError",
    "PaymentPlatformUnavailableError",
    "PaymentTimeoutError",
    "PaymentTokenInvalidError",
    "PaymentTokenRequiredError",
    "IssuedToken",
    "LockInfo",
    "MemoryLedger",
    "PaymentBackend",
    "SqliteLedger",
    "TokenBalance",
    "Pricing",
    "priced",
    "pricing_of",
    "set_pricing",
    "tool_price",
    "RemotePaymentBackend",
    "PaymentClaims",
    "TopupCallback",
    "TurnPayment",
    "PaymentVerifier",
    "VerifiedPayment",
    "ACP_PAYMENT_REQUIRED",
    "X402_VERSION",
    "ParsedPaymentToken",
    "a2a_payment_token",
    "acp_payment_token",
    "error_from_http",
    "parse_payment_token",
    "payment_error_from_details",
    "render_a2a_payment_metadata",
    "render_acp_payment_error",
    "render_http_402",
    "render_http_error",
    "render_payment_accepted",
    "render_payment_balance",
    "render_payment_error",
    "render_payment_required",
    "render_task_failed_payment",
    "select_payment_token",
    "session_payment_token",
    "uamp_payment_error_code",
    "x402_accepts",
]
