"""UAMP-over-WebSocket load generator: ``websockets`` on ``uvloop``, one JSON line of results.

Usage::

    python benchmarks/loadgen_ws.py --url ws://127.0.0.1:PORT/agents/bench/uamp \
        --connections 100 --sessions 1 --mode burst --warmup 1 --window 5 --server-pid PID
    python benchmarks/loadgen_ws.py --url … --capacity --start 100 --threshold-ms 100 …

Opens ``--connections`` WebSockets (no compression, no pings) with ``--sessions`` UAMP
sessions each (``session.create`` → ``session.created``), then every session loops: send
``input.text``, read its response's ``response.delta`` text frames to ``response.done``,
check the concatenated text is exactly the expected reply, send the next input. After
``--warmup`` seconds it counts, for ``--window`` seconds: text delta frames, model deltas
(words in those frames: a server may merge consecutive deltas into one frame), completed turns,
first-delta latency (input sent → first text frame) and inter-delta gaps (between two text
frames of one response), plus its own and the server's CPU time (``/proc/PID/stat``). Then it
stops starting turns, waits for the running ones to finish (every text verified) and prints::

    {"frames": …, "model_deltas": …, "turns": …, "verified": …, "wrong_texts": …, …}

``--capacity`` steps the number of connections (one session each by default): doubling from
``--start`` while inter-delta p99 stays within ``--threshold-ms``, then bisecting between the
last pass and the first failure; one ``steps`` list and the largest passing ``capacity``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import PACED_DELAY
from _loadgen import Tally, add_run_arguments, run_main

_perf = time.perf_counter
_loads = orjson.loads
_TERMINAL = {"response.done", "response.error", "response.cancelled"}
CREATE_WINDOW = 16
"""``session.create`` events in flight at once on one connection during set-up."""


class Session:
    """One UAMP session looping turns."""

    __slots__ = ("busy", "conn", "failed", "last", "sent_at", "sid", "texts", "turn_msg")

    def __init__(self, conn: Conn, sid: str) -> None:
        self.conn = conn
        self.sid = sid
        self.sent_at = 0.0
        self.last: float | None = None
        self.texts: list[str] = []
        self.busy = False
        self.failed = False
        self.turn_msg = orjson.dumps(
            {"type": "input.text", "session_id": sid, "text": "go"}
        ).decode()


class Load(Tally):
    """Shared state of all connections: the phase, totals, the current window."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.busy = 0
        self.idle = asyncio.Event()
        self.conns: list[Conn] = []
        self.headers = {"Authorization": "Bearer bench"}

    def session_idle(self) -> None:
        self.busy -= 1
        if self.busy == 0 and not self.running:
            self.idle.set()

    async def open(self, sessions: int, sem: asyncio.Semaphore) -> Conn:
        async with sem:
            ws = await connect(
                self.args.url,
                compression=None,
                ping_interval=None,
                max_size=None,
                open_timeout=60,
                close_timeout=5,
                additional_headers=self.headers,
            )
            conn = Conn(self, ws)
            try:
                await conn.setup(sessions)
            except BaseException:
                if conn.sender is not None:
                    conn.sender.cancel()
                await ws.close()
                raise
            return conn

    async def add(self, connections: int, sessions: int) -> list[Conn]:
        """Open connections, create their sessions, start their readers and first turns."""
        sem = asyncio.Semaphore(self.args.connect_concurrency)
        pending = [asyncio.ensure_future(self.open(sessions, sem)) for _ in range(connections)]
        done, late = await asyncio.wait(pending, timeout=self.args.setup_timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        opened = [t.result() for t in done if not t.cancelled() and t.exception() is None]
        failed = [t.exception() for t in done if not t.cancelled() and t.exception()]
        if late or failed:
            await asyncio.gather(*(c.ws.close() for c in opened), return_exceptions=True)
            created = sum(len(c.sessions) for c in opened)
            raise RuntimeError(
                f"set-up of {connections} connections x {sessions} sessions: {len(late)} not "
                f"done within {self.args.setup_timeout:.0f} s, {len(failed)} failed "
                f"({failed[0] if failed else ''}); {created} sessions created"
            )
        new = opened
        spread = PACED_DELAY if self.args.mode == "paced" else 0.0
        loop = asyncio.get_running_loop()
        for conn in new:
            self.conns.append(conn)
            conn.reader = asyncio.ensure_future(conn.read())
            for s in conn.sessions.values():
                if spread:  # paced sessions start out of phase, like real users
                    loop.call_later(random.uniform(0, spread), conn.turn, s)
                else:
                    conn.turn(s)
        return new

    async def remove(self, count: int) -> None:
        """Close the last ``count`` connections (their running turns are cancelled)."""
        doomed, self.conns = self.conns[-count:], self.conns[:-count]
        await asyncio.gather(*(c.close() for c in doomed))

    def sessions(self) -> int:
        return sum(len(c.sessions) for c in self.conns)

    async def measure(self, warmup: float, window: float, server_pid: int | None) -> dict[str, Any]:
        """Warm up, then count one window; returns its raw figures (and the session count)."""
        figures = await super().measure(warmup, window, server_pid)
        return {"sessions": self.sessions(), **figures}

    async def drain(self, time_limit: float) -> bool:
        """Start no more turns; wait for the running ones; close every connection."""
        self.running = False
        drained = True
        if self.busy:
            try:
                await asyncio.wait_for(self.idle.wait(), time_limit)
            except TimeoutError:
                drained = False
                self.error(
                    f"{self.busy} responses still running {time_limit:.0f} s after the window"
                )
        await asyncio.gather(*(c.close() for c in self.conns))
        return drained


class Conn:
    """One WebSocket and its sessions."""

    def __init__(self, load: Load, ws: ClientConnection) -> None:
        self.load = load
        self.ws = ws
        self.sessions: dict[str, Session] = {}
        self.only: Session | None = None
        self.closing = False
        self.reader: asyncio.Future[None] | None = None
        self.sender: asyncio.Future[None] | None = None
        self.outbox: asyncio.Queue[str] = asyncio.Queue()

    async def _send_loop(self) -> None:
        # Sends never block the reader: a client whose reader waits for its own sends can
        # deadlock with a server that stops reading while its outbound queue is full.
        try:
            while True:
                await self.ws.send(await self.outbox.get())
        except ConnectionClosed:
            pass  # the reader reports it

    async def setup(self, count: int) -> None:
        # At most CREATE_WINDOW session.create in flight: trioagents answers them from its
        # reader through a bounded control lane and closes a connection that overflows it.
        self.sender = asyncio.ensure_future(self._send_loop())

        def create(i: int) -> None:
            self.outbox.put_nowait(
                orjson.dumps(
                    {
                        "type": "session.create",
                        "event_id": f"evt_c{i}",
                        "uamp_version": "1.0",
                        "session": {"modalities": ["text"]},
                    }
                ).decode()
            )

        sent = min(count, CREATE_WINDOW)
        for i in range(sent):
            create(i)
        while len(self.sessions) < count:
            ev = _loads(await self.ws.recv(decode=False))
            kind = ev.get("type")
            if kind == "session.created":
                sid = ev.get("session_id") or (ev.get("session") or {}).get("id")
                self.sessions[sid] = Session(self, sid)
                if sent < count:
                    create(sent)
                    sent += 1
            elif kind in ("session.error", "error"):
                raise RuntimeError(f"session.create failed: {ev}")
        if count == 1:
            self.only = next(iter(self.sessions.values()))

    def turn(self, s: Session) -> None:
        load = self.load
        if not load.running or s.failed or self.closing or s.busy:
            return
        s.texts = []
        s.last = None
        s.busy = True
        load.busy += 1
        s.sent_at = _perf()
        self.outbox.put_nowait(s.turn_msg)

    async def read(self) -> None:
        load = self.load
        expected = load.expected
        sessions = self.sessions
        only = self.only
        ws = self.ws
        try:
            while True:
                msg = await ws.recv(decode=False)
                ev = _loads(msg)
                kind = ev.get("type")
                if kind == "response.delta":
                    delta = ev.get("delta")
                    if not delta or delta.get("type") != "text":
                        continue
                    s = only or sessions.get(ev.get("session_id"))
                    if s is None:
                        load.error(f"delta for an unknown session: {str(msg)[:200]}")
                        continue
                    now = _perf()
                    text = delta.get("text") or ""
                    s.texts.append(text)
                    win = load.win
                    if win is not None:  # inline, not a method call: the per-frame hot path
                        win.frames += 1
                        win.model_deltas += len(text.split())
                        if s.last is None:
                            win.first.append(now - s.sent_at)
                        else:
                            win.gaps.append(now - s.last)
                    s.last = now
                elif kind in _TERMINAL:
                    s = only or sessions.get(ev.get("session_id"))
                    if s is None or not s.busy:
                        load.error(f"terminal event for no running turn: {str(msg)[:200]}")
                        continue
                    s.busy = False
                    if kind == "response.done":
                        text = "".join(s.texts)
                        load.turn_done(None if text == expected else f"wrong text: {text[:80]!r}")
                        load.session_idle()
                        self.turn(s)
                    else:
                        s.failed = True
                        load.error(f"{kind}: {str(ev.get('error') or '')[:200]}")
                        load.session_idle()
                elif kind in ("error", "session.error"):
                    load.error(f"{kind}: {str(msg)[:200]}")
        except ConnectionClosed as exc:
            if not self.closing:
                load.error(f"connection closed by the server: {exc}")
        finally:
            for s in sessions.values():
                if s.busy:
                    s.busy = False
                    s.failed = True
                    load.session_idle()

    async def close(self) -> None:
        self.closing = True
        try:
            await self.ws.close()
        except ConnectionClosed:
            pass
        if self.sender is not None:
            self.sender.cancel()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


async def run_loop(args: argparse.Namespace) -> dict[str, Any]:
    """The continuous workload: open, warm up, measure one window, drain."""
    load = Load(args)
    t0 = _perf()
    await load.add(args.connections, args.sessions)
    connect_s = _perf() - t0
    out = await load.measure(args.warmup, args.window, args.server_pid)
    out["drained"] = await load.drain(args.drain_timeout)
    out.update(
        connections=args.connections,
        connect_s=connect_s,
        **load.totals(),
    )
    return out


async def run_capacity(args: argparse.Namespace) -> dict[str, Any]:
    """Step the number of paced connections until inter-delta p99 passes the threshold."""
    load = Load(args)
    steps: list[dict[str, Any]] = []
    best, first_fail = 0, None
    n, bisected = args.start, 0
    while True:
        have = len(load.conns)
        if n > have:
            await load.add(n - have, args.sessions)
        elif n < have:
            await load.remove(have - n)
        errors_before = load.errors
        step = await load.measure(args.warmup, args.window, args.server_pid)
        p99 = step["gap_ms"]["p99"]
        step["errors"] = load.errors - errors_before
        step["connections"] = n
        step["passed"] = p99 is not None and p99 <= args.threshold_ms and step["errors"] == 0
        steps.append(step)
        if step["passed"]:
            best = max(best, n)
        else:
            first_fail = n if first_fail is None else min(first_fail, n)
        if first_fail is None:
            if n >= args.max:
                break
            n = min(n * 2, args.max)
            continue
        if bisected >= args.bisect or first_fail - best <= max(args.resolution, 1):
            break
        bisected += 1
        n = (best + first_fail) // 2
        if n <= best or n >= first_fail:
            break
    drained = await load.drain(args.drain_timeout)
    return {
        "capacity": best,
        "first_fail": first_fail,
        "threshold_ms": args.threshold_ms,
        "steps": steps,
        "drained": drained,
        **load.totals(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description="UAMP WebSocket load generator")
    p.add_argument("--url", required=True)
    p.add_argument("--connections", type=int, default=1)
    p.add_argument("--sessions", type=int, default=1, help="sessions per connection")
    add_run_arguments(p)
    p.add_argument("--connect-concurrency", type=int, default=64)
    p.add_argument("--setup-timeout", type=float, default=60.0, help="connect + sessions, s")
    p.add_argument("--capacity", action="store_true")
    p.add_argument("--start", type=int, default=100)
    p.add_argument("--max", type=int, default=12800)
    p.add_argument("--threshold-ms", type=float, default=100.0)
    p.add_argument("--bisect", type=int, default=3)
    p.add_argument("--resolution", type=int, default=25)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run and print one JSON line; exit 1 on a failure to run at all."""
    args = parse_args(argv)
    return run_main(
        "loadgen_ws",
        run_capacity(args) if args.capacity else run_loop(args),
        (OSError, InvalidStatus, RuntimeError, ConnectionClosed, TimeoutError),
    )


if __name__ == "__main__":
    sys.exit(main())
