"""The Hypercorn floor: what Hypercorn's trio worker alone costs per WebSocket.

Usage::

    python benchmarks/floor_hypercorn.py --port 0

A bare ASGI app (no framework, any path) on ``hypercorn.trio.serve``, configured as
``trioagents serve`` configures it (no access log, backlog 2048, no WebSocket pings): it
accepts every WebSocket and answers each ``session.create`` with ``session.created`` (a new
``session_id`` each time), nothing else. The idle-memory workload measures it beside
trioagents (which runs on this same server) and the raw trio + wsproto floor, so the part of
trioagents' memory per connection that is Hypercorn's reads off directly. Prints ``hypercorn
listening on http://127.0.0.1:PORT`` and serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from itertools import count
from pathlib import Path
from typing import Any

import orjson
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serving import add_server_arguments

_ids = count(1)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI app: lifespan, and WebSockets answering ``session.create``."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        event = orjson.loads(message.get("text") or message.get("bytes") or b"{}")
        if event.get("type") == "session.create":
            reply = {"type": "session.created", "session_id": f"sess_{next(_ids)}"}
            await send({"type": "websocket.send", "text": orjson.dumps(reply).decode()})


async def main_async(host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; print the ``listening on`` line once bound."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.backlog = 2048
    config.websocket_ping_interval = None
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(serve, app, config)  # type: ignore[arg-type]
            print(f"hypercorn listening on {binds[0]}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    """Parse ``--host``/``--port`` and serve."""
    p = argparse.ArgumentParser(description="bare Hypercorn WebSocket floor (idle memory)")
    add_server_arguments(p)
    args = p.parse_args(argv)
    trio.run(main_async, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
