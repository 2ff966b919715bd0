"""Shared pieces of the benchmark suite (``python -m benchmarks``).

Everything a workload module needs to measure a target the same way as every other workload:

* the mock model: :func:`bench_agent` (served by ``trioagents serve``) and :func:`reply_text`;
  the mode (``burst`` / ``paced``) and size come from environment variables that
  :func:`server_env` builds, and the peer and the floors read the same variables;
* servers: :func:`open_server` starts one target (``trioagents``, ``webagents`` or ``floor``)
  for one protocol (``uamp`` or ``sse``) as a subprocess pinned to :data:`SERVER_CPU`, yields
  a :class:`Server` (URLs, pid, CPU and RSS readers) and stops it with SIGINT;
* load generators: :func:`run_json_process` runs a load-generator subprocess pinned to
  :data:`LOADGEN_CPU` and returns the JSON line it prints;
* results: :func:`summarize` (median, min, max per metric over runs), :func:`result_entry`
  (one entry of the JSON document), :func:`render_table` (one table per workload) and
  :func:`document` (the JSON document around the entries: machine, versions, GC, pinning).

The module is also the ``trioagents serve`` target, so its top level imports only what the
server already has (no ``websockets``/``aiohttp``/``uvloop``).
"""

from __future__ import annotations

import gc
import importlib.util
import math
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import orjson
import trio

__all__ = [
    "AGENT",
    "DEFAULT_WORDS",
    "LOADGEN_CPU",
    "MODES",
    "PACED_DELAY",
    "SERVER_CPU",
    "TARGETS",
    "Server",
    "bench_agent",
    "cpus_available",
    "describe",
    "document",
    "fmt_cell",
    "fmt_number",
    "gc_info",
    "machine_info",
    "open_server",
    "percentiles",
    "pin",
    "pin_self",
    "pinning_info",
    "proc_cpu",
    "proc_memory",
    "reap",
    "render_table",
    "reply_text",
    "result_entry",
    "run_json_process",
    "server_env",
    "summarize",
    "target_available",
    "versions",
    "write_json",
]

HERE = Path(__file__).resolve().parent
AGENT = "bench"
"""The agent name every target serves."""
TARGETS = ("trioagents", "webagents", "floor")
"""The measured targets, in table order."""
MODES = ("burst", "paced")
"""``burst``: the reply's deltas all at once; ``paced``: one every :data:`PACED_DELAY` s."""
DEFAULT_WORDS = 20
"""Words (= model deltas) per reply: ``w0 w1 … w19``."""
PACED_DELAY = 0.05
"""Seconds between two deltas of one response in ``paced`` mode (20 deltas/s per session)."""
SERVER_CPU = 0
"""The core servers are pinned to."""
LOADGEN_CPU = 1
"""The core load generators (and the orchestrating process) are pinned to."""

WORDS_ENV = "TRIOAGENTS_BENCH_WORDS"
MODE_ENV = "TRIOAGENTS_BENCH_MODE"
DELAY_ENV = "TRIOAGENTS_BENCH_DELAY"

_LISTENING = re.compile(r"listening on (http://\S+)")


# ---------------------------------------------------------------------------------------------
# The mock model


def reply_text(words: int = DEFAULT_WORDS) -> str:
    """The fixed reply every target streams: ``words`` short words, ``w0 w1 …``."""
    return " ".join(f"w{i}" for i in range(words))


def bench_mode(environ: Mapping[str, str] | None = None) -> tuple[int, str, float]:
    """``(words, mode, delay)`` from the environment (see :func:`server_env`)."""
    env = os.environ if environ is None else environ
    words = int(env.get(WORDS_ENV, DEFAULT_WORDS))
    mode = env.get(MODE_ENV, "burst")
    if mode not in MODES:
        raise ValueError(f"{MODE_ENV} must be one of {MODES}, got {mode!r}")
    delay = float(env.get(DELAY_ENV, PACED_DELAY)) if mode == "paced" else 0.0
    return words, mode, delay


