"""``RemotePaymentBackend``: the :class:`~trioagents.payments.PaymentBackend` interface over the
payments HTTP API of a hub, with httpx."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote

import attrs
import httpx
import orjson
import trio

from ._api import PAYMENTS_PREFIX
from ._errors import PaymentPlatformUnavailableError, to_decimal
from ._ledger import IssuedToken, LockInfo, TokenBalance
from ._wire import error_from_http

__all__ = ["RemotePaymentBackend"]


T = TypeVar("T", IssuedToken, TokenBalance, LockInfo)


def _build(cls: type[T], data: dict[str, Any]) -> T:
    # Receivers ignore unknown fields; a missing or ill-typed field is the platform's fault.
    names = attrs.fields_dict(cls)
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except (TypeError, ValueError) as exc:
        raise PaymentPlatformUnavailableError(
            f"payment platform sent an invalid {cls.__name__}: {exc}"
        ) from None


def _seg(value: str) -> str:
    return quote(value, safe="")


class RemotePaymentBackend(trio.abc.AsyncResource):
    """The payment backend of a remote hub (``{base_url}/api/payments/…``).

    Errors come back as the same exception classes the embedded ledgers raise; a network
    failure or a 5xx is :class:`~trioagents.payments.PaymentPlatformUnavailableError`. A
    mutating call whose outcome is unknown (cancelled or failed in flight) may be repeated
    with the same ``op_id``.

    Args:
        base_url: the hub, e.g. ``https://hub.example``.
        client: an ``httpx.AsyncClient`` to use (not closed by :meth:`aclose`); default: one
            of our own.
        api_key: sent as ``Authorization: Bearer`` when given.
    """

    def __init__(
        self,
        base_url: str,
        client: httpx.AsyncClient | None = None,
        *,
        api_key: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + PAYMENTS_PREFIX
        self._own = client is None
        self.client = client if client is not None else httpx.AsyncClient()
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            response = await self.client.request(
                method,
                self.base_url + path,
                content=orjson.dumps(body) if body is not None else None,
                headers={**self._headers, "Content-Type": "application/json"}
                if body is not None
                else self._headers,
            )
        except httpx.HTTPError as exc:
            raise PaymentPlatformUnavailableError(
                f"payment platform unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        try:
            data = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            data = None
        if response.is_success and isinstance(data, dict):
            return data
        if response.is_success:
            raise PaymentPlatformUnavailableError("payment platform sent an invalid response")
        raise error_from_http(response.status_code, data)

    @staticmethod
    def _money(value: Decimal | str | int) -> str:
        return str(to_decimal(value))

    async def issue_token(
        self,
        amount: Decimal | str | int,
        currency: str = "credits",
        *,
        expires_in: int | None = None,
        op_id: str | None = None,
    ) -> IssuedToken:
        """Issue a token at the hub."""
        body: dict[str, Any] = {"amount": self._money(amount), "currency": currency}
        if expires_in is not None:
            body["expires_in"] = expires_in
        if op_id is not None:
            body["op_id"] = op_id
        return _build(IssuedToken, await self._call("POST", "/tokens", body))

    async def balance(self, token_id: str) -> TokenBalance:
        """The token's accounts."""
        return _build(TokenBalance, await self._call("GET", f"/tokens/{_seg(token_id)}"))

    async def topup(self, token_id: str, amount: Decimal | str | int, op_id: str) -> TokenBalance:
        """Add ``amount`` to the token."""
        body = {"amount": self._money(amount), "op_id": op_id}
        return _build(
            TokenBalance, await self._call("POST", f"/tokens/{_seg(token_id)}/topup", body)
        )

    async def lock(self, token_id: str, amount: Decimal | str | int, op_id: str) -> LockInfo:
        """Reserve ``amount`` of the token."""
        body = {"amount": self._money(amount), "op_id": op_id}
        return _build(LockInfo, await self._call("POST", f"/tokens/{_seg(token_id)}/locks", body))

    async def lock_info(self, lock_id: str) -> LockInfo:
        """A lock's state."""
        return _build(LockInfo, await self._call("GET", f"/locks/{_seg(lock_id)}"))

    async def charge(self, lock_id: str, amount: Decimal | str | int, op_id: str) -> LockInfo:
        """Capture ``amount`` of the lock."""
        body = {"amount": self._money(amount), "op_id": op_id}
        return _build(LockInfo, await self._call("POST", f"/locks/{_seg(lock_id)}/charge", body))

    async def settle(self, lock_id: str, op_id: str) -> LockInfo:
        """Close the lock, keeping its charges."""
        data = await self._call("POST", f"/locks/{_seg(lock_id)}/settle", {"op_id": op_id})
        return _build(LockInfo, data)

    async def release(self, lock_id: str, op_id: str) -> LockInfo:
        """Void the lock."""
        data = await self._call("POST", f"/locks/{_seg(lock_id)}/release", {"op_id": op_id})
        return _build(LockInfo, data)

    async def jwks(self) -> dict[str, Any]:
        """The hub's payment-token keys."""
        data: dict[str, Any] = await self._call("GET", "/jwks")
        return data

    async def aclose(self) -> None:
        """Close our own HTTP client (a given client is left open). Idempotent."""
        if self._own:
            await self.client.aclose()
