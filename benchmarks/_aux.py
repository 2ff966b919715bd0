"""What the portal-hop, cancellation and memory workloads (5, 6, 7) add to ``_harness``.

The shared pieces (pinning, ``/proc`` CPU and memory readers, subprocess clean-up, statistics,
result entries) live in :mod:`benchmarks._harness`; this module holds what only these three
workloads need: starting any server command pinned to a CPU, running the asyncio load
generator (uvloop) from the Trio side, counting a process's RSS and sockets, latency figures
and the standalone ``main`` (``python -m benchmarks.cancel`` etc.) with its plain table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson
import trio

from benchmarks import _harness as h
from benchmarks._harness import SERVER_CPU, TARGETS, describe, pin, proc_cpu as process_cpu
from benchmarks.uamp_sessions import table, versions

__all__ = [
    "SERVER_CPU",
    "LOAD_CPU",
    "TARGETS",
    "common_arguments",
    "describe",
    "entry",
    "gc_note",
    "latency_ms",
    "load_side_pinned",
    "metrics_text",
    "parse_metrics",
    "pin",
    "print_results",
    "process_cpu",
    "repeat_runs",
    "rss_kib",
    "run_asyncio",
    "skipped",
    "socket_count",
    "spawn",
    "standalone_main",
    "unavailable",
]

LOAD_CPU = h.LOADGEN_CPU
"""The core the load generator (this process's worker thread) runs on."""
T = TypeVar("T")


@contextmanager
def load_side_pinned() -> Any:
    """Pin this process's calling thread (and threads it starts) to ``LOAD_CPU``; restore after.

    Yields a note for the result (``"load generator pinned to CPU 1"`` or why not).
    """
    try:
        before = os.sched_getaffinity(0)
    except AttributeError:
        yield "load generator not pinned (no sched_setaffinity)"
        return
    ok = LOAD_CPU in before and pin(0, LOAD_CPU)
    try:
        yield f"load generator pinned to CPU {LOAD_CPU}" if ok else "load generator not pinned"
    finally:
        if ok:
            os.sched_setaffinity(0, before)


@asynccontextmanager
async def spawn(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cpu: int | None = SERVER_CPU,
    listening: bool = True,
    name: str = "server",
) -> AsyncIterator[h.Server]:
    """Run ``cmd``; with ``listening``, wait for its ``listening on URL`` line (30 s bound).

    The process is pinned to ``cpu`` right after it starts (its threads inherit the mask). It
    is stopped with SIGINT at the end (SIGKILL if it does not exit within 15 s); unlike
    :func:`benchmarks._harness.open_server` its exit status is not checked. Yields a
    :class:`benchmarks._harness.Server` (``url``, ``process``) named ``name``.
    """
    proc = await trio.lowlevel.open_process(
        list(cmd),
        stdout=subprocess.PIPE if listening else subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    if cpu is not None:
        pin(proc.pid, cpu)
    try:
        async with trio.open_nursery() as nursery:
            server = h.Server(name, proc, uamp_path="", sse_path="")
            if listening:
                assert proc.stdout is not None
                with trio.fail_after(30):
                    await nursery.start(partial(server._pump, proc.stdout, watch=True))
            yield server
            proc.send_signal(signal.SIGINT)
            with trio.move_on_after(15):
                await proc.wait()
    finally:
        await h.reap(proc)


async def run_asyncio(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``factory()`` on a uvloop event loop in a worker thread and return its result.

    The Trio thread keeps pumping the servers' output meanwhile; the thread inherits this
    thread's CPU affinity (see :func:`load_side_pinned`).
    """

    def go() -> T:
        try:
            import uvloop
        except ImportError:
            return asyncio.run(factory())
        return uvloop.run(factory())

    return await trio.to_thread.run_sync(go)


def repeat_runs(
    count: int, one: Callable[[int], dict[str, float | int | None]]
) -> tuple[list[dict[str, float | int | None]], list[str], str]:
    """Call ``one(n)`` for ``n`` in ``range(count)`` with the load side pinned.

    A failed run is reported (``run N: …``) and the others still run. Returns the runs' figures,
    the errors and the pinning note of :func:`load_side_pinned`.
    """
    runs: list[dict[str, float | int | None]] = []
    errors: list[str] = []
    with load_side_pinned() as pin_note:
        for n in range(count):
            try:
                runs.append(one(n))
            except Exception as exc:  # a failed run is reported, the others still run
                errors.append(f"run {n}: {describe(exc)}")
    return runs, errors, pin_note


def rss_kib(pid: int) -> int | None:
    """``VmRSS`` of ``pid`` in KiB (None if unreadable; see :func:`benchmarks._harness.proc_memory`)."""
    rss_mib = h.proc_memory(pid)["rss_mib"]
    return None if rss_mib is None else round(rss_mib * 1024)


def socket_count(pid: int) -> int | None:
    """Open sockets of ``pid``: ``socket:[…]`` links in ``/proc/PID/fd`` (None if unreadable)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    count = 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            pass  # closed meanwhile
    return count


def parse_metrics(text: str) -> dict[str, float]:
    """``trioagents_NAME VALUE`` lines of a Prometheus text page → {NAME: value}."""
    return {k: float(v) for k, v in re.findall(r"^trioagents_(\w+) (\S+)$", text, re.M)}


async def metrics_text(url: str) -> str:
    """GET ``{url}/metrics`` from asyncio (aiohttp, a fresh connection closed after)."""
    import aiohttp

    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http, http.get(url + "/metrics") as r:
        return await r.text()


def entry(
    workload: str,
    target: str,
    params: dict[str, Any],
    runs: list[dict[str, float | int | None]],
    errors: list[str],
    notes: list[str],
) -> dict[str, Any]:
    """One result entry in the suite's shape (:func:`benchmarks._harness.result_entry`)."""
    return h.result_entry(workload, target, params, runs, errors=errors, notes=notes)


def skipped(workload: str, target: str, params: dict[str, Any], why: str) -> dict[str, Any]:
    """The entry of a target the workload does not apply to (ok, no runs, a note)."""
    return h.result_entry(workload, target, params, [], skipped=why)


def unavailable(target: str) -> str | None:
    """Why ``target`` cannot run here (its package is not installed), or None."""
    import importlib.util

    if target == "webagents" and importlib.util.find_spec("webagents") is None:
        return "webagents is not installed (pip install -e '.[bench]')"
    return None


def common_arguments(parser: argparse.ArgumentParser, *, window: float) -> None:
    """The options every subcommand of ``python -m benchmarks`` has (for standalone use)."""
    parser.add_argument("--smoke", action="store_true", help="tiny and fast (CI)")
    parser.add_argument("--runs", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=TARGETS,
        default=["trioagents", "webagents"],
        help="servers to measure (default: trioagents webagents)",
    )
    parser.add_argument("--window", type=float, default=window, help="measurement window (s)")
    parser.add_argument("--json", default=None, help="also write {'results': [...]} here")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def print_results(results: Sequence[dict[str, Any]]) -> None:
    """A simple table per entry: metric, median, min-max."""
    print(table(versions()), flush=True)
    for r in results:
        status = "ok" if r["ok"] else "FAILED"
        print(f"\n{r['workload']} / {r['target']} ({status}, {len(r['runs'])} runs)")
        rows = [(k, _fmt(v)) for k, v in r["params"].items()]
        for k, s in r["summary"].items():
            rows.append((k, f"{_fmt(s['median'])}  [{_fmt(s['min'])} - {_fmt(s['max'])}]"))
        if rows:
            print(table(rows))
        for n in r["notes"]:
            print(f"  note: {n}")
        for e in r["errors"]:
            print(f"  error: {e}")
    sys.stdout.flush()


def standalone_main(
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], list[dict[str, Any]]],
    argv: Sequence[str] | None,
    *,
    window: float = 5.0,
) -> int:
    """``python -m benchmarks.X``: parse, run, print a table, write JSON; 1 if any entry failed."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    common_arguments(parser, window=window)
    add_arguments(parser)
    args = parser.parse_args(argv)
    results = run(args)
    print_results(results)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({"results": results}, option=orjson.OPT_INDENT_2))
    return 0 if all(r["ok"] for r in results) else 1


def latency_ms(values: Sequence[float], prefix: str) -> dict[str, float | None]:
    """``{prefix}_p50_ms, _p99_ms, _max_ms`` of seconds ``values`` (None when empty)."""
    pct = h.percentiles(values)
    return {
        f"{prefix}_{k}_ms": None if (v := pct[k]) is None else round(v, 3)
        for k in ("p50", "p99", "max")
    }


def gc_note() -> str:
    """The server GC settings as ``trioagents serve`` applies them (Config defaults/env)."""
    from trioagents import Config

    cfg = Config.load()
    return f"server gc: freeze={cfg.gc_freeze}, gen0 threshold={cfg.gc_gen0_threshold}"
