"""The bundled example agent served by ``trioagents serve`` with no target.

It runs on the built-in offline model: it echoes messages, and ``/call NAME {json}`` makes the
model call one of the tools below, so every transport can be tried with no key or network.
"""

from __future__ import annotations

import trio

from .agent import Agent, Context, tool


@tool
def add(a: float, b: float) -> float:
    """Add two numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


@tool
async def countdown(n: int, ctx: Context) -> str:
    """Count down from ``n``, reporting progress once per step (a slow, cancellable tool).

    Args:
        n: where to start (at most 10).
    """
    for i in range(min(n, 10), 0, -1):
        await ctx.progress(str(i))
        await trio.sleep(0.1)
    return "liftoff"


agent = Agent(
    "assistant",
    "You are a helpful assistant running on trioagents.",
    tools=[add, countdown],
    description="The bundled example agent (offline built-in model).",
)
