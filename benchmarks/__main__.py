"""``python -m benchmarks WORKLOAD [options]``: the trioagents benchmark suite.

Measures trioagents against the ``webagents`` peer and the raw Trio floor in one run, with the
same load generators, and prints one table per workload (metrics as rows, targets x parameters
as columns, ``median (min-max)`` over ``--runs`` runs) and writes the JSON document
(``--json PATH``). ``all`` runs every workload with its defaults. See ``benchmarks/README.md``.

Workload modules share one contract: ``add_arguments(parser)`` adds their own flags and
``run(args) -> list[dict]`` (blocking) returns result entries, reading the common options
every subcommand has: ``args.smoke``, ``args.runs``, ``args.targets``, ``args.window``,
``args.json``. A module that cannot be imported is reported and skipped.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from benchmarks import _harness as h

REGISTRY: tuple[tuple[str, str, str | None, str], ...] = (
    ("uamp-conns", "benchmarks.workloads", "UAMP_CONNS", "1. UAMP: N connections x 1 session"),
    ("uamp-mux", "benchmarks.workloads", "UAMP_MUX", "2. UAMP: 1 connection x N sessions"),
    ("capacity", "benchmarks.workloads", "CAPACITY", "3. paced sessions per core (p99 gap)"),
    ("sse", "benchmarks.workloads", "SSE", "4. Chat Completions SSE, N concurrent"),
    ("portal", "benchmarks.portal_hop", None, "5. PortalConnect hop vs the direct path"),
    ("cancel", "benchmarks.cancel", None, "6. cancellation latency and leaks"),
    ("memory", "benchmarks.memory", None, "7. idle memory per connection / session"),
)
"""(subcommand, module, attribute holding the workload or None for the module, help)."""

PRIMARY = {
    "deltas_per_s": "higher",
    "capacity_sessions": "higher",
    "server_cpu_us_per_delta": "lower",
}
"""Metrics compared across targets after the tables, and which way is better."""

DEFAULT_RUNS, SMOKE_RUNS = 3, 1
DEFAULT_WINDOW, SMOKE_WINDOW = 3.0, 1.0


def load_workload(name: str) -> tuple[Any, str | None]:
    """(the object with ``add_arguments``/``run``, None) or (None, why it is not available)."""
    for sub, module, attr, _ in REGISTRY:
        if sub == name:
            try:
                mod = importlib.import_module(module)
            except Exception as exc:  # any import-time failure: report, skip
                return None, f"{module} is not importable ({type(exc).__name__}: {exc})"
            obj = getattr(mod, attr) if attr else mod
            if not (callable(getattr(obj, "run", None)) and hasattr(obj, "add_arguments")):
                return None, f"{module} has no add_arguments/run"
            return obj, None
    return None, f"unknown workload {name!r}"


def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("common options")
    g.add_argument("--smoke", action="store_true", help="tiny N, 1 run, ~1 s window (CI)")
    g.add_argument("--runs", type=int, default=None, help=f"runs (default {DEFAULT_RUNS})")
    g.add_argument(
        "--targets",
        nargs="+",
        choices=h.TARGETS,
        default=list(h.TARGETS),
        help="targets to measure (default: all three)",
    )
    g.add_argument(
        "--window", type=float, default=None, help=f"measurement window, s ({DEFAULT_WINDOW})"
    )
    g.add_argument("--json", default=None, metavar="PATH", help="write the JSON document here")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    """The parser, and for each workload that is not available, why."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="WORKLOAD")
    missing: dict[str, str] = {}
    for name, _, _, help_ in REGISTRY:
        p = sub.add_parser(name, help=help_, description=help_)
        _common(p)
        obj, why = load_workload(name)
        if obj is None:
            missing[name] = str(why)
        else:
            obj.add_arguments(p)
    p = sub.add_parser("all", help="every workload with its defaults (the README run)")
    _common(p)
    p.add_argument(
        "--only", nargs="+", metavar="WORKLOAD", default=None, help="just these workloads"
    )
    return parser, missing


def resolve_common(args: argparse.Namespace) -> None:
    """Fill the defaults that depend on ``--smoke``; check the values."""
    if args.runs is None:
        args.runs = SMOKE_RUNS if args.smoke else DEFAULT_RUNS
    if args.window is None:
        args.window = SMOKE_WINDOW if args.smoke else DEFAULT_WINDOW
    if args.runs < 1 or args.window <= 0:
        raise SystemExit("python -m benchmarks: --runs must be >= 1 and --window > 0")


def _common_argv(args: argparse.Namespace) -> list[str]:
    argv = ["--runs", str(args.runs), "--window", str(args.window), "--targets", *args.targets]
    return argv + (["--smoke"] if args.smoke else [])


