"""The peer for the cancellation benchmark: webagents' OpenAI skill pointed at the fake upstream.

Usage::

    python -m benchmarks._h3_peer_cancel --upstream http://127.0.0.1:PORT/v1 [--port 0]

Serves one agent named ``bench`` with ``webagents.create_server`` on uvicorn, like
``benchmarks/peer_webagents.py``, but its LLM is webagents' own ``OpenAISkill`` (the official
``openai`` SDK, ``base_url`` = ``--upstream``) instead of a mock, so an abort has a real upstream
HTTP stream to close. Chat Completions at ``POST /bench/chat/completions`` (send any
``Authorization`` header), UAMP at ``/bench/uamp``. Prints
``webagents listening on http://127.0.0.1:PORT``. Requires the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

AGENT = "bench"


def build_app(upstream: str) -> Any:
    """The webagents server app serving ``bench`` with ``OpenAISkill(base_url=upstream)``."""
    from webagents import BaseAgent, create_server
    from webagents.agents.skills.core.llm.openai.skill import OpenAISkill
    from webagents.agents.skills.core.transport.uamp.skill import UAMPTransportSkill

    llm = OpenAISkill({"model": "fake", "base_url": upstream, "api_key": "k"})
    agent = BaseAgent(
        name=AGENT, instructions="", skills={"primary_llm": llm, "uamp": UAMPTransportSkill()}
    )

    def resolve(name: str) -> Any:
        return agent if name == AGENT else None

    server = create_server(
        agents=[agent],
        dynamic_agents=resolve,
        agent_card=False,
        heartbeat=False,
        quiet=True,
        loopback=True,
    )
    return server.app


async def serve(host: str, port: int, upstream: str) -> None:
    """Run uvicorn; print the ``listening on`` line once it accepts."""
    import uvicorn

    config = uvicorn.Config(
        build_app(upstream),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        backlog=4096,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task
            raise RuntimeError("uvicorn stopped before listening")
        await asyncio.sleep(0.02)
    sock = server.servers[0].sockets[0].getsockname()
    print(f"webagents listening on http://{sock[0]}:{sock[1]}", flush=True)
    await task


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until SIGINT."""
    p = argparse.ArgumentParser(description="webagents + OpenAISkill peer (cancellation bench)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--upstream", required=True, help="OpenAI-compatible base URL (…/v1)")
    args = p.parse_args(argv)
    os.environ.setdefault("WEBAGENTS_LOG_LEVEL", "WARNING")
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(serve(args.host, args.port, args.upstream))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
