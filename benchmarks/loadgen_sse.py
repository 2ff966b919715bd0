"""Chat Completions SSE load generator: ``aiohttp`` on ``uvloop``, one JSON line of results.

Usage::

    python benchmarks/loadgen_sse.py --url http://127.0.0.1:PORT/agents/bench/v1/chat/completions \
        --concurrency 100 --mode burst --warmup 1 --window 5 --server-pid PID

``--concurrency`` workers (one keep-alive connection each) loop: ``POST`` a streaming
completion (``Authorization: Bearer bench``), read its SSE events to ``data: [DONE]``, check the
concatenated ``delta.content`` is exactly the expected reply with finish reason ``stop``, send
the next. After ``--warmup`` seconds it counts, for ``--window`` seconds: content chunks
(frames), model deltas (words in them), completed requests, first-delta latency (request sent →
first content chunk) and inter-delta gaps, plus its own and the server's CPU time. Then it stops
starting requests, lets the running ones finish (each verified) and prints one JSON line with
the same keys as ``loadgen_ws.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import AGENT
from _loadgen import Tally, add_run_arguments, run_main

_perf = time.perf_counter
_loads = orjson.loads


class Load(Tally):
    """Shared state of the workers."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.body = orjson.dumps(
            {"model": AGENT, "stream": True, "messages": [{"role": "user", "content": "go"}]}
        )
        self.headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}

    async def one(self, http: aiohttp.ClientSession) -> bool:
        """One streamed completion; False when it failed (the worker then stops)."""
        sent = _perf()
        last: float | None = None
        texts: list[str] = []
        finish = None
        async with http.post(self.args.url, data=self.body, headers=self.headers) as resp:
            if resp.status != 200:
                self.error(f"HTTP {resp.status}: {(await resp.text())[:200]}")
                return False
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].rstrip()
                if data == b"[DONE]":
                    break
                chunk = _loads(data)
                if "error" in chunk:
                    self.error(f"error event: {chunk['error']}")
                    return False
                choices = chunk.get("choices")
                if not choices:
                    continue
                choice = choices[0]
                content = (choice.get("delta") or {}).get("content")
                if content:
                    now = _perf()
                    texts.append(content)
                    win = self.win
                    if win is not None:  # inline, not a method call: the per-frame hot path
                        win.frames += 1
                        win.model_deltas += len(content.split())
                        if last is None:
                            win.first.append(now - sent)
                        else:
                            win.gaps.append(now - last)
                    last = now
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        text = "".join(texts)
        self.turn_done(
            None
            if text == self.expected and finish == "stop"
            else f"wrong reply (finish {finish!r}): {text[:80]!r}"
        )
        return True

    async def worker(self, http: aiohttp.ClientSession) -> None:
        try:
            while self.running and await self.one(http):
                pass
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.error(f"{type(exc).__name__}: {exc}")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, measure one window, drain; the raw figures."""
    load = Load(args)
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=60, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        workers = [asyncio.ensure_future(load.worker(http)) for _ in range(args.concurrency)]
        figures = await load.measure(args.warmup, args.window, args.server_pid)
        load.running = False
        _, pending = await asyncio.wait(workers, timeout=args.drain_timeout)
        for task in pending:
            task.cancel()
        if pending:
            load.error(f"{len(pending)} requests still running {args.drain_timeout:.0f} s after")
        await asyncio.gather(*workers, return_exceptions=True)
    return {
        "sessions": args.concurrency,
        "connections": args.concurrency,
        **figures,
        "drained": not pending,
        **load.totals(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description="Chat Completions SSE load generator")
    p.add_argument("--url", required=True)
    p.add_argument("--concurrency", type=int, default=1)
    add_run_arguments(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run and print one JSON line."""
    args = parse_args(argv)
    return run_main("loadgen_sse", run(args), (OSError, aiohttp.ClientError, RuntimeError))


if __name__ == "__main__":
    sys.exit(main())
