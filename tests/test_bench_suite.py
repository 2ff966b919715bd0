"""The benchmark suite (``python -m benchmarks``) runs end to end; speeds are never asserted.

One smoke run of workloads 1-4 against every installed target checks the JSON document's
shape, that every result is ok with verified replies and deltas counted, and that the printed
tables name every workload. The summary and table code has unit tests; ``trioagents bench``
outside a checkout says where to run it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import trio

from benchmarks import _harness as h
from benchmarks.__main__ import comparisons

ROOT = Path(__file__).resolve().parent.parent
HAS_PEER = all(importlib.util.find_spec(m) is not None for m in ("webagents", "uvicorn"))
HAS_LOADGEN = all(
    importlib.util.find_spec(m) is not None for m in ("websockets", "aiohttp", "uvloop")
)
MINE = ["uamp-conns", "uamp-mux", "capacity", "sse"]


async def _run_suite(args: list[str], cwd: Path = ROOT) -> tuple[int, str, str]:
    result = await trio.run_process(
        [sys.executable, "-m", "benchmarks", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        cwd=str(cwd),
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.mark.skipif(not HAS_LOADGEN, reason="the load generators need the bench extra")
async def test_smoke_run_of_workloads_1_to_4(tmp_path: Path) -> None:
    # Two suite processes at once (uamp-conns alone is as long as the other three together).
    outputs: dict[str, tuple[int, str, str]] = {}

    async def run(key: str, only: list[str]) -> None:
        json_path = tmp_path / f"{key}.json"
        outputs[key] = await _run_suite(
            ["all", "--only", *only, "--smoke", "--window", "0.5", "--json", str(json_path)]
        )

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "a", ["uamp-conns"])
            nursery.start_soon(run, "b", ["uamp-mux", "capacity", "sse"])

    results = []
    for key, (code, out, err) in outputs.items():
        assert code == 0, f"{out}\n{err}"
        assert "Traceback" not in err
        doc = json.loads((tmp_path / f"{key}.json").read_text())
        assert doc["suite"] == "trioagents-bench" and doc["schema"] == 1
        assert doc["command"].startswith("python -m benchmarks all --only")
        for section in ("machine", "versions", "gc", "pinning"):
            assert isinstance(doc[section], dict), section
        assert doc["gc"]["trioagents"]["freeze_after_startup"] in (True, False)
        assert doc["versions"]["websockets"] and doc["versions"]["aiohttp"]
        assert "server_cpu" in doc["pinning"]
        results += doc["results"]
        for workload in ["uamp-conns"] if key == "a" else ["uamp-mux", "capacity", "sse"]:
            assert f"== {workload} (" in out, out

    expected_targets = {"trioagents", "floor"} | ({"webagents"} if HAS_PEER else set())
    by_workload: dict[str, set[str]] = {}
    for r in results:
        assert set(r) >= {"workload", "target", "params", "runs", "summary", "ok", "errors"}
        assert r["ok"], r
        if r.get("skipped"):
            # The peer cannot multiplex sessions on one connection (or is not installed).
            assert r["target"] == "webagents"
            assert r["workload"] == "uamp-mux" or not HAS_PEER
            continue
        by_workload.setdefault(r["workload"], set()).add(r["target"])
        assert r["errors"] == []
        (run,) = r["runs"]  # --smoke: one run
        assert run["wrong_texts"] == 0 and run["errors"] == 0
        if r["workload"] == "capacity":
            assert run["capacity_sessions"] > 0
            assert r["details"]["steps_per_run"][0], r
        else:
            assert run["verified_replies"] > 0
            assert run["deltas_per_s"] > 0 and run["frames_per_s"] > 0
            assert run["frames_per_s"] <= run["deltas_per_s"]  # frames may merge deltas
        for stats in r["summary"].values():
            assert stats["min"] <= stats["median"] <= stats["max"]
    assert by_workload == {
        "uamp-conns": expected_targets,
        "uamp-mux": expected_targets - {"webagents"},
        "capacity": expected_targets,
        "sse": expected_targets,
    }


async def test_help_lists_every_workload() -> None:
    with trio.fail_after(30):
        code, out, err = await _run_suite(["--help"])
    assert code == 0, err
    for name in [*MINE, "portal", "cancel", "memory", "all"]:
        assert name in out


async def test_trioagents_bench_outside_a_checkout(tmp_path: Path) -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, "-m", "trioagents.cli", "bench", "all", "--smoke"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=str(tmp_path),
        )
    assert result.returncode == 2
    assert "run `trioagents bench` from the root of a trioagents checkout" in (
        result.stderr.decode()
    )


# ---------------------------------------------------------------------------------------------
# Units


def test_summarize_median_min_max_skips_missing() -> None:
    runs = [
        {"deltas_per_s": 3.0, "gap_p99_ms": None, "errors": 0},
        {"deltas_per_s": 1.0, "gap_p99_ms": 5.0, "errors": 0},
        {"deltas_per_s": 2.0, "errors": 0},
        {"deltas_per_s": 10.0, "errors": 1},
    ]
    s = h.summarize(runs)
    assert list(s) == ["deltas_per_s", "gap_p99_ms", "errors"]
    assert s["deltas_per_s"] == {"median": 2.5, "min": 1.0, "max": 10.0}
    assert s["gap_p99_ms"] == {"median": 5.0, "min": 5.0, "max": 5.0}
    assert s["errors"] == {"median": 0.0, "min": 0.0, "max": 1.0}
    assert h.summarize([{"x": None}]) == {}
    assert h.summarize([]) == {}


def test_percentiles_nearest_rank_in_ms() -> None:
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    p = h.percentiles(values)
    assert p == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}
    assert h.percentiles([]) == {"p50": None, "p90": None, "p99": None, "max": None}
    assert h.percentiles([0.002])["p99"] == 2.0


def test_cells_and_numbers() -> None:
    assert h.fmt_number(None) == "-"
    assert h.fmt_number(25774.4) == "25,774"
    assert h.fmt_number(123.4) == "123"
    assert h.fmt_number(12.34) == "12.3"
    assert h.fmt_number(1.234) == "1.23"
    assert h.fmt_cell({"median": 2.0, "min": 1.0, "max": 3.0}) == "2 (1–3)"  # noqa: RUF001
    assert h.fmt_cell({"median": 5.5, "min": 5.5, "max": 5.5}) == "5.50"
    assert h.fmt_cell(None) == "-"


def _entry(target: str, n: int, value: float, **kw: object) -> dict:
    runs = [{"deltas_per_s": value}, {"deltas_per_s": value * 2}]
    return h.result_entry("uamp-conns", target, {"connections": n, "mode": "burst"}, runs, **kw)


def test_render_table_columns_targets_over_params() -> None:
    entries = [
        _entry("trioagents", 100, 1000.0),
        _entry("webagents", 100, 400.0, errors=["run 1: boom"]),
        h.result_entry("uamp-mux", "webagents", {"sessions": 4}, [], skipped="no mux"),
    ]
    table = h.render_table(entries, "== t ==")
    lines = table.splitlines()
    assert lines[0] == "== t =="
    assert "trioagents" in lines[2] and "webagents FAILED" in lines[2]
    assert lines[3].count("connections=100 burst") == 2
    row = next(line for line in lines if line.startswith("| deltas_per_s"))
    assert "1,500 (1,000–2,000)" in row and "600 (400–800)" in row  # noqa: RUF001
    assert "  error (webagents connections=100 burst): run 1: boom" in lines
    assert lines[-1] == "  skipped: webagents: no mux"
    assert entries[2]["ok"] and entries[2]["runs"] == [] and not entries[1]["ok"]


def test_wide_tables_split_by_parameter_set() -> None:
    entries = [_entry(t, n, 10.0) for n in (1, 2, 3) for t in ("trioagents", "floor")]
    table = h.render_table(entries, max_columns=4)
    headers = [line for line in table.splitlines() if line.startswith("| metric")]
    assert len(headers) == 2  # 2 + 2 columns, then 2: parameter sets are never split


def test_comparisons_ratio_of_medians() -> None:
    entries = [
        _entry("trioagents", 100, 300.0),
        _entry("webagents", 100, 100.0),
        _entry("floor", 100, 600.0),
    ]
    (row,) = comparisons(entries)
    assert row["metric"] == "deltas_per_s"
    assert row["trioagents_vs_webagents"] == pytest.approx(3.0)
    assert row["trioagents_vs_floor"] == pytest.approx(0.5)
    cpu = [
        h.result_entry("sse", t, {"concurrency": 1}, [{"server_cpu_us_per_delta": v}])
        for t, v in (("trioagents", 50.0), ("webagents", 150.0), ("floor", 10.0))
    ]
    (row,) = comparisons(cpu)  # lower is better: theirs / ours
    assert row["trioagents_vs_webagents"] == pytest.approx(3.0)
    assert row["trioagents_vs_floor"] == pytest.approx(0.2)


def test_bench_agent_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIOAGENTS_BENCH_MODE", "paced")
    monkeypatch.setenv("TRIOAGENTS_BENCH_WORDS", "3")
    agent = h.bench_agent()
    assert agent.name == "bench"
    assert h.bench_mode() == (3, "paced", h.PACED_DELAY)
    assert h.reply_text(3) == "w0 w1 w2"
    monkeypatch.setenv("TRIOAGENTS_BENCH_MODE", "burst")
    assert h.bench_mode() == (3, "burst", 0.0)
