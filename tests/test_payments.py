"""Payments: errors, wire shapes, token formats, pricing, verification, the turn helper (§9)."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

import jwt as pyjwt
import orjson
import pytest
import trio
from hypothesis import given, strategies as st

from trioagents import Agent, TrioAgentsError, tool, uamp
from trioagents.payments import (
    ACP_PAYMENT_REQUIRED,
    InsufficientAccountBalanceError,
    InsufficientTokenBalanceError,
    LockInfo,
    MemoryLedger,
    PaymentChargingFailedError,
    PaymentError,
    PaymentPlatformUnavailableError,
    PaymentTimeoutError,
    PaymentTokenInvalidError,
    PaymentTokenRequiredError,
    PaymentVerifier,
    Pricing,
    TurnPayment,
    a2a_payment_token,
    acp_payment_token,
    error_from_http,
    parse_payment_token,
    payment_error_from_details,
    priced,
    pricing_of,
    render_a2a_payment_metadata,
    render_acp_payment_error,
    render_http_402,
    render_payment_accepted,
    render_payment_balance,
    render_payment_error,
    render_payment_required,
    render_task_failed_payment,
    select_payment_token,
    session_payment_token,
    set_pricing,
    tool_price,
    x402_accepts,
)
from trioagents.payments._signing import generate_signing_key, key_id, sign_payment_token

ENC = uamp.Encoder(ids=uamp.SequentialIds(), clock=uamp.FixedClock())

ACCEPTS = x402_accepts("0.01", "credits", network="robutler", pay_to="acct_agent")
ENTRY = {
    "scheme": "token",
    "network": "robutler",
    "amount": "0.01",
    "asset": "robutler:credits",
    "payTo": "acct_agent",
    "maxTimeoutSeconds": 300,
    "extra": {"tokenType": "jwt"},
}


def wire(event: Any) -> dict[str, Any]:
    """The event's JSON without the envelope stamps."""
    d = ENC.to_dict(event)
    d.pop("event_id")
    d.pop("timestamp")
    return d


def required() -> PaymentTokenRequiredError:
    return PaymentTokenRequiredError(
        accepts=ACCEPTS, amount="0.01", currency="credits", reason="per-turn price"
    )


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def test_error_tree_and_attributes() -> None:
    err = required()
    assert isinstance(err, PaymentError) and isinstance(err, TrioAgentsError)
    assert err.error_code == "PAYMENT_TOKEN_REQUIRED"
    assert err.code == "payment_failed"  # the UAMP response.error code if it ends a response
    assert err.amount == Decimal("0.01") and err.currency == "credits"
    assert err.action == "pay" and err.accepts == [ENTRY]
    assert err.details == {
        "error": "PAYMENT_TOKEN_REQUIRED",
        "action": "pay",
        "amount": "0.01",
        "currency": "credits",
        "reason": "per-turn price",
        "accepts": [ENTRY],
    }
    assert PaymentTimeoutError().code == "payment_timeout"
    assert PaymentPlatformUnavailableError().status_code == 503
    assert {c.error_code for c in PaymentError.__subclasses__()} >= {
        "PAYMENT_TOKEN_REQUIRED",
        "PAYMENT_TOKEN_INVALID",
        "INSUFFICIENT_TOKEN_BALANCE",
        "INSUFFICIENT_ACCOUNT_BALANCE",
        "PAYMENT_CHARGING_FAILED",
        "PAYMENT_PLATFORM_UNAVAILABLE",
    }
    with pytest.raises(TypeError):
        PaymentTokenRequiredError(amount=0.01)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PaymentTokenRequiredError(action="later")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Renderers: the exact shapes of §9
# --------------------------------------------------------------------------------------------