class BenchModel:
    """The mock model, the same on every target: a fixed reply, one word per text delta.

    Like the peer's mock (``peer_webagents.py``) it precomputes its deltas and reports a
    constant usage, so a turn's cost does not grow with the session's history: the numbers
    measure the framework, not the mock. ``delay`` > 0 paces the words.
    """

    name = "bench-mock"

    def __init__(self, words: int = DEFAULT_WORDS, delay: float = 0.0) -> None:
        from trioagents.agent import TextChunk, Usage

        self.delay = delay
        self._chunks = [
            TextChunk(w if i == 0 else " " + w) for i, w in enumerate(reply_text(words).split(" "))
        ]
        self._usage = Usage(input_tokens=1, output_tokens=words)

    async def stream(self, request: Any) -> Any:
        """Stream the reply (an async generator of model events)."""
        delay = self.delay
        for i, chunk in enumerate(self._chunks):
            if delay and i:
                await trio.sleep(delay)
            yield chunk
        yield self._usage

    async def aclose(self) -> None:
        """Nothing to release."""


def bench_agent() -> Any:
    """The agent ``trioagents serve benchmarks/_harness.py:bench_agent`` serves.

    Its :class:`BenchModel` answers every input with :func:`reply_text`, one word per delta:
    at once (``burst``) or ``PACED_DELAY`` seconds apart (``paced``), as the environment says.
    """
    from trioagents import Agent

    words, _, delay = bench_mode()
    return Agent(AGENT, model=BenchModel(words, delay))


def server_env(mode: str, words: int = DEFAULT_WORDS, delay: float = PACED_DELAY) -> dict[str, str]:
    """Environment variables selecting the mock model's mode for every target's server.

    Also lifts trioagents' per-socket session limit (default 64) so one connection can carry
    the multiplexed workloads' 10,000 sessions.
    """
    return {
        WORDS_ENV: str(words),
        MODE_ENV: mode,
        DELAY_ENV: str(delay),
        "TRIOAGENTS_MAX_SESSIONS_PER_SOCKET": "20000",
        "WEBAGENTS_LOG_LEVEL": "WARNING",
    }


# ---------------------------------------------------------------------------------------------
# Processes: pinning, CPU, memory


def cpus_available() -> list[int]:
    """The CPUs this process may run on (sorted)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


_CPUS_AT_IMPORT = cpus_available()  # before pin_self() narrows this process's own set


def _pinning_possible() -> bool:
    cpus = set(_CPUS_AT_IMPORT) | set(range(os.cpu_count() or 1))
    return SERVER_CPU in cpus and LOADGEN_CPU in cpus


def pin(pid: int, cpu: int) -> bool:
    """Pin process ``pid`` to core ``cpu``; False when not possible (too few cores)."""
    if not _pinning_possible():
        return False
    try:
        os.sched_setaffinity(pid, {cpu})
    except OSError:
        return False
    return True


def pin_self() -> bool:
    """Pin this (orchestrating) process to the load generator's core, off the server's."""
    return pin(0, LOADGEN_CPU)


def pinning_info() -> dict[str, Any]:
    """The pinning the suite applies, for the JSON document."""
    possible = _pinning_possible()
    return {
        "enabled": possible,
        "server_cpu": SERVER_CPU if possible else None,
        "loadgen_cpu": LOADGEN_CPU if possible else None,
        "orchestrator_cpu": LOADGEN_CPU if possible else None,
        "cpus_available": _CPUS_AT_IMPORT,
        "how": "os.sched_setaffinity on each subprocess right after it starts",
    }


def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all threads), from ``/proc/PID/stat``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_memory(pid: int) -> dict[str, float | None]:
    """``{"rss_mib", "hwm_mib"}`` (resident now and peak) from ``/proc/PID/status``."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {"rss_mib": None, "hwm_mib": None}
    found = dict(re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M))
    return {
        "rss_mib": int(found["VmRSS"]) / 1024 if "VmRSS" in found else None,
        "hwm_mib": int(found["VmHWM"]) / 1024 if "VmHWM" in found else None,
    }


