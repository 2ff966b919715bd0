"""Workload 7, idle memory: server RSS per idle connection and per idle multiplexed session.

Usage::

    python -m benchmarks.memory [--smoke] [--runs N] [--targets trioagents webagents]
                                [--n 5000] [--deflate] [--json PATH]

Per run and mode, a fresh server process (CPU 0) and this process as the client (the
``websockets`` library on uvloop, CPU 1):

* ``per_connection``: N WebSocket connections to the UAMP endpoint, one session each
  (``session.create`` → ``session.created``); trioagents at ``/agents/bench/uamp``, the
  webagents peer at ``/bench/uamp``;
* ``multiplexed`` (not the peer: webagents keeps one session per socket, a second
  ``session.create`` replaces the first): one connection, N sessions (the server is started
  with ``TRIOAGENTS_MAX_SESSIONS_PER_SOCKET`` = N).

The ``floor`` target is two servers here: the raw trio + wsproto floor (``floor_ws.py``) and a
bare ASGI app on Hypercorn's trio worker (``floor_hypercorn.py``, column ``hypercorn``), the
server trioagents runs on, so its share of trioagents' figure reads off directly.

Steps: warm-up (10 connections with a session each, opened then closed), baseline ``VmRSS``
(``/proc/PID/status``), open all and wait until every ``session.created`` has arrived, wait
0.5 s, read ``VmRSS`` → ``rss_kib_per_connection`` / ``rss_kib_per_session`` =
(RSS - baseline) / N; then close everything, wait until the server's sockets are back to the
baseline (bounded), read ``VmRSS`` again (``rss_after_close_kib``, and the share of the growth
given back). Clients offer no permessage-deflate unless ``--deflate`` (compression keeps zlib
state per connection on both servers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio

from benchmarks import _aux as aux

WORKLOAD = "memory"
AGENT = "bench"
_HERE = os.path.dirname(os.path.abspath(__file__))
_WARM = 10
_OPEN_CONCURRENCY = 200  # handshakes in flight (the listen backlog is the limit otherwise)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload's own options."""
    parser.add_argument("--n", type=int, default=5000, help="connections / sessions (5000)")
    parser.add_argument(
        "--deflate", action="store_true", help="clients offer permessage-deflate (default off)"
    )


def _create(n: int) -> str:
    import orjson

    return orjson.dumps(
        {"type": "session.create", "event_id": f"evt_{n}", "uamp_version": "1.0"}
    ).decode()


async def _connect(url: str, headers: dict[str, str], deflate: bool) -> Any:
    """One WebSocket client: no pings, unbounded frames and queue, ``deflate`` or no compression."""
    import websockets

    return await websockets.connect(
        url,
        max_size=None,
        compression="deflate" if deflate else None,
        open_timeout=60,
        additional_headers=headers,
        ping_interval=None,
        max_queue=None,
    )


async def _open_session(url: str, headers: dict[str, str], deflate: bool, n: int) -> Any:
    """One connection with one acknowledged session; returns the open client."""
    import orjson

    ws = await _connect(url, headers, deflate)
    await ws.send(_create(n))
    while orjson.loads(await ws.recv())["type"] != "session.created":
        pass
    return ws


async def _settle_sockets(pid: int, target: int | None, bound: float) -> None:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        count = aux.socket_count(pid)
        if count is None or target is None or count <= target:
            return
        await asyncio.sleep(0.1)


async def _per_connection(
    url: str, headers: dict[str, str], pid: int, n: int, deflate: bool
) -> dict[str, float | int | None]:
    sem = asyncio.Semaphore(_OPEN_CONCURRENCY)

    async def one(i: int) -> Any:
        async with sem:
            return await _open_session(url, headers, deflate, i)

    async def close_all(clients: list[Any]) -> None:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    await asyncio.sleep(0.2)
    idle_sockets = aux.socket_count(pid)
    await close_all(await asyncio.gather(*(one(i) for i in range(_WARM))))
    await _settle_sockets(pid, idle_sockets, 10)
    await asyncio.sleep(0.5)
    base = aux.rss_kib(pid)
    t0 = time.monotonic()
    clients = await asyncio.gather(*(one(i) for i in range(n)))
    open_s = time.monotonic() - t0
    await asyncio.sleep(0.5)
    opened = aux.rss_kib(pid)
    sockets_open = aux.socket_count(pid)
    await close_all(clients)
    await _settle_sockets(pid, idle_sockets, 20)
    await asyncio.sleep(0.5)
    after = aux.rss_kib(pid)
    return _figures(base, opened, after, n, "connection") | {
        "connections": len(clients),
        "server_sockets_open": sockets_open,
        "open_all_s": round(open_s, 3),
    }


