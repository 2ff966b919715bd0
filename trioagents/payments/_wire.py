"""Every wire shape of payments (PROTOCOLS.md §9, §0.2). Sans-I/O: dicts and UAMP events out.

Theory of operation
-------------------
A :class:`~trioagents.payments.PaymentError` carries everything a signal needs (``accepts``,
``amount``, ``currency``, ``reason``, ``action``). Each transport renders the same error in its
own shape with one pure function here:

=====================  ==============================================================
Completions, any 402   :func:`render_http_402` → (status, §9.2 body)
UAMP / Portal / RT     :func:`render_payment_required`, :func:`render_payment_error`,
                       :func:`render_payment_accepted`, :func:`render_payment_balance`
A2A JSON-RPC           :func:`render_a2a_payment_metadata` (``input-required`` metadata)
A2A seed REST          :func:`render_task_failed_payment` (``task.failed`` data)
ACP                    :func:`render_acp_payment_error` (JSON-RPC ``-32402``)
=====================  ==============================================================

Tokens arrive from several places (§0.2, first match wins): :func:`select_payment_token` picks
the raw value, :func:`parse_payment_token` turns any accepted format (raw JWT, base64 JWT,
base64 of the x402 JSON payload) into the JWT itself.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs
import orjson

from .. import uamp
from ..protocols import jsonrpc
from ._errors import (
    TOKEN_EXPIRED,
    TOKEN_MALFORMED,
    Action,
    IdempotencyConflictError,
    InsufficientAccountBalanceError,
    InsufficientTokenBalanceError,
    PaymentChargingFailedError,
    PaymentError,
    PaymentPlatformUnavailableError,
    PaymentTimeoutError,
    PaymentTokenInvalidError,
    PaymentTokenRequiredError,
    payment_error_class,
    to_decimal,
)

__all__ = [
    "X402_VERSION",
    "ACP_PAYMENT_REQUIRED",
    "DEFAULT_NETWORK",
    "x402_accepts",
    "render_http_402",
    "render_http_error",
    "error_from_http",
    "payment_error_from_details",
    "render_payment_required",
    "render_payment_error",
    "render_payment_accepted",
    "render_payment_balance",
    "render_a2a_payment_metadata",
    "a2a_payment_token",
    "render_task_failed_payment",
    "render_acp_payment_error",
    "acp_payment_token",
    "uamp_payment_error_code",
    "ParsedPaymentToken",
    "parse_payment_token",
    "select_payment_token",
    "session_payment_token",
]

X402_VERSION = 2
"""The x402 protocol version written in every payment signal."""

ACP_PAYMENT_REQUIRED = -32402
"""The JSON-RPC error code ACP uses for payment errors (§9.1)."""

DEFAULT_NETWORK = "trioagents"
"""The x402 ``network`` of tokens issued by a trioagents ledger."""


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def x402_accepts(
    amount: Decimal | str | int,
    currency: str = "credits",
    *,
    network: str = DEFAULT_NETWORK,
    pay_to: str = "",
    scheme: str = "token",
    max_timeout_seconds: int = 300,
    token_type: str = "jwt",
) -> list[dict[str, Any]]:
    """One x402 ``accepts`` list with a single entry (§9.2).

    Args:
        amount: the amount asked for.
        currency: becomes the asset ``{network}:{currency}``.
        network: the payment network (e.g. ``"robutler"`` for that platform).
        pay_to: who is paid (the agent's account at the platform).
        scheme: the x402 scheme; trioagents ledgers use ``"token"``.
        max_timeout_seconds: how long the offer stands.
        token_type: ``extra.tokenType``.

    Raises:
        TypeError: ``amount`` is a float.
    """
    return [
        {
            "scheme": scheme,
            "network": network,
            "amount": str(to_decimal(amount)),
            "asset": f"{network}:{currency}",
            "payTo": pay_to,
            "maxTimeoutSeconds": max_timeout_seconds,
            "extra": {"tokenType": token_type},
        }
    ]


def _accepts(err: PaymentError) -> list[dict[str, Any]]:
    if err.accepts:
        return list(err.accepts)
    if err.amount is not None:
        return x402_accepts(err.amount, err.currency or "credits")
    return []


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------


def render_http_402(
    err: PaymentError, *, agent_name: str | None = None
) -> tuple[int, dict[str, Any]]:
    """The HTTP status and §9.2 body for ``err`` (Completions preflight, payments API, 402s).

    ``accepts`` is written at top level (x402 clients) and in ``context`` (seed clients);
    ``context`` also carries ``amount``, ``currency``, ``action``, ``reason`` and ``token_id``
    when known, so a remote client can rebuild the error exactly (:func:`error_from_http`).

    Returns:
        ``(err.status_code, body)``: 402, or 503 for ``PAYMENT_PLATFORM_UNAVAILABLE``.
    """
    accepts = _accepts(err)
    context: dict[str, Any] = {}
    if agent_name is not None:
        context["agent_name"] = agent_name
    context["x402Version"] = X402_VERSION
    context["accepts"] = accepts
    context["action"] = err.action
    for key, value in (
        ("amount", _money(err.amount)),
        ("currency", err.currency),
        ("reason", err.reason),
        ("token_id", err.token_id),
    ):
        if value is not None:
            context[key] = value
    body = {
        "error": err.error_code,
        "subcode": err.subcode,
        "message": err.message,
        "user_message": err.user_message,
        "status_code": err.status_code,
        "x402Version": X402_VERSION,
        "accepts": accepts,
        "context": context,
    }
    return err.status_code, body


def render_http_error(
    code: str, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The generic HTTP error body ``{"error":{"code","message","details"}}`` (§0.4)."""
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}


