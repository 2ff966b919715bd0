"""Workloads 1-4 of the suite: UAMP connections, UAMP multiplexing, paced capacity, SSE.

Each workload is a :class:`Workload` with the same contract as the other workload modules
(``add_arguments(parser)``, ``run(args) -> list[dict]``, see ``benchmarks/__main__.py``).

Per-run structure: for every run, for every parameter set, for every target, a **fresh server**
is started (pinned to core 0), a fresh load generator subprocess (pinned to core 1) opens the
connections and sessions, warms up for ``--warmup`` seconds under the full load, counts for
``--window`` seconds, drains (every running reply finishes and is verified) and closes; then
the server is stopped. A fresh server per measurement keeps runs independent (no conversation
history, heap growth or GC state carried from one load to the next, and trioagents freezes the
GC right after start-up, before any load), and the loop order (runs outermost, targets
innermost) spreads slow drifts of a shared machine over every target alike.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from benchmarks import _harness as h

__all__ = ["CAPACITY", "SSE", "UAMP_CONNS", "UAMP_MUX", "Workload", "WORKLOADS"]

LOADGEN_SATURATED = 90.0
"""Load-generator CPU (% of its core) above which a note says it may be the bottleneck."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _metrics(raw: dict[str, Any], memory: dict[str, float | None]) -> dict[str, float | None]:
    """One run's metrics (units in the names) from a load generator's raw figures."""
    window = raw["window_s"] or 1e-9
    deltas = raw["model_deltas"]
    scpu = raw.get("server_cpu_s")
    first, gap = raw["first_delta_ms"], raw["gap_ms"]
    return {
        "deltas_per_s": deltas / window,
        "frames_per_s": raw["frames"] / window,
        "turns_per_s": raw["turns"] / window,
        "server_cpu_us_per_delta": scpu / deltas * 1e6 if scpu is not None and deltas else None,
        "server_cpu_pct": scpu / window * 100 if scpu is not None else None,
        "loadgen_cpu_pct": raw["loadgen_cpu_s"] / window * 100,
        "first_delta_p50_ms": first["p50"],
        "first_delta_p99_ms": first["p99"],
        "gap_p50_ms": gap["p50"],
        "gap_p99_ms": gap["p99"],
        "gap_max_ms": gap["max"],
        "verified_replies": raw["verified"],
        "wrong_texts": raw["wrong_texts"],
        "errors": raw["errors"],
        "server_rss_mib": memory.get("rss_mib"),
        "loadavg_1m": os.getloadavg()[0],
    }


def _check(raw: dict[str, Any]) -> list[str]:
    """Why a load generator's run is not ok (empty when it is)."""
    problems = list(raw.get("error_samples") or [])
    if raw.get("errors") and not problems:
        problems.append(f"{raw['errors']} errors")
    if raw.get("wrong_texts"):
        problems.append(f"{raw['wrong_texts']} replies with the wrong text")
    if not raw.get("verified"):
        problems.append("no verified reply")
    if not raw.get("model_deltas", 1):
        problems.append("no delta in the window")
    return problems


def _notes(run: dict[str, float | None], mode: str) -> list[str]:
    notes = []
    lg = run.get("loadgen_cpu_pct")
    if lg is not None and lg >= LOADGEN_SATURATED:
        notes.append(
            f"load generator at {lg:.0f}% of its core in a run: it may be the bottleneck "
            "(throughput is then a lower bound; compare server_cpu_us_per_delta)"
        )
    if mode == "burst":
        pass
    return notes


@attrs.frozen
class Point:
    """One parameter set of a workload: what the load generator is told."""

    label: dict[str, Any]
    protocol: str  # "uamp" or "sse"
    mode: str
    connections: int
    sessions: int = 1  # per connection (UAMP)
    skip: Callable[[str], str | None] = lambda target: None


