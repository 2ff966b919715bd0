"""Side by side: trioagents, the webagents peer and the raw Trio floor, in one run.

Usage::

    python benchmarks/compare.py --compare                     # every installed target
    python benchmarks/compare.py --target webagents            # one target
    python benchmarks/compare.py --compare --smoke             # tiny, for CI

Workload: Chat Completions SSE. ``C`` concurrent streaming ``POST .../chat/completions`` at a
time (default 100), each worker doing ``S`` requests in turn (default 5), every reply ``--words``
words (default 200) streamed one chunk per word with no model delay. Each target is a server
subprocess on 127.0.0.1 started, measured and stopped in turn; the same client (this process,
Trio + httpx) drives them all, so the numbers compare like with like:

* ``trioagents``: ``python -m trioagents.cli serve benchmarks/uamp_sessions.py:bench_agent``
  (``POST /v1/chat/completions``);
* ``webagents``: ``benchmarks/peer_webagents.py`` — the ``webagents`` package from PyPI on
  uvicorn with a mock LLM skill yielding the same words (``POST /bench/chat/completions``; its
  credential floor wants an ``Authorization`` header to be present, so every target is sent
  ``Authorization: Bearer bench``). Skipped when ``webagents`` is not installed;
* ``floor``: ``benchmarks/floor_trio.py`` — bare trio + h11 writing the same SSE events.

Each worker first does one untimed request (warm-up: connection pool, code paths). Every timed
reply is checked (finish reason ``stop`` and the exact text); a wrong one fails the run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path

import attrs
import httpx
import orjson
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from uamp_sessions import (
    WORDS_ENV,
    Meter,
    Sample,
    ServerProcess,
    percentile,
    reply_text,
    table,
    versions,
)

_HERE = Path(__file__).resolve().parent


@attrs.frozen
class Target:
    """A server under test: how to start it and where its completions endpoint is."""

    name: str
    argv: tuple[str, ...]
    path: str
    requires: str | None = None  # a module that must be importable, else the target is skipped

    def available(self) -> bool:
        """Whether the target can run here."""
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


TARGETS: dict[str, Target] = {
    "trioagents": Target(
        "trioagents",
        (
            "-m",
            "trioagents.cli",
            "serve",
            f"{_HERE / 'uamp_sessions.py'}:bench_agent",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--log-level",
            "WARNING",
        ),
        "/v1/chat/completions",
    ),
    "webagents": Target(
        "webagents",
        (str(_HERE / "peer_webagents.py"), "--port", "0"),
        "/bench/chat/completions",
        requires="webagents",
    ),
    "floor": Target("floor", (str(_HERE / "floor_trio.py"), "--port", "0"), "/v1/chat/completions"),
}


class Server(ServerProcess):
    """A running target subprocess (start-up detection shared with ``uamp_sessions``)."""

    def rss_mib(self) -> tuple[float | None, float | None]:
        """(VmRSS, VmHWM) in MiB from /proc/PID/status."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None, None
        found = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
        rss, hwm = (int(found[k]) / 1024 if k in found else None for k in ("VmRSS", "VmHWM"))
        return rss, hwm


@asynccontextmanager
async def open_target(target: Target, words: int) -> AsyncIterator[Server]:
    """Start ``target`` on 127.0.0.1:0; stop it with SIGINT (killed on failure)."""
    env = {**os.environ, WORDS_ENV: str(words)}
    proc = await trio.lowlevel.open_process(
        [sys.executable, *target.argv], stdout=subprocess.PIPE, env=env
    )
    try:
        async with trio.open_nursery() as nursery:
            server = Server(proc)
            with trio.fail_after(60):
                await nursery.start(server.pump)
            yield server
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                code = await proc.wait()
            if code != 0:
                raise RuntimeError(f"{target.name} exited with status {code}")
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()


async def one_request(http: httpx.AsyncClient, path: str) -> Sample:
    """One streaming completion, counted as its chunks arrive."""
    body = {"model": "bench", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    t0 = trio.current_time()
    first = None
    deltas = 0
    text: list[str] = []
    status = "error"
    async with http.stream("POST", path, json=body) as resp:
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = orjson.loads(data)
            if "error" in chunk:
                break
            choice = chunk["choices"][0] if chunk.get("choices") else {}
            content = choice.get("delta", {}).get("content")
            if content:
                if first is None:
                    first = trio.current_time() - t0
                deltas += 1
                text.append(content)
            if choice.get("finish_reason") == "stop":
                status = "completed"
    return Sample(first, trio.current_time() - t0, deltas, "".join(text), status)


async def run_completions(
    url: str, path: str, connections: int, sessions: int, meter: Meter
) -> list[Sample]:
    """C concurrent workers, one untimed warm-up request each, then S timed requests each."""
    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    headers = {"authorization": "Bearer bench"}

    async def warm(http: httpx.AsyncClient) -> None:
        await one_request(http, path)

    async def worker(http: httpx.AsyncClient) -> None:
        for _ in range(sessions):
            samples.append(await one_request(http, path))

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120, headers=headers) as http:
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(warm, http)
        meter.start()
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(worker, http)
        meter.stop()
    return samples