def test_http_402_body() -> None:
    status, body = render_http_402(required(), agent_name="my-agent")
    assert status == 402
    assert body == {
        "error": "PAYMENT_TOKEN_REQUIRED",
        "subcode": None,
        "message": "Payment token required",
        "user_message": "This agent requires payment.",
        "status_code": 402,
        "x402Version": 2,
        "accepts": [ENTRY],
        "context": {
            "agent_name": "my-agent",
            "x402Version": 2,
            "accepts": [ENTRY],
            "action": "pay",
            "amount": "0.01",
            "currency": "credits",
            "reason": "per-turn price",
        },
    }
    status, body = render_http_402(
        PaymentTokenInvalidError(subcode="TOKEN_EXPIRED", amount="1", currency="credits")
    )
    assert (status, body["error"], body["subcode"]) == (
        402,
        "PAYMENT_TOKEN_INVALID",
        "TOKEN_EXPIRED",
    )
    # No explicit accepts: one is derived from amount and currency.
    assert body["accepts"][0]["amount"] == "1" and body["accepts"][0]["asset"].endswith(":credits")
    status, body = render_http_402(PaymentPlatformUnavailableError())
    assert (status, body["status_code"], body["accepts"]) == (503, 503, [])


@pytest.mark.parametrize(
    "err",
    [
        required(),
        PaymentTokenInvalidError(subcode="TOKEN_NOT_FOUND", token_id="tok_1"),
        InsufficientTokenBalanceError(amount="0.5", currency="credits", action="topup"),
        InsufficientAccountBalanceError(amount="3", currency="usd"),
        PaymentChargingFailedError("lock closed"),
        PaymentPlatformUnavailableError(),
    ],
)
def test_http_error_round_trip(err: PaymentError) -> None:
    status, body = render_http_402(err)
    back = error_from_http(status, orjson.loads(orjson.dumps(body)))
    assert type(back) is type(err)
    assert (back.subcode, back.amount, back.currency, back.action, back.token_id) == (
        err.subcode,
        err.amount,
        err.currency,
        err.action,
        err.token_id,
    )
    assert back.message == err.message


async def test_payment_error_survives_the_run_loop_as_response_error() -> None:
    """A tool-less agent whose hook raises a payment error ends with response.error whose
    details rebuild the same error (what Completions/A2A/ACP will render)."""
    from trioagents import Agent
    from trioagents.agent import Context, Session, run_response

    agent = Agent("paid")
    topup = InsufficientTokenBalanceError(
        amount="0.25", currency="credits", action="topup", token_id="tok_1", accepts=ACCEPTS
    )

    def on_message(ctx: Context) -> None:
        raise topup

    agent.add_hook("on_message", on_message)
    events: list[Any] = []

    async def emit(ev: Any) -> None:
        events.append(ev)

    with trio.fail_after(5):
        ctx = Context(session=Session(id="sess_1", agent=agent), response_id="resp_1", emit=emit)
        terminal = await run_response(ctx)
    assert isinstance(terminal, uamp.ResponseError)
    assert terminal.error.code == "payment_failed"
    back = payment_error_from_details(orjson.loads(orjson.dumps(terminal.error.details)))
    assert isinstance(back, InsufficientTokenBalanceError)
    assert (back.amount, back.action, back.token_id, back.accepts) == (
        Decimal("0.25"),
        "topup",
        "tok_1",
        [ENTRY],
    )
    assert payment_error_from_details({"reason": "x"}) is None
    assert payment_error_from_details(None) is None


def test_error_from_http_garbage() -> None:
    assert isinstance(error_from_http(502, None), PaymentPlatformUnavailableError)
    assert isinstance(error_from_http(400, ["x"]), PaymentChargingFailedError)
    generic = {
        "error": {
            "code": "PAYMENT_TOKEN_INVALID",
            "message": "m",
            "details": {"subcode": "TOKEN_NOT_FOUND"},
        }
    }
    err = error_from_http(404, generic)
    assert isinstance(err, PaymentTokenInvalidError) and err.subcode == "TOKEN_NOT_FOUND"


