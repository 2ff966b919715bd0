"""``trioagents hub`` and ``trioagents connect``: the "no public URL" walkthrough, for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio

from trioagents.client import open_uamp_client
from trioagents.hub import SQLiteHubStore, main_hub
from trioagents.portal import main_connect

HUB = "from trioagents.hub import main_hub; import sys; sys.exit(main_hub(sys.argv[1:]))"
CONNECT = (
    "from trioagents.portal import main_connect; import sys; sys.exit(main_connect(sys.argv[1:]))"
)


async def test_token_management_commands(tmp_path: Path) -> None:
    db = str(tmp_path / "hub.db")

    def manage() -> list[int]:
        return [
            main_hub(["--db", db, "token", "add", "assistant", "tok-1"]),
            main_hub(["--db", db, "token", "add", "portal", "rlk_p", "--kind", "relay_app"]),
            main_hub(["--db", db, "allow", "assistant", "portal"]),
            main_hub(["--db", db, "agent-url", "direct", "http://127.0.0.1:9/agents/direct"]),
        ]

    assert await trio.to_thread.run_sync(manage) == [0, 0, 0, 0]
    store = SQLiteHubStore(db)
    try:
        record = await store.lookup_token("tok-1")
        assert record is not None and (record.kind, record.subject) == ("agent", "assistant")
        assert await store.is_allowed("assistant", "portal")
        direct = await store.get_agent("direct")
        assert direct is not None and direct.agent_url == "http://127.0.0.1:9/agents/direct"
    finally:
        await store.aclose()
    # Bad input: one line, exit code 2.
    assert main_connect(["trioagents._example:agent"]) == 2


async def _read_until(stream: trio.abc.ReceiveStream, marker: str) -> str:
    buf = b""
    while marker.encode() not in buf:
        chunk = await stream.receive_some(4096)
        assert chunk, buf.decode()
        buf += chunk
    return buf.decode()


async def test_hub_and_daemon_processes_serve_a_caller(tmp_path: Path) -> None:
    db = str(tmp_path / "hub.db")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            hub = await nursery.start(
                partial(
                    trio.run_process,
                    [
                        sys.executable,
                        "-c",
                        HUB,
                        "--db",
                        db,
                        "--port",
                        "0",
                        "--token",
                        "assistant=tok-1",
                    ],
                    stdout=subprocess.PIPE,
                    env=env,
                    check=False,
                )
            )
            out = await _read_until(hub.stdout, "Press Ctrl+C")
            url = next(line.split()[-1] for line in out.splitlines() if "hub listening on" in line)
            ws = "ws" + url[4:]
            daemon = await nursery.start(
                partial(
                    trio.run_process,
                    [
                        sys.executable,
                        "-c",
                        CONNECT,
                        "trioagents._example:agent",
                        "--portal-ws-url",
                        f"{ws}/ws",
                        "--token",
                        "tok-1",
                    ],
                    stderr=subprocess.PIPE,
                    env=env,
                    check=False,
                )
            )
            await _read_until(daemon.stderr, "agent assistant registered")
            async with open_uamp_client(f"{ws}/agents/assistant/uamp") as client:
                session = await client.create_session()
                assert await session.ask("hello from the walkthrough") == (
                    "You said: hello from the walkthrough"
                )
                # A slow tool (progress every 0.1 s); the daemon is killed mid-stream.
                await session.input_text('/call countdown {"n": 10}')
                async for ev in session.events:
                    if ev.type == "response.delta" and ev.delta.type == "tool_progress":
                        break
                daemon.send_signal(signal.SIGKILL)
                result = await session.collect(ev.response_id)
                assert result.terminal.type == "response.error"
                assert result.terminal.error.code == "agent_offline"
            await daemon.wait()
            hub.send_signal(signal.SIGINT)
            assert await hub.wait() == 0
