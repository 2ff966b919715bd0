"""Hello, agent: the smallest useful trioagents program.

An agent with two tools — a plain function and an async tool that reports progress while it
works — answered by the built-in offline model (no API key, no network).

Run it with the CLI (any ``--port``; ``0`` picks a free one)::

    trioagents serve examples/hello_agent.py

or directly (serves on http://127.0.0.1:8000, Ctrl+C stops it gracefully)::

    python examples/hello_agent.py
    TRIOAGENTS_PORT=9000 python examples/hello_agent.py   # settings come from the environment

Then talk to it. The built-in model echoes what you say, and ``/call TOOL {json}`` makes it
call a tool, so every path can be tried offline::

    curl -s localhost:8000/v1/chat/completions \\
        -d '{"messages":[{"role":"user","content":"/call shout {\\"text\\":\\"hi\\"}"}]}'

    # Streaming, with the agent's tool activity (calls, progress, results) as extra events:
    curl -sN localhost:8000/v1/chat/completions -d '{"stream":true,
        "stream_options":{"include_agent_events":true},
        "messages":[{"role":"user","content":"/call brew_tea {\\"minutes\\":3}"}]}'

Swap the model for a real one when you are ready:
``Agent(..., model=OpenAIModel("gpt-4o-mini"))`` (reads ``OPENAI_API_KEY``).
"""

from __future__ import annotations

import logging

import trio

from trioagents import Agent, Config, Context, serve, tool


@tool
def shout(text: str) -> str:
    """Return the text in capital letters.

    Args:
        text: what to shout.
    """
    # A plain (synchronous) tool runs inline. Keep it quick; use ``@tool(thread=True)``
    # for blocking work so it runs in a worker thread instead.
    return text.upper() + "!"


@tool
async def brew_tea(minutes: int, ctx: Context) -> str:
    """Brew a pot of tea, reporting progress each (simulated) minute.

    Args:
        minutes: steeping time, 1 to 5.
    """
    # The parameter named ``ctx`` is not shown to the model: it receives the running
    # response's context. ``ctx.progress`` streams a ``tool_progress`` delta to the caller.
    minutes = max(1, min(minutes, 5))
    for minute in range(1, minutes + 1):
        # Async tools run in the response's nursery: if the caller cancels the response
        # (or disconnects), this sleep is where the tool gets cancelled.
        await trio.sleep(0.05)
        # The progress is tagged with this tool call's id (``ctx.call_id``), so a client
        # can tell concurrent calls apart.
        await ctx.progress(f"steeping: {minute}/{minutes} min")
    return f"tea is ready after {minutes} min"


agent = Agent(
    "hello",
    "You are a cheerful assistant who can shout and brew tea.",
    tools=[shout, brew_tea],
    description="The hello-world example: two tools on the offline built-in model.",
)


if __name__ == "__main__":
    # INFO logs include the server's "Running on http://…" line.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # ``Config.load()`` reads ``TRIOAGENTS_*`` environment variables over the defaults
    # (127.0.0.1:8000). ``serve`` runs until SIGINT/SIGTERM, then shuts down gracefully: open
    # WebSockets get ``session.end{reason:"shutdown"}``, in-flight requests a deadline.
    trio.run(serve, agent, Config.load())