async def _measure(point: Point, target: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start a fresh server, run the load generator once, stop the server; raw + memory."""
    env = h.server_env(point.mode, args.words)
    async with h.open_server(target, point.protocol, env) as server:
        loadgen = "loadgen_ws.py" if point.protocol == "uamp" else "loadgen_sse.py"
        argv = [sys.executable, str(h.HERE / loadgen)]
        if point.protocol == "uamp":
            argv += [
                "--url", server.ws_url,
                "--connections", str(point.connections),
                "--sessions", str(point.sessions),
            ]  # fmt: skip
        else:
            argv += ["--url", server.sse_url, "--concurrency", str(point.connections)]
        argv += [
            "--mode", point.mode, "--words", str(args.words), "--warmup", str(args.warmup),
            "--window", str(args.window), "--server-pid", str(server.pid),
        ]  # fmt: skip
        budget = 150 + args.warmup + args.window
        raw = await h.run_json_process(argv, time_limit=budget)
        memory = server.memory()
    return {"raw": raw, "memory": memory, "pinned": server.pinned}


def _run_points(name: str, points: Sequence[Point], args: argparse.Namespace) -> list[dict]:
    """Every point x target x run; one result entry per (point, target)."""
    targets = [t for t in h.TARGETS if t in args.targets]
    runs: dict[tuple[int, str], list[dict[str, float | None]]] = {}
    errors: dict[tuple[int, str], list[str]] = {}
    notes: dict[tuple[int, str], list[str]] = {}
    skipped: dict[tuple[int, str], str] = {}
    for i, p in enumerate(points):
        for t in targets:
            why = h.target_available(t) or p.skip(t)
            if why:
                skipped[(i, t)] = why

    async def main() -> None:
        for r in range(args.runs):
            for i, p in enumerate(points):
                for t in targets:
                    key = (i, t)
                    if key in skipped:
                        continue
                    label = " ".join(f"{k}={v}" for k, v in p.label.items())
                    try:
                        m = await _measure(p, t, args)
                    except Exception as exc:  # a failed run is reported, the others go on
                        why = h.describe(exc)
                        errors.setdefault(key, []).append(f"run {r + 1}: {why}")
                        _log(f"{name} run {r + 1}/{args.runs} {t} {label}: FAILED {why}")
                        continue
                    run = _metrics(m["raw"], m["memory"])
                    runs.setdefault(key, []).append(run)
                    errors.setdefault(key, []).extend(f"run {r + 1}: {e}" for e in _check(m["raw"]))
                    notes.setdefault(key, []).extend(_notes(run, p.mode))
                    if not m["pinned"]:
                        notes[key].append("not pinned (fewer than 2 cores available)")
                    _log(
                        f"{name} run {r + 1}/{args.runs} {t} {label}: "
                        f"{run['deltas_per_s']:,.0f} deltas/s, "
                        f"{h.fmt_number(run['server_cpu_us_per_delta'])} us/delta, "
                        f"gap p99 {h.fmt_number(run['gap_p99_ms'])} ms, "
                        f"loadgen {run['loadgen_cpu_pct']:.0f}%"
                    )

    trio.run(main)
    entries = []
    for i, p in enumerate(points):
        params = {**p.label, "words": args.words}
        for t in targets:
            key = (i, t)
            if key in skipped:
                entries.append(h.result_entry(name, t, params, [], skipped=skipped[key]))
                continue
            entries.append(
                h.result_entry(
                    name,
                    t,
                    params,
                    runs.get(key, []),
                    errors=errors.get(key, []),
                    notes=notes.get(key, []),
                )
            )
    return entries


# ---------------------------------------------------------------------------------------------
# The workloads


def _common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warmup", type=float, default=None, help="seconds under load before the window (1)"
    )
    parser.add_argument("--words", type=int, default=h.DEFAULT_WORDS, help="deltas per reply")


def _resolve(args: argparse.Namespace) -> None:
    if args.warmup is None:
        args.warmup = 0.3 if args.smoke else 1.0


@attrs.frozen
class Workload:
    """A workload with the module contract: ``add_arguments`` and ``run``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], list[dict[str, Any]]]


def _no_peer_mux(target: str) -> str | None:
    if target == "webagents":
        return (
            "its UAMP transport keeps one session per connection (a second session.create "
            "replaces the first), so it cannot multiplex"
        )
    return None


