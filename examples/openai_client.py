"""The official ``openai`` Python client talking to a trioagents agent.

Run it (offline: it starts its own server on a free port, the API key is a placeholder)::

    python examples/openai_client.py

What it shows:

* any OpenAI Chat Completions client works: point ``base_url`` at ``{server}/v1`` and use the
  agent's name as ``model`` (or ``{server}/agents/{name}/v1`` with any ``model``);
* a plain request, a streaming request, and a *client tool* round trip: the agent asks the
  caller to run ``get_weather`` (``finish_reason == "tool_calls"``), the caller sends the result
  back in a ``tool`` message, and the agent answers with it;
* mixing a blocking client with Trio: the server runs in Trio's main thread, the synchronous
  ``openai`` client runs in a worker thread via ``trio.to_thread.run_sync``. (No asyncio loop
  is involved, so nothing has to be bridged.)

Expected output::

    server listening on http://127.0.0.1:PORT
    plain:     'You said: What is Trio?' (finish_reason=stop)
    streaming: 'You' ' said:' ' stream' ' this' ' please' (finish_reason=stop)
    tool call: get_weather({"city": "Paris"}) (finish_reason=tool_calls)
    answer:    'get_weather returned: sunny, 24 °C'
    server stopped
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import openai
import trio

from trioagents import Agent, Config, serve

# The built-in offline model: echoes the user, and ``/call NAME {json}`` makes it call a tool.
agent = Agent("assistant", "You are a helpful assistant.")

# A tool the *client* implements: the agent does not have it, so the call comes back to us.
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def get_weather(city: str) -> str:
    """The client's own implementation of the tool."""
    return {"Paris": "sunny, 24 °C"}.get(city, "unknown")


def talk_to_the_agent(base_url: str) -> None:
    """Ordinary synchronous ``openai`` code; runs in a worker thread."""
    # ``timeout`` bounds each HTTP call: the worker thread cannot be cancelled from Trio.
    with openai.OpenAI(
        base_url=base_url, api_key="not-needed", max_retries=0, timeout=10
    ) as client:
        # 1. Non-streaming.
        reply = client.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "What is Trio?"}]
        )
        choice = reply.choices[0]
        print(f"plain:     {choice.message.content!r} (finish_reason={choice.finish_reason})")

        # 2. Streaming: content arrives chunk by chunk (here word by word).
        words, finish = [], None
        with client.chat.completions.create(
            model="assistant",
            messages=[{"role": "user", "content": "stream this please"}],
            stream=True,
        ) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    words.append(chunk.choices[0].delta.content)
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
        print(f"streaming: {' '.join(map(repr, words))} (finish_reason={finish})")

        # 3. Client tool round trip.
        messages: list[Any] = [{"role": "user", "content": '/call get_weather {"city": "Paris"}'}]
        first = client.chat.completions.create(
            model="assistant", messages=messages, tools=[WEATHER_TOOL]
        )
        call = first.choices[0].message.tool_calls[0]
        args = json.loads(call.function.arguments)
        print(
            f"tool call: {call.function.name}({json.dumps(args)}) "
            f"(finish_reason={first.choices[0].finish_reason})"
        )
        # Send the assistant's tool call back with our result; the agent continues from there.
        messages.append(first.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": get_weather(**args)})
        final = client.chat.completions.create(
            model="assistant", messages=messages, tools=[WEATHER_TOOL]
        )
        print(f"answer:    {final.choices[0].message.content!r}")


async def main() -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(serve, agent, Config(port=0), shutdown_trigger=stop.wait)
        )
        print(f"server listening on {urls[0]}")
        try:
            # Blocking code in a worker thread cannot be cancelled mid-call, so Trio waits for
            # it to return (its own ``timeout`` bounds that) even if we are cancelled.
            await trio.to_thread.run_sync(talk_to_the_agent, urls[0] + "/v1")
        finally:
            stop.set()  # graceful shutdown; ``serve`` returns when connections are closed
    print("server stopped")


if __name__ == "__main__":
    trio.run(main)