def test_uamp_payment_required_pay_and_topup() -> None:
    ev = render_payment_required(required(), response_id="resp_1", session_id="sess_1")
    assert wire(ev) == {
        "type": "payment.required",
        "response_id": "resp_1",
        "session_id": "sess_1",
        "requirements": {
            "amount": "0.01",
            "currency": "credits",
            "schemes": [{"scheme": "token", "network": "robutler", "address": "acct_agent"}],
            "reason": "per-turn price",
        },
        "accepts": [ENTRY],
        "extra": {"action": "pay"},
    }
    topup = InsufficientTokenBalanceError(
        amount="0.25", currency="credits", action="topup", token_id="tok_9"
    )
    ev = render_payment_required(topup, response_id="resp_2", session_id="sess_1", expires_at=1700)
    d = wire(ev)
    assert d["extra"] == {"action": "topup", "amount": "0.25", "token_id": "tok_9"}
    assert d["requirements"]["amount"] == "0.25" and d["requirements"]["expires_at"] == 1700
    assert d["requirements"]["schemes"] == [{"scheme": "token", "network": "trioagents"}]
    back = uamp.decode_server(ENC.encode(ev))  # the UAMP codec reads it back
    assert isinstance(back, uamp.PaymentRequired)
    assert (back.requirements, back.extra, back.accepts) == (ev.requirements, ev.extra, ev.accepts)


@pytest.mark.parametrize(
    ("err", "code"),
    [
        (InsufficientTokenBalanceError(amount="0.5"), "insufficient_balance"),
        (InsufficientAccountBalanceError(), "insufficient_balance"),
        (PaymentTokenInvalidError(subcode="TOKEN_EXPIRED"), "token_expired"),
        (PaymentTokenInvalidError(subcode="TOKEN_MALFORMED"), "token_invalid"),
        (PaymentTokenRequiredError(), "token_invalid"),
        (PaymentChargingFailedError(), "payment_failed"),
        (PaymentPlatformUnavailableError(), "payment_failed"),
        (PaymentTimeoutError(), "payment_timeout"),
    ],
)
def test_uamp_payment_error_codes(err: PaymentError, code: str) -> None:
    d = wire(render_payment_error(err, can_retry=True, session_id="s"))
    assert d["type"] == "payment.error" and d["code"] == code and d["can_retry"] is True
    assert d["message"] == err.message


def test_uamp_payment_error_timeout_and_balances() -> None:
    ev = render_payment_error(
        InsufficientTokenBalanceError(amount="0.30"),
        can_retry=False,
        session_id="sess_1",
        balance_current=Decimal("0.05"),
    )
    assert wire(ev) == {
        "type": "payment.error",
        "session_id": "sess_1",
        "code": "insufficient_balance",
        "message": "Insufficient token balance",
        "can_retry": False,
        "balance_required": "0.30",
        "balance_current": "0.05",
    }


def test_uamp_payment_accepted_and_balance() -> None:
    ev = render_payment_accepted("pay_1", Decimal("0.90"), expires_at=1800, session_id="sess_1")
    assert wire(ev) == {
        "type": "payment.accepted",
        "session_id": "sess_1",
        "payment_id": "pay_1",
        "balance_remaining": "0.90",
        "expires_at": 1800,
    }
    ev = render_payment_balance(
        Decimal("0.05"), "credits", initial_amount=Decimal("1.00"), session_id="sess_1"
    )
    assert wire(ev) == {
        "type": "payment.balance",
        "session_id": "sess_1",
        "balance": "0.05",
        "currency": "credits",
        "threshold": "0.10",
        "low_balance_warning": True,
    }
    ev = render_payment_balance(
        Decimal("0.5"), "credits", initial_amount=Decimal("1"), threshold=Decimal("0.2")
    )
    assert (ev.threshold, ev.low_balance_warning) == ("0.2", False)


