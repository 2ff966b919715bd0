"""``trioagents hub``: run a hub, and manage its tokens and allowlists.

Auth flags of ``serve`` (PROTOCOLS.md §10, §2):

* callers — ``--api-key NAME=KEY`` (repeatable; ``NAME`` is the caller's ``sub``),
  ``--trusted-issuer URL`` (repeatable; JWTs of that issuer, audience
  ``{public_url}/agents/{name}`` or the bare name, or ``--audience``), ``--jwks-uri ISS=URI``,
  ``--require-auth`` (refuse anonymous callers; otherwise only presented credentials are
  checked), ``--sign-responses`` (the hub signs what it relays: keys of the agents registered at start
  are loaded from / generated into ``--keys-dir/{agent}.pem``, others live in memory),
  ``--public-url``;
* daemons — ``--daemon-issuer URL`` (repeatable): PortalConnect tokens may also be AOAuth JWTs
  of that issuer whose ``sub`` is the agent, with audience ``--daemon-audience`` (default: the
  public URL, else ``trioagents-hub``); stored tokens (``--token``, ``token add``) keep working.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from functools import partial

import trio

from ..auth import AuthService, SigningKey
from ..config import Config
from ._hub import Hub
from ._serve import serve_hub
from ._store import (
    TOKEN_KINDS,
    AgentRecord,
    ChainTokenVerifier,
    JWTTokenVerifier,
    SQLiteHubStore,
    StoreTokenVerifier,
    TokenVerifier,
)

__all__ = ["main_hub", "hub_auth", "hub_verifier"]

DEFAULT_DB = "trioagents-hub.db"
DEFAULT_DAEMON_AUDIENCE = "trioagents-hub"


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _auth_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("auth (callers and daemons)")
    g.add_argument(
        "--api-key",
        action="append",
        type=_pair,
        default=[],
        metavar="NAME=KEY",
        help="a caller API key; NAME is the caller's sub (repeatable)",
    )
    g.add_argument(
        "--trusted-issuer",
        action="append",
        default=[],
        metavar="URL",
        help="accept callers' JWTs of this issuer (repeatable)",
    )
    g.add_argument(
        "--jwks-uri",
        action="append",
        type=_pair,
        default=[],
        metavar="ISS=URI",
        help="where an issuer's keys are (default: its openid-configuration / jwks.json)",
    )
    g.add_argument(
        "--audience",
        action="append",
        default=None,
        metavar="AUD",
        help="accepted caller JWT audiences (default: {public_url}/agents/{name} or the name)",
    )
    g.add_argument(
        "--require-auth", action="store_true", help="refuse callers without a credential"
    )
    g.add_argument("--sign-responses", action="store_true", help="sign relayed responses (§10)")
    g.add_argument("--keys-dir", default=None, help="signing keys directory ({agent}.pem)")
    g.add_argument("--public-url", default=None, help="the hub's public base URL")
    g.add_argument(
        "--daemon-issuer",
        action="append",
        default=[],
        metavar="URL",
        help="accept PortalConnect JWTs of this issuer (sub = agent name; repeatable)",
    )
    g.add_argument(
        "--daemon-audience",
        action="append",
        default=None,
        metavar="AUD",
        help=f"accepted daemon JWT audiences (default: the public URL, else "
        f"{DEFAULT_DAEMON_AUDIENCE!r})",
    )


def hub_auth(
    args: argparse.Namespace, signing_keys: Mapping[str, SigningKey] | None = None
) -> AuthService | None:
    """The caller :class:`~trioagents.auth.AuthService` the ``serve`` flags describe, or None
    when no caller auth flag is given (anyone may call). ``signing_keys``: agent → key loaded
    from ``--keys-dir`` (agents that appear later sign with a key generated in memory)."""
    if not (args.api_key or args.trusted_issuer or args.require_auth or args.sign_responses):
        return None
    return AuthService(
        required=args.require_auth,
        api_keys={key: name for name, key in args.api_key},
        trusted_issuers=args.trusted_issuer,
        jwks_uris=dict(args.jwks_uri),
        audiences=args.audience,
        public_url=args.public_url,
        sign_responses=args.sign_responses,
        signing_keys=signing_keys,
        keys_dir=args.keys_dir,
    )


def hub_verifier(args: argparse.Namespace, store: SQLiteHubStore) -> TokenVerifier | None:
    """The daemon/Relay token verifier the ``serve`` flags describe: stored tokens, chained
    with a :class:`~trioagents.hub.JWTTokenVerifier` when ``--daemon-issuer`` is given (None:
    the hub's default, stored tokens only)."""
    if not args.daemon_issuer:
        return None
    audiences = args.daemon_audience or [args.public_url or DEFAULT_DAEMON_AUDIENCE]
    return ChainTokenVerifier(
        StoreTokenVerifier(store),
        JWTTokenVerifier(
            trusted_issuers=args.daemon_issuer,
            audiences=audiences,
            jwks_uris=dict(args.jwks_uri),
        ),
    )


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
        _auth_flags(p)
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
    keys: dict[str, SigningKey] = {}
    if args.sign_responses and args.keys_dir:
        for record in await store.list_agents():
            path = os.path.join(args.keys_dir, f"{record.name}.pem")
            keys[record.name] = await trio.to_thread.run_sync(SigningKey.load_or_generate, path)
    hub = Hub(store, config=config, auth=hub_auth(args, keys), verifier=hub_verifier(args, store))
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
        if args.public_url:
            config = config.replace(public_url=args.public_url)
        trio.run(_serve, args, config)
    except (ValueError, OSError) as exc:
        print(f"trioagents hub: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
