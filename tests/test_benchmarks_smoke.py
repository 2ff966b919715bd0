"""The benchmark runs end to end (``--smoke``: a tiny load); its numbers are never asserted."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import trio

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "uamp_sessions.py"

ROWS = [
    "responses (sessions)",
    "failed or wrong text",
    "deltas received",
    "wall time",
    "responses/s",
    "deltas/s",
    "time to first delta p50",
    "time to first delta p99",
    "time to done p50",
    "time to done p99",
    "server RSS after run",
]


def _row(out: str, name: str) -> str:
    m = re.search(rf"^\| {re.escape(name)} +\| +(.*?) \|$", out, re.M)
    assert m, f"no {name!r} row in:\n{out}"
    return m.group(1)


@pytest.mark.parametrize("transport", ["uamp", "completions"])
async def test_benchmark_smoke(transport: str) -> None:
    with trio.fail_after(30):
        result = await trio.run_process(
            [sys.executable, str(BENCHMARK), "--smoke", "--transport", transport],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, f"{out}\n{err}"
    assert "Traceback" not in err
    assert out.startswith(f"trioagents benchmark: {transport}, ")
    for name in ("python", "trio", "hypercorn", "nproc"):
        assert _row(out, name)
    for name in ROWS:
        assert _row(out, name) != ""
    assert _row(out, "transport") == transport
    # --smoke is 2 x 2 sessions of 20 words; every response arrived complete.
    assert _row(out, "responses (sessions)") == "4"
    assert _row(out, "failed or wrong text") == "0"
    assert _row(out, "words per response") == "20"
    assert 1 <= int(_row(out, "deltas received")) <= 80  # deltas may be merged, never lost