def error_from_http(status: int, body: Any) -> PaymentError:
    """Rebuild a payment error from an HTTP error response (either shape).

    A §9.2 body gives back the same class, subcode, amount, currency, action and reason; a
    generic body whose ``code`` is a §9 code likewise; anything else (5xx, garbage) is a
    :class:`~trioagents.payments.PaymentPlatformUnavailableError` for 5xx and a
    :class:`~trioagents.payments.PaymentChargingFailedError` otherwise.
    """
    err_field = body.get("error") if isinstance(body, dict) else None
    if isinstance(err_field, str):  # §9.2
        raw_ctx = body.get("context")
        ctx: dict[str, Any] = raw_ctx if isinstance(raw_ctx, dict) else {}
        cls = payment_error_class(err_field)
        action: Action = "topup" if ctx.get("action") == "topup" else "pay"
        return cls(
            str(body.get("message") or cls.default_message),
            subcode=body.get("subcode") if isinstance(body.get("subcode"), str) else None,
            accepts=body.get("accepts") if isinstance(body.get("accepts"), list) else None,
            amount=_safe_amount(ctx.get("amount")),
            currency=ctx.get("currency") if isinstance(ctx.get("currency"), str) else None,
            reason=ctx.get("reason") if isinstance(ctx.get("reason"), str) else None,
            action=action,
            token_id=ctx.get("token_id") if isinstance(ctx.get("token_id"), str) else None,
            user_message=body.get("user_message")
            if isinstance(body.get("user_message"), str)
            else None,
        )
    if isinstance(err_field, dict):  # generic shape
        code = err_field.get("code")
        message = str(err_field.get("message") or "")
        raw_details = err_field.get("details")
        details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
        if code == "idempotency_conflict":
            return IdempotencyConflictError(message or None, details=details)
        if isinstance(code, str) and code in _KNOWN_CODES:
            return payment_error_class(code)(
                message or None,
                subcode=details.get("subcode") if isinstance(details.get("subcode"), str) else None,
                token_id=details.get("token_id")
                if isinstance(details.get("token_id"), str)
                else None,
                details=details,
            )
        if status >= 500:
            return PaymentPlatformUnavailableError(message or f"payment platform error {status}")
        return PaymentChargingFailedError(
            message or f"payment request failed ({status})",
            details={"http_status": status, "code": code, **details},
        )
    if status >= 500:
        return PaymentPlatformUnavailableError(f"payment platform error {status}")
    return PaymentChargingFailedError(f"payment request failed ({status})")


