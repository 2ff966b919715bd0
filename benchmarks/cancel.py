"""Workload 6, cancellation: from a client's abort to the model's upstream stream being closed.

Usage::

    python -m benchmarks.cancel [--smoke] [--runs N] [--targets trioagents webagents]
                                [--aborts 500] [--load 200] [--json PATH]

Three processes: the agent server (CPU 0), a fake OpenAI-compatible upstream
(``benchmarks/upstream_fake.py``, CPU 1 beside the load generator) that streams one chunk every
``--interval`` seconds forever and timestamps, with ``time.monotonic()``, the instant each
stream's connection closes, and this process, the load generator (aiohttp and ``websockets``
on uvloop, CPU 1). The served agent's model is the real provider: trioagents'
``OpenAIModel`` (``cancel_agent`` below), webagents' ``OpenAISkill``
(``benchmarks/peer_webagents_cancel.py``), both with ``base_url`` = the upstream.

Every turn sends a unique prompt (the request id the upstream sees as the last message), waits
for the first streamed word, records ``time.monotonic()`` and aborts:

* ``sse``: Chat Completions SSE, the client closes the TCP connection;
* ``uamp``: UAMP over WebSocket, the client sends ``response.cancel`` (one connection and
  session for the whole series; the client-side ``response.cancelled`` time is reported too).

Latency = upstream close instant - abort instant, matched by request id; an abort with no close
within 5 s is ``unmatched``; a turn with no first word or no ``response.cancelled`` within 10 s
is ``stalled`` (counted; the series goes on, on a new socket for UAMP). ``idle``: one turn at
a time; ``loaded``: the same while ``--load`` other Completions streams are paced by the
upstream (one chunk per ``--interval`` each).

Leaks, after all ``4 x --aborts`` aborts with the server idle again: open sockets of the server
(``socket:`` links in ``/proc/PID/fd``) minus the baseline taken after warm-up, the trioagents
``trioagents_tasks`` gauge (live Trio tasks) minus its baseline, ``sessions_open`` /
``connections_open`` from ``/metrics``, and the upstream's still-open streams.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio

from benchmarks import _aux as aux

WORKLOAD = "cancel"
UPSTREAM_ENV = "TRIOAGENTS_BENCH_UPSTREAM_URL"
AGENT = "bench"
_HERE = os.path.dirname(os.path.abspath(__file__))
_TURN_TIMEOUT = 10.0  # a turn with no first word / no cancel acknowledgement by then stalled
_SETTLE = 5.0  # seconds to wait for the upstream to see a close / the server to go idle


def cancel_agent() -> Any:
    """The served agent: ``OpenAIModel`` streaming from ``$TRIOAGENTS_BENCH_UPSTREAM_URL``.

    Its own ``httpx.AsyncClient`` lifts httpx's default 100-connection pool limit, so the
    ``--load`` background streams and the aborted ones never queue for a connection.
    """
    import httpx

    from trioagents import Agent
    from trioagents.agent import OpenAIModel

    client = httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=10.0),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=100),
    )
    model = OpenAIModel("fake", base_url=os.environ[UPSTREAM_ENV], api_key="k", client=client)
    return Agent(AGENT, model=model)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The workload's own options."""
    parser.add_argument(
        "--aborts", type=int, default=500, help="aborts per (protocol, idle|loaded) (default 500)"
    )
    parser.add_argument(
        "--peer-aborts",
        type=int,
        default=100,
        help="aborts per phase for the webagents peer (default 100: loaded, it answers ~2 "
        "turns/s, so 500 would take ~25 minutes)",
    )
    parser.add_argument(
        "--load", type=int, default=200, help="background streams while loaded (default 200)"
    )
    parser.add_argument(
        "--interval", type=float, default=0.05, help="upstream seconds between chunks (0.05)"
    )


# ---------------------------------------------------------------------------------------------
# Load side (asyncio on uvloop, in a worker thread)


