"""The ``trioagents`` command.

``trioagents serve [TARGET] [--host --port --agent …]`` serves agents;
``trioagents acp [TARGET] [--agent NAME]`` speaks ACP over stdio (for editors);
``trioagents hub …`` runs the hub dial-out agents connect to;
``trioagents connect TARGET --portal-ws-url URL --token T`` runs such a daemon;
``trioagents bench …`` runs the benchmark suite of a checkout (``python -m benchmarks …``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import logging
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio

from .agent import Agent
from .config import Config
from .server import AgentServer, serve

__all__ = ["main", "load_target", "load_serve_target"]

DEFAULT_TARGET = "trioagents._example:agent"


def _import(target: str) -> tuple[Any, str]:
    spec, _, attr = target.partition(":")
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        if not path.exists():
            raise SystemExit(f"trioagents: no such file: {spec}")
        # A private module name: a target called http.py or json.py must not replace the
        # real module for the rest of the process.
        mod_name = f"_trioagents_target_{path.stem}"
        mod_spec = importlib.util.spec_from_file_location(mod_name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise SystemExit(f"trioagents: cannot import {spec}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_name] = module
        # The file's siblings stay importable, behind everything already on the path.
        sys.path.append(str(path.parent.resolve()))
        mod_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(spec)
        except ImportError as exc:
            raise SystemExit(f"trioagents: cannot import {spec!r}: {exc}") from None
    if attr and not hasattr(module, attr):
        raise SystemExit(f"trioagents: {spec!r} has no attribute {attr!r}")
    return module, attr


def _is_connection_agent(value: Any) -> bool:
    from .connections import ConnectionAgent

    return (
        isinstance(value, type)
        and issubclass(value, ConnectionAgent)
        and value is not ConnectionAgent
    )


def _agents_of(value: Any, target: str) -> list[Agent] | AgentServer:
    if callable(value) and not isinstance(value, (Agent, AgentServer, type)):
        try:
            inspect.signature(value).bind()
        except TypeError:
            raise SystemExit(
                f"trioagents: {target!r} is a function that needs arguments; "
                "expected an Agent, a list of them, or a factory taking none"
            ) from None
        value = value()
    if isinstance(value, Agent):
        return [value]
    if isinstance(value, AgentServer):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, Agent) for v in value):
        return list(value)
    return []


def load_target(target: str) -> list[Agent] | AgentServer:
    """Load agents from ``module[:attr]`` or ``path/to/file.py[:attr]``.

    Without ``attr``, takes ``agents``, then ``agent``, then ``app``, then every ``Agent`` the
    module defines. The value may be an ``Agent``, a list of them, an ``AgentServer``, or a
    function returning one of those.

    Raises:
        SystemExit: the target cannot be imported or holds no agent (with a clear message).
    """
    loaded, _ = load_serve_target(target)
    if not loaded:
        raise SystemExit(f"trioagents: {target!r} holds no Agent")
    return loaded


def load_serve_target(target: str) -> tuple[list[Agent] | AgentServer, list[type[Any]]]:
    """Load what ``trioagents serve TARGET`` serves: agents and connection-agent classes.

    ``attr`` may name an agent, a list of agents, an ``AgentServer``, a factory, a
    :class:`~trioagents.connections.ConnectionAgent` subclass, or a list mixing agents and
    connection-agent classes. Without ``attr``: the agents as :func:`load_target` finds them,
    plus ``connection_agents`` if the module defines it, else the ``ConnectionAgent``
    subclasses the module itself defines.

    Raises:
        SystemExit: the target cannot be imported or holds neither (with a clear message).
    """
    module, attr = _import(target)
    connection_agents: list[type[Any]] = []
    if attr:
        value: Any = getattr(module, attr)
        if _is_connection_agent(value):
            return [], [value]
        if isinstance(value, (list, tuple)):
            connection_agents = [v for v in value if _is_connection_agent(v)]
            value = [v for v in value if not _is_connection_agent(v)]
    else:
        value = next(
            (getattr(module, n) for n in ("agents", "agent", "app") if hasattr(module, n)), None
        )
        if value is None:
            value = [v for v in vars(module).values() if isinstance(v, Agent)]
        declared = getattr(module, "connection_agents", None)
        if declared is not None:
            connection_agents = [v for v in declared if _is_connection_agent(v)]
        else:
            connection_agents = [
                v
                for v in vars(module).values()
                if _is_connection_agent(v) and v.__module__ == module.__name__
            ]
    loaded = _agents_of(value, target)
    if not loaded and not connection_agents:
        raise SystemExit(f"trioagents: {target!r} holds no Agent")
    return loaded, connection_agents


def _transports(a2a_db: str | None) -> tuple[type, ...]:
    # A served agent keeps its A2A tasks across restarts: SQLite unless asked otherwise.
    from .transports import DEFAULT_TRANSPORTS, A2ATransport
    from .transports.a2a import DB_ENV

    db = a2a_db or os.environ.get(DB_ENV) or "trioagents-a2a.db"
    return tuple(
        A2ATransport.with_options(db=db) if t is A2ATransport else t for t in DEFAULT_TRANSPORTS
    )


def _print_urls(server: AgentServer, urls: list[str]) -> None:
    for url in urls:
        ws_url = "ws" + url[4:]
        print(f"trioagents listening on {url}", flush=True)
        for name in server.agents:
            base = f"/agents/{name}"
            print(f"  agent {name!r}:", flush=True)
            print(f"    chat completions  POST {url}{base}/v1/chat/completions", flush=True)
            print(f"    UAMP              {ws_url}{base}/uamp", flush=True)
            print(f"    OpenAI Realtime   {ws_url}{base}/v1/realtime", flush=True)
            print(f"    A2A               {url}{base}/a2a", flush=True)
            print(f"    ACP               {url}{base}/acp", flush=True)
            print(f"    chat page         {url}{base}/chat", flush=True)
        for entry in server.connections.entries:
            print(
                f"  connection agent {entry.name!r}: {ws_url}/agents/{entry.name}/{{instance}}",
                flush=True,
            )
        if server.runtime.default_agent is not None:
            print(
                f"  single-agent mode: {url}/v1/chat/completions (any model), {ws_url}/uamp, "
                f"chat page {url}/",
                flush=True,
            )
    print("Press Ctrl+C to stop.", flush=True)


async def _serve(server: AgentServer) -> None:
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, server))
        _print_urls(server, urls)


def _bench(argv: list[str]) -> int:
    """``trioagents bench …``: ``python -m benchmarks …`` in the current directory.

    The suite lives in a checkout's ``benchmarks/``, not in the installed package.
    """
    if not (Path.cwd() / "benchmarks" / "__main__.py").is_file():
        print(
            "trioagents bench: no benchmarks/ directory here. The benchmark suite is not part "
            "of the installed package: run `trioagents bench` from the root of a trioagents "
            "checkout (pip install -e '.[bench]' for the peer and the load generators).",
            file=sys.stderr,
        )
        return 2
    import subprocess

    return subprocess.call([sys.executable, "-m", "benchmarks", *argv])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trioagents`` console script."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["acp"]:
        # ACP over stdio owns stdout for the protocol and has its own options.
        from .transports.acp import main_acp

        return main_acp(args_list[1:])
    if args_list[:1] == ["hub"]:
        from .hub import main_hub

        return main_hub(args_list[1:])
    if args_list[:1] == ["connect"]:
        from .portal import main_connect

        return main_connect(args_list[1:])
    if args_list[:1] == ["bench"]:
        return _bench(args_list[1:])
    parser = argparse.ArgumentParser(prog="trioagents", description="Serve trio agents.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="serve agents over HTTP and WebSocket")
    p.add_argument(
        "target",
        nargs="?",
        default=DEFAULT_TARGET,
        help="MODULE_OR_FILE[:ATTR] (default: the bundled example)",
    )
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=None, help="port to bind (default 8000; 0 picks one)"
    )
    p.add_argument("--agent", default=None, help="default agent, also served at the root")
    p.add_argument("--config", default=None, help="TOML config file")
    p.add_argument(
        "--a2a-db",
        default=None,
        help="SQLite file for A2A tasks (default: $TRIOAGENTS_A2A_DB or trioagents-a2a.db; "
        "':memory:' keeps them in memory)",
    )
    p.add_argument("--log-level", default="INFO")
    sub.add_parser(
        "hub",
        help="run the hub that dial-out agents connect to: trioagents hub [--port --db --token]",
        add_help=False,
    )
    sub.add_parser(
        "connect",
        help="run a daemon that dials out to a hub: trioagents connect TARGET --portal-ws-url",
        add_help=False,
    )
    sub.add_parser(
        "bench",
        help="run the benchmark suite from a checkout: trioagents bench WORKLOAD [--smoke --json]",
        add_help=False,
    )
    sub.add_parser(
        "acp",
        help="serve one agent over ACP on stdio (for editors): trioagents acp [TARGET] [--agent]",
        add_help=False,
    )
    args = parser.parse_args(args_list)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "serve":
        try:
            config = Config.load(
                file=args.config, host=args.host, port=args.port, default_agent=args.agent
            )
            loaded, connection_agents = load_serve_target(args.target)
            if isinstance(loaded, AgentServer):
                server = loaded
            else:
                server = AgentServer(
                    loaded,
                    config=config,
                    transports=_transports(args.a2a_db),
                    connection_agents=connection_agents,
                )
        except (ValueError, OSError) as exc:
            # Bad options are the user's to fix: one line, no traceback.
            print(f"trioagents: {exc}", file=sys.stderr)
            return 2
        try:
            trio.run(_serve, server)
        except KeyboardInterrupt:  # Ctrl+C before the signal handler was installed
            return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
