"""Workload 5, the PortalConnect hop: client → hub → daemon → model vs client → server → model.

Usage::

    python -m benchmarks.portal_hop [--smoke] [--runs N] [--window 5] [--concurrency 50]
                                    [--words 20] [--json PATH]

Paths, each with fresh processes per run:

* ``hub``: ``trioagents hub --port 0 --token bench=…`` (CPU 0) and ``trioagents connect
  benchmarks/uamp_sessions.py:bench_agent --portal-ws-url ws://…/ws --token …`` (the daemon,
  CPU 0 too: this machine has two cores and the load generator has the other); callers
  ``POST {hub}/agents/bench/v1/chat/completions``;
* ``direct``: ``trioagents serve benchmarks/uamp_sessions.py:bench_agent`` (CPU 0); callers
  ``POST {server}/agents/bench/v1/chat/completions``.

The agent is the suite's mock model: an instant burst of ``--words`` (default 20) one-word
deltas per turn (``TRIOAGENTS_BENCH_WORDS``). The load generator (this process, aiohttp on
uvloop, CPU 1) runs ``--concurrency`` callers, each doing streaming Chat Completions turns back
to back over a keep-alive connection. After a warm-up, the turns that end inside the window
count: every one is verified (the content deltas concatenated equal the expected reply).
Reported: time to first delta and turn time (p50/p99, from sending the request), model deltas
delivered per second (words of verified turns / window), SSE content frames per second, and CPU
per delta of the serving processes over the window (hub + daemon, each also alone; the server
on the direct path) from ``/proc/PID/stat``. Only trioagents: the webagents peer has no hub.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio

from benchmarks import _aux as aux
from benchmarks.uamp_sessions import WORDS_ENV, reply_text

WORKLOAD = "portal_hop"
AGENT = "bench"
TOKEN = "tok-bench-hop"
_HERE = os.path.dirname(os.path.abspath(__file__))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload's own options."""
    parser.add_argument(
        "--concurrency", type=int, default=50, help="concurrent callers (default 50)"
    )
    parser.add_argument("--words", type=int, default=20, help="words per reply (default 20)")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of load before the window (1)"
    )


async def _load(
    url: str,
    pids: dict[str, int],
    concurrency: int,
    words: int,
    warmup: float,
    window: float,
) -> dict[str, float | int | None]:
    """``concurrency`` callers doing turns for warm-up + window; figures of the window."""
    import aiohttp
    import orjson

    expected = reply_text(words)
    endpoint = f"{url}/agents/{AGENT}/v1/chat/completions"
    body = orjson.dumps(
        {"model": AGENT, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    )
    headers = {"Content-Type": "application/json"}
    # (end instant, time to first delta, turn time, words, frames, verified)
    turns: list[tuple[float, float | None, float, int, int, bool]] = []
    errors: list[str] = []
    stop = False

    async def caller(http: Any) -> None:
        while not stop:
            t0 = time.monotonic()
            first = None
            frames = 0
            text: list[str] = []
            ok = False
            try:
                async with http.post(endpoint, data=body, headers=headers) as resp:
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}: {(await resp.text())[:200]}")
                    async for line in resp.content:
                        if not line.startswith(b"data: "):
                            continue
                        data = line[6:].strip()
                        if data == b"[DONE]":
                            ok = True
                            break
                        chunk = orjson.loads(data)
                        if "error" in chunk:
                            raise RuntimeError(f"error chunk: {chunk['error']}")
                        for choice in chunk.get("choices") or ():
                            content = (choice.get("delta") or {}).get("content")
                            if content:
                                if first is None:
                                    first = time.monotonic() - t0
                                frames += 1
                                text.append(content)
            except (aiohttp.ClientError, RuntimeError, ValueError) as exc:
                if len(errors) < 10:
                    errors.append(f"{type(exc).__name__}: {exc}")
            end = time.monotonic()
            verified = ok and "".join(text) == expected
            turns.append((end, first, end - t0, words if verified else 0, frames, verified))

    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks = [asyncio.create_task(caller(http)) for _ in range(concurrency)]
        await asyncio.sleep(warmup)
        t_start = time.monotonic()
        cpu0 = {k: aux.process_cpu(p) for k, p in pids.items()}
        await asyncio.sleep(window)
        cpu1 = {k: aux.process_cpu(p) for k, p in pids.items()}
        t_end = time.monotonic()
        stop = True
        await asyncio.gather(*tasks)
    in_window = [t for t in turns if t_start <= t[0] <= t_end]
    good = [t for t in in_window if t[5]]
    span = t_end - t_start
    delivered = sum(t[3] for t in good)
    out: dict[str, float | int | None] = {
        "turns": len(in_window),
        "failed_turns": len(in_window) - len(good),
        "failed_turns_outside_window": sum(1 for t in turns if not t[5])
        - (len(in_window) - len(good)),
        "deltas_per_s": round(delivered / span, 1),
        "frames_per_s": round(sum(t[4] for t in good) / span, 1),
        "turns_per_s": round(len(good) / span, 1),
    }
    out |= aux.latency_ms([t[1] for t in good if t[1] is not None], "ttfd")
    out |= aux.latency_ms([t[2] for t in good], "turn")
    total = 0.0
    for k in pids:
        c0, c1 = cpu0[k], cpu1[k]
        if c0 is None or c1 is None:
            out[f"{k}_cpu_us_per_delta"] = None
            continue
        total += c1 - c0
        out[f"{k}_cpu_us_per_delta"] = round((c1 - c0) / delivered * 1e6, 2) if delivered else None
        out[f"{k}_cpu_pct"] = round(100 * (c1 - c0) / span, 1)
    out["cpu_us_per_delta"] = round(total / delivered * 1e6, 2) if delivered else None
    if errors:
        raise _LoadErrors(out, errors)
    return out


