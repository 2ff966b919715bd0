"""Skills, hooks, prompts, custom HTTP endpoints and handoffs between two agents.

Run it (offline, on the built-in model)::

    trioagents serve examples/skills_and_hooks.py:agents

or ``python examples/skills_and_hooks.py`` (port 8000). Two agents are served, so each lives
under ``/agents/{name}/…``; try::

    # A skill tool (the built-in model calls a tool when told "/call NAME {json}"):
    curl -s localhost:8000/agents/triage/v1/chat/completions \\
        -d '{"messages":[{"role":"user","content":"/call lookup_order {\\"order_id\\":\\"A-17\\"}"}]}'

    # A handoff: triage transfers the conversation and billing answers the rest:
    curl -s localhost:8000/agents/triage/v1/chat/completions \\
        -d '{"messages":[{"role":"user","content":"/call transfer_to_billing"}]}'

    # The skill's own HTTP endpoint, one per agent that has the skill:
    curl -s localhost:8000/agents/triage/stats

What it shows:

* a :class:`~trioagents.Skill` — a reusable bundle added to any agent — whose methods are a
  ``@tool``, a ``@prompt`` section, a ``@hook("before_llm")`` and an ``@http("/stats")`` route;
* one skill class, two instances: each agent gets its own state (``self`` is per agent);
* ``Agent(..., handoffs=[billing])``: the model sees a ``transfer_to_billing`` tool; calling it
  makes ``billing`` answer the rest of the response and the following turns of the session;
* a scripted built-in model (a function from request to reply) standing in for a real LLM.
"""

from __future__ import annotations

from typing import Any

import trio
from starlette.requests import Request

from trioagents import (
    Agent,
    BuiltinModel,
    Context,
    ModelRequest,
    Reply,
    Skill,
    hook,
    http,
    prompt,
    serve,
    tool,
)

ORDERS = {
    "A-17": {"status": "shipped", "total": 42.5},
    "B-02": {"status": "processing", "total": 9.99},
}


class SupportDesk(Skill):
    """Order look-ups plus a little bookkeeping, for any agent that adds it."""

    def __init__(self, desk: str) -> None:
        self.desk = desk
        self.llm_calls = 0
        self.last_prompt = ""

    @tool
    def lookup_order(self, order_id: str) -> dict[str, Any]:
        """Look up an order by id.

        Args:
            order_id: the order id, like "A-17".
        """
        # Returned values that are not strings are sent to the model as JSON.
        return ORDERS.get(order_id, {"status": "unknown order"})

    @prompt
    def desk_prompt(self, ctx: Context) -> str:
        # Computed for every response and appended to the agent's instructions.
        turns = sum(1 for m in ctx.session.messages if m.role == "user")
        return f"You work at the {self.desk} desk. This is turn {turns} of the conversation."

    @hook("before_llm")
    def count_llm_calls(self, ctx: Context, request: ModelRequest) -> ModelRequest | None:
        # Runs before every LLM call of this agent. Returning a new ``ModelRequest`` (e.g.
        # ``attrs.evolve(request, options={...})``) replaces it; ``None`` keeps it.
        self.llm_calls += 1
        system = request.messages[0] if request.messages else None
        self.last_prompt = system.text if system is not None and system.role == "system" else ""
        return None

    @http("/stats")
    async def stats(self, request: Request) -> dict[str, Any]:
        # Served at /agents/{name}/stats. Handlers get a Starlette ``Request`` and return a
        # ``Response`` or any JSON value.
        return {
            "agent": self.agent.name,  # the agent this skill instance was added to
            "llm_calls": self.llm_calls,
            "last_system_prompt": self.last_prompt,
            "tools": sorted(self.agent.tools),
        }


def billing_model(request: ModelRequest) -> Reply:
    """Billing's stand-in LLM: a function from the request to the next reply."""
    last = request.messages[-1]
    if last.role == "tool":  # the transfer tool's result: we have just been handed the chat
        return Reply("Billing desk here. What can I do for your invoice?")
    return Reply(f"Billing desk: noted {last.text!r}. A refund is on its way.")


billing = Agent(
    "billing",
    "You handle invoices and refunds.",
    model=BuiltinModel(billing_model),
    skills=[SupportDesk("billing")],
)

triage = Agent(
    "triage",
    "You greet customers and send billing questions to the billing desk.",
    skills=[SupportDesk("front")],
    handoffs=[billing],  # gives the model a ``transfer_to_billing`` tool
)

# ``trioagents serve examples/skills_and_hooks.py:agents`` serves this list.
agents = [triage, billing]


if __name__ == "__main__":
    trio.run(serve, agents)
