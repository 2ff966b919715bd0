"""``trioagents hub``: run a hub, and manage its tokens and allowlists."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from functools import partial

import trio

from ..config import Config
from ._hub import Hub
from ._serve import serve_hub
from ._store import TOKEN_KINDS, AgentRecord, SQLiteHubStore

__all__ = ["main_hub"]

DEFAULT_DB = "trioagents-hub.db"


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioagents hub",
        description="Run a hub that agents without a public URL dial into "
        "(PortalConnect on /ws, Relay on /v1/ws/agent), or manage its database.",
    )
    parser.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file (default {DEFAULT_DB})")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the hub (the default command)")
    for p in (parser, serve):
        p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
        p.add_argument("--port", type=int, default=None, help="port (default 8000; 0 picks one)")
        p.add_argument("--config", default=None, help="TOML config file")
        p.add_argument(
            "--token",
            action="append",
            type=_pair,
            default=[],
            metavar="AGENT=TOKEN",
            help="register a PortalConnect agent token before serving (repeatable)",
        )
        p.add_argument("--log-level", default="INFO")
    tok = sub.add_parser("token", help="manage tokens").add_subparsers(dest="action", required=True)
    add = tok.add_parser("add", help="store a token: trioagents hub token add NAME TOKEN")
    add.add_argument("name", help="agent name (agent, relay_agent) or app id (relay_app)")
    add.add_argument("token")
    add.add_argument("--kind", choices=sorted(TOKEN_KINDS), default="agent")
    rev = tok.add_parser("revoke", help="forget a token")
    rev.add_argument("token")
    allow = sub.add_parser("allow", help="let a Relay app reach an agent: allow AGENT APP_ID")
    allow.add_argument("agent")
    allow.add_argument("app_id")
    url = sub.add_parser(
        "agent-url", help="route an agent to its public URL when no daemon is online"
    )
    url.add_argument("name")
    url.add_argument("url", help="e.g. http://host:8000/agents/NAME")
    url.add_argument("--agent-token", default=None, help="bearer token the hub presents")
    return parser


async def _manage(args: argparse.Namespace) -> str:
    store = SQLiteHubStore(args.db)
    try:
        if args.command == "token" and args.action == "add":
            await store.add_token(args.token, args.name, args.kind)
            return f"stored {args.kind} token for {args.name!r} in {args.db}"
        if args.command == "token":
            await store.revoke_token(args.token)
            return f"revoked the token in {args.db}"
        if args.command == "allow":
            await store.allow(args.agent, args.app_id)
            return f"app {args.app_id!r} may now reach agent {args.agent!r}"
        await store.put_agent(AgentRecord(args.name, args.url, args.agent_token))
        return f"agent {args.name!r} routes to {args.url} when offline"
    finally:
        await store.aclose()


async def _serve(args: argparse.Namespace, config: Config) -> None:
    store = SQLiteHubStore(args.db)
    for name, token in args.token:
        await store.add_token(token, name, "agent")
    hub = Hub(store, config=config)
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve_hub, hub))
        for url in urls:
            ws = "ws" + url[4:]
            print(f"trioagents hub listening on {url}", flush=True)
            print(f"  daemons (PortalConnect)  {ws}/ws?token=…", flush=True)
            print(f"  Relay agents / apps      {ws}/v1/ws/agent, {ws}/v1/ws/app", flush=True)
            print(
                f"  callers                  POST {url}/agents/NAME/v1/chat/completions", flush=True
            )
            print(f"                           {ws}/agents/NAME/uamp", flush=True)
        print("Press Ctrl+C to stop.", flush=True)


def main_hub(argv: Sequence[str] | None = None) -> int:
    """``trioagents hub [serve|token|allow|agent-url] …``; returns the exit code."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        if args.command in ("token", "allow", "agent-url"):
            print(trio.run(_manage, args), flush=True)
            return 0
        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        config = Config.load(file=args.config, host=args.host, port=args.port)
        trio.run(_serve, args, config)
    except (ValueError, OSError) as exc:
        print(f"trioagents hub: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