def comparisons(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """How many times better trioagents is than the peer and the floor (ratio of medians).

    ``trioagents_vs_webagents`` is ours / theirs for a higher-is-better metric (deltas/s,
    capacity) and theirs / ours for a lower-is-better one (CPU per delta): above 1 is better.
    """
    by: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for e in entries:
        if e.get("skipped") or not e.get("summary"):
            continue
        key = (e["workload"], json.dumps(e["params"], sort_keys=True))
        by.setdefault(key, {})[e["target"]] = e
    out = []
    for (workload, params), targets in by.items():
        ours = targets.get("trioagents")
        if ours is None:
            continue
        for metric, better in PRIMARY.items():
            if workload == "capacity" and metric != "capacity_sessions":
                continue
            mine = ours["summary"].get(metric)
            if not mine:
                continue
            row: dict[str, Any] = {"workload": workload, "params": json.loads(params)}
            row["metric"] = metric
            for other in ("webagents", "floor"):
                theirs = targets.get(other, {}).get("summary", {}).get(metric)
                if theirs and theirs["median"] and mine["median"]:
                    a, b = mine["median"], theirs["median"]
                    row[f"trioagents_vs_{other}"] = a / b if better == "higher" else b / a
            if len(row) > 3:
                out.append(row)
    return out


def _header(command: str) -> str:
    v = h.versions()
    m = h.machine_info()
    g = h.gc_info()["trioagents"]
    pin = h.pinning_info()
    libs = ", ".join(f"{k} {v[k]}" for k in v if k != "python" and v[k])
    return "\n".join(
        [
            f"trioagents benchmark suite: {command}",
            f"  machine: {m['platform']}, {m['nproc']} cores ({m['cpu_model']}), "
            f"{m['memory_gib']} GiB, load average {m['loadavg_at_start']}",
            f"  python {v['python']}; {libs}",
            f"  trioagents GC: freeze after start-up={g['freeze_after_startup']}, "
            f"gen-0 threshold={g['gen0_threshold']}; others: Python defaults",
            "  pinning: "
            + (
                f"server on CPU {pin['server_cpu']}, load generator on CPU {pin['loadgen_cpu']}"
                if pin["enabled"]
                else "off (fewer than 2 cores available)"
            ),
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen workload(s); exit 0 when every result is ok, else 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, missing = build_parser()
    args = parser.parse_args(argv)
    resolve_common(args)
    h.pin_self()
    command = "python -m benchmarks " + shlex.join(argv)
    if args.command == "all":
        known = [r[0] for r in REGISTRY]
        unknown = [n for n in args.only or [] if n not in known]
        if unknown:
            parser.error(f"--only: unknown workload(s) {unknown}; choose from {known}")
        names = [n for n in known if not args.only or n in args.only]
    else:
        names = [args.command]
    print(_header(command), flush=True)
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    durations: dict[str, float] = {}

    def save() -> None:
        if args.json:
            h.write_json(
                args.json,
                h.document(
                    command,
                    results,
                    started_at=started_at,
                    duration_s=round(time.monotonic() - started, 1),
                    workload_durations_s=durations,
                    skipped_workloads=skipped,
                    comparisons=comparisons(results),
                ),
            )

    started_at = h.now_iso()
    for name in names:
        if name in missing:
            print(f"\n{name}: skipped: {missing[name]}", flush=True)
            skipped.append({"workload": name, "reason": missing[name]})
            continue
        obj, _ = load_workload(name)
        sub_args = args
        if args.command == "all":
            sub_args = parser.parse_args([name, *_common_argv(args)])
            resolve_common(sub_args)
            sub_args.json = args.json
        t0 = time.monotonic()
        try:
            entries = list(obj.run(sub_args))
        except Exception as exc:  # one workload crashing must not lose the others' results
            traceback.print_exc()
            entries = [h.result_entry(name, "-", {}, [], errors=[f"{type(exc).__name__}: {exc}"])]
        durations[name] = round(time.monotonic() - t0, 1)
        results.extend(entries)
        for wl in dict.fromkeys(e["workload"] for e in entries):
            title = f"\n== {wl} ({durations[name]:.0f} s) =="
            print(h.render_table([e for e in entries if e["workload"] == wl], title), flush=True)
        save()
    ratios = comparisons(results)
    if ratios:
        print("\ntrioagents relative to the others (ratio of medians, > 1 is better):")
        for r in ratios:
            label = " ".join(f"{k}={v}" for k, v in r["params"].items() if k != "words")
            parts = [
                f"{k.removeprefix('trioagents_vs_')} {r[k]:.2f}x"
                for k in r
                if k.startswith("trioagents_vs_")
            ]
            print(f"  {r['workload']} {label}: {r['metric']} vs " + ", ".join(parts))
    save()
    total = time.monotonic() - started
    print(f"\ntotal: {total:.0f} s" + (f"; JSON: {args.json}" if args.json else ""), flush=True)
    failed = [e for e in results if not e["ok"]]
    if failed:
        print(f"{len(failed)} result(s) not ok", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