async def measure(target: Target, args: argparse.Namespace) -> dict[str, object]:
    """Start ``target``, run the workload, stop it; the result row as a dict."""
    expected = reply_text(args.words)
    async with open_target(target, args.words) as server:
        idle_rss, _ = server.rss_mib()
        meter = Meter(server.process.pid)
        samples = await run_completions(
            server.url, target.path, args.connections, args.sessions, meter
        )
        rss, peak = server.rss_mib()
    n = len(samples)
    failed = sum(1 for x in samples if x.status != "completed" or x.text != expected)
    deltas = sum(x.deltas for x in samples)
    firsts = [x.first_delta for x in samples if x.first_delta is not None]
    wall = meter.wall
    return {
        "target": target.name,
        "responses": n,
        "failed": failed,
        "deltas": deltas,
        "wall_s": wall,
        "responses_per_s": n / wall,
        "deltas_per_s": deltas / wall,
        "first_delta_p50_ms": percentile(firsts, 50) * 1000 if firsts else None,
        "first_delta_p99_ms": percentile(firsts, 99) * 1000 if firsts else None,
        "server_cpu_s": meter.server_cpu,
        "server_cpu_per_delta_us": (
            meter.server_cpu / deltas * 1e6 if meter.server_cpu is not None and deltas else None
        ),
        "server_cpu_share": meter.server_cpu / wall if meter.server_cpu is not None else None,
        "client_cpu_share": meter.client_cpu / wall,
        "server_rss_idle_mib": idle_rss,
        "server_rss_after_mib": rss,
        "server_rss_peak_mib": peak,
    }


def _fmt(value: object, spec: str, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:{spec}}{suffix}"


def render(results: Sequence[dict[str, object]]) -> str:
    """One table, a column per target."""
    rows: list[tuple[str, ...]] = [("", *(str(r["target"]) for r in results))]
    spec = [
        ("responses", "responses", "d", ""),
        ("failed or wrong text", "failed", "d", ""),
        ("deltas received", "deltas", ",d", ""),
        ("wall time", "wall_s", ".2f", " s"),
        ("responses/s", "responses_per_s", ".1f", ""),
        ("deltas/s", "deltas_per_s", ",.0f", ""),
        ("first delta p50", "first_delta_p50_ms", ".1f", " ms"),
        ("first delta p99", "first_delta_p99_ms", ".1f", " ms"),
        ("server CPU per delta", "server_cpu_per_delta_us", ".1f", " us"),
        ("server CPU (share of a core)", "server_cpu_share", ".0%", ""),
        ("client CPU (share of a core)", "client_cpu_share", ".0%", ""),
        ("server RSS idle", "server_rss_idle_mib", ".1f", " MiB"),
        ("server RSS after run", "server_rss_after_mib", ".1f", " MiB"),
        ("server RSS peak", "server_rss_peak_mib", ".1f", " MiB"),
    ]
    for label, key, fmt, suffix in spec:
        rows.append((label, *(_fmt(r[key], fmt, suffix) for r in results)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [rule]
    for j, row in enumerate(rows):
        cells = [f" {row[0]:<{widths[0]}} "]
        cells += [f" {c:>{w}} " for c, w in zip(row[1:], widths[1:], strict=True)]
        out.append("|" + "|".join(cells) + "|")
        if j == 0:
            out.append(rule)
    out.append(rule)
    return "\n".join(out)


async def main(args: argparse.Namespace) -> int:
    names = list(TARGETS) if args.compare else [args.target]
    targets = [TARGETS[n] for n in names]
    skipped = [t.name for t in targets if not t.available()]
    targets = [t for t in targets if t.available()]
    if not targets:
        print(f"compare: error: no target can run (not installed: {skipped})", file=sys.stderr)
        return 2
    c, s, words = args.connections, args.sessions, args.words
    print(f"Chat Completions SSE: {c} concurrent streams x {s} requests each, {words}-word replies")
    extra = [(f"{d} version", _version(d)) for d in ("httpx", "webagents", "uvicorn", "h11")]
    print(table([*versions(), *extra]), flush=True)
    if skipped:
        print(f"skipped (not installed): {', '.join(skipped)}")
    results = []
    with trio.fail_after(args.timeout):
        for target in targets:
            results.append(await measure(target, args))
    print(render(results), flush=True)
    if args.json:
        await trio.Path(args.json).write_text(
            json.dumps({"workload": vars(args), "skipped": skipped, "results": results}, indent=2)
        )
    failed = sum(int(str(r["failed"])) for r in results)
    if failed:
        print(f"error: {failed} responses failed or had the wrong text", file=sys.stderr)
        return 1
    return 0


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    group = p.add_mutually_exclusive_group()
    group.add_argument("--target", choices=list(TARGETS), default="trioagents")
    group.add_argument("--compare", action="store_true", help="every installed target in turn")
    p.add_argument("--connections", type=int, default=100, help="C concurrent streams (100)")
    p.add_argument("--sessions", type=int, default=5, help="S requests per stream (5)")
    p.add_argument("--words", type=int, default=200, help="words per reply (200)")
    p.add_argument("--timeout", type=float, default=900.0, help="bound on the whole run (s)")
    p.add_argument("--json", help="also write the results as JSON to this file")
    p.add_argument("--smoke", action="store_true", help="tiny run for CI (2 x 2, 20 words)")
    args = p.parse_args(argv)
    if args.smoke:
        args.connections, args.sessions, args.words = 2, 2, 20
    if min(args.connections, args.sessions, args.words) < 1:
        p.error("--connections, --sessions and --words must be at least 1")
    return args


def run(argv: Sequence[str] | None = None) -> int:
    """Run; the exit status (1: wrong responses, 2: could not run)."""
    args = parse_args(argv)
    failures: list[Exception] = []
    try:
        return trio.run(main, args)
    except* (RuntimeError, trio.TooSlowError, httpx.HTTPError) as group:
        failures.extend(group.exceptions)
    for exc in failures:
        print(f"compare: error: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(run())
