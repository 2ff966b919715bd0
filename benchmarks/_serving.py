"""What the stand-alone benchmark servers share: the floors, the peers and the fake upstream.

Each of them is its own process (``python benchmarks/floor_trio.py``, ``python -m
benchmarks.upstream_fake``, …), prints ``NAME listening on http://HOST:PORT`` once its socket
accepts (the line :mod:`benchmarks._harness` waits for) and serves until SIGINT/SIGTERM.

Only the standard library is imported at the top: the peers run on asyncio and must not carry
trio (their memory is measured); :func:`serve_trio` and :func:`serve_uvicorn` import their
framework when called.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any


def add_server_arguments(p: argparse.ArgumentParser, *, words: int | None = None) -> None:
    """``--host`` and ``--port``; with ``words``, the mock model's ``--words/--mode/--delay``.

    The model options default to ``TRIOAGENTS_BENCH_WORDS`` (else ``words``),
    ``TRIOAGENTS_BENCH_MODE`` and ``TRIOAGENTS_BENCH_DELAY`` (set by ``_harness.server_env``).
    """
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    if words is None:
        return
    env = os.environ
    p.add_argument("--words", type=int, default=int(env.get("TRIOAGENTS_BENCH_WORDS", words)))
    p.add_argument(
        "--mode",
        choices=["burst", "paced"],
        default=env.get("TRIOAGENTS_BENCH_MODE", "burst"),
    )
    p.add_argument("--delay", type=float, default=float(env.get("TRIOAGENTS_BENCH_DELAY", 0.05)))


async def serve_trio(
    handler: Callable[[Any], Awaitable[object]], host: str, port: int, name: str
) -> None:
    """Serve TCP connections with ``handler`` (a trio stream each) until SIGINT/SIGTERM."""
    import signal
    from functools import partial

    import trio

    listeners = await trio.open_tcp_listeners(port, host=host, backlog=4096)
    sockname = listeners[0].socket.getsockname()
    print(f"{name} listening on http://{sockname[0]}:{sockname[1]}", flush=True)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.serve_listeners, handler, listeners))
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


async def serve_uvicorn(app: Any, host: str, port: int, **options: Any) -> None:
    """Run ``app`` on uvicorn (quiet); print ``webagents listening on …`` once it accepts."""
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="on", **options
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


def run_webagents(main: Awaitable[None]) -> int:
    """Run a webagents peer's ``main`` on asyncio with quiet logs until SIGINT; 0."""
    import logging

    os.environ.setdefault("WEBAGENTS_LOG_LEVEL", "WARNING")  # no per-request INFO lines
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(main)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        pass
    return 0


def webagents_app(agent: Any, name: str) -> Any:
    """The webagents server app (FastAPI) serving ``agent`` (named ``name``) quietly on loopback."""
    from webagents import create_server

    def resolve(wanted: str) -> Any:
        return agent if wanted == name else None

    # A static agent's @websocket handlers are only routed by the dynamic-agent catch-all
    # (webagents 0.3.9, server/core/app.py), so the agent is also its own dynamic resolver.
    server = create_server(
        agents=[agent],
        dynamic_agents=resolve,
        agent_card=False,
        heartbeat=False,
        quiet=True,
        loopback=True,
    )
    return server.app