def _n_streams(name: str, title: str, protocol: str, param: str, modes: Sequence[str]) -> Workload:
    """A workload of N concurrent streams (``param`` = N) of ``protocol``, one point per N x mode.

    ``--n`` (default 100 1000; 4 with ``--smoke``) and ``--modes`` (default ``modes``).
    """

    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--n", type=int, nargs="+", default=None, help=f"{param} (100 1000)")
        p.add_argument("--modes", nargs="+", choices=h.MODES, default=list(modes))
        _common_arguments(p)

    def run(args: argparse.Namespace) -> list[dict[str, Any]]:
        _resolve(args)
        ns = args.n or ([4] if args.smoke else [100, 1000])
        points = [Point({param: n, "mode": m}, protocol, m, n) for n in ns for m in args.modes]
        return _run_points(name, points, args)

    return Workload(name, title, add_arguments, run)


# 1. N connections x 1 session

UAMP_CONNS = _n_streams(
    "uamp-conns",
    "1. UAMP over WebSocket: N connections x 1 session, burst and paced",
    "uamp",
    "connections",
    h.MODES,
)


# 2. one connection x N sessions


def _mux_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=int, nargs="+", default=None, help="sessions (100 1000 10000)")
    p.add_argument("--modes", nargs="+", choices=h.MODES, default=list(h.MODES))
    p.add_argument(
        "--burst-max",
        type=int,
        default=1000,
        help="burst only up to this many sessions (paced at every N); default 1000",
    )
    _common_arguments(p)


def _mux_run(args: argparse.Namespace) -> list[dict[str, Any]]:
    _resolve(args)
    ns = args.n or ([4] if args.smoke else [100, 1000, 10000])
    points = [
        Point({"sessions": n, "mode": m}, "uamp", m, 1, n, skip=_no_peer_mux)
        for m in args.modes
        for n in ns
        if m == "paced" or n <= args.burst_max or args.smoke
    ]
    return _run_points("uamp-mux", points, args)


UAMP_MUX = Workload(
    "uamp-mux",
    "2. UAMP over WebSocket: 1 connection x N multiplexed sessions",
    _mux_args,
    _mux_run,
)


# 4. Chat Completions SSE

SSE = _n_streams(
    "sse",
    "4. Chat Completions SSE: N concurrent streaming requests",
    "sse",
    "concurrency",
    ["burst"],
)


# 3. paced capacity


def _capacity_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", type=int, default=None, help="first N (100)")
    p.add_argument("--max", type=int, default=None, help="largest N tried (12800)")
    p.add_argument("--threshold-ms", type=float, default=100.0, help="inter-delta p99 bound")
    p.add_argument("--bisect", type=int, default=None, help="bisection steps after a fail (3)")
    p.add_argument(
        "--step-window",
        type=float,
        default=None,
        help="seconds measured per step (default: --window, at most 2)",
    )
    _common_arguments(p)


