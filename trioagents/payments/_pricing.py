"""Prices: per turn, per tool call, per token (declared on the agent and on tools).

Money is :class:`~decimal.Decimal` end to end; floats are refused where a price is declared.

Until the core grows ``Agent(pricing=…)`` and ``@tool(price=…)``, attach prices with
:func:`set_pricing` and :func:`priced`; :func:`pricing_of` and :func:`tool_price` read both the
current attributes and the future core fields, so integration code written against them keeps
working when the core changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, TypeVar

import attrs

from ._errors import to_decimal

__all__ = ["Pricing", "priced", "tool_price", "set_pricing", "pricing_of", "PRICE_ATTR"]

F = TypeVar("F", bound=Callable[..., Any])

PRICE_ATTR = "__trioagents_price__"
"""The function attribute :func:`priced` sets (a :class:`~decimal.Decimal`)."""

_AGENT_ATTR = "pricing"


def _money(value: Decimal | str | int) -> Decimal:
    d = to_decimal(value)
    assert d is not None
    if d < 0:
        raise ValueError(f"a price cannot be negative: {value!r}")
    return d


def _opt_money(value: Decimal | str | int | None) -> Decimal | None:
    return None if value is None else _money(value)


def _tool_prices(value: Mapping[str, Decimal | str | int]) -> Mapping[str, Decimal]:
    return {str(k): _money(v) for k, v in value.items()}


@attrs.frozen(kw_only=True)
class Pricing:
    """What a paid agent charges.

    Args:
        per_turn: charged once when a turn starts (before any work).
        per_tool_call: charged before each agent tool call without its own price.
        per_output_token: charged per output token the model reports.
        per_input_token: charged per input token the model reports.
        tools: prices by tool name (override ``@priced`` and ``per_tool_call``).
        currency: what the amounts are in (``credits`` by default).
        reserve: how much to lock from the token when a turn starts (default: ``per_turn``);
            a turn that needs more extends its lock from the token's balance and asks for a
            top-up only when the token is empty.

    Raises:
        TypeError: an amount is a float.
        ValueError: an amount is negative or not a number.

    Example::

        Agent("paid", pricing=Pricing(per_turn="0.01", per_output_token="0.00001"))
    """

    per_turn: Decimal = attrs.field(default=Decimal(0), converter=_money)
    per_tool_call: Decimal = attrs.field(default=Decimal(0), converter=_money)
    per_output_token: Decimal = attrs.field(default=Decimal(0), converter=_money)
    per_input_token: Decimal = attrs.field(default=Decimal(0), converter=_money)
    tools: Mapping[str, Decimal] = attrs.field(factory=dict, converter=_tool_prices)
    currency: str = "credits"
    reserve: Decimal | None = attrs.field(default=None, converter=_opt_money)

    @property
    def turn_reserve(self) -> Decimal:
        """The amount locked when a turn starts."""
        return self.reserve if self.reserve is not None else self.per_turn

    @property
    def is_free(self) -> bool:
        """Whether nothing is ever charged."""
        return not (
            self.per_turn
            or self.per_tool_call
            or self.per_output_token
            or self.per_input_token
            or any(self.tools.values())
        )

    def tool_cost(self, name: str, fn: Callable[..., Any] | None = None) -> Decimal:
        """The price of one call of tool ``name`` (``fn`` is its function, for ``@priced``)."""
        if name in self.tools:
            return self.tools[name]
        own = tool_price(fn) if fn is not None else None
        return own if own is not None else self.per_tool_call

    def usage_cost(self, *, input_tokens: int = 0, output_tokens: int = 0) -> Decimal:
        """The price of ``input_tokens`` and ``output_tokens``."""
        return self.per_input_token * input_tokens + self.per_output_token * output_tokens


def priced(price: Decimal | str | int) -> Callable[[F], F]:
    """Give a tool its own price per call (stacks with ``@tool`` in either order).

    ::

        @tool
        @priced("0.05")
        async def search(query: str) -> str: ...

    Raises:
        TypeError: ``price`` is a float.
        ValueError: ``price`` is negative or not a number.
    """
    amount = _money(price)

    def deco(fn: F) -> F:
        target = getattr(fn, "__func__", fn)  # bound methods: mark the function underneath
        setattr(target, PRICE_ATTR, amount)
        return fn

    return deco


def tool_price(fn: Any) -> Decimal | None:
    """The per-call price of a tool: ``@priced`` on the function, or a ``price`` field of a
    :class:`~trioagents.agent.ToolSpec` (the planned core field), else ``None``."""
    if fn is None:
        return None
    own = getattr(fn, "price", None)
    if own is not None and not callable(own):
        return to_decimal(own)
    target = getattr(fn, "fn", fn)  # a ToolSpec: look at its function
    value = getattr(target, PRICE_ATTR, None)
    return value if isinstance(value, Decimal) else None


def set_pricing(agent: Any, pricing: Pricing | None) -> None:
    """Declare ``agent``'s pricing (what ``Agent(pricing=…)`` will do in the core)."""
    setattr(agent, _AGENT_ATTR, pricing)


def pricing_of(agent: Any) -> Pricing | None:
    """``agent``'s pricing, or ``None`` for a free agent."""
    value = getattr(agent, _AGENT_ATTR, None)
    return value if isinstance(value, Pricing) else None
