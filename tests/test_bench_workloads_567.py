"""Benchmark workloads 5-7 run end to end (``--smoke --runs 1``); speeds are never asserted.

Each module runs as ``python -m benchmarks.X`` in a subprocess, as a user runs it, and the
JSON it writes is checked for what a reader of the results relies on: the entry shape, every
entry ok, the text verified through the hub hop, every abort matched by an upstream close with
nothing left open, a positive memory figure per connection and per session.

The load generators (aiohttp, websockets) and the webagents peer live in the ``bench`` extra:
without them the test is skipped, and without webagents only its entries are expected skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
HAS_PEER = importlib.util.find_spec("webagents") is not None

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("aiohttp", "websockets", "h11")),
    reason="the benchmark load generators need the bench extra (aiohttp, websockets)",
)

ENTRY_KEYS = {"workload", "target", "params", "runs", "summary", "ok", "errors", "notes"}


async def run_module(module: str, tmp_path: Path, *extra: str) -> list[dict[str, Any]]:
    """``python -m benchmarks.<module> --smoke --runs 1 --json PATH``; the results list."""
    out_json = tmp_path / f"{module}.json"
    with trio.fail_after(50):
        result = await trio.run_process(
            [
                sys.executable,
                "-m",
                f"benchmarks.{module}",
                "--smoke",
                "--runs",
                "1",
                "--json",
                str(out_json),
                *extra,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, f"{out}\n{err}"
    assert "Traceback" not in err, err
    results: list[dict[str, Any]] = json.loads(out_json.read_text())["results"]
    for r in results:
        assert set(r) >= ENTRY_KEYS, r
        assert r["ok"], r
        assert r["errors"] == [], r
        if r.get("skipped"):
            assert r["runs"] == [] and r["notes"][0].startswith("skipped: "), r
            continue
        assert len(r["runs"]) == 1, r
        for metric, s in r["summary"].items():
            assert set(s) == {"median", "min", "max"}, metric
            assert s["min"] <= s["median"] <= s["max"], metric
        # The table is printed too, one block per entry.
        assert f"{r['workload']} / {r['target']} (ok, 1 runs)" in out
    return results


def by_key(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["workload"], r["target"]): r for r in results}


async def test_portal_hop_smoke_verifies_text_through_the_hub(tmp_path: Path) -> None:
    results = by_key(await run_module("portal_hop", tmp_path, "--targets", "trioagents", "floor"))
    assert set(results) == {
        ("portal_hop_hub", "trioagents"),
        ("portal_hop_direct", "trioagents"),
        ("portal_hop_hub", "floor"),
        ("portal_hop_direct", "floor"),
    }
    assert results[("portal_hop_hub", "floor")]["skipped"]
    for path in ("hub", "direct"):
        r = results[(f"portal_hop_{path}", "trioagents")]
        run = r["runs"][0]
        # Every turn in the window streamed exactly the 20-word reply (checked word for word).
        assert run["turns"] > 0 and run["failed_turns"] == 0, run
        assert run["deltas_per_s"] == pytest.approx(20 * run["turns_per_s"], rel=0.01), run
        assert run["ttfd_p50_ms"] is not None and run["turn_p99_ms"] is not None
        assert r["params"]["concurrency"] == 5 and r["params"]["words_per_reply"] == 20
    hub = results[("portal_hop_hub", "trioagents")]["runs"][0]
    assert hub["hub_cpu_us_per_delta"] > 0 and hub["daemon_cpu_us_per_delta"] > 0
    assert hub["cpu_us_per_delta"] == pytest.approx(
        hub["hub_cpu_us_per_delta"] + hub["daemon_cpu_us_per_delta"], abs=0.05
    )


async def test_cancel_smoke_every_abort_closes_the_upstream_and_nothing_leaks(
    tmp_path: Path,
) -> None:
    results = by_key(await run_module("cancel", tmp_path, "--targets", "trioagents", "webagents"))
    ours = results[("cancel", "trioagents")]["runs"][0]
    # --smoke: 20 aborts in each of 4 phases, each matched by the upstream seeing its close.
    assert ours["aborts"] == 80 and ours["unmatched_aborts"] == 0, ours
    assert ours["stalled_turns"] == 0, ours
    for phase in ("sse_idle", "uamp_idle", "sse_loaded", "uamp_loaded"):
        assert ours[f"{phase}_unmatched"] == 0
        assert 0 < ours[f"{phase}_p50_ms"] <= ours[f"{phase}_p99_ms"], phase
    assert ours["loaded_streams"] == 10
    # Back to idle: no socket, task, session, connection or upstream stream left behind.
    assert ours["leaked_sockets"] == 0, ours
    assert ours["leaked_tasks"] == 0, ours
    assert ours["sessions_open_after"] == 0 and ours["connections_open_after"] == 0
    assert ours["upstream_streams_open_after"] == 0
    peer = results[("cancel", "webagents")]
    if HAS_PEER:
        assert peer["runs"][0]["aborts"] == 80, peer
        assert "leaked_tasks" not in peer["runs"][0]  # webagents has no task gauge
    else:
        assert "not installed" in peer["skipped"]


async def test_memory_smoke_reports_positive_memory_per_connection_and_session(
    tmp_path: Path,
) -> None:
    results = by_key(
        await run_module("memory", tmp_path, "--targets", "trioagents", "webagents", "floor")
    )
    conn = results[("memory_per_connection", "trioagents")]["runs"][0]
    assert conn["connections"] == 50 and conn["rss_kib_per_connection"] > 0, conn
    assert conn["rss_open_kib"] > conn["rss_baseline_kib"]
    mux = results[("memory_multiplexed", "trioagents")]["runs"][0]
    assert mux["sessions"] == 50 and mux["rss_kib_per_session"] > 0, mux
    assert "one UAMP session per socket" in results[("memory_multiplexed", "webagents")]["skipped"]
    for floor in ("floor", "hypercorn"):  # the raw trio floor and bare Hypercorn
        run = results[("memory_per_connection", floor)]["runs"][0]
        assert run["connections"] == 50 and run["rss_kib_per_connection"] > 0, run
        assert results[("memory_multiplexed", floor)]["runs"][0]["sessions"] == 50
    peer = results[("memory_per_connection", "webagents")]
    if HAS_PEER:
        assert peer["runs"][0]["rss_kib_per_connection"] > 0, peer
