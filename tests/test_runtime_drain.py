"""Graceful shutdown reaches every connection through drain hooks, not a task per connection."""

from __future__ import annotations

import logging

import orjson
import pytest
import trio
import trio.testing
import trio_websocket

from tests.test_uamp import drop_closed_client
from trioagents import Agent, BuiltinModel, Config, Reply
from trioagents.testing import open_test_server
from trioagents.transports._runtime import Runtime

TIMEOUT = 10


def _runtime() -> Runtime:
    return Runtime(config=Config(), agents={})


def test_hooks_run_once_when_draining_starts() -> None:
    runtime = _runtime()
    calls: list[str] = []
    with (
        runtime.drain_hook(lambda: calls.append("a")),
        runtime.drain_hook(lambda: calls.append("b")),
    ):
        assert calls == []
        runtime.start_draining()
        runtime.start_draining()  # idempotent
        assert sorted(calls) == ["a", "b"]
    assert runtime.draining.is_set()


def test_a_hook_registered_while_draining_runs_at_once() -> None:
    runtime = _runtime()
    runtime.start_draining()
    calls: list[int] = []
    with runtime.drain_hook(lambda: calls.append(1)):
        assert calls == [1]


def test_a_hook_that_left_is_not_called() -> None:
    runtime = _runtime()
    calls: list[int] = []
    with runtime.drain_hook(lambda: calls.append(1)):
        pass
    runtime.start_draining()
    assert calls == []


def test_a_failing_hook_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = _runtime()
    calls: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    with (
        runtime.drain_hook(boom),
        runtime.drain_hook(lambda: calls.append(1)),
        caplog.at_level(logging.ERROR, logger="trioagents.transports"),
    ):
        runtime.start_draining()
    assert calls == [1]
    assert "drain hook" in caplog.text


def _connection_tasks() -> list[str]:
    """Names of the tasks of the server's UAMP connections (under Hypercorn's app task)."""
    names: list[str] = []

    def walk(task: trio.lowlevel.Task, inside: bool) -> None:
        inside = inside or task.name.startswith("hypercorn.trio.task_group._handle")
        if inside and task.name.startswith("trioagents."):
            names.append(task.name.rsplit(".", 2)[-2] + "." + task.name.rsplit(".", 1)[-1])
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, inside)

    walk(trio.lowlevel.current_root_task(), False)
    return sorted(names)


async def test_an_idle_uamp_connection_is_its_writer_and_its_sessions_then_drains() -> None:
    agent = Agent("idle", model=BuiltinModel(lambda request: Reply("hi")))
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(agent, Config(graceful_timeout=5.0)) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("idle")) as ws,
        ):
            for _ in range(2):
                await ws.send_message(orjson.dumps({"type": "session.create"}).decode())
                assert orjson.loads(await ws.get_message())["type"] == "session.created"
                assert orjson.loads(await ws.get_message())["type"] == "capabilities"
            # The reader is the handler's own task; no task waits for the shutdown.
            assert _connection_tasks() == ["Outbox.run", "UampSession.run", "UampSession.run"]
            srv.server.runtime.start_draining()
            ends = [orjson.loads(await ws.get_message()) for _ in range(2)]
            assert [e["type"] for e in ends] == ["session.end", "session.end"]
            assert {e["reason"] for e in ends} == {"shutdown"}
            with pytest.raises(trio_websocket.ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1001
            await drop_closed_client(ws)
            await trio.testing.wait_all_tasks_blocked()
            assert _connection_tasks() == []