# ---------------------------------------------------------------------------------------------
# Servers


def target_available(target: str) -> str | None:
    """None when ``target`` can run here, else why not (e.g. the peer is not installed)."""
    if target == "webagents":
        missing = [m for m in ("webagents", "uvicorn") if importlib.util.find_spec(m) is None]
        if missing:
            return f"not installed: {', '.join(missing)} (pip install -e '.[bench]')"
    elif target not in TARGETS:
        return f"unknown target {target!r}"
    return None


def _server_command(target: str, protocol: str) -> tuple[list[str], str, str]:
    """(argv, UAMP WebSocket path, Chat Completions path) of ``target`` serving ``protocol``."""
    py = sys.executable
    if target == "trioagents":
        argv = [
            py, "-m", "trioagents.cli", "serve", f"{HERE / '_harness.py'}:bench_agent",
            "--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING", "--a2a-db", ":memory:",
        ]  # fmt: skip
        return argv, f"/agents/{AGENT}/uamp", f"/agents/{AGENT}/v1/chat/completions"
    if target == "webagents":
        argv = [py, str(HERE / "peer_webagents.py"), "--port", "0"]
        return argv, f"/{AGENT}/uamp", f"/{AGENT}/chat/completions"
    if target == "floor":
        script = "floor_ws.py" if protocol == "uamp" else "floor_trio.py"
        argv = [py, str(HERE / script), "--port", "0"]
        if protocol == "sse":
            argv.append("--coalesce")
        return argv, "/uamp", "/v1/chat/completions"
    raise ValueError(f"unknown target {target!r}")


