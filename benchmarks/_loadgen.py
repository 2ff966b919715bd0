"""What the two load generators (``loadgen_ws.py``, ``loadgen_sse.py``) share.

Both run on ``uvloop`` in their own process and print one JSON line. They share: the counters
of one measurement window (:class:`Window`), the run's totals and error samples
(:class:`Tally`, which also warms up and measures the window), the common command-line options
(:func:`add_run_arguments`) and the ``main`` wrapper (:func:`run_main`).

Like the load generators, this module imports only what they run on (no trio).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Coroutine
from typing import Any

import orjson
import uvloop
from _harness import percentiles, proc_cpu, reply_text

_perf = time.perf_counter


class Window:
    """What one measurement window counted."""

    __slots__ = ("errors", "first", "frames", "gaps", "model_deltas", "turns")

    def __init__(self) -> None:
        self.frames = 0
        self.model_deltas = 0
        self.turns = 0
        self.errors = 0
        self.first: list[float] = []
        self.gaps: list[float] = []


class Tally:
    """The run's phase, totals and error samples, and the current window (if any)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.expected = reply_text(args.words)
        self.running = True
        self.win: Window | None = None
        self.verified = 0
        self.wrong = 0
        self.errors = 0
        self.error_samples: list[str] = []

    def error(self, msg: str) -> None:
        """Count an error (in the window too, if one is open); keep the first 10 messages."""
        self.errors += 1
        if self.win is not None:
            self.win.errors += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(msg[:300])

    def turn_done(self, wrong: str | None) -> None:
        """Count one finished response: verified if ``wrong`` is None, else wrong (and why)."""
        if wrong is None:
            self.verified += 1
        else:
            self.wrong += 1
            self.error(wrong)
        if self.win is not None:
            self.win.turns += 1

    async def measure(self, warmup: float, window: float, server_pid: int | None) -> dict[str, Any]:
        """Warm up, then count one window; its raw figures (``window_s``, ``frames``, …)."""
        await asyncio.sleep(warmup)
        s0 = proc_cpu(server_pid) if server_pid else None
        c0 = time.process_time()
        t0 = _perf()
        self.win = win = Window()
        await asyncio.sleep(window)
        self.win = None
        elapsed = _perf() - t0
        c1 = time.process_time()
        s1 = proc_cpu(server_pid) if server_pid else None
        return {
            "window_s": elapsed,
            "frames": win.frames,
            "model_deltas": win.model_deltas,
            "turns": win.turns,
            "window_errors": win.errors,
            "first_delta_ms": percentiles(win.first),
            "gap_ms": percentiles(win.gaps),
            "server_cpu_s": None if s0 is None or s1 is None else s1 - s0,
            "loadgen_cpu_s": c1 - c0,
        }

    def totals(self) -> dict[str, Any]:
        """The whole run's ``verified``, ``wrong_texts``, ``errors`` and ``error_samples``."""
        return {
            "verified": self.verified,
            "wrong_texts": self.wrong,
            "errors": self.errors,
            "error_samples": self.error_samples,
        }


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options both load generators have (after their own connection options)."""
    p.add_argument("--mode", choices=["burst", "paced"], default="burst")
    p.add_argument("--words", type=int, default=20)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--window", type=float, default=5.0)
    p.add_argument("--server-pid", type=int, default=None)
    p.add_argument("--drain-timeout", type=float, default=60.0)


def run_main(
    name: str,
    run: Coroutine[Any, Any, dict[str, Any]],
    failures: tuple[type[BaseException], ...],
) -> int:
    """Run ``run`` on uvloop and print its result as one JSON line; 1 on one of ``failures``."""
    try:
        result = uvloop.run(run)
    except failures as exc:
        print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(result).decode(), flush=True)
    return 0
