"""Paid turns through the run loop (PROTOCOLS.md §9): ``run_response`` with a real ledger.

No server here: a ``Context`` whose ``emit`` records the UAMP events, a :class:`MemoryLedger`
and the :class:`PaymentsService` a server would hand to every turn.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import trio
from flow_helpers import expensive_tool, funded, paid_agent

from trioagents import Agent, BuiltinModel, CallTool, Reply, tool, uamp
from trioagents.agent import Context, Message, Session, run_response
from trioagents.agent._run import is_cancellation
from trioagents.payments import (
    InsufficientTokenBalanceError,
    MemoryLedger,
    PaymentError,
    PaymentsService,
    PaymentTokenInvalidError,
    PaymentTokenRequiredError,
    Pricing,
    effective_pricing,
    payment_error_from_details,
    priced,
)


class Recorder:
    """Collects emitted events."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.tool_started = trio.Event()

    async def emit(self, event: Any) -> None:
        self.events.append(event)
        await trio.lowlevel.checkpoint()

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def text(self) -> str:
        return "".join(
            e.delta.text
            for e in self.events
            if e.type == "response.delta" and isinstance(e.delta, uamp.TextDelta)
        )


def _ctx(
    agent: Agent,
    rec: Recorder,
    service: PaymentsService | None,
    *,
    token: str | None = None,
    wait_payment: Any = None,
) -> Context:
    session = Session(id="sess_1", agent=agent, messages=[Message(role="user", content="question")])
    return Context(
        session=session,
        response_id="resp_1",
        emit=rec.emit,
        session_id="sess_1",
        payments=service,
        payment_token=token,
        wait_payment=wait_payment,
    )


def _paid_agent(script: list[Any], **pricing: Any) -> tuple[Agent, list[str]]:
    calls: list[str] = []

    @tool(price="0.25")
    async def search(query: str) -> str:
        """Search."""
        calls.append(query)
        return f"results for {query}"

    agent = paid_agent(script, tools=[search, expensive_tool(calls)], pricing=Pricing(**pricing))
    return agent, calls