def payment_error_from_details(details: Mapping[str, Any] | None) -> PaymentError | None:
    """Rebuild the payment error behind a UAMP ``response.error`` from its ``details``.

    A :class:`~trioagents.payments.PaymentError` that ends a response leaves ``error`` (the §9
    code), ``subcode``, ``amount``, ``currency``, ``action``, ``reason``, ``token_id`` and
    ``accepts`` in ``response.error.details`` (the run loop copies ``err.details``; codes
    outside §1.3 move to ``details.reason``). Transports that only see UAMP events use this to
    render their own payment signal (402, ``task.failed``, ``-32402``…).

    Returns:
        The error, or ``None`` when ``details`` does not describe a payment error.
    """
    if not isinstance(details, Mapping):
        return None
    code = details.get("error")
    if not isinstance(code, str) or code not in _KNOWN_CODES:
        return None
    action: Action = "topup" if details.get("action") == "topup" else "pay"

    def text(key: str) -> str | None:
        value = details.get(key)
        return value if isinstance(value, str) else None

    accepts = details.get("accepts")
    return payment_error_class(code)(
        text("message"),
        subcode=text("subcode"),
        accepts=[a for a in accepts if isinstance(a, dict)] if isinstance(accepts, list) else None,
        amount=_safe_amount(details.get("amount")),
        currency=text("currency"),
        reason=text("reason") if text("reason") != code else None,
        action=action,
        token_id=text("token_id"),
    )


_KNOWN_CODES = frozenset(
    {
        "PAYMENT_TOKEN_REQUIRED",
        "PAYMENT_TOKEN_INVALID",
        "INSUFFICIENT_TOKEN_BALANCE",
        "INSUFFICIENT_ACCOUNT_BALANCE",
        "PAYMENT_CHARGING_FAILED",
        "PAYMENT_PLATFORM_UNAVAILABLE",
        "PAYMENT_TIMEOUT",
    }
)


def _safe_amount(value: Any) -> Decimal | None:
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        return None
    try:
        return to_decimal(value)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# UAMP (also PortalConnect and Realtime, which carry the same payment.* events)
# --------------------------------------------------------------------------------------------


def render_payment_required(
    err: PaymentError,
    *,
    response_id: str,
    session_id: str | None = None,
    expires_at: int | None = None,
) -> uamp.PaymentRequired:
    """``payment.required`` for ``err`` (§9.3).

    ``requirements.schemes`` lists each ``accepts`` entry as ``{scheme, network, address?}``;
    ``extra.action`` is ``err.action`` and, for a top-up, ``extra.amount`` is the additional
    amount and ``extra.token_id`` the token to top up.
    """
    accepts = _accepts(err)
    schemes: list[uamp.JSON] = []
    for entry in accepts:
        scheme: dict[str, uamp.JSON] = {
            "scheme": entry.get("scheme", "token"),
            "network": entry.get("network", DEFAULT_NETWORK),
        }
        if entry.get("payTo"):
            scheme["address"] = entry["payTo"]
        schemes.append(scheme)
    if not schemes:
        schemes = [{"scheme": "token", "network": DEFAULT_NETWORK}]
    requirements: dict[str, uamp.JSON] = {
        "amount": _money(err.amount) or "0",
        "currency": err.currency or "credits",
        "schemes": schemes,
    }
    if expires_at is not None:
        requirements["expires_at"] = expires_at
    if err.reason:
        requirements["reason"] = err.reason
    extra: dict[str, uamp.JSON] = {"action": err.action}
    if err.action == "topup" and err.amount is not None:
        extra["amount"] = str(err.amount)
    if err.token_id is not None:
        extra["token_id"] = err.token_id
    return uamp.PaymentRequired(
        response_id=response_id,
        requirements=requirements,
        accepts=list(accepts) or None,
        extra=extra,
        session_id=session_id,
    )


