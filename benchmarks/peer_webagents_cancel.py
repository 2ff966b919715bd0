"""The peer for the cancellation benchmark: webagents' OpenAI skill pointed at the fake upstream.

Usage::

    python -m benchmarks.peer_webagents_cancel --upstream http://127.0.0.1:PORT/v1 [--port 0]

Serves one agent named ``bench`` with ``webagents.create_server`` on uvicorn, like
``benchmarks/peer_webagents.py``, but its LLM is webagents' own ``OpenAISkill`` (the official
``openai`` SDK, ``base_url`` = ``--upstream``) instead of a mock, so an abort has a real upstream
HTTP stream to close. Chat Completions at ``POST /bench/chat/completions`` (send any
``Authorization`` header), UAMP at ``/bench/uamp``. Prints
``webagents listening on http://127.0.0.1:PORT``. Requires the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from benchmarks._serving import add_server_arguments, run_webagents, serve_uvicorn, webagents_app

AGENT = "bench"


def build_app(upstream: str) -> Any:
    """The webagents server app serving ``bench`` with ``OpenAISkill(base_url=upstream)``."""
    from webagents import BaseAgent
    from webagents.agents.skills.core.llm.openai.skill import OpenAISkill
    from webagents.agents.skills.core.transport.uamp.skill import UAMPTransportSkill

    llm = OpenAISkill({"model": "fake", "base_url": upstream, "api_key": "k"})
    agent = BaseAgent(
        name=AGENT, instructions="", skills={"primary_llm": llm, "uamp": UAMPTransportSkill()}
    )

    return webagents_app(agent, AGENT)


async def serve(host: str, port: int, upstream: str) -> None:
    """Run uvicorn; print the ``listening on`` line once it accepts."""
    await serve_uvicorn(build_app(upstream), host, port, backlog=4096)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until SIGINT."""
    p = argparse.ArgumentParser(description="webagents + OpenAISkill peer (cancellation bench)")
    add_server_arguments(p)
    p.add_argument("--upstream", required=True, help="OpenAI-compatible base URL (…/v1)")
    args = p.parse_args(argv)
    return run_webagents(serve(args.host, args.port, args.upstream))


if __name__ == "__main__":
    sys.exit(main())
