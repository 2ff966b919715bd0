"""UAMP client: several sessions multiplexed on one WebSocket, one of them cancelled.

Run it (offline, no arguments; it starts its own server on a free port and stops it)::

    python examples/uamp_client.py

What it shows:

* ``serve`` started in-process with ``nursery.start`` on port 0: it returns the listening URLs
  once the socket is bound — no fixed port, no sleeping until the server is up;
* ``open_uamp_client``: one WebSocket, three sessions running *concurrently* on it, each with
  its own conversation and its own stream of events (routed by ``session_id``);
* a tool call streamed as ``tool_call`` / ``tool_result`` deltas;
* ``response.cancel`` mid-stream: only that session's response stops (``response.cancelled``
  with the words already sent as ``partial_output``); the other sessions never notice;
* graceful shutdown of the server from the program itself (``shutdown_trigger``).

Expected output (the order of the session lines may vary)::

    server listening on http://127.0.0.1:PORT
    [chat]   completed: 'You said: hello from the first session'
    [tool]   completed: 'add returned: 5' (tool calls: add)
    [story]  cancelled after N deltas, partial: 'You said: once upon a time ...'
    server stopped
"""

from __future__ import annotations

from functools import partial

import trio

from trioagents import Agent, BuiltinModel, Config, serve, tool, uamp
from trioagents.client import UampClientSession, open_uamp_client


@tool
def add(a: float, b: float) -> float:
    """Add two numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


# ``word_delay`` makes the built-in model stream one word every 20 ms, so there is time to
# cancel a response while it is still streaming.
agent = Agent("storyteller", model=BuiltinModel(word_delay=0.02), tools=[add])

STORY = "once upon a time " + " ".join(f"word{i}" for i in range(200))


async def chat(session: UampClientSession) -> None:
    # ``ask`` sends ``input.text`` and waits for the response's text (raises if it fails).
    text = await session.ask("hello from the first session")
    print(f"[chat]   completed: {text!r}")


async def call_a_tool(session: UampClientSession) -> None:
    # ``collect`` gathers every event of one response, in order, and how it ended.
    await session.input_text('/call add {"a": 2, "b": 3}')
    result = await session.collect()
    tools = [
        e.delta.tool_call.name
        for e in result.events
        if e.type == "response.delta" and e.delta.type == "tool_call"
    ]
    print(f"[tool]   {result.status}: {result.text!r} (tool calls: {', '.join(tools)})")


async def cancel_mid_stream(session: UampClientSession) -> None:
    # Read the raw event stream ourselves and cancel after a few words have arrived.
    await session.input_text(STORY)
    deltas = 0
    async for event in session.events:
        if event.type == "response.delta" and event.delta.type == "text":
            deltas += 1
            if deltas == 5:
                await session.cancel(event.response_id)
        elif event.type in uamp.TERMINAL_TYPES:
            assert event.type == "response.cancelled", event
            partial_text = "".join(p.text for p in event.partial_output)
            print(f"[story]  cancelled after {deltas} deltas, partial: {partial_text[:40]!r}...")
            return


async def main() -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        # Port 0: the OS picks a free port; ``start`` returns once the server is listening.
        urls = await nursery.start(
            partial(serve, agent, Config(port=0), shutdown_trigger=stop.wait)
        )
        print(f"server listening on {urls[0]}")
        ws_url = "ws" + urls[0].removeprefix("http") + "/agents/storyteller/uamp"

        # Callers own timeouts: the whole exchange must finish within 10 s.
        with trio.fail_after(10):
            async with open_uamp_client(ws_url) as client:
                sessions = [await client.create_session() for _ in range(3)]
                # Three sessions at once on one socket; their events interleave on the wire
                # but each session sees only its own, in order.
                async with trio.open_nursery() as sessions_nursery:
                    sessions_nursery.start_soon(chat, sessions[0])
                    sessions_nursery.start_soon(call_a_tool, sessions[1])
                    sessions_nursery.start_soon(cancel_mid_stream, sessions[2])
        # Leaving ``open_uamp_client`` closed the socket. Now stop the server gracefully:
        # ``serve`` returns once every connection has been cleaned up.
        stop.set()
    print("server stopped")


if __name__ == "__main__":
    trio.run(main)