def uamp_payment_error_code(err: PaymentError) -> str:
    """The ``payment.error`` code for ``err`` (§9.3)."""
    if isinstance(err, PaymentTimeoutError):
        return "payment_timeout"
    if isinstance(err, (InsufficientTokenBalanceError, InsufficientAccountBalanceError)):
        return "insufficient_balance"
    if isinstance(err, PaymentTokenInvalidError):
        return "token_expired" if err.subcode == TOKEN_EXPIRED else "token_invalid"
    if isinstance(err, PaymentTokenRequiredError):
        return "token_invalid"
    return "payment_failed"


def render_payment_error(
    err: PaymentError,
    *,
    can_retry: bool,
    session_id: str | None = None,
    balance_required: Decimal | None = None,
    balance_current: Decimal | None = None,
) -> uamp.PaymentError:
    """``payment.error`` for ``err`` (§9.3).

    Args:
        can_retry: ``True`` while the response still waits (an invalid submission), ``False``
            when the response ends (``payment_timeout``).
        balance_required: defaults to ``err.amount`` for balance errors.
        balance_current: the token's balance, when known.
    """
    code = uamp_payment_error_code(err)
    if balance_required is None and code == "insufficient_balance":
        balance_required = err.amount
    return uamp.PaymentError(
        code=code,
        message=err.message,
        can_retry=can_retry,
        balance_required=_money(balance_required),
        balance_current=_money(balance_current),
        session_id=session_id,
    )


def render_payment_accepted(
    payment_id: str,
    balance_remaining: Decimal,
    *,
    expires_at: int | None = None,
    session_id: str | None = None,
) -> uamp.PaymentAccepted:
    """``payment.accepted`` (once, after a submitted token was verified)."""
    return uamp.PaymentAccepted(
        payment_id=payment_id,
        balance_remaining=str(balance_remaining),
        expires_at=expires_at,
        session_id=session_id,
    )


def render_payment_balance(
    balance: Decimal,
    currency: str,
    *,
    initial_amount: Decimal,
    threshold: Decimal | None = None,
    estimated_remaining: int | None = None,
    expires_at: int | None = None,
    session_id: str | None = None,
) -> uamp.PaymentBalance:
    """``payment.balance`` (after each ``response.done`` of a paid session, §9.3).

    Args:
        balance: what the token can still spend.
        initial_amount: the token's initial amount; the default ``threshold`` is 10 % of it.
        threshold: below it, ``low_balance_warning`` is true.
        estimated_remaining: how many more turns the balance is likely to pay for.
    """
    limit = threshold if threshold is not None else initial_amount / 10
    return uamp.PaymentBalance(
        balance=str(balance),
        currency=currency,
        threshold=str(limit),
        low_balance_warning=balance < limit,
        estimated_remaining=estimated_remaining,
        expires_at=expires_at,
        session_id=session_id,
    )


def session_payment_token(event: Mapping[str, Any]) -> str | None:
    """The payment token of a raw ``session.create`` / ``session.update`` object.

    ``payment_token`` may sit at top level or inside ``session``; top level wins (§1.2).
    """
    top = event.get("payment_token")
    if isinstance(top, str) and top:
        return top
    inner = event.get("session")
    if isinstance(inner, Mapping):
        value = inner.get("payment_token")
        if isinstance(value, str) and value:
            return value
    return None


# --------------------------------------------------------------------------------------------
# A2A, seed REST, ACP
# --------------------------------------------------------------------------------------------