def test_tool_price_and_agent_pricing_reach_the_specs() -> None:
    @tool(price="0.05")
    def a() -> str:
        """A."""
        return ""

    @tool
    @priced("0.07")
    def b() -> str:
        """B."""
        return ""

    agent = Agent("x", tools=[a, b])
    assert agent.tools["a"].price == Decimal("0.05")
    assert agent.pricing is None
    # A free agent with priced tools still charges them.
    pricing = effective_pricing(agent)
    assert pricing is not None
    assert pricing.tool_cost("a", agent.tools["a"]) == Decimal("0.05")  # type: ignore[arg-type]
    assert pricing.tool_cost("b", agent.tools["b"]) == Decimal("0.07")  # type: ignore[arg-type]
    assert effective_pricing(Agent("free")) is None
    assert effective_pricing(Agent("zero", pricing=Pricing())) is None
    with pytest.raises(TypeError):
        tool(price=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        tool(price="-1")


async def test_free_agent_or_no_service_charges_nothing() -> None:
    with trio.fail_after(5):
        agent, _ = _paid_agent([Reply("hello")], per_turn="0.10")
        rec = Recorder()
        terminal = await run_response(_ctx(agent, rec, None))
        assert terminal.type == "response.done"
        assert rec.text() == "hello"


async def test_paid_agent_without_a_token_ends_with_the_payment_error() -> None:
    with trio.fail_after(5):
        ledger = MemoryLedger()
        agent, calls = _paid_agent([Reply("never said")], per_turn="0.10")
        rec = Recorder()
        terminal = await run_response(_ctx(agent, rec, PaymentsService(ledger)))
        assert rec.types() == ["response.created", "response.error"]
        assert isinstance(terminal, uamp.ResponseError)
        assert terminal.error.code == "payment_failed"
        err = payment_error_from_details(terminal.error.details)
        assert isinstance(err, PaymentTokenRequiredError)
        assert err.action == "pay"
        assert err.amount == Decimal("0.10")
        assert err.currency == "credits"
        assert err.accepts and err.accepts[0]["amount"] == "0.10"
        assert agent.model.calls == []  # type: ignore[attr-defined]
        assert calls == []
        assert ledger.open_locks() == []


async def test_bad_and_short_tokens_end_with_their_own_errors() -> None:
    with trio.fail_after(5):
        ledger = MemoryLedger()
        service = PaymentsService(ledger)
        short = await ledger.issue_token("0.05")
        agent, _ = _paid_agent([Reply("x")], per_turn="0.10")
        rec = Recorder()
        terminal = await run_response(_ctx(agent, rec, service, token=short.token))
        assert isinstance(terminal, uamp.ResponseError)
        err = payment_error_from_details(terminal.error.details)
        assert isinstance(err, InsufficientTokenBalanceError)
        assert err.amount == Decimal("0.05") and err.action == "pay" and err.accepts

        rec = Recorder()
        forged = short.token[:-4] + ("AAAA" if not short.token.endswith("AAAA") else "BBBB")
        terminal = await run_response(_ctx(agent, rec, service, token=forged))
        assert isinstance(terminal, uamp.ResponseError)
        assert isinstance(
            payment_error_from_details(terminal.error.details), PaymentTokenInvalidError
        )
        assert ledger.open_locks() == []
        assert (await ledger.balance(short.token_id)).balance == Decimal("0.05")


async def test_valid_token_settles_exactly_the_price() -> None:
    with trio.fail_after(5):
        ledger, tok = await funded("1.00")
        # per turn 0.10 + search 0.25 + 2 output words x 0.01 (the tool step streams no words)
        agent, calls = _paid_agent(
            [CallTool("search", {"query": "q"}), Reply("done here")],
            per_turn="0.10",
            per_output_token="0.01",
        )
        rec = Recorder()
        ctx = _ctx(agent, rec, PaymentsService(ledger), token=tok.token)
        terminal = await run_response(ctx)
        assert terminal.type == "response.done"
        assert rec.text() == "done here"
        assert calls == ["q"]
        assert ctx.payment is not None and ctx.payment.charged == Decimal("0.37")
        balance = await ledger.balance(tok.token_id)
        assert (balance.balance, balance.spent, balance.locked) == (
            Decimal("0.63"),
            Decimal("0.37"),
            Decimal(0),
        )
        assert ledger.open_locks() == []
        # Completions-style (no wait_payment): no payment.* events at all.
        assert not [t for t in rec.types() if t.startswith("payment.")]


async def test_tool_beyond_the_token_without_wait_payment_is_a_topup_error() -> None:
    with trio.fail_after(5):
        ledger, tok = await funded("0.50")
        agent, calls = _paid_agent(
            [[Reply("Let me check."), CallTool("expensive")], Reply("unreached")],
            per_turn="0.10",
        )
        rec = Recorder()
        terminal = await run_response(_ctx(agent, rec, PaymentsService(ledger), token=tok.token))
        assert isinstance(terminal, uamp.ResponseError)
        assert rec.text() == "Let me check."
        err = payment_error_from_details(terminal.error.details)
        assert isinstance(err, InsufficientTokenBalanceError)
        assert err.action == "topup"
        assert err.amount == Decimal("0.60")  # 1.00 asked, 0.40 left after the turn's 0.10
        assert calls == []  # charged before it runs: it never ran
        assert ledger.open_locks() == []
        assert (await ledger.balance(tok.token_id)).balance == Decimal("0.50")  # nothing kept


async def test_cancel_mid_turn_releases_the_lock() -> None:
    with trio.fail_after(5):
        ledger, tok = await funded("1.00")
        started = trio.Event()

        @tool(price="0.30")
        async def slow() -> str:
            """Blocks."""
            started.set()
            await trio.sleep_forever()
            return "never"

        agent = Agent(
            "paid",
            model=BuiltinModel([CallTool("slow")]),
            tools=[slow],
            pricing=Pricing(per_turn="0.10"),
        )
        rec = Recorder()
        ctx = _ctx(agent, rec, PaymentsService(ledger), token=tok.token)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def run() -> None:
                    try:
                        await run_response(ctx)
                    except BaseException as exc:
                        assert is_cancellation(exc)
                        raise

                nursery.start_soon(run)
                await started.wait()
                assert ctx.payment is not None and ctx.payment.charged == Decimal("0.40")
                assert len(ledger.open_locks()) == 2
                scope.cancel()
        assert rec.types()[-1] == "response.cancelled"
        assert ledger.open_locks() == []
        balance = await ledger.balance(tok.token_id)
        assert (balance.balance, balance.spent) == (Decimal("1.00"), Decimal(0))


class Submissions:
    """A scripted client answering ``payment.required`` (``Context.wait_payment``)."""

    def __init__(self, tokens: list[str], before: Any = None) -> None:
        self.tokens = tokens
        self.asked: list[PaymentError] = []
        self.before = before

    async def __call__(self, err: PaymentError) -> str:
        self.asked.append(err)
        if self.before is not None:
            await self.before(err)
        if not self.tokens:
            await trio.sleep_forever()
        return self.tokens.pop(0)


async def test_in_band_pay_bad_then_good_submission() -> None:
    with trio.fail_after(5):
        ledger, tok = await funded("1.00")
        agent, _ = _paid_agent([Reply("paid answer")], per_turn="0.10")
        rec = Recorder()
        wait = Submissions(["not-a-token", tok.token])
        terminal = await run_response(_ctx(agent, rec, PaymentsService(ledger), wait_payment=wait))
        assert terminal.type == "response.done"
        assert rec.types() == [
            "response.created",
            "payment.required",
            "payment.error",
            "payment.accepted",
            "response.delta",
            "response.delta",
            "response.done",
            "payment.balance",
        ]
        required = rec.events[1]
        assert required.response_id == "resp_1"
        assert required.extra["action"] == "pay"
        assert required.requirements["amount"] == "0.10"
        assert rec.events[2].can_retry is True and rec.events[2].code == "token_invalid"
        assert rec.events[3].balance_remaining == "1.00"
        assert rec.events[-1].balance == "0.90"
        assert rec.events[-1].low_balance_warning is False
        assert [type(e).__name__ for e in wait.asked] == ["PaymentTokenRequiredError"] * 2
        assert ledger.open_locks() == []


async def test_in_band_topup_resumes_the_suspended_tool() -> None:
    with trio.fail_after(5):
        ledger, tok = await funded("0.50")

        async def top_up(err: PaymentError) -> None:
            assert err.action == "topup" and err.amount == Decimal("0.60")
            await ledger.topup(tok.token_id, "1.00", "client-topup-1")

        agent, calls = _paid_agent(
            [[Reply("Let me check."), CallTool("expensive")], Reply("Done.")], per_turn="0.10"
        )
        rec = Recorder()
        wait = Submissions([tok.token], before=top_up)
        terminal = await run_response(
            _ctx(agent, rec, PaymentsService(ledger), token=tok.token, wait_payment=wait)
        )
        assert terminal.type == "response.done"
        assert calls == ["expensive"]
        assert rec.text() == "Let me check.Done."
        assert rec.types().count("response.created") == 1
        required = next(e for e in rec.events if e.type == "payment.required")
        assert required.extra == {"action": "topup", "amount": "0.60", "token_id": tok.token_id}
        balance = await ledger.balance(tok.token_id)
        assert (balance.spent, balance.balance) == (Decimal("1.10"), Decimal("0.40"))
        assert ledger.open_locks() == []


async def test_in_band_payment_timeout(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(500):
        ledger = MemoryLedger()
        agent, _ = _paid_agent([Reply("x")], per_turn="0.10")
        rec = Recorder()
        wait = Submissions([])
        ctx = _ctx(agent, rec, PaymentsService(ledger), wait_payment=wait)
        start = trio.current_time()
        terminal = await run_response(ctx)
        assert trio.current_time() - start == pytest.approx(ctx.config.payment_timeout)
        assert rec.types() == [
            "response.created",
            "payment.required",
            "payment.error",
            "response.error",
        ]
        assert rec.events[2].code == "payment_timeout" and rec.events[2].can_retry is False
        assert isinstance(terminal, uamp.ResponseError)
        assert terminal.error.code == "payment_timeout"
        assert ledger.open_locks() == []
