"""The peer: the same mock model served by ``webagents`` (PyPI), for side-by-side benchmarks.

Usage::

    python benchmarks/peer_webagents.py --port 8100 [--words 200] [--mode burst|paced] [--delay 0.05]

Serves one agent named ``bench`` with ``webagents.create_server`` on uvicorn (its documented
way to run): Chat Completions at ``POST /bench/chat/completions`` (send any ``Authorization``
header: its credential floor checks only that one is present) and UAMP over WebSocket at
``/bench/uamp`` (``session.create``, then ``input.text``; one session per connection). Its model is a mock LLM skill equivalent to
trioagents' built-in model in ``uamp_sessions.py``: every request is answered with the same
reply of ``--words`` words, streamed one word per chunk: with no delay (``--mode burst``) or
``--delay`` seconds between words (``--mode paced``, like the built-in model's ``word_delay``).
Defaults come from ``TRIOAGENTS_BENCH_WORDS``/``_MODE``/``_DELAY`` (set by
``benchmarks/_harness.py``). Rate limiting is off in
webagents 0.3.x already (its middleware is never installed). Prints
``webagents listening on http://127.0.0.1:PORT`` once the socket accepts, like our CLI.

Requires the ``bench`` extra (``pip install -e '.[bench]'``); never imported by trioagents.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serving import add_server_arguments, run_webagents, serve_uvicorn, webagents_app

AGENT = "bench"


def reply_text(words: int) -> str:
    """The fixed reply: ``words`` short words (the same text as ``uamp_sessions.reply_text``)."""
    return " ".join(f"w{i}" for i in range(words))


def build_app(words: int, delay: float = 0.0) -> Any:
    """The webagents server app (FastAPI) serving the ``bench`` agent with the mock model.

    ``delay`` > 0 paces the words (``asyncio.sleep`` between two of them).
    """
    from webagents import BaseAgent
    from webagents.agents.skills.base import Handoff, Skill

    pieces = [w if i == 0 else " " + w for i, w in enumerate(reply_text(words).split(" "))]

    class MockLLMSkill(Skill):
        """A streaming LLM skill: a fixed reply, one word per OpenAI chunk, paced or not."""

        model = "mock"

        async def initialize(self, agent: Any) -> None:
            self.agent = agent
            agent.register_handoff(
                Handoff(
                    target="mock_llm",
                    description="fixed-reply mock model",
                    scope="all",
                    metadata={
                        "function": self.chat_completion_stream,
                        "priority": 10,
                        "is_generator": True,
                    },
                ),
                source="mock",
            )

        async def chat_completion_stream(
            self, messages: list[dict[str, Any]], model: str | None = None, **kwargs: Any
        ) -> AsyncGenerator[dict[str, Any], None]:
            base = {
                "id": "chatcmpl-mock",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": "mock",
            }
            yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
            for i, piece in enumerate(pieces):
                if delay and i:
                    await asyncio.sleep(delay)
                yield {**base, "choices": [{"index": 0, "delta": {"content": piece}}]}
            yield {
                **base,
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {
                    "prompt_tokens": 1,
                    "completion_tokens": words,
                    "total_tokens": words + 1,
                },
            }

    from webagents.agents.skills.core.transport.uamp.skill import UAMPTransportSkill

    skills = {"primary_llm": MockLLMSkill(), "uamp": UAMPTransportSkill()}
    agent = BaseAgent(name=AGENT, instructions="", skills=skills)

    return webagents_app(agent, AGENT)


async def serve(host: str, port: int, words: int, delay: float = 0.0) -> None:
    """Run uvicorn on ``host:port`` and print the ``listening on`` line once it accepts."""
    await serve_uvicorn(build_app(words, delay), host, port)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until SIGINT."""
    p = argparse.ArgumentParser(description="webagents peer for the trioagents benchmarks")
    add_server_arguments(p, words=200)
    args = p.parse_args(argv)
    delay = args.delay if args.mode == "paced" else 0.0
    return run_webagents(serve(args.host, args.port, args.words, delay))


if __name__ == "__main__":
    sys.exit(main())
