"""Agents for the ACP tests (loaded by ``trioagents.transports.acp`` in a subprocess too).

``slowpoke`` answers from a script so every path is explicit: ``slow …`` streams its words
0.2 s apart (time for a client to cancel mid-prompt), ``/call add`` calls the ``add`` tool,
``/think`` streams a thought first, ``/fail`` fails the model, anything else is echoed.
"""

from __future__ import annotations

from trioagents import Agent, BuiltinModel, CallTool, Fail, Reply, Think
from trioagents.agent._model import ModelRequest

SLOW_WORDS = 40


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first one.
        b: the second one.
    """
    return a + b


def explode() -> str:
    """A tool that always fails."""
    raise RuntimeError("kaboom")


def _script(request: ModelRequest) -> object:
    last = request.messages[-1]
    if last.role == "tool":
        return Reply(f"add returned: {last.text}")
    text = last.text.strip()
    if text.startswith("slow"):
        return Reply(" ".join(f"w{i}" for i in range(SLOW_WORDS)), word_delay=0.2)
    if text.startswith("/call add"):
        return CallTool("add", {"a": 2, "b": 3}, id="call_add")
    if text.startswith("/think"):
        return [Think("pondering"), Reply("thought done")]
    if text.startswith("/fail"):
        return Fail("boom")
    return Reply(f"You said: {text}")


def make_agent() -> Agent:
    """A fresh ``slowpoke`` agent (each server gets its own)."""
    return Agent("slowpoke", model=BuiltinModel(_script), tools=[add, explode])  # type: ignore[arg-type]


agent = make_agent()


def both() -> list[Agent]:
    """Two agents: ``trioagents acp`` then needs ``--agent``."""
    return [make_agent(), Agent("other")]