class _Target:
    """Where the load side sends its requests (paths differ between the two servers)."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        ws = "ws" + url.removeprefix("http")
        if kind == "trioagents":
            self.sse = f"{url}/agents/{AGENT}/v1/chat/completions"
            self.uamp = f"{ws}/agents/{AGENT}/uamp"
        else:
            self.sse = f"{url}/{AGENT}/chat/completions"
            self.uamp = f"{ws}/{AGENT}/uamp"
        self.headers = {"Authorization": "Bearer bench"}


def _body(rid: str) -> dict[str, Any]:
    return {"model": AGENT, "stream": True, "messages": [{"role": "user", "content": rid}]}


async def _sse_turn(http: Any, target: _Target, rid: str, *, abort: bool = True) -> float:
    """Start a stream, wait for its first word, close the connection; return the abort instant.

    With ``abort=False`` (a background stream) it reads until cancelled.
    """
    resp = await http.post(target.sse, json=_body(rid), headers=target.headers)
    try:
        if resp.status != 200:
            raise RuntimeError(f"{rid}: HTTP {resp.status}: {(await resp.text())[:200]}")
        async for line in resp.content:
            if b"w0" in line:
                break
        else:
            raise RuntimeError(f"{rid}: the stream ended before the first word")
        if not abort:
            async for _ in resp.content:
                pass
            raise RuntimeError(f"{rid}: a background stream ended")
        t = time.monotonic()
        resp.close()
        return t
    finally:
        resp.close()


async def _uamp_open(target: _Target) -> Any:
    """A UAMP socket with one acknowledged session."""
    import orjson
    import websockets

    ws = await websockets.connect(
        target.uamp,
        max_size=None,
        compression=None,
        open_timeout=30,
        additional_headers=target.headers,
    )
    await ws.send(
        orjson.dumps(
            {"type": "session.create", "event_id": "evt_c", "uamp_version": "1.0"}
        ).decode()
    )
    while orjson.loads(await ws.recv())["type"] != "session.created":
        pass
    return ws


async def _uamp_turn(
    ws: Any, rid: str, n: int, aborts: dict[str, float], acks: list[float]
) -> None:
    """input → first word → ``response.cancel`` (abort instant recorded) → ``cancelled``."""
    import orjson

    await ws.send(
        orjson.dumps({"type": "input.text", "event_id": f"evt_{n}", "text": rid}).decode()
    )
    response_id = None
    while True:
        ev = orjson.loads(await ws.recv())
        kind = ev.get("type")
        if kind == "response.created":
            response_id = ev.get("response_id") or (ev.get("response") or {}).get("id")
        elif kind == "response.delta" and (
            response_id is None or ev.get("response_id") in (None, response_id)
        ):
            if "w0" in str((ev.get("delta") or {}).get("text", "")):
                break
        elif kind in ("response.error", "response.done", "error") and ev.get("response_id") in (
            None,
            response_id,
        ):
            raise RuntimeError(f"{rid}: {kind} before the first word: {ev}")
    t = time.monotonic()
    cancel: dict[str, Any] = {"type": "response.cancel", "event_id": f"evt_x{n}"}
    if response_id is not None:
        cancel["response_id"] = response_id
    await ws.send(orjson.dumps(cancel).decode())
    aborts[rid] = t
    while True:
        ev = orjson.loads(await ws.recv())
        if ev.get("response_id") not in (None, response_id):
            continue
        if ev.get("type") == "response.cancelled":
            acks.append(time.monotonic() - t)
            return
        if ev.get("type") in ("response.error", "error"):
            raise RuntimeError(f"{rid}: {ev.get('type')} after response.cancel: {ev}")


async def _uamp_series(
    target: _Target, rids: Sequence[str]
) -> tuple[dict[str, float], list[float], int]:
    """One socket, one session for the series (a fresh one after a stalled turn).

    Returns (abort instant per rid, client-side times from abort to ``response.cancelled``,
    turns that stalled: no first word or no ``response.cancelled`` within ``_TURN_TIMEOUT``).
    """
    aborts: dict[str, float] = {}
    acks: list[float] = []
    stalled = 0
    ws = None
    try:
        for n, rid in enumerate(rids):
            if ws is None:
                ws = await _uamp_open(target)
            try:
                await asyncio.wait_for(_uamp_turn(ws, rid, n, aborts, acks), _TURN_TIMEOUT)
            except TimeoutError:
                stalled += 1
                await ws.close()
                ws = None
    finally:
        if ws is not None:
            await ws.close()
    return aborts, acks, stalled


async def _upstream_stats(http: Any, upstream: str, prefix: str | None = None) -> dict[str, Any]:
    url = upstream + "/stats" + (f"?ids={prefix}" if prefix else "")
    async with http.get(url) as resp:
        data: dict[str, Any] = await resp.json()
        return data


async def _matched(
    http: Any, upstream: str, prefix: str, aborts: dict[str, float]
) -> tuple[list[float], int]:
    """Latencies (s) of aborts whose close the upstream saw; the number still unmatched."""
    deadline = time.monotonic() + _SETTLE
    while True:
        closed = (await _upstream_stats(http, upstream, prefix))["closed"]
        if all(r in closed for r in aborts) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    lat = [closed[r] - t for r, t in aborts.items() if r in closed]
    return lat, sum(1 for r in aborts if r not in closed)


async def _probe(
    pid: int, url: str | None, scraper: Any, scrapes: int = 3
) -> dict[str, float | None]:
    """Server sockets and /metrics gauges (each the minimum of its readings).

    ``scraper`` is an aiohttp session holding one keep-alive connection, open in the baseline
    and after alike, so the scrape itself does not change the counts.
    The gauges are the minimum of ``scrapes`` scrapes 50 ms apart: a scrape's task count
    includes, ±1, Hypercorn tasks of requests that are just ending (the scrapes' own).
    """
    sockets = [aux.socket_count(pid)]
    out: dict[str, float | None] = {}
    if url is not None:
        pages = []
        for _ in range(scrapes):
            sockets.append(aux.socket_count(pid))
            async with scraper.get(url + "/metrics") as resp:
                pages.append(aux.parse_metrics(await resp.text()))
            await asyncio.sleep(0.05)
        for k in ("tasks", "sessions_open", "connections_open"):
            values = [m[k] for m in pages if k in m]
            out[k] = min(values) if values else None
    known = [n for n in sockets if n is not None]
    out["sockets"] = min(known) if known else None
    return out


async def _load_side(
    kind: str, url: str, upstream: str, pid: int, run_no: int, aborts: int, load: int
) -> dict[str, float | int | None]:
    import aiohttp

    target = _Target(kind, url)
    metrics_url = url if kind == "trioagents" else None
    result: dict[str, float | int | None] = {}
    conn = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    scraper = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1))
    async with scraper, aiohttp.ClientSession(connector=conn, timeout=timeout) as http:
        # Warm-up: a few aborts of each kind, then a scrape, so lazy state is in the baseline.
        warm = [f"r{run_no}-warm-{i}" for i in range(5)]
        for rid in warm:
            await _sse_turn(http, target, rid)
        await _uamp_series(target, [r + "u" for r in warm])  # (a stall here shows later)
        await _matched(http, upstream, f"r{run_no}-warm-", {r: 0.0 for r in warm})
        await _probe(pid, metrics_url, scraper)
        await asyncio.sleep(0.2)
        base = await _probe(pid, metrics_url, scraper, scrapes=10)

        total_unmatched = 0
        total_aborts = 0

        async def phase(name: str) -> None:
            nonlocal total_unmatched, total_aborts
            prefix = f"r{run_no}-{name}-"
            rids = [f"{prefix}{i}" for i in range(aborts)]
            if name.startswith("sse"):
                at = {}
                stalled = 0
                for rid in rids:
                    try:
                        at[rid] = await asyncio.wait_for(
                            _sse_turn(http, target, rid), _TURN_TIMEOUT
                        )
                    except TimeoutError:
                        stalled += 1
            else:
                at, acks, stalled = await _uamp_series(target, rids)
                result.update(aux.latency_ms(acks, f"{name}_client_ack"))
            result[f"{name}_stalled"] = stalled
            result["stalled_turns"] = (result.get("stalled_turns") or 0) + stalled
            lat, unmatched = await _matched(http, upstream, prefix, at)
            result.update(aux.latency_ms(lat, name))
            result[f"{name}_unmatched"] = unmatched
            total_unmatched += unmatched
            total_aborts += len(at)

        await phase("sse_idle")
        await phase("uamp_idle")

        # Background: `load` streams paced by the upstream, read until cancelled.
        started = 0
        all_started = asyncio.Event()

        async def background(i: int) -> None:
            nonlocal started
            resp = await http.post(
                target.sse, json=_body(f"r{run_no}-bg-{i}"), headers=target.headers
            )
            try:
                async for line in resp.content:
                    if b"w0" in line:
                        started += 1
                        if started == load:
                            all_started.set()
                        break
                async for _ in resp.content:
                    pass
            finally:
                resp.close()

        bg = [asyncio.create_task(background(i)) for i in range(load)]
        try:
            if load:
                await asyncio.wait_for(all_started.wait(), 60)
            result["loaded_streams"] = started
            await phase("sse_loaded")
            await phase("uamp_loaded")
            if any(t.done() for t in bg):
                result["background_failed"] = sum(1 for t in bg if t.done())
        finally:
            for t in bg:
                t.cancel()
            await asyncio.gather(*bg, return_exceptions=True)

        # Leaks: wait (bounded) for the upstream to see every stream closed and the server's
        # sockets and tasks to come back to the baseline, then read everything once more.
        t_idle = time.monotonic()
        deadline = t_idle + _SETTLE
        while True:
            await asyncio.sleep(0.1)
            up = await _upstream_stats(http, upstream, "none")
            after = await _probe(pid, metrics_url, scraper)
            if time.monotonic() > deadline or (
                up["streams_open"] == 0
                and (after["sockets"] or 0) <= (base["sockets"] or 0)
                and (after.get("tasks") or 0) <= (base.get("tasks") or 0)
            ):
                break
        result["settle_s"] = round(time.monotonic() - t_idle, 2)
        up = await _upstream_stats(http, upstream, "none")
    result["aborts"] = total_aborts
    result["unmatched_aborts"] = total_unmatched
    result["leaked_sockets"] = (
        None
        if after["sockets"] is None or base["sockets"] is None
        else after["sockets"] - base["sockets"]
    )
    if metrics_url is not None:
        result["leaked_tasks"] = _diff(after.get("tasks"), base.get("tasks"))
        result["sessions_open_after"] = after.get("sessions_open")
        result["connections_open_after"] = after.get("connections_open")
        result["tasks_baseline"] = base.get("tasks")
    result["upstream_streams_open_after"] = up["streams_open"]
    result["server_sockets_baseline"] = base["sockets"]
    return result


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


# ---------------------------------------------------------------------------------------------
# Orchestration (Trio)


def _server_cmd(kind: str, upstream: str) -> tuple[list[str], dict[str, str]]:
    if kind == "trioagents":
        cmd = [
            sys.executable, "-m", "trioagents.cli", "serve",
            f"{os.path.join(_HERE, 'cancel.py')}:cancel_agent",
            "--host", "127.0.0.1", "--port", "0", "--log-level", "WARNING",
        ]  # fmt: skip
        return cmd, {UPSTREAM_ENV: upstream + "/v1"}
    cmd = [
        sys.executable, "-m", "benchmarks.peer_webagents_cancel",
        "--port", "0", "--upstream", upstream + "/v1",
    ]  # fmt: skip
    return cmd, {}


async def _one_run(
    kind: str, run_no: int, args: argparse.Namespace
) -> dict[str, float | int | None]:
    root = os.path.dirname(_HERE)
    up_cmd = [sys.executable, "-m", "benchmarks.upstream_fake", "--interval", str(args.interval)]
    env = {"PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with trio.fail_after(600):
        async with aux.spawn(up_cmd, env=env, cpu=aux.LOAD_CPU, name="upstream") as upstream:
            cmd, extra = _server_cmd(kind, upstream.url)
            async with aux.spawn(cmd, env={**env, **extra}, cpu=aux.SERVER_CPU) as server:
                return await aux.run_asyncio(
                    partial(
                        _load_side,
                        kind,
                        server.url,
                        upstream.url,
                        server.process.pid,
                        run_no,
                        args.aborts if kind == "trioagents" else args.peer_aborts,
                        args.load,
                    )
                )


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the workload for each applicable target; one result entry per target."""
    if args.smoke:
        args.aborts, args.load = min(args.aborts, 20), min(args.load, 10)
        args.peer_aborts = min(args.peer_aborts, 20)
    params = {
        "aborts_per_phase": args.aborts,
        "peer_aborts_per_phase": args.peer_aborts,
        "phases": "sse_idle, uamp_idle, sse_loaded, uamp_loaded",
        "background_streams": args.load,
        "upstream_chunk_interval_s": args.interval,
        "server_cpu": aux.SERVER_CPU,
        "load_cpu": aux.LOAD_CPU,
        "upstream_cpu": aux.LOAD_CPU,
    }
    results = []
    for kind in args.targets:
        if kind == "floor":
            results.append(
                aux.skipped(WORKLOAD, kind, params, "the raw floor has no model to cancel")
            )
            continue
        if why := aux.unavailable(kind):
            results.append(aux.skipped(WORKLOAD, kind, params, why))
            continue
        runs, errors, pin_note = aux.repeat_runs(
            args.runs, lambda n, kind=kind: trio.run(_one_run, kind, n, args)
        )
        notes = [
            pin_note,
            f"server pinned to CPU {aux.SERVER_CPU}; the fake upstream shares CPU "
            f"{aux.LOAD_CPU} with the load generator",
            "latency = upstream close (its monotonic clock) - client abort (monotonic), "
            "matched by prompt text; sse = client closes the TCP connection, "
            "uamp = response.cancel on one socket",
        ]
        if kind == "trioagents":
            notes.append(aux.gc_note())
            notes.append("model: trioagents OpenAIModel (httpx, pool limit lifted)")
            for r in runs:
                if r.get("unmatched_aborts"):
                    errors.append(f"{r['unmatched_aborts']} aborts never closed the upstream")
                if r.get("stalled_turns"):
                    errors.append(f"{r['stalled_turns']} turns stalled (> {_TURN_TIMEOUT} s)")
        else:
            notes.append("model: webagents OpenAISkill (openai SDK); no task-count endpoint")
        results.append(aux.entry(WORKLOAD, kind, params, runs, errors, notes))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.cancel``."""
    return aux.standalone_main(__doc__ or "", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