def _capacity_run(args: argparse.Namespace) -> list[dict[str, Any]]:
    _resolve(args)
    start = args.start or (4 if args.smoke else 100)
    top = args.max or (8 if args.smoke else 12800)
    bisect = args.bisect if args.bisect is not None else (0 if args.smoke else 3)
    step_window = args.step_window or min(args.window, 2.0)
    name = "capacity"
    targets = [t for t in h.TARGETS if t in args.targets]
    params = {"mode": "paced", "gap_p99_max_ms": args.threshold_ms, "words": args.words}
    results: dict[str, list[dict[str, float | None]]] = {t: [] for t in targets}
    details: dict[str, list[Any]] = {t: [] for t in targets}
    errors: dict[str, list[str]] = {t: [] for t in targets}
    notes: dict[str, list[str]] = {t: [] for t in targets}
    skipped = {t: why for t in targets if (why := h.target_available(t))}

    async def one(target: str, r: int) -> None:
        env = h.server_env("paced", args.words)
        async with h.open_server(target, "uamp", env) as server:
            argv = [
                sys.executable, str(h.HERE / "loadgen_ws.py"), "--capacity",
                "--url", server.ws_url, "--mode", "paced", "--words", str(args.words),
                "--start", str(start), "--max", str(top), "--bisect", str(bisect),
                "--threshold-ms", str(args.threshold_ms), "--warmup", str(args.warmup),
                "--window", str(step_window), "--server-pid", str(server.pid),
            ]  # fmt: skip
            raw = await h.run_json_process(argv, time_limit=900)
            memory = server.memory()
        steps = raw["steps"]
        best = raw["capacity"]
        at = next((s for s in steps if s["connections"] == best and s["passed"]), None)
        run: dict[str, float | None] = {"capacity_sessions": best, "first_fail": raw["first_fail"]}
        if at is not None:
            m = _metrics({**at, "verified": raw["verified"], "wrong_texts": 0, "errors": 0}, {})
            run.update(
                deltas_per_s=m["deltas_per_s"],
                server_cpu_us_per_delta=m["server_cpu_us_per_delta"],
                server_cpu_pct=m["server_cpu_pct"],
                loadgen_cpu_pct=m["loadgen_cpu_pct"],
                gap_p99_ms=m["gap_p99_ms"],
                first_delta_p99_ms=m["first_delta_p99_ms"],
            )
        run.update(
            wrong_texts=raw["wrong_texts"],
            errors=raw["errors"],
            server_peak_rss_mib=memory.get("hwm_mib"),
        )
        results[target].append(run)
        details[target].append(
            [
                {
                    "sessions": s["connections"],
                    "passed": s["passed"],
                    "gap_p99_ms": s["gap_ms"]["p99"],
                    "deltas_per_s": s["model_deltas"] / (s["window_s"] or 1e-9),
                    "server_cpu_pct": (s["server_cpu_s"] or 0) / (s["window_s"] or 1e-9) * 100,
                    "loadgen_cpu_pct": s["loadgen_cpu_s"] / (s["window_s"] or 1e-9) * 100,
                    "errors": s["errors"],
                }
                for s in steps
            ]
        )
        if raw["wrong_texts"]:
            errors[target].append(f"run {r + 1}: {raw['wrong_texts']} wrong replies")
        if not raw["verified"]:
            errors[target].append(f"run {r + 1}: no verified reply")
        fails = [s for s in steps if not s["passed"]]
        if fails and all(
            s["loadgen_cpu_s"] / (s["window_s"] or 1e-9) * 100 >= LOADGEN_SATURATED
            and (s["server_cpu_s"] or 0) / (s["window_s"] or 1e-9) * 100 < LOADGEN_SATURATED
            for s in fails[:1]
        ):
            notes[target].append(
                "the first failing step had the load generator saturated and the server "
                "not: the capacity found is the load generator's, a lower bound"
            )
        if raw["first_fail"] is None:
            notes[target].append(f"never failed up to {top} sessions (a lower bound)")
        _log(
            f"{name} run {r + 1}/{args.runs} {target}: capacity {best} sessions "
            f"(first fail {raw['first_fail']}; steps "
            + ", ".join(f"{s['connections']}:{h.fmt_number(s['gap_ms']['p99'])}ms" for s in steps)
            + ")"
        )

    async def main() -> None:
        for r in range(args.runs):
            for t in targets:
                if t in skipped:
                    continue
                try:
                    await one(t, r)
                except Exception as exc:  # a failed run is reported, the others go on
                    why = h.describe(exc)
                    errors[t].append(f"run {r + 1}: {why}")
                    _log(f"{name} run {r + 1}/{args.runs} {t}: FAILED {why}")

    trio.run(main)
    entries = []
    for t in targets:
        if t in skipped:
            entries.append(h.result_entry(name, t, params, [], skipped=skipped[t]))
            continue
        entry = h.result_entry(name, t, params, results[t], errors=errors[t], notes=notes[t])
        entry["details"] = {"steps_per_run": details[t]}
        entries.append(entry)
    return entries


CAPACITY = Workload(
    "capacity",
    "3. paced capacity: sessions per server core until inter-delta p99 > 100 ms",
    _capacity_args,
    _capacity_run,
)

WORKLOADS = (UAMP_CONNS, UAMP_MUX, CAPACITY, SSE)
"""Workloads 1-4, in suite order."""