def test_a2a_shapes() -> None:
    assert render_a2a_payment_metadata(required()) == {
        "x402.payment.status": "payment-required",
        "x402.payment.required": {"x402Version": 2, "accepts": [ENTRY]},
    }
    meta = render_a2a_payment_metadata(InsufficientTokenBalanceError(amount="1"))
    assert meta["x402.payment.error"] == "INSUFFICIENT_TOKEN_BALANCE"
    submitted = {"x402.payment.status": "payment-submitted"}
    assert a2a_payment_token({**submitted, "x402.payment.payload": "abc"}) == "abc"
    obj = {"x402Version": 2, "scheme": "token", "payload": {"token": "jwt1"}}
    assert a2a_payment_token({**submitted, "x402.payment.payload": obj}) == "jwt1"
    assert a2a_payment_token({"x402.payment.status": "payment-required"}) is None
    assert a2a_payment_token(None) is None
    with pytest.raises(PaymentTokenInvalidError):
        a2a_payment_token({**submitted, "x402.payment.payload": {"nothing": 1}})


def test_seed_task_failed_shape() -> None:
    assert render_task_failed_payment(required(), "task-1") == {
        "id": "task-1",
        "status": "failed",
        "code": "payment_required",
        "status_code": 402,
        "error": "Payment required",
        "accepts": [ENTRY],
    }
    d = render_task_failed_payment(PaymentTokenInvalidError(subcode="TOKEN_EXPIRED"), "t2")
    assert (d["code"], d["status_code"]) == ("payment_token_invalid", 402)


def test_acp_error_shape() -> None:
    assert render_acp_payment_error(required(), "req-1") == {
        "jsonrpc": "2.0",
        "id": "req-1",
        "error": {
            "code": -32402,
            "message": "Payment token required",
            "data": {"x402Version": 2, "accepts": [ENTRY], "error": "PAYMENT_TOKEN_REQUIRED"},
        },
    }
    assert ACP_PAYMENT_REQUIRED == -32402
    d = render_acp_payment_error(PaymentTokenInvalidError(subcode="TOKEN_EXPIRED"), 7)
    assert d["error"]["data"]["subcode"] == "TOKEN_EXPIRED" and d["id"] == 7
    assert acp_payment_token({"payment_token": "a", "_meta": {"payment_token": "b"}}) == "a"
    assert acp_payment_token({"_meta": {"payment_token": "b"}}) == "b"
    assert acp_payment_token({"prompt": []}) is None


# --------------------------------------------------------------------------------------------
# Token sources and formats (§0.2)
# --------------------------------------------------------------------------------------------

KEY = generate_signing_key()
JWT = sign_payment_token(
    KEY, token_id="tok_1", amount=Decimal("1"), currency="credits", issued_at=0, expires_at=10
)


def b64(data: str | bytes, *, url: bool = False, pad: bool = True) -> str:
    raw = data.encode() if isinstance(data, str) else data
    out = (base64.urlsafe_b64encode if url else base64.b64encode)(raw).decode()
    return out if pad else out.rstrip("=")


def test_parse_payment_token_every_format() -> None:
    assert parse_payment_token(JWT).jwt == JWT and parse_payment_token(JWT).format == "jwt"
    assert parse_payment_token(f"Bearer {JWT}").jwt == JWT
    for encoded in (b64(JWT), b64(JWT, url=True, pad=False), b64(JWT, pad=False)):
        parsed = parse_payment_token(encoded)
        assert (parsed.jwt, parsed.format) == (JWT, "base64_jwt")
    x402 = {"scheme": "token", "network": "robutler", "payload": {"token": JWT, "amount": "0.5"}}
    parsed = parse_payment_token(b64(orjson.dumps(x402)))
    assert (parsed.jwt, parsed.format, parsed.network, parsed.amount) == (
        JWT,
        "x402",
        "robutler",
        Decimal("0.5"),
    )
    nested = {"scheme": "token", "payload": {"token": b64(JWT)}}
    assert parse_payment_token(b64(orjson.dumps(nested), url=True)).jwt == JWT


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "not-a-token",
        "a.b.c",  # JWT-shaped but the header is not JSON
        b64("hello world"),
        b64(orjson.dumps([1, 2])),
        b64(orjson.dumps({"scheme": "token", "payload": {}})),
        b64(orjson.dumps({"scheme": "token", "payload": {"token": "nope"}})),
        b64(b"\xff\xfe\xfd"),
        "x" * 20_000,
    ],
)
def test_parse_payment_token_malformed(value: str) -> None:
    with pytest.raises(PaymentTokenInvalidError) as info:
        parse_payment_token(value)
    assert info.value.subcode == "TOKEN_MALFORMED"


