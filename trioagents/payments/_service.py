"""``PaymentsService``: the payment backend and verifier a server charges paid agents with.

Give one to the server (``AgentServer(agents, payments=PaymentsService(SqliteLedger(path)))``,
or just the backend: ``payments=MemoryLedger()``); it lives in ``runtime.services["payments"]``
and every transport hands it to the run loop (``Context.payments``), which locks, charges and
settles each turn of an agent with a :class:`~trioagents.payments.Pricing`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from ._errors import PaymentError
from ._ledger import PaymentBackend
from ._pricing import Pricing, pricing_of, tool_price
from ._verify import PaymentVerifier, VerifiedPayment
from ._wire import DEFAULT_NETWORK, x402_accepts

__all__ = ["PaymentsService", "SERVICE_KEY", "effective_pricing"]

SERVICE_KEY = "payments"
"""The key of the service in ``Runtime.services``."""


def effective_pricing(agent: Any) -> Pricing | None:
    """What ``agent`` charges, or ``None`` when nothing is ever charged.

    The agent's :class:`Pricing` (``Agent(pricing=…)``); a free agent whose tools carry their
    own ``@tool(price=…)`` / ``@priced`` prices charges those, in the default currency.
    """
    pricing = pricing_of(agent)
    if pricing is not None and not pricing.is_free:
        return pricing
    tools = getattr(agent, "tools", {}) or {}
    if any((tool_price(spec) or 0) > 0 for spec in tools.values()):
        return pricing or Pricing()
    return None


class PaymentsService:
    """A payment backend plus the verifier of its tokens, shared by one server.

    Args:
        backend: the ledger (:class:`~trioagents.payments.SqliteLedger`,
            :class:`~trioagents.payments.MemoryLedger`, or a remote one). The caller owns it
            (opens and closes it).
        verifier: checks payment tokens (default: a :class:`PaymentVerifier` of ``backend``).
        network: the x402 ``network`` written into payment signals.
        pay_to: the x402 ``payTo`` (the agent's account at the payment platform).
        max_timeout_seconds: the x402 ``maxTimeoutSeconds`` of an offer.
    """

    def __init__(
        self,
        backend: PaymentBackend,
        *,
        verifier: PaymentVerifier | None = None,
        network: str = DEFAULT_NETWORK,
        pay_to: str = "",
        max_timeout_seconds: int = 300,
    ) -> None:
        self.backend = backend
        self.verifier = verifier or PaymentVerifier(backend)
        self.network = network
        self.pay_to = pay_to
        self.max_timeout_seconds = max_timeout_seconds

    @classmethod
    def of(cls, runtime: Any) -> PaymentsService | None:
        """The service of a server's ``runtime`` (``None``: payments are off)."""
        value = getattr(runtime, "services", {}).get(SERVICE_KEY)
        return value if isinstance(value, PaymentsService) else None

    @asynccontextmanager
    async def lifespan(self, runtime: Any) -> AsyncIterator[PaymentsService]:
        """Serve as ``runtime``'s payment service for the duration of the block."""
        runtime.services[SERVICE_KEY] = self
        try:
            yield self
        finally:
            if runtime.services.get(SERVICE_KEY) is self:
                del runtime.services[SERVICE_KEY]

    def accepts(self, amount: Decimal, currency: str) -> list[dict[str, Any]]:
        """The x402 ``accepts`` list asking for ``amount`` ``currency``."""
        return x402_accepts(
            amount,
            currency,
            network=self.network,
            pay_to=self.pay_to,
            max_timeout_seconds=self.max_timeout_seconds,
        )

    async def verify_for(
        self, token: str, err: PaymentError, *, required: Decimal | None = None
    ) -> VerifiedPayment:
        """Verify ``token`` as an answer to ``err``: genuine, alive, in ``err.currency``, and
        with a spendable balance of at least ``required`` (default ``err.amount``).

        Raises:
            PaymentError: the token does not answer ``err`` (see :meth:`PaymentVerifier.verify`).
        """
        need = required if required is not None else err.amount
        try:
            return await self.verifier.verify(token, required=need, currency=err.currency)
        except PaymentError as refused:
            # Whatever was wrong with the token, the client is still told what to pay (§9.2:
            # every payment error carries the offer), so an x402 client can retry at once.
            if not refused.accepts and err.accepts:
                refused.accepts = list(err.accepts)
                refused.details = {"accepts": refused.accepts, **(refused.details or {})}
            raise