class _LoadErrors(Exception):
    """Some turns failed: the figures, and up to ten error texts."""

    def __init__(self, figures: dict[str, float | int | None], errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.figures = figures
        self.errors = errors


async def _online(url: str) -> None:
    """Wait until the hub lists ``bench`` as online (the daemon registered)."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while True:
            agents = (await http.get("/agents")).json()["agents"]
            if any(a["name"] == AGENT and a["online"] for a in agents):
                return
            await trio.sleep(0.05)


async def _run_hub(args: argparse.Namespace) -> dict[str, float | int | None]:
    root = os.path.dirname(_HERE)
    env = {
        "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
        WORDS_ENV: str(args.words),
    }
    cli = [sys.executable, "-m", "trioagents.cli"]
    with tempfile.TemporaryDirectory(prefix="h3b_hub_") as tmp, trio.fail_after(300):
        hub_cmd = [
            *cli,
            "hub", "--db", os.path.join(tmp, "hub.db"), "--host", "127.0.0.1", "--port", "0",
            "--token", f"{AGENT}={TOKEN}", "--log-level", "WARNING",
        ]  # fmt: skip
        async with aux.spawn(hub_cmd, env=env, name="hub") as hub:
            ws = "ws" + hub.url.removeprefix("http") + "/ws"
            daemon_cmd = [
                *cli,
                "connect", f"{os.path.join(_HERE, 'uamp_sessions.py')}:bench_agent",
                "--portal-ws-url", ws, "--token", TOKEN, "--log-level", "WARNING",
            ]  # fmt: skip
            async with aux.spawn(daemon_cmd, env=env, listening=False, name="daemon") as daemon:
                with trio.fail_after(30):
                    await _online(hub.url)
                pids = {"hub": hub.process.pid, "daemon": daemon.process.pid}
                return await aux.run_asyncio(
                    partial(
                        _load, hub.url, pids, args.concurrency, args.words, args.warmup, args.window
                    )
                )


async def _run_direct(args: argparse.Namespace) -> dict[str, float | int | None]:
    root = os.path.dirname(_HERE)
    env = {
        "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
        WORDS_ENV: str(args.words),
    }
    cmd = [
        sys.executable, "-m", "trioagents.cli", "serve",
        f"{os.path.join(_HERE, 'uamp_sessions.py')}:bench_agent",
        "--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING",
    ]  # fmt: skip
    with trio.fail_after(300):
        async with aux.spawn(cmd, env=env) as server:
            pids = {"server": server.process.pid}
            return await aux.run_asyncio(
                partial(
                    _load, server.url, pids, args.concurrency, args.words, args.warmup, args.window
                )
            )


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Both paths (trioagents only); one result entry per path."""
    if args.smoke:
        args.concurrency = min(args.concurrency, 5)
        args.window = min(args.window, 1.0)
        args.warmup = min(args.warmup, 0.3)
    base = {
        "protocol": "chat completions SSE (aiohttp keep-alive)",
        "concurrency": args.concurrency,
        "words_per_reply": args.words,
        "model": "mock, instant burst of one-word deltas",
        "window_s": args.window,
        "warmup_s": args.warmup,
        "load_cpu": aux.LOAD_CPU,
    }
    paths = {
        "hub": ({**base, "path": "client -> hub -> daemon -> model", "hub_cpu": 0,
                 "daemon_cpu": 0}, _run_hub),
        "direct": ({**base, "path": "client -> server -> model", "server_cpu": 0}, _run_direct),
    }  # fmt: skip
    results: list[dict[str, Any]] = []
    for target in args.targets:
        if target != "trioagents":
            for name, (params, _) in paths.items():
                why = (
                    "webagents has no hub/daemon hop"
                    if target == "webagents"
                    else ("the raw floor has no hub/daemon hop")
                )
                results.append(aux.skipped(f"{WORKLOAD}_{name}", target, params, why))
            continue
        collected: dict[str, tuple[list[dict[str, float | int | None]], list[str]]] = {
            name: ([], []) for name in paths
        }
        with aux.load_side_pinned() as pin_note:
            for n in range(args.runs):
                for name, (_, fn) in paths.items():
                    runs, errors = collected[name]
                    try:
                        runs.append(trio.run(fn, args))
                    except _LoadErrors as exc:
                        runs.append(exc.figures)
                        errors.extend(f"run {n}: {e}" for e in exc.errors)
                    except Exception as exc:
                        errors.append(f"run {n}: {aux.describe(exc)}")
        for name, (params, _) in paths.items():
            runs, errors = collected[name]
            notes = [pin_note, aux.gc_note()]
            if name == "hub":
                notes.append(
                    "hub and daemon share CPU 0 (two cores: the load generator has CPU 1); "
                    "cpu_us_per_delta = hub + daemon"
                )
            results.append(aux.entry(f"{WORKLOAD}_{name}", target, params, runs, errors, notes))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.portal_hop``."""
    return aux.standalone_main(__doc__ or "", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
