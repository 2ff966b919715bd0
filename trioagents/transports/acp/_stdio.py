"""ACP over stdio (PROTOCOLS.md §8.1): newline-delimited JSON-RPC, stdout only protocol.

``trioagents acp TARGET`` (and ``python -m trioagents.transports.acp TARGET``) serve one agent
to the editor that launched the process. Logs go to stderr; the process exits when stdin
closes.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import orjson
import trio

from ...agent import Agent
from ...config import Config
from ...protocols import acp
from .._runtime import Runtime
from ._engine import AcpConnection, Outgoing

__all__ = ["serve_acp_stdio", "main_acp"]

log = logging.getLogger("trioagents.transports.acp")

_READ_SIZE = 65536


async def serve_acp_stdio(
    agent: Agent,
    *,
    stdin: trio.abc.ReceiveStream | None = None,
    stdout: trio.abc.SendStream | None = None,
    config: Config | None = None,
    runtime: Runtime | None = None,
) -> None:
    """Serve ``agent`` over ACP on a byte stream pair (default: this process's stdio).

    Args:
        agent: the agent every session talks to.
        stdin: where requests come from (default: ``FdStream`` on a duplicate of fd 0).
        stdout: where replies go (default: ``FdStream`` on a duplicate of fd 1).
        config: limits and time bounds (default ``Config()``); ``max_body_size`` bounds a line.
        runtime: a ready runtime (ids, clock, stats) instead of one built from ``config``.

    Returns when ``stdin`` reaches end of file, after every prompt has been cancelled and
    queued replies were written. Cancellation stops everything at once.
    """
    if runtime is None:
        runtime = Runtime(config=config or Config(), agents={agent.name: agent})
    own: list[trio.lowlevel.FdStream] = []
    if stdin is None:
        stdin = trio.lowlevel.FdStream(os.dup(0))
        own.append(stdin)
    if stdout is None:
        stdout = trio.lowlevel.FdStream(os.dup(1))
        own.append(stdout)
    out = stdout

    async def write(batch: list[Outgoing]) -> None:
        await out.send_all(b"".join(orjson.dumps(o.message) + b"\n" for o in batch))

    conn = AcpConnection(runtime, agent, write, transport="acp-stdio")
    send_ch, recv_ch = trio.open_memory_channel[Any](runtime.config.turn_queue_size)
    decoder = acp.LineDecoder(runtime.config.max_body_size)

    async def read() -> None:
        async with send_ch:
            while True:
                try:
                    data = bytes(await stdin.receive_some(_READ_SIZE))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""
                for item in decoder.feed(data) if data else decoder.finish():
                    await send_ch.send(item)
                if not data:
                    return

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            # The engine ends at end of input, or earlier if it closes itself (peer stuck,
            # stdout broken): then the reader is cancelled too.
            await conn.serve(recv_ch)
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(runtime.config.cleanup_timeout):
            for stream in own:
                await stream.aclose()


def main_acp(argv: Sequence[str] | None = None) -> int:
    """``trioagents acp TARGET [--agent NAME] [--config FILE] [--log-level LEVEL]``.

    Loads the agents like ``trioagents serve`` and serves one of them over stdio.

    Returns:
        The process exit code.
    """
    from ...cli import DEFAULT_TARGET, load_target
    from ...server import AgentServer

    parser = argparse.ArgumentParser(
        prog="trioagents acp", description="Serve an agent over ACP on stdio (for editors)."
    )
    parser.add_argument(
        "target",
        nargs="?",
        default=DEFAULT_TARGET,
        help="MODULE_OR_FILE[:ATTR] (default: the bundled example)",
    )
    parser.add_argument("--agent", default=None, help="which agent, when the target has several")
    parser.add_argument("--config", default=None, help="TOML config file")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    # stdout carries the protocol: every log line goes to stderr.
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    loaded = load_target(args.target)
    if isinstance(loaded, AgentServer):
        agents = list(loaded.agents.values())
        config = loaded.config
    else:
        agents = loaded
        config = Config.load(file=args.config)
    if args.agent is not None:
        chosen = [a for a in agents if a.name == args.agent]
        if not chosen:
            names = ", ".join(a.name for a in agents)
            print(f"trioagents acp: no agent named {args.agent!r} (have: {names})", file=sys.stderr)
            return 2
        agent = chosen[0]
    elif len(agents) == 1:
        agent = agents[0]
    else:
        names = ", ".join(a.name for a in agents)
        print(f"trioagents acp: several agents ({names}); pick one with --agent", file=sys.stderr)
        return 2

    async def run() -> None:
        try:
            await serve_acp_stdio(agent, config=config)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(config.cleanup_timeout):
                await agent.aclose()

    trio.run(run)
    return 0