def render_a2a_payment_metadata(err: PaymentError) -> dict[str, Any]:
    """``status.message.metadata`` of an A2A task stopped in ``input-required`` (§6.2, §9.1).

    A sibling error other than ``PAYMENT_TOKEN_REQUIRED`` adds ``x402.payment.error``.
    """
    meta: dict[str, Any] = {
        "x402.payment.status": "payment-required",
        "x402.payment.required": {"x402Version": X402_VERSION, "accepts": _accepts(err)},
    }
    if not isinstance(err, PaymentTokenRequiredError):
        meta["x402.payment.error"] = err.error_code
    return meta


def a2a_payment_token(metadata: Any) -> str | None:
    """The token of an A2A message answering a payment request, or ``None``.

    The message's ``metadata`` must say ``"x402.payment.status": "payment-submitted"``;
    ``x402.payment.payload`` may be a token string (any §0.2 format) or an x402 payload object
    ``{"payload": {"token": …}}``.

    Raises:
        PaymentTokenInvalidError: the payload is present but holds no usable token.
    """
    if not isinstance(metadata, Mapping):
        return None
    if metadata.get("x402.payment.status") != "payment-submitted":
        return None
    payload = metadata.get("x402.payment.payload")
    if isinstance(payload, str) and payload:
        return payload
    if isinstance(payload, Mapping):
        inner = payload.get("payload")
        if isinstance(inner, Mapping) and isinstance(inner.get("token"), str):
            return str(inner["token"])
        if isinstance(payload.get("token"), str):
            return str(payload["token"])
    raise PaymentTokenInvalidError("x402.payment.payload holds no token", subcode=TOKEN_MALFORMED)


def render_task_failed_payment(err: PaymentError, task_id: str) -> dict[str, Any]:
    """The seed REST ``task.failed`` data for a payment error (§6.3)."""
    if isinstance(err, PaymentTokenRequiredError):
        code, text = "payment_required", "Payment required"
    else:
        code, text = err.error_code.lower(), err.message
    return {
        "id": task_id,
        "status": "failed",
        "code": code,
        "status_code": err.status_code,
        "error": text,
        "accepts": _accepts(err),
    }


def render_acp_payment_error(err: PaymentError, request_id: str | int | None) -> dict[str, Any]:
    """The ACP JSON-RPC error response (code ``-32402``) for ``err`` (§9.1)."""
    data: dict[str, Any] = {
        "x402Version": X402_VERSION,
        "accepts": _accepts(err),
        "error": err.error_code,
    }
    if err.subcode:
        data["subcode"] = err.subcode
    return jsonrpc.error(request_id, ACP_PAYMENT_REQUIRED, err.message, data)


def acp_payment_token(params: Any) -> str | None:
    """The payment token of ACP ``session/prompt`` params: ``payment_token``, else
    ``_meta.payment_token``."""
    if not isinstance(params, Mapping):
        return None
    value = params.get("payment_token")
    if isinstance(value, str) and value:
        return value
    meta = params.get("_meta")
    if isinstance(meta, Mapping):
        value = meta.get("payment_token")
        if isinstance(value, str) and value:
            return value
    return None


# --------------------------------------------------------------------------------------------
# Token sources and formats (§0.2)
# --------------------------------------------------------------------------------------------

_B64URL = r"[A-Za-z0-9_-]+"
_JWT_RE = re.compile(rf"{_B64URL}\.{_B64URL}\.[A-Za-z0-9_-]*")
_MAX_TOKEN_CHARS = 16_384


@attrs.frozen
class ParsedPaymentToken:
    """A payment token in its canonical form.

    Attributes:
        jwt: the compact JWT the ledger issued.
        format: ``"jwt"``, ``"base64_jwt"`` or ``"x402"``.
        scheme: the x402 ``scheme`` (``"token"``) when the value was an x402 payload.
        network: the x402 ``network``, when given.
        amount: the payload's ``amount``, when given.
    """

    jwt: str
    format: str
    scheme: str | None = None
    network: str | None = None
    amount: Decimal | None = None