@given(st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b64(b)))
def test_parse_payment_token_never_crashes(value: str) -> None:
    try:
        parsed = parse_payment_token(value)
    except PaymentTokenInvalidError as exc:
        assert exc.subcode == "TOKEN_MALFORMED"
    else:
        assert parsed.jwt.count(".") == 2


def test_select_payment_token_first_match_wins() -> None:
    headers = {"X-Payment": "h1", "X-Payment-Token": "h2"}
    query = {"payment_token": "q"}
    assert select_payment_token(turn="t", session="s", headers=headers, query=query) == "t"
    assert select_payment_token(turn="", session="s", headers=headers, query=query) == "s"
    assert select_payment_token(headers=headers, query=query) == "h1"
    assert select_payment_token(headers={"x-payment-token": "h2"}, query=query) == "h2"
    assert select_payment_token(headers={"X-PAYMENT": ""}, query=query) == "q"
    assert select_payment_token() is None
    assert (
        session_payment_token({"payment_token": "top", "session": {"payment_token": "in"}}) == "top"
    )
    assert session_payment_token({"session": {"payment_token": "in"}}) == "in"
    assert session_payment_token({"session": None}) is None


# --------------------------------------------------------------------------------------------
# Pricing
# --------------------------------------------------------------------------------------------


def test_pricing_decimal_only_and_costs() -> None:
    p = Pricing(per_turn="0.01", per_output_token="0.00001", per_tool_call=1, tools={"x": "2"})
    assert p.per_turn == Decimal("0.01") and p.currency == "credits" and not p.is_free
    assert p.usage_cost(output_tokens=1000) == Decimal("0.01")
    assert p.tool_cost("x") == Decimal(2) and p.tool_cost("other") == Decimal(1)
    assert p.turn_reserve == Decimal("0.01")
    assert Pricing(reserve="5").turn_reserve == Decimal(5)
    assert Pricing().is_free
    with pytest.raises(TypeError):
        Pricing(per_turn=0.01)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Pricing(per_turn="-1")
    with pytest.raises(ValueError):
        Pricing(per_turn="NaN")


