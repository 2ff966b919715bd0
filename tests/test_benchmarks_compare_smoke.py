"""The side-by-side benchmark runs end to end (``--compare --smoke``); speeds are never asserted.

The ``webagents`` peer is in the ``bench`` extra only: where it is not installed (CI installs
the ``test`` extra), the compare mode skips it and says so, and this test expects exactly that.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import trio

COMPARE = Path(__file__).resolve().parent.parent / "benchmarks" / "compare.py"


async def test_compare_smoke_runs_every_installed_target(tmp_path: Path) -> None:
    has_peer = importlib.util.find_spec("webagents") is not None
    expected = ["trioagents", "webagents", "floor"] if has_peer else ["trioagents", "floor"]
    out_json = tmp_path / "results.json"
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, str(COMPARE), "--compare", "--smoke", "--json", str(out_json)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out, err = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, f"{out}\n{err}"
    assert "Traceback" not in err
    assert out.startswith("Chat Completions SSE: 2 concurrent streams x 2 requests each, 20-word")
    assert ("skipped (not installed): webagents" in out) is not has_peer
    header = next(line for line in out.splitlines() if line.startswith("|  "))
    assert [cell.strip() for cell in header.strip("|").split("|")][1:] == expected

    report = json.loads(out_json.read_text())
    assert report["skipped"] == ([] if has_peer else ["webagents"])
    assert [r["target"] for r in report["results"]] == expected
    for r in report["results"]:
        # --smoke: 2 streams x 2 requests of 20 words, one chunk per word, every text checked.
        assert (r["responses"], r["failed"], r["deltas"]) == (4, 0, 80), r
        assert r["deltas_per_s"] > 0
        assert r["first_delta_p50_ms"] is not None
        assert r["server_rss_after_mib"] is not None
