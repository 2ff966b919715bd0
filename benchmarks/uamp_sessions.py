"""UAMP sessions benchmark: many streamed responses against a real ``trioagents serve``.

Usage::

    python benchmarks/uamp_sessions.py                       # 10 connections x 10 sessions
    python benchmarks/uamp_sessions.py --connections 50 --sessions 20
    python benchmarks/uamp_sessions.py --transport completions
    python benchmarks/uamp_sessions.py --smoke               # tiny, for CI

The server runs in a subprocess (``python -m trioagents.cli serve
benchmarks/uamp_sessions.py:bench_agent --port 0``): one agent whose built-in model streams a
fixed reply of ``--words`` words, word by word, as fast as it can. This process is the client:

* ``--transport uamp`` (default): ``C`` WebSocket connections, ``S`` sessions on each, every
  session sends one ``input.text`` at the same moment and streams its whole response
  (``C x S`` responses in flight at once);
* ``--transport completions``: ``C`` concurrent streaming Chat Completions requests at a time
  (httpx, one keep-alive connection per worker), each worker doing ``S`` requests in turn,
  so ``C x S`` responses in all.

Printed: totals, wall time of the streaming phase, responses/s, deltas/s, words/s, p50/p99
time-to-first-delta and time-to-done (from the request being sent), the server's RSS from
``/proc/PID/status`` and its ``/metrics`` counters. Client and server share the machine and are
both Python, so the numbers describe the pair, not the server alone. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import metadata
from pathlib import Path

import attrs
import httpx
import orjson
import trio

from trioagents import Agent, Config, uamp
from trioagents.client import UampClientSession, open_uamp_client

WORDS_ENV = "TRIOAGENTS_BENCH_WORDS"
AGENT = "bench"
_LISTENING = re.compile(r"listening on (http://\S+)")  # our CLI, the peer and the floor
_THIS_FILE = Path(__file__).resolve()
sys.path.insert(0, str(_THIS_FILE.parent))
from _harness import BenchModel, proc_cpu, reply_text  # noqa: E402  (the suite's shared parts)

# ---------------------------------------------------------------------------------------------
# Server side: the agent under test


def bench_agent() -> Agent:
    """The served agent (``trioagents serve benchmarks/uamp_sessions.py:bench_agent``).

    The suite's mock model (``_harness.BenchModel``) answers every input with the same
    ``$TRIOAGENTS_BENCH_WORDS``-word reply (default 200), one word per delta with no delay.
    """
    return Agent(AGENT, model=BenchModel(int(os.environ.get(WORDS_ENV, "200"))))


# ---------------------------------------------------------------------------------------------
# Client side


@attrs.define
class Sample:
    """One response as the client saw it (times in seconds from sending the request)."""

    first_delta: float | None
    done: float
    deltas: int
    text: str
    status: str


@attrs.define
class Meter:
    """Wall time and CPU time (client and server) of the timed phase."""

    server_pid: int
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float | None = None
    _t0: float = 0.0
    _c0: float = 0.0
    _s0: float | None = None

    def start(self) -> None:
        self._t0 = trio.current_time()
        self._c0 = time.process_time()
        self._s0 = proc_cpu(self.server_pid)

    def stop(self) -> None:
        self.wall = trio.current_time() - self._t0
        self.client_cpu = time.process_time() - self._c0
        s1 = proc_cpu(self.server_pid)
        self.server_cpu = None if s1 is None or self._s0 is None else s1 - self._s0


@attrs.define(eq=False)
class ServerProcess:
    process: trio.Process
    url: str = ""
    lines: list[str] = attrs.field(factory=list)

    async def pump(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the server's stdout; report started at the ``listening on`` line."""
        stream = self.process.stdout
        assert stream is not None
        buf = b""
        started = False
        while data := await stream.receive_some(65536):
            buf += data
            *complete, buf = buf.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                m = _LISTENING.search(line)
                if m and not started:
                    self.url = m.group(1)
                    started = True
                    task_status.started()
        if not started:
            raise RuntimeError("the server exited before listening:\n" + "\n".join(self.lines))

    def rss(self) -> tuple[str, str]:
        """(VmRSS, VmHWM) from /proc/PID/status, or ("n/a", "n/a")."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return "n/a", "n/a"
        found = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
        return tuple(  # type: ignore[return-value]
            f"{int(found[k]) / 1024:.1f} MiB" if k in found else "n/a" for k in ("VmRSS", "VmHWM")
        )


@asynccontextmanager
async def open_server(words: int) -> AsyncIterator[ServerProcess]:
    """Start the benchmark server on 127.0.0.1:0; stop it with SIGINT (killed on failure)."""
    cmd = [
        sys.executable,
        "-m",
        "trioagents.cli",
        "serve",
        f"{_THIS_FILE}:bench_agent",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--log-level",
        "WARNING",
    ]
    env = {**os.environ, WORDS_ENV: str(words)}
    proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE, env=env)
    try:
        async with trio.open_nursery() as nursery:
            server = ServerProcess(proc)
            with trio.fail_after(30):
                await nursery.start(server.pump)
            yield server
            proc.send_signal(signal.SIGINT)
            with trio.fail_after(30):
                code = await proc.wait()
            if code != 0:
                raise RuntimeError(f"the server exited with status {code}")
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()


async def run_uamp(url: str, connections: int, sessions: int, meter: Meter) -> list[Sample]:
    """C connections x S sessions, all inputs sent together; the meter times the streaming."""
    ws_url = "ws" + url.removeprefix("http") + f"/agents/{AGENT}/uamp"
    samples: list[Sample] = []
    ready = 0
    all_ready = trio.Event()
    go = trio.Event()

    async def one_session(s: UampClientSession) -> None:
        t0 = trio.current_time()
        await s.input_text("go")
        first = None
        deltas = 0
        text: list[str] = []
        async for ev in s.events:
            if type(ev) is uamp.ResponseDelta and type(ev.delta) is uamp.TextDelta:
                if first is None:
                    first = trio.current_time() - t0
                deltas += 1
                text.append(ev.delta.text)
            elif ev.type in uamp.TERMINAL_TYPES:
                status = {"response.done": "completed", "response.error": "error"}.get(
                    ev.type, "cancelled"
                )
                break
        else:
            status = "closed"  # the socket closed first
        samples.append(Sample(first, trio.current_time() - t0, deltas, "".join(text), status))
        if len(samples) == connections * sessions:
            meter.stop()  # the last response ended (the sockets are not closed yet)

    async def connection() -> None:
        nonlocal ready
        async with open_uamp_client(ws_url) as client:
            opened = [await client.create_session() for _ in range(sessions)]
            ready += 1
            if ready == connections:
                all_ready.set()
            await go.wait()
            async with trio.open_nursery() as nursery:
                for s in opened:
                    nursery.start_soon(one_session, s)

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(connection)
        await all_ready.wait()
        meter.start()
        go.set()
    return samples


async def run_completions(url: str, connections: int, sessions: int, meter: Meter) -> list[Sample]:
    """C concurrent workers, each S streaming completions in turn; the meter times them."""
    samples: list[Sample] = []
    body = {
        "model": AGENT,
        "stream": True,
        "messages": [{"role": "user", "content": "go"}],
    }
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)

    async def worker(http: httpx.AsyncClient) -> None:
        for _ in range(sessions):
            t0 = trio.current_time()
            first = None
            deltas = 0
            text: list[str] = []
            status = "error"
            async with http.stream("POST", "/v1/chat/completions", json=body) as resp:
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
            samples.append(Sample(first, trio.current_time() - t0, deltas, "".join(text), status))

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as http:
        # Warm the connection pool so the timed phase does not include TCP set-up.
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(http.get, "/health")
        meter.start()
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(worker, http)
        meter.stop()
    return samples


async def server_metrics(url: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    return dict(re.findall(r"^trioagents_(\w+) (\S+)$", text, re.M))


# ---------------------------------------------------------------------------------------------
# Report


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def versions() -> list[tuple[str, str]]:
    def v(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "?"

    cfg = Config.load()
    return [
        ("python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("trio", v("trio")),
        ("hypercorn", v("hypercorn")),
        ("trioagents", v("trioagents")),
        ("platform", platform.platform()),
        ("nproc", str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?")),
        ("server gc", f"freeze={cfg.gc_freeze}, gen0 threshold={cfg.gc_gen0_threshold}"),
        ("load average at start", " ".join(f"{x:.2f}" for x in os.getloadavg())),
    ]


def table(rows: Sequence[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    vwidth = max(len(v) for _, v in rows)
    rule = f"+-{'-' * width}-+-{'-' * vwidth}-+"
    lines = [rule]
    for k, v in rows:
        lines.append(f"| {k:<{width}} | {v:>{vwidth}} |")
    lines.append(rule)
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> int:
    c, s, words = args.connections, args.sessions, args.words
    shape = (
        f"{c} connections x {s} sessions (all {c * s} in flight at once)"
        if args.transport == "uamp"
        else f"{c} concurrent streams x {s} requests each"
    )
    print(f"trioagents benchmark: {args.transport}, {shape}, {words}-word replies")
    print(table(versions()), flush=True)
    expected = reply_text(words)
    with trio.fail_after(args.timeout):
        async with open_server(words) as server:
            idle_rss, _ = server.rss()
            run = run_uamp if args.transport == "uamp" else run_completions
            meter = Meter(server.process.pid)
            samples = await run(server.url, c, s, meter)
            rss, peak = server.rss()
            metrics = await server_metrics(server.url)
    ok = [x for x in samples if x.status == "completed" and x.text == expected]
    failed = len(samples) - len(ok)
    deltas = sum(x.deltas for x in samples)
    firsts = [x.first_delta for x in samples if x.first_delta is not None]
    dones = [x.done for x in samples]
    n = len(samples)
    wall = meter.wall
    server_cpu = "n/a"
    per_delta = "n/a"
    if meter.server_cpu is not None:
        server_cpu = f"{meter.server_cpu:.2f} s ({meter.server_cpu / wall:.0%} of a core)"
        per_delta = f"{meter.server_cpu / (n * words) * 1e6:.0f} us"
    rows = [
        ("transport", args.transport),
        ("responses (sessions)", str(n)),
        ("failed or wrong text", str(failed)),
        ("deltas received", str(deltas)),
        ("words per response", str(words)),
        ("wall time", f"{wall:.3f} s"),
        ("responses/s", f"{n / wall:.1f}"),
        ("deltas/s", f"{deltas / wall:.0f}"),
        ("words/s", f"{n * words / wall:.0f}"),
        ("time to first delta p50", ms(percentile(firsts, 50)) if firsts else "n/a"),
        ("time to first delta p99", ms(percentile(firsts, 99)) if firsts else "n/a"),
        ("time to done p50", ms(percentile(dones, 50))),
        ("time to done p99", ms(percentile(dones, 99))),
        ("server CPU in timed phase", server_cpu),
        ("server CPU per word streamed", per_delta),
        ("client CPU in timed phase", f"{meter.client_cpu:.2f} s ({meter.client_cpu / wall:.0%})"),
        ("server RSS idle", idle_rss),
        ("server RSS after run", rss),
        ("server RSS peak", peak),
    ]
    for key in ("responses_total", "responses_cancelled_total", "deltas_total"):
        rows.append((f"server /metrics {key}", metrics.get(key, "n/a")))
    print(table(rows), flush=True)
    if failed:
        print(f"error: {failed} responses failed or had the wrong text", file=sys.stderr)
        return 1
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transport", choices=["uamp", "completions"], default="uamp")
    p.add_argument("--connections", type=int, default=10, help="C (default 10)")
    p.add_argument("--sessions", type=int, default=10, help="S per connection (default 10)")
    p.add_argument("--words", type=int, default=200, help="words per reply (default 200)")
    p.add_argument("--timeout", type=float, default=600.0, help="bound on the whole run (s)")
    p.add_argument("--smoke", action="store_true", help="tiny run for CI (2 x 2, 20 words)")
    args = p.parse_args(argv)
    if args.smoke:
        args.connections, args.sessions, args.words = 2, 2, 20
    if min(args.connections, args.sessions, args.words) < 1:
        p.error("--connections, --sessions and --words must be at least 1")
    return args


def run(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status (1: wrong responses, 2: could not run)."""
    args = parse_args(argv)
    failures: list[Exception] = []
    try:
        return trio.run(main, args)
    except* (RuntimeError, trio.TooSlowError) as group:
        failures.extend(group.exceptions)
    for exc in failures:
        print(f"uamp_sessions: error: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(run())
