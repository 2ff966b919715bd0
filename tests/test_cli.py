"""``trioagents serve`` as a user runs it: a real subprocess, real sockets, real signals.

The server is always started on ``--port 0``; its port is learned from the
``trioagents listening on http://127.0.0.1:PORT`` line it prints (never a fixed port, never a
sleep). Every subprocess is killed in ``finally`` if a test fails half-way.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from trioagents import uamp
from trioagents.client import open_uamp_client

TIMEOUT = 15
LISTENING = re.compile(r"trioagents listening on (http://\S+)")
BANNER_END = re.compile(r"^Press Ctrl\+C to stop\.$")


@attrs.define(eq=False)
class CliServer:
    """A ``python -m trioagents.cli serve …`` subprocess (stdout and stderr merged)."""

    process: trio.Process
    pattern: re.Pattern[str] = LISTENING
    """The output line that announces the URL (group 1)."""
    ready: re.Pattern[str] | None = None
    """The line that ends the start-up banner (default: the URL line itself)."""
    url: str = ""
    lines: list[str] = attrs.field(factory=list)
    """Every output line so far (still growing while the process runs)."""
    exited: trio.Event = attrs.field(factory=trio.Event)
    """Set at EOF on the process's output (it has exited or closed its stdout)."""

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def output(self) -> str:
        return "".join(self.lines)

    async def stop(self, signum: int = signal.SIGINT) -> int:
        """Send ``signum`` and wait for the exit status and the end of the output.

        The tests always talk to the server before signalling it: ``serve`` reports the
        server started before its SIGINT/SIGTERM handler is installed, so a signal sent the
        instant the banner appears can still kill it (KeyboardInterrupt / status -15).
        """
        self.process.send_signal(signum)
        await self.exited.wait()
        return await self.process.wait()

    async def _pump(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        stream = self.process.stdout
        assert stream is not None
        buf = bytearray()
        started = False
        try:
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    if buf:
                        self.lines.append(buf.decode(errors="replace"))
                    break
                buf += data
                while (i := buf.find(b"\n")) >= 0:
                    line = buf[: i + 1].decode(errors="replace")
                    del buf[: i + 1]
                    self.lines.append(line)
                    if not self.url and (m := self.pattern.search(line)):
                        self.url = m.group(1)
                    if self.url and not started and (self.ready or self.pattern).search(line):
                        started = True
                        task_status.started()
        finally:
            self.exited.set()
        if not started:
            raise AssertionError(f"the server exited before listening:\n{self.output}")


@asynccontextmanager
async def open_server_process(
    cmd: list[str],
    *,
    pattern: re.Pattern[str] = LISTENING,
    ready: re.Pattern[str] | None = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[CliServer]:
    """Run ``cmd`` until it prints the URL (``pattern``) and then ``ready``; yield it.

    A server the test has not stopped is stopped with SIGTERM (graceful) at the end of the
    block; if the block fails, the process is killed.
    """
    proc = await trio.lowlevel.open_process(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=None if env is None else {**os.environ, **env},
    )
    try:
        async with trio.open_nursery() as nursery:
            server = CliServer(proc, pattern, ready)
            await nursery.start(server._pump)
            try:
                yield server
            finally:
                if proc.returncode is None:
                    proc.terminate()
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.CancelScope(shield=True):
            await proc.wait()
            if proc.stdout is not None:
                await proc.stdout.aclose()


def open_cli_server(*args: str) -> AbstractAsyncContextManager[CliServer]:
    """``python -m trioagents.cli serve ARGS --port 0`` (see :func:`open_server_process`)."""
    return open_server_process(
        [sys.executable, "-m", "trioagents.cli", "serve", *args, "--port", "0"],
        ready=BANNER_END,
    )


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m trioagents.cli ARGS`` to completion (for commands that exit)."""
    return await trio.run_process(
        [sys.executable, "-m", "trioagents.cli", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )


def _chat(text: str, **fields: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}], **fields}


# ---------------------------------------------------------------------------------------------
# The bundled example agent, end to end, then Ctrl+C


async def test_default_target_serves_the_bundled_agent_and_stops_on_sigint() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_cli_server() as srv:
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", srv.url)
            assert not srv.url.endswith(":0")
            out = srv.output
            assert "agent 'assistant':" in out
            assert f"POST {srv.url}/agents/assistant/v1/chat/completions" in out
            assert f"{srv.ws_url}/agents/assistant/uamp" in out
            assert "single-agent mode" in out

            async with httpx.AsyncClient(base_url=srv.url) as http:
                r = await http.get("/health")
                assert r.status_code == 200
                assert r.json() == {"status": "ok", "agents": 1}

                r = await http.get("/v1/models")
                assert [m["id"] for m in r.json()["data"]] == ["assistant"]

                # curl -d '{"messages":[…"/call add {\"a\":2,\"b\":3}"]}' …/chat/completions
                for path in ("/v1/chat/completions", "/agents/assistant/v1/chat/completions"):
                    r = await http.post(path, json=_chat('/call add {"a":2,"b":3}', model="x"))
                    assert r.status_code == 200, r.text
                    body = r.json()
                    assert body["model"] == "assistant"
                    assert body["choices"][0]["message"]["content"] == "add returned: 5"
                    assert body["choices"][0]["finish_reason"] == "stop"

                # Streaming, as `curl -N` sees it.
                async with http.stream(
                    "POST", "/v1/chat/completions", json=_chat("hi there", stream=True)
                ) as resp:
                    assert resp.headers["content-type"].startswith("text/event-stream")
                    body_text = (await resp.aread()).decode()
                datas = [ln[6:] for ln in body_text.splitlines() if ln.startswith("data: ")]
                assert datas[-1] == "[DONE]"
                assert datas.count("[DONE]") == 1
                assert '"content":" there"' in body_text

            # UAMP, per-agent route and the single-agent root route.
            for path in ("/agents/assistant/uamp", "/uamp"):
                async with open_uamp_client(srv.ws_url + path) as client:
                    session = await client.create_session()
                    assert session.agent == "assistant"
                    assert await session.ask("hello") == "You said: hello"
                    await session.input_text('/call add {"a": 2, "b": 3}')
                    result = await session.collect()
                    assert result.status == "completed"
                    assert result.text == "add returned: 5"
                    kinds = [e.type for e in result.events]
                    assert kinds.count("tool.call_done") == 1

            # Ctrl+C: graceful shutdown, exit status 0, promptly.
            assert await srv.stop(signal.SIGINT) == 0
            assert "received SIGINT; shutting down gracefully" in srv.output
            assert "Traceback" not in srv.output


async def test_sigterm_ends_open_uamp_sessions_and_exits_zero() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_cli_server() as srv,
            open_uamp_client(srv.ws_url + "/agents/assistant/uamp") as client,
        ):
            session = await client.create_session()
            # A slow tool (countdown: 10 steps of 0.1 s) is running when the signal arrives.
            await session.input_text('/call countdown {"n": 10}')
            events = []
            async for ev in session.events:
                events.append(ev)
                if ev.type == "response.delta" and ev.delta.type == "tool_progress":
                    break
            srv.process.send_signal(signal.SIGTERM)
            async for ev in session.events:
                events.append(ev)
                if ev.type == "session.end":
                    break
            await client.closed.wait()
            # The server closed the socket; close our TCP end too (trio-websocket's client
            # waits for the server's FIN and would otherwise leave the socket to the GC).
            await client.ws._stream.aclose()

            kinds = [e.type for e in events]
            terminals = [e for e in events if e.type in uamp.TERMINAL_TYPES]
            assert [t.type for t in terminals] == ["response.cancelled"]
            assert kinds[-1] == "session.end"
            assert events[-1].reason == "shutdown"
            assert kinds.index("response.cancelled") < kinds.index("session.end")
            assert client.ws.closed is not None
            assert client.ws.closed.code == 1001

            assert await srv.process.wait() == 0
            await srv.exited.wait()
            assert "received SIGTERM; shutting down gracefully" in srv.output
            assert "Traceback" not in srv.output


# ---------------------------------------------------------------------------------------------
# Targets, --agent, --config

AGENTS_FILE = """\
from trioagents import Agent, BuiltinModel, Reply

first = Agent("one", model=BuiltinModel(lambda request: Reply("I am one")))
second = [
    Agent("two", model=BuiltinModel(lambda request: Reply("I am two"))),
    Agent("three.with-dots", model=BuiltinModel(lambda request: Reply("I am three"))),
]
"""


@pytest.fixture
def agents_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_agents.py"
    path.write_text(AGENTS_FILE)
    return path


async def test_file_target_with_attr(agents_file: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_cli_server(f"{agents_file}:second") as srv,
            httpx.AsyncClient(base_url=srv.url) as http,
        ):
            r = await http.get("/agents")
            assert [a["name"] for a in r.json()["agents"]] == ["two", "three.with-dots"]
            assert "single-agent mode" not in srv.output
            for name, answer in (("two", "I am two"), ("three.with-dots", "I am three")):
                r = await http.post(f"/agents/{name}/v1/chat/completions", json=_chat("hi"))
                assert r.json()["choices"][0]["message"]["content"] == answer
                r = await http.post("/v1/chat/completions", json=_chat("hi", model=name))
                assert r.json()["choices"][0]["message"]["content"] == answer
            # Two agents and no --agent: the root route needs a real model name.
            r = await http.post("/v1/chat/completions", json=_chat("hi", model="gpt-4o"))
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "model_not_found"
            r = await http.get("/agents/one/models")
            assert r.status_code == 404
            assert await srv.stop(signal.SIGINT) == 0


async def test_agent_flag_selects_single_agent_mode(agents_file: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_cli_server(f"{agents_file}:second", "--agent", "three.with-dots") as srv:
            assert f"single-agent mode: {srv.url}/v1/chat/completions" in srv.output
            async with httpx.AsyncClient(base_url=srv.url) as http:
                # Any model name reaches the default agent; real names still route.
                r = await http.post("/v1/chat/completions", json=_chat("hi", model="gpt-4o"))
                assert r.status_code == 200
                assert r.json()["model"] == "three.with-dots"
                assert r.json()["choices"][0]["message"]["content"] == "I am three"
                r = await http.post("/v1/chat/completions", json=_chat("hi", model="two"))
                assert r.json()["choices"][0]["message"]["content"] == "I am two"
                # Per-agent routes are served at the root too.
                r = await http.post("/chat/completions", json=_chat("hi"))
                assert r.json()["choices"][0]["message"]["content"] == "I am three"
            async with open_uamp_client(srv.ws_url + "/uamp") as client:
                session = await client.create_session()
                assert session.agent == "three.with-dots"
                assert await session.ask("hey") == "I am three"
            assert await srv.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("table", [False, True], ids=["top-level", "trioagents-table"])
async def test_config_file_is_honoured(tmp_path: Path, table: bool) -> None:
    config = tmp_path / "trioagents.toml"
    config.write_text(("[trioagents]\n" if table else "") + "max_body_size = 1000\n")
    big = _chat("x" * 2000)
    with trio.fail_after(TIMEOUT):
        async with open_cli_server("--config", str(config)) as srv:
            async with httpx.AsyncClient(base_url=srv.url) as http:
                r = await http.post("/v1/chat/completions", json=big)
                assert r.status_code == 413
                assert r.json()["error"]["code"] == "request_too_large"
                r = await http.post("/v1/chat/completions", json=_chat("small"))
                assert r.status_code == 200
                assert r.json()["choices"][0]["message"]["content"] == "You said: small"
            assert await srv.stop(signal.SIGTERM) == 0


async def test_completed_completions_keep_alive_and_shutdown_promptly() -> None:
    """Regression: the ``http.disconnect`` Hypercorn sends while finishing a response is not a
    client disconnect. It used to count every completion as cancelled and to break Hypercorn's
    keep-alive bookkeeping, so Ctrl+C waited ``graceful_timeout`` (10 s) for idle clients."""
    with trio.fail_after(TIMEOUT):
        async with open_cli_server() as srv, httpx.AsyncClient(base_url=srv.url) as http:
            for _ in range(2):
                r = await http.post("/v1/chat/completions", json=_chat("hi"))
                assert r.status_code == 200
            metrics = (await http.get("/metrics")).text
            assert "trioagents_responses_total 2\n" in metrics
            assert "trioagents_responses_cancelled_total 0\n" in metrics
            # The client still holds its idle keep-alive connection: shutdown closes it
            # at once instead of waiting out graceful_timeout.
            with trio.fail_after(5):
                assert await srv.stop(signal.SIGINT) == 0


# ---------------------------------------------------------------------------------------------
# Bad input: a clear one-line error, a non-zero exit, no traceback


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_h4", "trioagents: cannot import 'no_such_module_h4'"),
        ("{tmp}/missing.py", "trioagents: no such file: {tmp}/missing.py"),
        ("{tmp}/my_agents.py:nope", "has no attribute 'nope'"),
        ("{tmp}/empty.py", "holds no Agent"),
        ("{tmp}/empty.py:x", "holds no Agent"),
    ],
)
async def test_bad_target_is_a_clear_error(agents_file: Path, target: str, message: str) -> None:
    tmp = str(agents_file.parent)
    (agents_file.parent / "empty.py").write_text("x = 1\n")
    with trio.fail_after(TIMEOUT):
        result = await run_cli("serve", target.format(tmp=tmp), "--port", "0")
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert message.format(tmp=tmp) in stderr
    assert "Traceback" not in stderr
    assert "listening" not in result.stdout.decode()


@pytest.mark.parametrize(
    "args",
    [
        ["--agent", "nobody"],
        ["--config", "{tmp}/missing.toml"],
        ["--config", "{tmp}/bad.toml"],
        ["trioagents._example:add"],  # a tool function, not an agent factory
    ],
    ids=["unknown-agent", "missing-config", "unknown-config-key", "non-factory-callable"],
)
async def test_bad_options_are_clear_errors(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "bad.toml").write_text("bogus_key = 1\n")
    with trio.fail_after(TIMEOUT):
        result = await run_cli("serve", *(a.format(tmp=tmp_path) for a in args), "--port", "0")
    stderr = result.stderr.decode()
    assert result.returncode != 0
    assert stderr.startswith("trioagents: ")
    assert "Traceback" not in stderr


async def test_help_and_usage_errors() -> None:
    with trio.fail_after(TIMEOUT):
        result = await run_cli("serve", "--help")
        assert result.returncode == 0
        help_text = result.stdout.decode()
        for flag in ("--host", "--port", "--agent", "--config", "--log-level"):
            assert flag in help_text
        result = await run_cli("serve", "--port", "not-a-number")
        assert result.returncode == 2
        assert "invalid int value" in result.stderr.decode()
