"""``trioagents connect``: serve agents through a hub (PortalConnect or Relay), no public URL."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import trio

from ..agent import Agent
from ._daemon import AgentEntry, PortalConfig, PortalConnect, PortalError

__all__ = ["main_connect"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trioagents connect",
        description="Serve agents through a hub over one outgoing WebSocket (PortalConnect), "
        "or through a Relay (--relay-token).",
    )
    p.add_argument("target", help="MODULE_OR_FILE[:ATTR] holding the agents")
    p.add_argument(
        "--portal-ws-url",
        default=os.environ.get("PORTAL_WS_URL"),
        help="the hub's /ws URL (default: $PORTAL_WS_URL, else wss://roborum.ai/ws)",
    )
    p.add_argument("--token", default=None, help="agent token (also the connection token)")
    p.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="NAME[=TOKEN]",
        help="agent to register (repeatable; default: the first agent with --token)",
    )
    p.add_argument("--reconnect-delay", type=float, default=None, help="backoff base (s)")
    p.add_argument(
        "--max-reconnect-attempts", type=int, default=None, help="0 (default) = infinite"
    )
    p.add_argument("--relay-url", default=None, help="Relay /v1/ws/agent URL (Relay mode)")
    p.add_argument("--relay-token", action="append", default=[], metavar="[AGENT=]rla_TOKEN")
    p.add_argument("--log-level", default="INFO")
    return p


async def _until_signal(run: Any) -> None:
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch)
        await run()
        nursery.cancel_scope.cancel()


def main_connect(argv: Sequence[str] | None = None) -> int:
    """``trioagents connect TARGET --portal-ws-url URL --token T [--agent NAME]``.

    Returns 0 when stopped with Ctrl+C/SIGTERM, 2 for bad options, 3 when the hub refuses
    the credentials (or the daemon gives up).
    """
    from ..cli import load_target

    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    loaded = load_target(args.target)
    agents: list[Agent] = loaded if isinstance(loaded, list) else list(loaded.agents.values())
    by_name = {a.name: a for a in agents}
    try:
        if args.relay_token:
            return _relay(args, agents, by_name)
        entries = []
        for spec in args.agent:
            name, _, token = spec.partition("=")
            if name not in by_name:
                raise ValueError(f"{args.target!r} has no agent named {name!r}")
            entries.append(AgentEntry(name, token or args.token))
        if not entries and not args.token:
            raise ValueError("give --token (and optionally --agent NAME[=TOKEN])")
        cfg: dict[str, Any] = {"agents": entries, "token": args.token}
        if args.portal_ws_url:
            cfg["portal_ws_url"] = args.portal_ws_url
        if args.reconnect_delay is not None:
            cfg["reconnect_delay"] = args.reconnect_delay
        if args.max_reconnect_attempts is not None:
            cfg["max_reconnect_attempts"] = args.max_reconnect_attempts
        portal = PortalConnect(PortalConfig.from_dict(cfg), agents)
    except ValueError as exc:
        print(f"trioagents connect: {exc}", file=sys.stderr)
        return 2
    print(
        f"trioagents connect: serving {', '.join(e.name for e in portal.entries)} "
        f"via {portal.config.portal_ws_url}",
        flush=True,
    )
    try:
        trio.run(_until_signal, portal.run)
    except PortalError as exc:
        print(f"trioagents connect: {exc.message}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 0
    return 0


def _relay(args: argparse.Namespace, agents: list[Agent], by_name: dict[str, Agent]) -> int:
    from ..relay import RelayConfig, RelayError, open_relay

    pairs = []
    for spec in args.relay_token:
        name, sep, token = spec.partition("=")
        if not sep:
            name, token = agents[0].name, spec
        if name not in by_name:
            raise ValueError(f"{args.target!r} has no agent named {name!r}")
        cfg = RelayConfig(token=token, **({"url": args.relay_url} if args.relay_url else {}))
        pairs.append((by_name[name], cfg))

    async def run() -> None:
        async with open_relay(pairs):
            await trio.sleep_forever()

    try:
        trio.run(_until_signal, run)
    except RelayError as exc:
        print(f"trioagents connect: {exc.message}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 0
    return 0