@attrs.define(eq=False)
class Server:
    """A running target server (a subprocess).

    Attributes:
        target: ``trioagents``, ``webagents`` or ``floor``.
        process: the trio process.
        url: ``http://127.0.0.1:PORT`` from its ``listening on`` line.
        uamp_path / sse_path: where it serves UAMP over WebSocket / streaming completions.
        pinned: whether it was pinned to :data:`SERVER_CPU`.
        output: its stdout and stderr lines (kept for error reports).
    """

    target: str
    process: trio.Process
    uamp_path: str
    sse_path: str
    url: str = ""
    pinned: bool = False
    output: list[str] = attrs.field(factory=list)

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.process.pid

    @property
    def ws_url(self) -> str:
        """The UAMP WebSocket URL."""
        return "ws" + self.url.removeprefix("http") + self.uamp_path

    @property
    def sse_url(self) -> str:
        """The streaming Chat Completions URL."""
        return self.url + self.sse_path

    def cpu(self) -> float | None:
        """The server's CPU seconds so far (see :func:`proc_cpu`)."""
        return proc_cpu(self.pid)

    def memory(self) -> dict[str, float | None]:
        """The server's resident memory now and at peak (see :func:`proc_memory`)."""
        return proc_memory(self.pid)

    def tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines the server printed."""
        return "\n".join(self.output[-lines:])

    async def _pump(
        self,
        stream: trio.abc.ReceiveStream,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
        watch: bool,
    ) -> None:
        buf = b""
        started = not watch
        if not watch:
            task_status.started()
        while data := await stream.receive_some(65536):
            buf += data
            *complete, buf = buf.split(b"\n")
            for raw in complete:
                line = raw.decode(errors="replace")
                self.output.append(line)
                del self.output[:-200]
                m = _LISTENING.search(line)
                if m and not started:
                    self.url = m.group(1)
                    started = True
                    task_status.started()
        if not started:
            raise RuntimeError(f"{self.target} exited before listening:\n{self.tail()}")


@asynccontextmanager
async def open_server(
    target: str,
    protocol: str = "uamp",
    env: Mapping[str, str] | None = None,
    *,
    start_timeout: float = 60.0,
    stop_timeout: float = 20.0,
) -> AsyncIterator[Server]:
    """Start ``target`` serving ``protocol`` (``uamp`` or ``sse``) on 127.0.0.1:0, pinned.

    ``env`` is added to the server's environment (normally :func:`server_env`). On exit the
    server gets SIGINT and ``stop_timeout`` seconds to exit (then it is killed); an exit
    status other than 0 (or SIGINT's) raises ``RuntimeError`` with its last output lines.
    """
    argv, uamp_path, sse_path = _server_command(target, protocol)
    proc = await trio.lowlevel.open_process(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=str(HERE.parent),
    )
    server = Server(target, proc, uamp_path, sse_path)
    server.pinned = pin(proc.pid, SERVER_CPU)
    try:
        async with trio.open_nursery() as nursery:
            assert proc.stdout is not None and proc.stderr is not None
            with trio.fail_after(start_timeout):
                await nursery.start(partial(server._pump, proc.stdout, watch=True))
            nursery.start_soon(partial(server._pump, proc.stderr, watch=False))
            yield server
            proc.send_signal(signal.SIGINT)
            with trio.move_on_after(stop_timeout):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                raise RuntimeError(f"{target} did not stop within {stop_timeout} s of SIGINT")
            if proc.returncode not in (0, -signal.SIGINT, 130):
                raise RuntimeError(
                    f"{target} exited with status {proc.returncode}:\n{server.tail()}"
                )
    finally:
        await reap(proc)


async def reap(proc: trio.Process) -> None:
    """Kill ``proc`` if it still runs, wait for it and close its pipes (shielded).

    The ``finally`` of every helper that starts a subprocess: nothing is left running or open,
    even when the caller is cancelled.
    """
    if proc.returncode is None:
        proc.kill()
    with trio.CancelScope(shield=True):
        await proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                await stream.aclose()


async def run_json_process(
    argv: Sequence[str], *, time_limit: float, cpu: int | None = LOADGEN_CPU
) -> dict[str, Any]:
    """Run a load generator (pinned to ``cpu``) and return the JSON object it printed last.

    Raises:
        RuntimeError: it failed, printed no JSON, or ran past ``time_limit`` seconds (it is killed).
    """
    proc = await trio.lowlevel.open_process(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(HERE.parent)
    )
    if cpu is not None:
        pin(proc.pid, cpu)
    out: list[bytes] = []
    err: list[bytes] = []

    async def drain(stream: trio.abc.ReceiveStream, into: list[bytes]) -> None:
        while data := await stream.receive_some(65536):
            into.append(data)

    try:
        with trio.move_on_after(time_limit) as scope:
            async with trio.open_nursery() as nursery:
                assert proc.stdout is not None and proc.stderr is not None
                nursery.start_soon(drain, proc.stdout, out)
                nursery.start_soon(drain, proc.stderr, err)
                await proc.wait()
        if scope.cancelled_caught:
            raise RuntimeError(f"load generator ran past {time_limit:.0f} s: {' '.join(argv[1:3])}")
    finally:
        await reap(proc)
    stdout = b"".join(out).decode(errors="replace").strip().splitlines()
    stderr = b"".join(err).decode(errors="replace").strip()
    if proc.returncode != 0 or not stdout:
        raise RuntimeError(f"load generator exited with status {proc.returncode}: {stderr[-2000:]}")
    try:
        result: dict[str, Any] = orjson.loads(stdout[-1])
    except orjson.JSONDecodeError:
        raise RuntimeError(f"load generator printed no JSON: {stdout[-1][:500]}") from None
    return result


# ---------------------------------------------------------------------------------------------
# Statistics


def percentiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, float | None]:
    """Nearest-rank p50/p90/p99/max of ``values`` times ``scale`` (seconds → ms by default).

    All None when there are no values.
    """
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1] * scale

    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": ordered[-1] * scale}


def summarize(runs: Sequence[Mapping[str, float | int | None]]) -> dict[str, dict[str, float]]:
    """Median, min and max of every metric over ``runs``, skipping missing (None) values.

    A metric with no value in any run is left out. Metric order follows first appearance.
    """
    names: dict[str, None] = {}
    for run in runs:
        names.update(dict.fromkeys(run))
    out: dict[str, dict[str, float]] = {}
    for name in names:
        values = [
            float(v)
            for run in runs
            if isinstance(v := run.get(name), int | float) and not isinstance(v, bool)
        ]
        if values:
            out[name] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
    return out


def result_entry(
    workload: str,
    target: str,
    params: Mapping[str, Any],
    runs: Sequence[Mapping[str, float | int | None]],
    *,
    errors: Iterable[str] = (),
    notes: Iterable[str] = (),
    ok: bool | None = None,
    skipped: str | None = None,
) -> dict[str, Any]:
    """One result entry of the JSON document (the workload modules' contract).

    ``ok`` defaults to: no errors and at least one run. ``skipped`` (why the target was not
    measured) adds a ``"skipped"`` key, leaves ``runs`` empty and counts as ok.
    """
    errs = list(errors)
    if skipped is not None:
        return {
            "workload": workload,
            "target": target,
            "params": dict(params),
            "runs": [],
            "summary": {},
            "ok": True,
            "errors": [],
            "notes": [f"skipped: {skipped}"],
            "skipped": skipped,
        }
    return {
        "workload": workload,
        "target": target,
        "params": dict(params),
        "runs": [dict(r) for r in runs],
        "summary": summarize(runs),
        "ok": (not errs and bool(runs)) if ok is None else ok,
        "errors": errs,
        "notes": list(dict.fromkeys(notes)),
    }


# ---------------------------------------------------------------------------------------------
# Tables


def fmt_number(x: float | None) -> str:
    """A compact human form: thousands separators, fewer decimals as numbers grow."""
    if x is None:
        return "-"
    ax = abs(x)
    if ax >= 1000 or x == int(x):
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_cell(summary: Mapping[str, float] | None) -> str:
    """``median (min-max)`` (an en dash between); the median alone when min == max; ``-``."""
    if not summary:
        return "-"
    med, lo, hi = summary["median"], summary["min"], summary["max"]
    if lo == hi:
        return fmt_number(med)
    return f"{fmt_number(med)} ({fmt_number(lo)}–{fmt_number(hi)})"  # noqa: RUF001


def _params_label(params: Mapping[str, Any]) -> str:
    """A column heading: the short parameters (descriptions and pinning stay in the JSON)."""
    parts = []
    for k, v in params.items():
        if k == "words" and v == DEFAULT_WORDS:
            continue
        if k.endswith("_cpu") or len(str(v)) > 24:
            continue
        parts.append(str(v) if k == "mode" else f"{k}={v}")
    return " ".join(parts) or "-"


def render_table(
    entries: Sequence[Mapping[str, Any]], title: str | None = None, max_columns: int = 6
) -> str:
    """One table: metrics as rows, one column per entry (target over params) in given order.

    Cells are ``median (min-max)`` over the entry's runs; a failed entry's column is headed
    ``FAILED`` and its errors are listed under the table. Skipped entries are listed, not
    drawn. More than ``max_columns`` columns are split into several tables of whole
    parameter sets (every target of one parameter set stays side by side).
    """
    drawn = [e for e in entries if not e.get("skipped")]
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for e in drawn:
        groups.setdefault(_params_label(e["params"]), []).append(e)
    if len(drawn) > max_columns and len(groups) > 1:
        parts: list[str] = [title] if title else []
        chunk: list[Mapping[str, Any]] = []
        for group in groups.values():
            if chunk and len(chunk) + len(group) > max_columns:
                parts.append(_render_one(chunk, None))
                chunk = []
            chunk.extend(group)
        parts.append(_render_one(chunk + [e for e in entries if e.get("skipped")], None))
        return "\n".join(parts)
    return _render_one(entries, title)


def _render_one(entries: Sequence[Mapping[str, Any]], title: str | None) -> str:
    skipped = [e for e in entries if e.get("skipped")]
    entries = [e for e in entries if not e.get("skipped")]
    tail = [
        f"  skipped: {target}: {why}"
        for target, why in dict.fromkeys((e["target"], e["skipped"]) for e in skipped)
    ]
    if not entries:
        return "\n".join(([title] if title else []) + tail)
    metrics: dict[str, None] = {}
    for e in entries:
        metrics.update(dict.fromkeys(e["summary"]))
    heads1 = [e["target"] + ("" if e["ok"] else " FAILED") for e in entries]
    heads2 = [_params_label(e["params"]) for e in entries]
    rows = [[m] + [fmt_cell(e["summary"].get(m)) for e in entries] for m in metrics]
    first = max([len("metric"), *(len(m) for m in metrics)])
    widths = [
        max(len(heads1[i]), len(heads2[i]), *(len(r[i + 1]) for r in rows))
        for i in range(len(entries))
    ]
    rule = "+-" + "-+-".join("-" * w for w in [first, *widths]) + "-+"

    def line(cells: Sequence[str], left: str) -> str:
        body = " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))
        return f"| {left.ljust(first)} | {body} |"

    out = [title] if title else []
    out += [rule, line(heads1, ""), line(heads2, "metric"), rule]
    out += [line(r[1:], r[0]) for r in rows]
    out.append(rule)
    for e in entries:
        label = f"{e['target']} {_params_label(e['params'])}"
        out += [f"  error ({label}): {msg}" for msg in e["errors"][:5]]
        out += [f"  note ({label}): {msg}" for msg in e["notes"]]
    return "\n".join(out + tail)


# ---------------------------------------------------------------------------------------------
# The JSON document


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions of Python and of every library a target or load generator runs on."""
    out: dict[str, str | None] = {
        "python": f"{platform.python_version()} ({platform.python_implementation()})"
    }
    for dist in (
        "trioagents", "trio", "hypercorn", "wsproto", "h11", "starlette", "orjson",
        "webagents", "uvicorn", "fastapi", "websockets", "aiohttp", "uvloop",
    ):  # fmt: skip
        out[dist] = _version(dist)
    return out


def machine_info() -> dict[str, Any]:
    """Platform, cores, CPU model, memory, load average and open-file limit."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        m = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        mem = round(int(m.group(1)) / 1024 / 1024, 1) if m else None
    except OSError:
        pass
    try:
        import resource

        nofile: int | None = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError):
        nofile = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": model,
        "nproc": os.cpu_count(),
        "memory_gib": mem,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "ulimit_nofile": nofile,
    }


def gc_info() -> dict[str, Any]:
    """The garbage-collector settings of every target's server process."""
    from trioagents import Config

    cfg = Config.load()
    default = list(gc.get_threshold())
    return {
        "trioagents": {
            "freeze_after_startup": cfg.gc_freeze,
            "gen0_threshold": cfg.gc_gen0_threshold,
            "source": "trioagents serve (Config gc_freeze / gc_gen0_threshold)",
        },
        "webagents": {"freeze_after_startup": False, "thresholds": default},
        "floor": {"freeze_after_startup": False, "thresholds": default},
        "load_generators": {"freeze_after_startup": False, "thresholds": default},
    }


def document(command: str, results: Sequence[Mapping[str, Any]], **extra: Any) -> dict[str, Any]:
    """The JSON document around the result entries (schema 1; see ``benchmarks/README.md``)."""
    doc: dict[str, Any] = {
        "suite": "trioagents-bench",
        "schema": 1,
        "command": command,
        "machine": machine_info(),
        "versions": versions(),
        "gc": gc_info(),
        "pinning": pinning_info(),
        "results": list(results),
    }
    doc.update(extra)
    return doc


def write_json(path: str | Path, doc: Mapping[str, Any]) -> None:
    """Write ``doc`` to ``path`` (indented, atomically via a temporary file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    tmp.replace(path)


def describe(exc: BaseException) -> str:
    """One line per leaf exception of ``exc`` (exception groups flattened)."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