def test_priced_tools_and_agent_pricing() -> None:
    @tool
    @priced("0.05")
    def search(query: str) -> str:
        """Search."""
        return query

    @priced("0.25")
    @tool(name="render")
    def draw(shape: str) -> str:
        """Draw."""
        return shape

    agent = Agent("paid", tools=[search, draw])
    set_pricing(agent, Pricing(per_tool_call="0.01"))
    pricing = pricing_of(agent)
    assert pricing is not None
    assert tool_price(agent.tools["search"]) == Decimal("0.05")  # read through the ToolSpec
    assert pricing.tool_cost("render", agent.tools["render"].fn) == Decimal("0.25")
    assert pricing.tool_cost("transfer", None) == Decimal("0.01")
    assert pricing_of(Agent("free")) is None
    with pytest.raises(TypeError):
        priced(0.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_verifier_accepts_every_format_and_checks_balance() -> None:
    with trio.fail_after(10):
        clock = Clock()
        ledger = MemoryLedger(clock=clock)
        issued = await ledger.issue_token("1.00", "credits", expires_in=3600)
        verifier = PaymentVerifier(ledger, clock=clock)
        x402 = {"scheme": "token", "network": "trioagents", "payload": {"token": issued.token}}
        for value in (issued.token, b64(issued.token), b64(orjson.dumps(x402))):
            ok = await verifier.verify(value, required="0.50", currency="credits")
            assert ok.token_id == issued.token_id and ok.jwt == issued.token
            assert ok.balance.balance == Decimal("1.00") and ok.claims.amount == Decimal("1.00")
        with pytest.raises(InsufficientTokenBalanceError) as short:
            await verifier.verify(issued.token, required="1.30")
        assert (short.value.amount, short.value.action) == (Decimal("0.30"), "pay")
        with pytest.raises(PaymentTokenInvalidError):
            await verifier.verify(issued.token, currency="usd")
        clock.now += 3600 + 61  # past exp + leeway
        with pytest.raises(PaymentTokenInvalidError) as expired:
            await verifier.verify(issued.token)
        assert expired.value.subcode == "TOKEN_EXPIRED"


async def test_verifier_rejects_forged_tampered_and_unknown_tokens() -> None:
    with trio.fail_after(10):
        clock = Clock()
        key = generate_signing_key()
        ledger = MemoryLedger(signing_key=key, clock=clock)
        issued = await ledger.issue_token("1", expires_in=3600)
        verifier = PaymentVerifier(ledger, clock=clock)
        forged_key = generate_signing_key()
        claims = {"jti": issued.token_id, "amount": "1000", "currency": "credits", "exp": 2_000_000}
        forged = pyjwt.encode(claims, forged_key, algorithm="ES256", headers={"kid": key_id(key)})
        other_kid = pyjwt.encode(claims, forged_key, algorithm="ES256", headers={"kid": "nope"})
        hs = pyjwt.encode(claims, "secret-secret-secret-secret-secret", algorithm="HS256")
        none = pyjwt.encode(claims, None, algorithm="none")
        head, _, sig = issued.token.split(".")
        fat = base64.urlsafe_b64encode(orjson.dumps({**claims, "exp": 2_000_000})).rstrip(b"=")
        tampered = f"{head}.{fat.decode()}.{sig}"
        for bad in (forged, other_kid, hs, none, tampered):
            with pytest.raises(PaymentTokenInvalidError) as info:
                await verifier.verify(bad)
            assert info.value.subcode == "TOKEN_MALFORMED", bad
        # Signed by the right key, but the ledger never issued it.
        stranger = sign_payment_token(
            key,
            token_id="tok_unknown",
            amount=Decimal(1),
            currency="credits",
            issued_at=0,
            expires_at=2_000_000,
        )
        with pytest.raises(PaymentTokenInvalidError) as info:
            await verifier.verify(stranger)
        assert info.value.subcode == "TOKEN_NOT_FOUND"


# --------------------------------------------------------------------------------------------
# TurnPayment
# --------------------------------------------------------------------------------------------


async def totals(ledger: MemoryLedger, token_id: str) -> tuple[Decimal, Decimal, Decimal]:
    """(balance, locked, spent), after checking that no money appeared or vanished."""
    b = await ledger.balance(token_id)
    assert b.balance + b.locked + b.spent == b.issued + b.topped_up
    return b.balance, b.locked, b.spent


def D(*values: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(v) for v in values)


PRICING = Pricing(per_turn="0.10", per_tool_call="0.05", per_output_token="0.001")


async def test_turn_settles_exact_price() -> None:
    with trio.fail_after(10):
        ledger = MemoryLedger()
        tok = await ledger.issue_token("1.00")

        @priced("0.20")
        def costly() -> None: ...

        async with TurnPayment(ledger, tok.token_id, pricing=PRICING, reserve="0.50") as pay:
            assert await totals(ledger, tok.token_id) == D("0.50", "0.40", "0.10")
            await pay.charge_tool("cheap")
            await pay.charge_tool("costly", costly)
            assert await pay.charge_usage(output_tokens=100) == Decimal("0.45")
        assert pay.state == "settled" and pay.charged == Decimal("0.45")
        assert await totals(ledger, tok.token_id) == D("0.55", "0.00", "0.45")
        assert ledger.open_locks() == []
        await pay.settle()  # double settle: nothing happens
        await pay.release()  # release after settle: nothing happens
        assert await totals(ledger, tok.token_id) == D("0.55", "0.00", "0.45")
        with pytest.raises(PaymentChargingFailedError):
            await pay.charge("0.01")


async def test_turn_extends_its_lock_from_the_token() -> None:
    with trio.fail_after(10):
        ledger = MemoryLedger()
        tok = await ledger.issue_token("1.00")
        async with TurnPayment(ledger, tok.token_id, pricing=PRICING) as pay:
            await pay.charge("0.70")  # beyond the 0.10 reserve: a second lock covers it
            assert len(pay.locks) == 2
        assert await totals(ledger, tok.token_id) == D("0.20", "0.00", "0.80")
        assert ledger.open_locks() == []


async def test_charge_beyond_the_token_asks_for_a_topup_of_the_shortfall() -> None:
    with trio.fail_after(10):
        ledger = MemoryLedger()
        tok = await ledger.issue_token("1.00")
        with pytest.raises(InsufficientTokenBalanceError) as info:
            async with TurnPayment(ledger, tok.token_id, reserve="1.00") as pay:
                await pay.charge("0.40")
                try:
                    await pay.charge("1.10")
                finally:
                    assert pay.state == "open" and pay.charged == Decimal("0.40")
        err = info.value
        assert (err.action, err.amount, err.token_id) == ("topup", Decimal("0.50"), tok.token_id)
        # The failed turn was released: nothing charged, nothing locked.
        assert await totals(ledger, tok.token_id) == D("1.00", "0", "0")
        assert ledger.open_locks() == []


async def test_open_without_funds_is_pay_and_leaves_nothing_locked() -> None:
    with trio.fail_after(10):
        ledger = MemoryLedger()
        tok = await ledger.issue_token("0.05")
        with pytest.raises(InsufficientTokenBalanceError) as info:
            async with TurnPayment(ledger, tok.token_id, pricing=PRICING):
                raise AssertionError("not reached")
        assert (info.value.action, info.value.amount) == ("pay", Decimal("0.05"))
        assert ledger.open_locks() == []


async def test_cancel_mid_turn_releases_every_lock() -> None:
    with trio.fail_after(10):
        ledger = MemoryLedger()
        tok = await ledger.issue_token("1.00")
        charged = trio.Event()
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def turn() -> None:
                    async with TurnPayment(ledger, tok.token_id, pricing=PRICING) as pay:
                        await pay.charge("0.30")
                        charged.set()
                        await trio.sleep_forever()

                nursery.start_soon(turn)
                await charged.wait()
                scope.cancel()
        assert scope.cancelled_caught
        assert ledger.open_locks() == []
        assert await totals(ledger, tok.token_id) == D("1.00", "0.00", "0.00")


async def test_topup_in_place_resumes_the_charge() -> None:
    with trio.fail_after(10):
        ledger = MemoryLedger()
        tok = await ledger.issue_token("1.00")
        asked: list[InsufficientTokenBalanceError] = []

        async def topup(err: InsufficientTokenBalanceError) -> str | None:
            asked.append(err)
            assert err.amount is not None and err.token_id is not None
            await ledger.topup(err.token_id, err.amount, op_id="client-topup-1")
            return None

        async with TurnPayment(ledger, tok.token_id, reserve="1.00", topup=topup) as pay:
            await pay.charge("0.80")
            assert await pay.charge("0.70") == Decimal("1.50")
        assert [(e.action, e.amount) for e in asked] == [("topup", Decimal("0.50"))]
        assert await totals(ledger, tok.token_id) == D("0.00", "0.00", "1.50")
        assert ledger.open_locks() == []


async def test_topup_with_another_token_switches_the_token() -> None:
    with trio.fail_after(10):
        ledger = MemoryLedger()
        first = await ledger.issue_token("0.10")
        second = await ledger.issue_token("5")

        async def topup(err: InsufficientTokenBalanceError) -> str | None:
            return second.token_id

        async with TurnPayment(ledger, first.token_id, reserve="0.10", topup=topup) as pay:
            await pay.charge("1.10")
        assert await totals(ledger, first.token_id) == D("0.00", "0.00", "0.10")
        assert await totals(ledger, second.token_id) == D("4.0", "0.0", "1.0")


async def test_topup_timeout_ends_the_turn_and_releases(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(1000):
        ledger = MemoryLedger()
        tok = await ledger.issue_token("1.00")

        async def never(err: InsufficientTokenBalanceError) -> str | None:
            await trio.sleep_forever()
            raise AssertionError

        start = trio.current_time()
        with pytest.raises(PaymentTimeoutError) as info:
            async with TurnPayment(
                ledger, tok.token_id, reserve="0.5", topup=never, payment_timeout=60
            ) as pay:
                await pay.charge("2")
        assert trio.current_time() - start == pytest.approx(60)
        assert (info.value.code, info.value.action) == ("payment_timeout", "topup")
        assert ledger.open_locks() == []
        assert await totals(ledger, tok.token_id) == D("1.00", "0.0", "0")


async def test_cancel_while_waiting_for_topup_releases() -> None:
    with trio.fail_after(10):
        ledger = MemoryLedger()
        tok = await ledger.issue_token("1.00")
        waiting = trio.Event()

        async def wait(err: InsufficientTokenBalanceError) -> str | None:
            waiting.set()
            await trio.sleep_forever()
            raise AssertionError

        async with trio.open_nursery() as nursery:

            async def turn() -> None:
                async with TurnPayment(ledger, tok.token_id, reserve="0.5", topup=wait) as pay:
                    await pay.charge("0.25")
                    await pay.charge("5")

            nursery.start_soon(turn)
            await waiting.wait()
            nursery.cancel_scope.cancel()
        assert ledger.open_locks() == []
        assert await totals(ledger, tok.token_id) == D("1.00", "0.0", "0.00")


class StuckRelease:
    """A backend whose ``release`` never answers (a hung payment platform)."""

    def __init__(self, inner: MemoryLedger) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def release(self, lock_id: str, op_id: str) -> LockInfo:
        await trio.sleep_forever()
        raise AssertionError


async def test_release_is_bounded_by_cleanup_timeout(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(100):
        ledger = MemoryLedger()
        tok = await ledger.issue_token("1")
        start = trio.current_time()
        with trio.CancelScope() as scope:
            async with TurnPayment(
                StuckRelease(ledger),  # type: ignore[arg-type]
                tok.token_id,
                reserve="0.5",
                cleanup_timeout=5,
            ):
                scope.cancel()
                await trio.sleep_forever()
        assert trio.current_time() - start == pytest.approx(5)


# --------------------------------------------------------------------------------------------
# Public surface
# --------------------------------------------------------------------------------------------

PAYMENTS_DATA = {
    "PAYMENTS_PREFIX",
    "PAYMENT_ERRORS",
    "TOKEN_EXPIRED",
    "TOKEN_MALFORMED",
    "TOKEN_NOT_FOUND",
    "ACP_PAYMENT_REQUIRED",
    "X402_VERSION",
    "TopupCallback",
}


def test_payments_public_api_is_documented() -> None:
    import trioagents.payments as payments

    assert payments.__doc__
    assert len(set(payments.__all__)) == len(payments.__all__) == 54
    undocumented = []
    for name in payments.__all__:
        obj = getattr(payments, name)
        if name in PAYMENTS_DATA:
            continue
        doc = obj.__doc__ if isinstance(obj, type) else getattr(obj, "__doc__", None)
        if not doc or not doc.strip():
            undocumented.append(name)
    assert not undocumented