def _b64decode(value: str) -> bytes | None:
    text = value.strip()
    padded = text + "=" * (-len(text) % 4)
    try:
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


def _looks_like_jwt(value: str) -> bool:
    if not _JWT_RE.fullmatch(value):
        return False
    header = _b64decode(value.split(".", 1)[0])
    if header is None:
        return False
    try:
        obj = orjson.loads(header)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and isinstance(obj.get("alg"), str)


def _malformed(message: str) -> PaymentTokenInvalidError:
    return PaymentTokenInvalidError(message, subcode=TOKEN_MALFORMED)


def parse_payment_token(value: str) -> ParsedPaymentToken:
    """Accept a payment token in any §0.2 format and return its JWT.

    Formats: a raw compact JWT; base64 (standard or URL-safe, padding optional) of a JWT;
    base64 of the x402 payload ``{"scheme":"token","network":…,"payload":{"token":…,
    "amount":…}}`` whose ``token`` is itself a raw or base64 JWT. A ``Bearer`` prefix is
    tolerated. Only the shape is checked here; the signature is the verifier's job.

    Raises:
        PaymentTokenInvalidError: subcode ``TOKEN_MALFORMED`` for anything else.
    """
    if not isinstance(value, str):
        raise _malformed("payment token must be a string")
    text = value.strip()
    if text[:7].lower() == "bearer ":
        text = text[7:].strip()
    if not text:
        raise _malformed("empty payment token")
    if len(text) > _MAX_TOKEN_CHARS:
        raise _malformed("payment token too long")
    if _looks_like_jwt(text):
        return ParsedPaymentToken(jwt=text, format="jwt")
    raw = _b64decode(text)
    if raw is None:
        raise _malformed("payment token is neither a JWT nor base64")
    try:
        inner = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _malformed("payment token is neither a JWT nor a base64 payment payload") from None
    if _looks_like_jwt(inner):
        return ParsedPaymentToken(jwt=inner, format="base64_jwt")
    try:
        obj = orjson.loads(inner)
    except orjson.JSONDecodeError:
        raise _malformed("payment token is neither a JWT nor an x402 payload") from None
    if not isinstance(obj, dict):
        raise _malformed("x402 payment payload must be a JSON object")
    payload = obj.get("payload")
    token = payload.get("token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        raise _malformed("x402 payment payload has no payload.token")
    if _looks_like_jwt(token):
        jwt = token
    else:
        decoded = _b64decode(token)
        candidate = decoded.decode("utf-8", "replace").strip() if decoded else ""
        if not _looks_like_jwt(candidate):
            raise _malformed("x402 payload.token is not a JWT")
        jwt = candidate
    scheme = obj.get("scheme")
    network = obj.get("network")
    amount = payload.get("amount") if isinstance(payload, dict) else None
    return ParsedPaymentToken(
        jwt=jwt,
        format="x402",
        scheme=scheme if isinstance(scheme, str) else None,
        network=network if isinstance(network, str) else None,
        amount=_safe_amount(amount),
    )


def select_payment_token(
    *,
    turn: str | None = None,
    session: str | None = None,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
) -> str | None:
    """Pick the payment token of a request, first match wins (§0.2).

    Order: the per-turn field (``input.text.payment_token``, ACP ``payment_token``), the
    session token (``session.create`` / ``session.update`` / ``payment.submit``), the
    ``X-PAYMENT`` header, the legacy ``X-Payment-Token`` header, the ``?payment_token=`` query
    parameter. Empty values do not match. Header names are case-insensitive.

    Returns:
        The raw value (pass it to :func:`parse_payment_token`), or ``None``.
    """
    for value in (turn, session):
        if value:
            return value
    if headers is not None:
        lowered = {k.lower(): v for k, v in headers.items()}
        for name in ("x-payment", "x-payment-token"):
            value = lowered.get(name)
            if value:
                return value
    if query is not None:
        value = query.get("payment_token")
        if value:
            return value
    return None
