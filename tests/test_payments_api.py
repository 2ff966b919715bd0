"""The payments HTTP API on a real server (Hypercorn, 127.0.0.1:0), driven by
``RemotePaymentBackend`` and by raw httpx."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from trioagents.payments import (
    IdempotencyConflictError,
    InsufficientTokenBalanceError,
    PaymentChargingFailedError,
    PaymentPlatformUnavailableError,
    PaymentTokenInvalidError,
    PaymentVerifier,
    Pricing,
    RemotePaymentBackend,
    SqliteLedger,
    TurnPayment,
    payments_app,
)


@asynccontextmanager
async def serve_payments(ledger: SqliteLedger, api_key: str | None = None) -> AsyncIterator[str]:
    """Serve the payments API over ``ledger``; yield its base URL."""
    hc = HypercornConfig()
    hc.bind = ["127.0.0.1:0"]
    hc.graceful_timeout = 2
    hc.errorlog = logging.getLogger("tests.payments")
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(
                hypercorn_serve,
                payments_app(ledger, api_key=api_key),  # type: ignore[arg-type]
                hc,
                shutdown_trigger=stop.wait,
            )
        )
        try:
            yield urls[0]
        finally:
            stop.set()


@asynccontextmanager
async def setup(
    tmp_path: Path, api_key: str | None = None
) -> AsyncIterator[tuple[SqliteLedger, RemotePaymentBackend, httpx.AsyncClient, str]]:
    async with (
        SqliteLedger(tmp_path / "hub.db") as ledger,
        serve_payments(ledger, api_key) as url,
        httpx.AsyncClient() as client,
    ):
        yield ledger, RemotePaymentBackend(url, client, api_key=api_key), client, url


async def test_remote_backend_full_flow(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with setup(tmp_path) as (ledger, remote, _, _):
            issued = await remote.issue_token("2.00", "credits", expires_in=600)
            assert issued.token.count(".") == 2 and issued.amount == Decimal("2.00")
            lock = await remote.lock(issued.token_id, "1.20", "op-lock")
            lock = await remote.charge(lock.lock_id, "0.45", "op-charge")
            assert (lock.charged, lock.remaining) == (Decimal("0.45"), Decimal("0.75"))
            assert await remote.lock_info(lock.lock_id) == lock
            settled = await remote.settle(lock.lock_id, "op-settle")
            assert settled.state == "settled"
            after = await remote.topup(issued.token_id, "1", "op-topup")
            assert (after.balance, after.spent, after.topped_up) == (
                Decimal("2.55"),
                Decimal("0.45"),
                Decimal("1"),
            )
            # The hub's ledger agrees with what the remote client saw.
            assert await ledger.balance(issued.token_id) == await remote.balance(issued.token_id)
            second = await remote.lock(issued.token_id, "0.5", "op-lock-2")
            await remote.charge(second.lock_id, "0.5", "op-charge-2")
            assert (await remote.release(second.lock_id, "op-rel")).state == "released"
            assert (await ledger.balance(issued.token_id)).balance == Decimal("2.55")
            assert await ledger.open_locks() == []


async def test_idempotency_over_http(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with setup(tmp_path) as (ledger, remote, client, url):
            tok = await remote.issue_token("1", op_id="issue-A")
            assert await remote.issue_token("1", op_id="issue-A") == tok
            for _ in range(3):  # a client retrying after a lost response
                await remote.topup(tok.token_id, "0.25", "topup-A")
            lock = await remote.lock(tok.token_id, "1", "lock-A")
            for _ in range(3):
                assert (await remote.charge(lock.lock_id, "0.4", "charge-A")).charged == Decimal(
                    "0.4"
                )
            b = await ledger.balance(tok.token_id)
            assert (b.balance, b.locked, b.spent, b.topped_up) == (
                Decimal("0.25"),
                Decimal("0.6"),
                Decimal("0.4"),
                Decimal("0.25"),
            )
            with pytest.raises(IdempotencyConflictError):
                await remote.charge(lock.lock_id, "0.1", "charge-A")
            r = await client.post(
                f"{url}/api/payments/locks/{lock.lock_id}/charge",
                json={"amount": "0.2", "op_id": "charge-A"},
            )
            assert r.status_code == 409
            assert r.json()["error"]["code"] == "idempotency_conflict"


async def test_error_shapes_and_mapping(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with setup(tmp_path) as (_, remote, client, url):
            tok = await remote.issue_token("1.00")
            # 402 with the §9.2 body, and the same error class on the client side.
            r = await client.post(
                f"{url}/api/payments/tokens/{tok.token_id}/locks",
                json={"amount": "1.50", "op_id": "x1"},
            )
            assert r.status_code == 402
            body = r.json()
            assert body["error"] == "INSUFFICIENT_TOKEN_BALANCE" and body["status_code"] == 402
            assert body["x402Version"] == 2 and body["context"]["accepts"] == body["accepts"]
            assert body["accepts"][0]["amount"] == "0.50"
            assert body["context"]["token_id"] == tok.token_id
            with pytest.raises(InsufficientTokenBalanceError) as short:
                await remote.lock(tok.token_id, "1.50", "x1")
            assert (short.value.amount, short.value.action) == (Decimal("0.50"), "pay")
            # Unknown token: 404 in the generic shape; TOKEN_NOT_FOUND on the client side.
            r = await client.get(f"{url}/api/payments/tokens/tok_nope")
            assert r.status_code == 404
            assert r.json() == {
                "error": {
                    "code": "PAYMENT_TOKEN_INVALID",
                    "message": "unknown payment token 'tok_nope'",
                    "details": {
                        "error": "PAYMENT_TOKEN_INVALID",
                        "action": "pay",
                        "subcode": "TOKEN_NOT_FOUND",
                        "token_id": "tok_nope",
                    },
                }
            }
            with pytest.raises(PaymentTokenInvalidError) as nf:
                await remote.balance("tok_nope")
            assert nf.value.subcode == "TOKEN_NOT_FOUND"
            # Unknown and closed locks.
            r = await client.post(f"{url}/api/payments/locks/lock_nope/settle", json={"op_id": "s"})
            assert r.status_code == 404
            with pytest.raises(PaymentChargingFailedError):
                await remote.settle("lock_nope", "s")
            lock = await remote.lock(tok.token_id, "0.5", "l1")
            await remote.release(lock.lock_id, "r1")
            with pytest.raises(PaymentChargingFailedError):
                await remote.charge(lock.lock_id, "0.1", "c1")
            # Bad requests: generic 400.
            for payload in (
                b"{not json",
                b"[1]",
                b'{"amount": true, "op_id": "o"}',
                b'{"amount": "1"}',
            ):
                r = await client.post(
                    f"{url}/api/payments/tokens/{tok.token_id}/topup",
                    content=payload,
                    headers={"content-type": "application/json"},
                )
                assert r.status_code == 400, payload
                assert r.json()["error"]["code"] == "invalid_request"
            # JSON numbers are read as decimals, never floats.
            r = await client.post(
                f"{url}/api/payments/tokens/{tok.token_id}/topup",
                content=b'{"amount": 0.1, "op_id": "t-num"}',
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 200 and r.json()["topped_up"] == "0.1"
            r = await client.post(f"{url}/api/payments/tokens", content=b"x" * 70_000)
            assert r.status_code == 413


async def test_api_key_and_public_keys(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with setup(tmp_path, api_key="s3cret") as (_, remote, client, url):
            tok = await remote.issue_token("1")  # the remote backend sends the key
            r = await client.get(f"{url}/api/payments/tokens/{tok.token_id}")
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            assert r.json()["error"]["code"] == "unauthorized"
            r = await client.get(
                f"{url}/api/payments/tokens/{tok.token_id}",
                headers={"Authorization": "Bearer wrong"},
            )
            assert r.status_code == 401
            keys = (await client.get(f"{url}/api/payments/jwks")).json()["keys"]
            assert [(k["kty"], k["crv"], k["alg"]) for k in keys] == [("EC", "P-256", "ES256")]
            # An agent verifies tokens against the hub: keys and balance over HTTP.
            ok = await PaymentVerifier(remote).verify(tok.token, required="0.5")
            assert ok.token_id == tok.token_id and ok.balance.balance == Decimal("1")


async def test_turn_over_remote_backend_releases_on_cancel(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with setup(tmp_path) as (ledger, remote, _, _):
            tok = await remote.issue_token("1.00")
            pricing = Pricing(per_turn="0.10", per_tool_call="0.20")
            async with TurnPayment(remote, tok.token_id, pricing=pricing) as pay:
                await pay.charge_tool("search")
            assert (await ledger.balance(tok.token_id)).balance == Decimal("0.70")
            charged = trio.Event()
            async with trio.open_nursery() as nursery:

                async def turn() -> None:
                    async with TurnPayment(remote, tok.token_id, pricing=pricing) as pay:
                        await pay.charge_tool("search")
                        charged.set()
                        await trio.sleep_forever()

                nursery.start_soon(turn)
                await charged.wait()
                assert len(await ledger.open_locks()) == 2  # the reserve and its extension
                nursery.cancel_scope.cancel()
            assert await ledger.open_locks() == []
            b = await ledger.balance(tok.token_id)
            assert (b.balance, b.locked, b.spent) == (Decimal("0.70"), 0, Decimal("0.30"))


async def test_platform_unavailable(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with setup(tmp_path) as (_, _, _, url):
            pass  # the server is gone now
        async with RemotePaymentBackend(url) as remote:
            with pytest.raises(PaymentPlatformUnavailableError):
                await remote.balance("tok_x")