async def _multiplexed(
    url: str, headers: dict[str, str], pid: int, n: int, deflate: bool
) -> dict[str, float | int | None]:
    import orjson

    async def sessions(count: int, offset: int) -> Any:
        ws = await _connect(url, headers, deflate)
        created = 0

        async def send_all() -> None:
            for i in range(count):
                await ws.send(_create(offset + i))

        sender = asyncio.create_task(send_all())
        while created < count:
            ev = orjson.loads(await ws.recv())
            if ev["type"] == "session.created":
                created += 1
            elif ev["type"] in ("session.error", "error"):
                raise RuntimeError(f"session {created + 1}: {ev}")
        await sender
        return ws

    await asyncio.sleep(0.2)
    idle_sockets = aux.socket_count(pid)
    warm = await sessions(_WARM, 0)
    await warm.close()
    await _settle_sockets(pid, idle_sockets, 10)
    await asyncio.sleep(0.5)
    base = aux.rss_kib(pid)
    t0 = time.monotonic()
    ws = await sessions(n, _WARM)
    open_s = time.monotonic() - t0
    await asyncio.sleep(0.5)
    opened = aux.rss_kib(pid)
    await ws.close()
    await _settle_sockets(pid, idle_sockets, 20)
    await asyncio.sleep(0.5)
    after = aux.rss_kib(pid)
    return _figures(base, opened, after, n, "session") | {
        "sessions": n,
        "open_all_s": round(open_s, 3),
    }


def _figures(
    base: int | None, opened: int | None, after: int | None, n: int, unit: str
) -> dict[str, float | int | None]:
    if base is None or opened is None or after is None:
        raise RuntimeError("cannot read the server's VmRSS")
    grown = opened - base
    return {
        f"rss_kib_per_{unit}": round(grown / n, 3),
        "rss_baseline_kib": base,
        "rss_open_kib": opened,
        "rss_after_close_kib": after,
        "rss_returned_pct": round(100 * (opened - after) / grown, 1) if grown > 0 else None,
    }


_FLOORS = {
    "floor": ("floor_ws.py", "bare trio + wsproto (floor_ws.py)"),
    "hypercorn": (
        "floor_hypercorn.py",
        "bare ASGI app on Hypercorn's trio worker (floor_hypercorn.py): Hypercorn's own share",
    ),
}
"""The floors of this workload: the ``floor`` target measures both."""


def _server(kind: str, mode: str, n: int) -> tuple[list[str], dict[str, str], str, str]:
    """(command, env, UAMP path, note) of the server under test."""
    root = os.path.dirname(_HERE)
    env = {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if kind == "trioagents":
        cmd = [
            sys.executable, "-m", "trioagents.cli", "serve",
            f"{os.path.join(_HERE, 'uamp_sessions.py')}:bench_agent",
            "--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING",
        ]  # fmt: skip
        if mode == "multiplexed":
            env["TRIOAGENTS_MAX_SESSIONS_PER_SOCKET"] = str(n + _WARM)
        return cmd, env, f"/agents/{AGENT}/uamp", "trioagents serve (hypercorn trio worker)"
    if kind in _FLOORS:
        script, note = _FLOORS[kind]
        return [sys.executable, os.path.join(_HERE, script), "--port", "0"], env, "/uamp", note
    cmd = [sys.executable, os.path.join(_HERE, "peer_webagents.py"), "--port", "0"]
    return cmd, env, f"/{AGENT}/uamp", "webagents create_server on uvicorn"


async def _one_run(kind: str, mode: str, args: argparse.Namespace) -> dict[str, float | int | None]:
    cmd, env, path, _ = _server(kind, mode, args.n)
    with trio.fail_after(120 + args.n * 0.05):
        async with aux.spawn(cmd, env=env, cpu=aux.SERVER_CPU) as server:
            url = "ws" + server.url.removeprefix("http") + path
            fn = _per_connection if mode == "per_connection" else _multiplexed
            return await aux.run_asyncio(
                partial(
                    fn,
                    url,
                    {"Authorization": "Bearer bench"},
                    server.process.pid,
                    args.n,
                    args.deflate,
                )
            )


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run both modes for each applicable target; one result entry per (target, mode)."""
    if args.smoke:
        args.n = min(args.n, 50)
    results = []
    kinds = [k for t in args.targets for k in (("floor", "hypercorn") if t == "floor" else (t,))]
    for kind in kinds:
        for mode in ("per_connection", "multiplexed"):
            params = {
                "mode": mode,
                "n": args.n,
                "sessions_per_connection": 1 if mode == "per_connection" else args.n,
                "permessage_deflate": args.deflate,
                "server_cpu": aux.SERVER_CPU,
                "load_cpu": aux.LOAD_CPU,
            }
            workload = f"{WORKLOAD}_{mode}"
            if kind == "webagents" and mode == "multiplexed":
                results.append(
                    aux.skipped(
                        workload,
                        kind,
                        params,
                        "webagents 0.3.9 keeps one UAMP session per socket (a second "
                        "session.create replaces the first; events carry no routing)",
                    )
                )
                continue
            if why := aux.unavailable(kind):
                results.append(aux.skipped(workload, kind, params, why))
                continue
            runs, errors, pin_note = aux.repeat_runs(
                args.runs, lambda _n, kind=kind, mode=mode: trio.run(_one_run, kind, mode, args)
            )
            notes = [
                pin_note,
                f"server pinned to CPU {aux.SERVER_CPU}; a fresh server process per run",
                _server(kind, mode, args.n)[3],
                "RSS = VmRSS from /proc/PID/status; per-unit figure = (open - baseline) / n",
            ]
            if kind == "trioagents":
                notes.append(aux.gc_note())
            results.append(aux.entry(workload, kind, params, runs, errors, notes))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.memory``."""
    return aux.standalone_main(__doc__ or "", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
