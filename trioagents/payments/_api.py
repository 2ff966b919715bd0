"""The payments HTTP API (served by the hub, or by any server that owns a ledger).

=======================================================  ===================================
``POST /api/payments/tokens`` ``{amount, currency?,``    issue → 201 ``{token_id, token,``
``expires_in?, op_id?}``                                 ``amount, currency, expires_at}``
``GET  /api/payments/tokens/{id}``                       balance → ``TokenBalance``
``POST /api/payments/tokens/{id}/topup``                 ``{amount, op_id}`` → ``TokenBalance``
``POST /api/payments/tokens/{id}/locks``                 ``{amount, op_id}`` → 201 ``LockInfo``
``GET  /api/payments/locks/{id}``                        → ``LockInfo``
``POST /api/payments/locks/{id}/charge``                 ``{amount, op_id}`` → ``LockInfo``
``POST /api/payments/locks/{id}/settle`` / ``release``   ``{op_id}`` → ``LockInfo``
``GET  /api/payments/jwks``                              the keys that verify payment tokens
=======================================================  ===================================

Amounts are decimal strings (JSON numbers are read as decimals, never floats). Errors: payment
errors served with 402 use the §9.2 body; everything else the generic
``{"error":{"code","message","details"}}`` — 400 ``invalid_request``, 401 ``unauthorized``,
404 ``PAYMENT_TOKEN_INVALID`` (``TOKEN_NOT_FOUND``) or ``PAYMENT_CHARGING_FAILED``
(``lock_not_found``), 409 ``PAYMENT_CHARGING_FAILED`` (closed lock) or
``idempotency_conflict``, 413 ``body_too_large``, 503 ``PAYMENT_PLATFORM_UNAVAILABLE``.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._errors import (
    TOKEN_NOT_FOUND,
    IdempotencyConflictError,
    PaymentChargingFailedError,
    PaymentError,
    PaymentTokenInvalidError,
)
from ._ledger import PaymentBackend, to_json
from ._wire import render_http_402, render_http_error

__all__ = ["payments_routes", "payments_app", "PAYMENTS_PREFIX"]

PAYMENTS_PREFIX = "/api/payments"
"""Where the payments API lives."""

_MAX_BODY = 64 * 1024
_MAX_ID = 200


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


def _error_response(exc: Exception) -> Response:
    if isinstance(exc, _BadRequest):
        return _json(exc.status, render_http_error(exc.code, str(exc)))
    if isinstance(exc, IdempotencyConflictError):
        return _json(409, render_http_error("idempotency_conflict", exc.message, exc.details))
    if isinstance(exc, PaymentTokenInvalidError) and exc.subcode == TOKEN_NOT_FOUND:
        return _json(404, render_http_error(exc.error_code, exc.message, exc.details))
    if isinstance(exc, PaymentChargingFailedError):
        status = 404 if (exc.details or {}).get("reason") == "lock_not_found" else 409
        return _json(status, render_http_error(exc.error_code, exc.message, exc.details))
    if isinstance(exc, PaymentError):
        if exc.status_code == 402:
            status, body = render_http_402(exc)
            return _json(status, body)
        return _json(exc.status_code, render_http_error(exc.error_code, exc.message, exc.details))
    if isinstance(exc, (ValueError, TypeError)):
        return _json(400, render_http_error("invalid_request", str(exc)))
    raise exc


async def _body(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > _MAX_BODY:
        raise _BadRequest("request body too large", 413, "body_too_large")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_BODY:
            raise _BadRequest("request body too large", 413, "body_too_large")
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _BadRequest("the body must be a JSON object")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid amount")


def _amount(data: dict[str, Any]) -> Decimal | str | int:
    value = data.get("amount")
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise _BadRequest("amount must be a decimal string or number")
    return value


def _op_id(data: dict[str, Any], *, required: bool = True) -> str | None:
    value = data.get("op_id")
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > _MAX_ID:
        raise _BadRequest(f"op_id must be a string of 1-{_MAX_ID} characters")
    return value


def _path_id(request: Request, name: str) -> str:
    value = request.path_params[name]
    if not isinstance(value, str) or not value or len(value) > _MAX_ID:
        raise _BadRequest(f"invalid {name}")
    return value


Handler = Callable[[Request], Awaitable[Response]]


def payments_routes(backend: PaymentBackend, *, api_key: str | None = None) -> list[BaseRoute]:
    """The payments API routes over ``backend`` (mount them in a hub or any Starlette app).

    Args:
        backend: the ledger.
        api_key: when given, every route but ``/jwks`` requires
            ``Authorization: Bearer <api_key>`` (else 401). Without it the API is open: only
            serve it where the network is trusted, or put auth in front of it.
    """

    def guarded(fn: Callable[[Request], Awaitable[Response]], *, public: bool = False) -> Handler:
        async def handler(request: Request) -> Response:
            if api_key is not None and not public:
                given = request.headers.get("authorization", "")
                scheme, _, value = given.partition(" ")
                if scheme.lower() != "bearer" or not hmac.compare_digest(
                    value.strip().encode(), api_key.encode()
                ):
                    return _json(
                        401,
                        render_http_error("unauthorized", "a valid API key is required"),
                        {"WWW-Authenticate": 'Bearer error="invalid_token"'},
                    )
            try:
                return await fn(request)
            except Exception as exc:
                return _error_response(exc)

        return handler

    async def issue(request: Request) -> Response:
        data = await _body(request)
        currency = data.get("currency", "credits")
        expires_in = data.get("expires_in")
        if not isinstance(currency, str):
            raise _BadRequest("currency must be a string")
        if expires_in is not None and (
            isinstance(expires_in, bool) or not isinstance(expires_in, int)
        ):
            raise _BadRequest("expires_in must be an integer number of seconds")
        issued = await backend.issue_token(
            _amount(data), currency, expires_in=expires_in, op_id=_op_id(data, required=False)
        )
        return _json(201, to_json(issued))

    async def balance(request: Request) -> Response:
        return _json(200, to_json(await backend.balance(_path_id(request, "token_id"))))

    def operation(
        method: Callable[..., Awaitable[Any]], param: str, status: int, *, amount: bool
    ) -> Handler:
        """A POST handler calling ``method(id, [amount,] op_id)`` for the ``param`` path id."""

        async def handler(request: Request) -> Response:
            data = await _body(request)
            op = _op_id(data)
            assert op is not None
            args = (_amount(data), op) if amount else (op,)
            return _json(status, to_json(await method(_path_id(request, param), *args)))

        return handler

    async def lock_info(request: Request) -> Response:
        return _json(200, to_json(await backend.lock_info(_path_id(request, "lock_id"))))

    topup = operation(backend.topup, "token_id", 200, amount=True)
    lock = operation(backend.lock, "token_id", 201, amount=True)
    charge = operation(backend.charge, "lock_id", 200, amount=True)
    settle = operation(backend.settle, "lock_id", 200, amount=False)
    release = operation(backend.release, "lock_id", 200, amount=False)

    async def jwks(request: Request) -> Response:
        return _json(200, await backend.jwks(), {"Cache-Control": "max-age=300"})

    p = PAYMENTS_PREFIX
    return [
        Route(f"{p}/tokens", guarded(issue), methods=["POST"]),
        Route(f"{p}/tokens/{{token_id}}", guarded(balance), methods=["GET"]),
        Route(f"{p}/tokens/{{token_id}}/topup", guarded(topup), methods=["POST"]),
        Route(f"{p}/tokens/{{token_id}}/locks", guarded(lock), methods=["POST"]),
        Route(f"{p}/locks/{{lock_id}}", guarded(lock_info), methods=["GET"]),
        Route(f"{p}/locks/{{lock_id}}/charge", guarded(charge), methods=["POST"]),
        Route(f"{p}/locks/{{lock_id}}/settle", guarded(settle), methods=["POST"]),
        Route(f"{p}/locks/{{lock_id}}/release", guarded(release), methods=["POST"]),
        Route(f"{p}/jwks", guarded(jwks, public=True), methods=["GET"]),
    ]


def payments_app(backend: PaymentBackend, *, api_key: str | None = None) -> Starlette:
    """A Starlette app serving only the payments API (see :func:`payments_routes`)."""
    return Starlette(routes=payments_routes(backend, api_key=api_key))
