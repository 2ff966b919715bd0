"""A2A end to end (PROTOCOLS.md §6): the real server on 127.0.0.1:0.

Driven by the real ``a2a-sdk`` 1.x client in both protocol versions (in a subprocess, since it
runs on asyncio: ``tests/a2a_client_script.py``), and by raw httpx for exact error codes, wire
shapes, the seed REST dialect, dropped streams and persistence.
"""

from __future__ import annotations

import sys
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio.testing

from trioagents import Agent, BuiltinModel, Config, Reply, uamp
from trioagents.protocols import a2a as proto
from trioagents.server import AgentServer
from trioagents.testing import TestServer, open_test_server
from trioagents.transports import DEFAULT_TRANSPORTS
from trioagents.transports.a2a import (
    A2ATransport,
    InputRequired,
    MemoryTaskStore,
    SqliteTaskStore,
    TaskStore,
)
from trioagents.transports.a2a.service import RunningTask

TIMEOUT = 20
SCRIPT = str(Path(__file__).with_name("a2a_client_script.py"))


async def wait_forever() -> str:
    """Wait for something that never happens."""
    await trio.Event().wait()
    return "never"


async def ask() -> str:
    """Ask the user for the city."""
    raise InputRequired("Which city?")


def _agents() -> list[Agent]:
    return [
        Agent("echo"),
        Agent("slow", model=BuiltinModel(lambda r: Reply("a b c d e f g h"), word_delay=0.15)),
        Agent("stuck", tools=[wait_forever]),
        Agent("asker", tools=[ask]),
    ]


def _server(
    agents: Agent | list[Agent], transport: type[A2ATransport] = A2ATransport, **cfg: Any
) -> AgentServer:
    config = Config(host="127.0.0.1", port=0, gc_freeze=False, gc_gen0_threshold=None, **cfg)
    return AgentServer(
        agents,
        config=config,
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        transports=(*DEFAULT_TRANSPORTS, transport),
    )


def _msg(text: str, version: str = "1.0", **extra: Any) -> dict[str, Any]:
    if version == "1.0":
        return {"messageId": "m-" + text, "role": "ROLE_USER", "parts": [{"text": text}], **extra}
    return {
        "kind": "message",
        "messageId": "m-" + text,
        "role": "user",
        "parts": [{"kind": "text", "text": text}],
        **extra,
    }


async def _rpc(
    http: httpx.AsyncClient,
    url: str,
    method: str,
    params: Any,
    *,
    version: str | None = "1.0",
    id: Any = 1,
) -> dict[str, Any]:
    headers = {"A2A-Version": version} if version else {}
    r = await http.post(
        url,
        json={"jsonrpc": "2.0", "id": id, "method": method, "params": params},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _sse(body: str) -> list[tuple[str | None, Any]]:
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        event = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("data: "):
                data.append(line[6:])
            elif line.startswith("event: "):
                event = line[7:]
        if data:
            events.append((event, orjson.loads("\n".join(data))))
    return events


async def _stream_first_then_drop(srv: TestServer, path: str, payload: dict[str, Any]) -> str:
    """POST a streaming request over a raw socket, read the first SSE event, hang up.

    Returns the task id of that first event.
    """
    host, port = srv.url.removeprefix("http://").split(":")
    body = orjson.dumps(payload)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"A2A-Version: 1.0\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head + body)
        received = b""
        while b"data: " not in received or b"\n\n" not in received.split(b"data: ", 1)[1]:
            chunk = await stream.receive_some()
            assert chunk, "the server closed the stream early"
            received += chunk
    data = received.split(b"data: ", 1)[1].split(b"\n", 1)[0]
    task_id: str = orjson.loads(data)["result"]["task"]["id"]
    return task_id


def _error_code(body: dict[str, Any]) -> int:
    assert body["jsonrpc"] == "2.0"
    assert "result" not in body
    code: int = body["error"]["code"]
    return code


# ---------------------------------------------------------------------------------------------
# The real a2a-sdk client, both protocol versions
# ---------------------------------------------------------------------------------------------


def _stream_kinds(events: list[dict[str, Any]]) -> list[str]:
    return [next(iter(ev)) for ev in events]


@pytest.mark.parametrize("version", ["1.0", "0.3"])
async def test_sdk_client(version: str) -> None:
    scenarios = ["send", "stream", "cancel", "resubscribe", "input", "errors"]
    with trio.fail_after(TIMEOUT):
        async with open_test_server(_server(_agents())) as srv:
            proc = await trio.run_process(
                [sys.executable, SCRIPT, srv.url, version, *scenarios],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = {r["scenario"]: r for r in map(orjson.loads, proc.stdout.splitlines())}
    assert list(out) == scenarios

    # Blocking send: the completed task with the reply, history and artifact; then get.
    send = out["send"]
    expected_transport = "JsonRpcTransport" if version == "1.0" else "CompatJsonRpcTransport"
    assert send["transport"] == expected_transport
    [ev] = send["events"]
    task = ev["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    assert task["status"]["message"]["role"] == "ROLE_AGENT"
    assert task["status"]["message"]["parts"] == [{"text": "You said: hello there"}]
    assert [(m["role"], m["parts"]) for m in task["history"]] == [
        ("ROLE_USER", [{"text": "hello there"}]),
        ("ROLE_AGENT", [{"text": "You said: hello there"}]),
    ]
    assert [a["parts"] for a in task["artifacts"]] == [[{"text": "You said: hello there"}]]
    assert send["get"] == task
    assert [m["role"] for m in send["get_h1"]["history"]] == ["ROLE_AGENT"]

    # Streaming: task submitted → working → one artifact update per word → completed.
    events = out["stream"]["events"]
    assert _stream_kinds(events) == ["task", "statusUpdate"] + ["artifactUpdate"] * 5 + [
        "statusUpdate"
    ]
    first = events[0]["task"]
    assert first["status"]["state"] == "TASK_STATE_SUBMITTED"
    assert first["history"][0]["parts"] == [{"text": "one two three"}]
    assert events[1]["statusUpdate"]["status"]["state"] == "TASK_STATE_WORKING"
    arts = [e["artifactUpdate"] for e in events[2:-1]]
    assert [a["artifact"]["parts"][0]["text"] for a in arts] == [
        "You",
        " said:",
        " one",
        " two",
        " three",
    ]
    assert [a.get("append", False) for a in arts] == [False, True, True, True, True]
    assert [a.get("lastChunk", False) for a in arts] == [False] * 4 + [True]
    assert len({a["artifact"]["artifactId"] for a in arts}) == 1
    assert all(a["taskId"] == first["id"] and a["contextId"] == first["contextId"] for a in arts)
    final = events[-1]["statusUpdate"]
    assert final["status"]["state"] == "TASK_STATE_COMPLETED"
    assert final["status"]["message"]["parts"] == [{"text": "You said: one two three"}]

    # Cancel a running task (its tool never returns): canceled, and a second cancel fails.
    cancel = out["cancel"]
    assert cancel["events"][0]["task"]["status"]["state"] in (
        "TASK_STATE_SUBMITTED",
        "TASK_STATE_WORKING",
    )
    assert cancel["cancel"]["status"]["state"] == "TASK_STATE_CANCELED"
    assert cancel["get"]["status"]["state"] == "TASK_STATE_CANCELED"
    assert cancel["cancel_again"] == "TaskNotCancelableError"

    # Resubscribe to a running task: snapshot first, then the rest, ending completed.
    sub = out["resubscribe"]
    subscribed = sub["subscribed"]
    assert subscribed[0]["task"]["id"] == sub["events"][0]["task"]["id"]
    assert _stream_kinds(subscribed)[-1] == "statusUpdate"
    assert subscribed[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    texts = [e["artifactUpdate"]["artifact"]["parts"][0]["text"] for e in subscribed[1:-1]]
    snapshot_text = "".join(
        p["text"] for a in subscribed[0]["task"].get("artifacts", []) for p in a["parts"]
    )
    assert snapshot_text + "".join(texts) == "a b c d e f g h"
    assert subscribed[-2]["artifactUpdate"]["lastChunk"] is True
    assert sub["get"]["artifacts"][0]["parts"] == [{"text": "a b c d e f g h"}]

    # input-required from a tool, continued by a message on the same taskId.
    first_turn = out["input"]["first"][0]["task"]
    assert first_turn["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    assert first_turn["status"]["message"]["parts"] == [{"text": "Which city?"}]
    second_turn = out["input"]["second"][0]["task"]
    assert second_turn["id"] == first_turn["id"]
    assert second_turn["status"]["state"] == "TASK_STATE_COMPLETED"
    assert second_turn["status"]["message"]["parts"] == [{"text": "You said: Paris"}]
    assert [m["parts"][0]["text"] for m in second_turn["history"]] == [
        "/call ask",
        "Which city?",
        "Paris",
        "You said: Paris",
    ]

    assert out["errors"]["unknown_task"] == "TaskNotFoundError"


# ---------------------------------------------------------------------------------------------
# Agent card
# ---------------------------------------------------------------------------------------------


async def test_agent_card_etag_and_root() -> None:
    def search(q: str) -> str:
        """Search the web."""
        return q

    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(_server(Agent("solo", tools=[search]))) as srv,
            httpx.AsyncClient() as http,
        ):
            r = await http.get(srv.agent_url("solo", "/.well-known/agent-card.json"))
            assert r.status_code == 200
            assert r.headers["cache-control"] == "public, max-age=300"
            etag = r.headers["etag"]
            card = r.json()
            url = f"{srv.url}/agents/solo/a2a"
            assert card["name"] == "solo"
            assert card["url"] == url
            assert [i["protocolVersion"] for i in card["supportedInterfaces"]] == ["1.0", "0.3"]
            assert {i["url"] for i in card["supportedInterfaces"]} == {url}
            assert card["skills"] == [
                {
                    "id": "search",
                    "name": "search",
                    "description": "Search the web.",
                    "tags": ["tool"],
                }
            ]
            r2 = await http.get(
                srv.agent_url("solo", "/.well-known/agent.json"), headers={"If-None-Match": etag}
            )
            assert r2.status_code == 304
            assert r2.content == b""
            assert r2.headers["etag"] == etag
            r3 = await http.get(
                srv.agent_url("solo", "/.well-known/agent.json"), headers={"If-None-Match": '"x"'}
            )
            assert r3.status_code == 200 and r3.json() == card
            # Single-agent mode: the root card is the default agent's.
            root = await http.get(f"{srv.url}/.well-known/agent-card.json")
            assert root.status_code == 200 and root.json() == card
            assert (await http.get(f"{srv.url}/.well-known/agent.json")).json() == card
            # public_url wins over Host.
            srv.server.runtime.config = srv.server.config.replace(public_url="https://pub.example")
            pub = (await http.get(srv.agent_url("solo", "/.well-known/agent-card.json"))).json()
            assert pub["url"] == "https://pub.example/agents/solo/a2a"


async def test_root_card_without_default_agent() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(_server([Agent("a"), Agent("b")])) as srv,
            httpx.AsyncClient() as http,
        ):
            r = await http.get(f"{srv.url}/.well-known/agent-card.json")
            assert r.status_code == 404
            body = r.json()
            assert set(body["error"]) == {"code", "message", "details"}
            assert body["error"]["code"] == "agent_not_found"


# ---------------------------------------------------------------------------------------------
# JSON-RPC errors and 0.3 wire shapes
# ---------------------------------------------------------------------------------------------


async def test_jsonrpc_errors() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(_server(_agents())) as srv,
            httpx.AsyncClient() as http,
        ):
            url = srv.agent_url("echo", "/a2a")
            # Wrong Content-Type: -32005, still HTTP 200.
            r = await http.post(url, content=b"{}", headers={"Content-Type": "text/plain"})
            assert r.status_code == 200 and _error_code(r.json()) == -32005
            # Parse error.
            r = await http.post(url, content=b"{nope", headers={"Content-Type": "application/json"})
            assert r.status_code == 200
            assert r.json()["id"] is None and _error_code(r.json()) == -32700
            # Not a request object.
            r = await http.post(url, json=[1, 2])
            assert _error_code(r.json()) == -32600
            # Unknown method; bad params; version mismatch both ways.
            assert _error_code(await _rpc(http, url, "Bogus", {})) == -32601
            assert _error_code(await _rpc(http, url, "SendMessage", {"message": {}})) == -32602
            assert _error_code(await _rpc(http, url, "GetTask", {"id": 5})) == -32602
            assert _error_code(await _rpc(http, url, "SendMessage", {}, version=None)) == -32009
            assert _error_code(await _rpc(http, url, "message/send", {}, version="1.0")) == -32009
            assert _error_code(await _rpc(http, url, "GetTask", {"id": "x"}, version="3")) == -32009
            # Unknown task, with ErrorInfo for 1.0 and none for 0.3.
            body = await _rpc(http, url, "GetTask", {"id": "nope"}, id="abc")
            assert body["id"] == "abc"
            assert body["error"]["code"] == -32001
            assert body["error"]["data"] == [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "TASK_NOT_FOUND",
                    "domain": "a2a-protocol.org",
                }
            ]
            body = await _rpc(http, url, "tasks/get", {"id": "nope"}, version="0.3")
            assert body["error"]["code"] == -32001 and "data" not in body["error"]
            assert _error_code(await _rpc(http, url, "CancelTask", {"id": "nope"})) == -32001
            assert _error_code(await _rpc(http, url, "SubscribeToTask", {"id": "nope"})) == -32001
            # Push notifications and the extended card are not supported.
            assert (
                _error_code(await _rpc(http, url, "CreateTaskPushNotificationConfig", {})) == -32003
            )
            assert _error_code(await _rpc(http, url, "GetExtendedAgentCard", {})) == -32007
            # A finished task: cancel → -32002, continue → -32004, subscribe → -32004.
            done = await _rpc(http, url, "SendMessage", {"message": _msg("hi")})
            task_id = done["result"]["task"]["id"]
            assert done["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
            assert _error_code(await _rpc(http, url, "CancelTask", {"id": task_id})) == -32002
            cont = await _rpc(http, url, "SendMessage", {"message": _msg("again", taskId=task_id)})
            assert _error_code(cont) == -32004
            assert _error_code(await _rpc(http, url, "SubscribeToTask", {"id": task_id})) == -32004
            # Another agent does not see this agent's tasks.
            other = srv.agent_url("slow", "/a2a")
            assert _error_code(await _rpc(http, other, "GetTask", {"id": task_id})) == -32001
            # ListTasks (1.0) finds it.
            listed = await _rpc(http, url, "ListTasks", {})
            assert [t["id"] for t in listed["result"]["tasks"]] == [task_id]


async def test_v03_wire_stream_without_header() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(_server(_agents())) as srv,
            httpx.AsyncClient() as http,
        ):
            r = await http.post(
                srv.agent_url("echo", "/a2a"),
                json={
                    "jsonrpc": "2.0",
                    "id": 9,
                    "method": "message/stream",
                    "params": {"message": _msg("x y", "0.3")},
                },
            )
            assert r.headers["content-type"].startswith("text/event-stream")
            items = [data for _, data in _sse(r.text)]
            assert all(i["jsonrpc"] == "2.0" and i["id"] == 9 for i in items)
            results = [i["result"] for i in items]
            assert [x["kind"] for x in results] == ["task"] + ["status-update"] + [
                "artifact-update"
            ] * 4 + ["status-update"]
            assert results[0]["status"]["state"] == "submitted"
            assert results[0]["history"][0]["role"] == "user"
            assert results[0]["history"][0]["parts"] == [{"kind": "text", "text": "x y"}]
            assert [x.get("final") for x in results if x["kind"] == "status-update"] == [
                False,
                True,
            ]
            assert results[-1]["status"]["state"] == "completed"
            assert results[-1]["status"]["message"]["role"] == "agent"
            assert results[-1]["status"]["message"]["parts"] == [
                {"kind": "text", "text": "You said: x y"}
            ]
            # A failing agent: a FAILED status carrying the error, not a JSON-RPC error.
            r = await http.post(
                srv.agent_url("echo", "/a2a"),
                json={
                    "jsonrpc": "2.0",
                    "id": 10,
                    "method": "message/send",
                    "params": {"message": _msg("/fail boom", "0.3")},
                },
            )
            task = r.json()["result"]
            assert task["kind"] == "task"
            assert task["status"]["state"] == "failed"
            assert task["status"]["message"]["parts"] == [{"kind": "text", "text": "boom"}]


# ---------------------------------------------------------------------------------------------
# Seed REST dialect
# ---------------------------------------------------------------------------------------------


async def test_seed_rest_dialect() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(_server(_agents())) as srv,
            httpx.AsyncClient() as http,
        ):
            r = await http.post(
                srv.agent_url("echo", "/tasks"),
                json={"message": {"role": "user", "parts": [{"type": "text", "text": "hey you"}]}},
            )
            assert r.status_code == 200
            events = _sse(r.text)
            names = [e for e, _ in events]
            assert names == ["task.started"] + ["task.message"] * 4 + ["task.completed"]
            started = events[0][1]
            task_id = started["id"]
            assert started["status"] == "running" and "createdAt" in started
            assert "".join(d["parts"][0]["text"] for e, d in events if e == "task.message") == (
                "You said: hey you"
            )
            assert all(d["role"] == "agent" for e, d in events if e == "task.message")
            assert events[-1][1]["id"] == task_id and events[-1][1]["status"] == "completed"
            got = (await http.get(srv.agent_url("echo", f"/tasks/{task_id}"))).json()
            assert got["id"] == task_id
            assert got["status"] == "completed"
            assert got["result"] == {"content": "You said: hey you"}
            assert got["error"] is None
            # Finished → cancelled:false; unknown → 404 generic error.
            r = await http.delete(srv.agent_url("echo", f"/tasks/{task_id}"))
            assert r.status_code == 200
            assert r.json() == {"id": task_id, "status": "completed", "cancelled": False}
            r = await http.delete(srv.agent_url("echo", "/tasks/nope"))
            assert r.status_code == 404 and r.json()["error"]["code"] == "task_not_found"
            r = await http.get(srv.agent_url("echo", "/tasks/nope"))
            assert r.status_code == 404
            # Bad body → 400 generic error.
            r = await http.post(srv.agent_url("echo", "/tasks"), json={"nothing": 1})
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
            # A failure is one task.failed event.
            r = await http.post(
                srv.agent_url("echo", "/tasks"),
                json={
                    "messages": [{"role": "user", "parts": [{"type": "text", "text": "/fail no"}]}]
                },
            )
            events = _sse(r.text)
            assert [e for e, _ in events] == ["task.started", "task.failed"]
            assert events[-1][1]["status"] == "failed" and events[-1][1]["error"] == "no"
            # DELETE of a running task cancels it; its stream ends with task.failed cancelled.
            async with (
                trio.open_nursery() as nursery,
                http.stream(
                    "POST",
                    srv.agent_url("stuck", "/tasks"),
                    json={"message": {"parts": [{"type": "text", "text": "/call wait_forever"}]}},
                ) as stream,
                aclosing(stream.aiter_lines()) as lines,
            ):
                first_event = await anext(lines)
                assert first_event == "event: task.started"
                started = orjson.loads((await anext(lines))[6:])
                r = await http.delete(srv.agent_url("stuck", f"/tasks/{started['id']}"))
                assert r.json() == {"id": started["id"], "status": "cancelled", "cancelled": True}
                rest = "\n".join([line async for line in lines])
                nursery.cancel_scope.cancel()
            assert _sse(rest)[-1] == (
                "task.failed",
                {
                    "id": started["id"],
                    "status": "cancelled",
                    "error": "the task was cancelled",
                    "code": "cancelled",
                },
            )
            got = (await http.get(srv.agent_url("stuck", f"/tasks/{started['id']}"))).json()
            assert got["status"] == "cancelled" and got["result"] is None


# ---------------------------------------------------------------------------------------------
# Task lifetime: dropped streams, persistence, retention, slow subscribers
# ---------------------------------------------------------------------------------------------


async def test_dropped_stream_does_not_cancel_the_task() -> None:
    gate = trio.Event()

    async def gated() -> str:
        """Wait for the gate."""
        await gate.wait()
        return "opened"

    agent = Agent("gated", tools=[gated])
    with trio.fail_after(TIMEOUT):
        async with open_test_server(_server(agent)) as srv, httpx.AsyncClient() as http:
            url = srv.agent_url("gated", "/a2a")
            payload = {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "SendStreamingMessage",
                "params": {"message": _msg("/call gated")},
            }
            task_id = await _stream_first_then_drop(srv, "/agents/gated/a2a", payload)
            # The client is gone; let the server notice before the tool may finish.
            await trio.testing.wait_all_tasks_blocked(cushion=0.05)
            service = srv.server.runtime.services["a2a"]
            running: RunningTask = service.running[task_id]
            assert running.task.state == "working"
            gate.set()
            await running.done.wait()
            body = await _rpc(http, url, "GetTask", {"id": task_id})
            task = body["result"]
            assert task["status"]["state"] == "TASK_STATE_COMPLETED"
            assert task["status"]["message"]["parts"] == [{"text": "gated returned: opened"}]


async def test_tasks_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    transport = A2ATransport.with_options(db=str(db))
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(_server(_agents(), transport)) as srv,
            httpx.AsyncClient() as http,
        ):
            url = srv.agent_url("echo", "/a2a")
            done = (await _rpc(http, url, "SendMessage", {"message": _msg("remember me")}))[
                "result"
            ]
            stuck = await _rpc(
                http,
                srv.agent_url("stuck", "/a2a"),
                "SendMessage",
                {
                    "message": _msg("/call wait_forever"),
                    "configuration": {"returnImmediately": True},
                },
            )
            stuck_id = stuck["result"]["task"]["id"]
        # The server shut down with the stuck task running: it was recorded as failed.
        async with (
            open_test_server(_server(_agents(), transport)) as srv,
            httpx.AsyncClient() as http,
        ):
            url = srv.agent_url("echo", "/a2a")
            again = (await _rpc(http, url, "GetTask", {"id": done["task"]["id"]}))["result"]
            assert again == done["task"]
            assert again["status"]["state"] == "TASK_STATE_COMPLETED"
            assert [m["parts"][0]["text"] for m in again["history"]] == [
                "remember me",
                "You said: remember me",
            ]
            assert again["artifacts"][0]["parts"] == [{"text": "You said: remember me"}]
            body = await _rpc(http, srv.agent_url("stuck", "/a2a"), "GetTask", {"id": stuck_id})
            assert body["result"]["status"]["state"] == "TASK_STATE_FAILED"
            seed = (await http.get(srv.agent_url("echo", f"/tasks/{done['task']['id']}"))).json()
            assert seed["result"] == {"content": "You said: remember me"}


def _task(tid: str, state: str, updated: float) -> proto.Task:
    return proto.Task(
        id=tid,
        context_id="c",
        agent="a",
        state=state,
        timestamp="t",
        created_at=updated,
        updated_at=updated,
    )


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_store_retention(kind: str, tmp_path: Path) -> None:
    store: TaskStore = MemoryTaskStore() if kind == "memory" else SqliteTaskStore(tmp_path / "s.db")
    with trio.fail_after(TIMEOUT):
        await store.open()
        try:
            for i, state in enumerate(["completed", "failed", "canceled", "completed", "working"]):
                await store.save(_task(f"t{i}", state, updated=100.0 + i))
            # t0 expired; of the rest (t1..t3 finished) keep the newest 2; t4 is running.
            assert await store.cleanup(older_than=100.5, max_finished=2) == 2
            assert [t.id for t in await store.list_tasks(agent="a")] == ["t4", "t3", "t2"]
            assert [t.id for t in await store.list_states({"working"})] == ["t4"]
            got = await store.get("t3")
            assert got is not None and got.state == "completed"
            assert await store.get("t0") is None
        finally:
            await store.aclose()


async def test_slow_subscriber_is_dropped_not_waited_for() -> None:
    rt = RunningTask(task=_task("t", "working", 1.0))
    slow = rt.subscribe(2)  # holds the snapshot + 1 more
    fast = rt.subscribe(100)
    for i in range(5):
        rt.publish(proto.ArtifactUpdate("t", "c", {"parts": [{"text": str(i)}]}, i > 0, False))
    assert len(rt.subscribers) == 1  # the slow one was dropped at once
    got_slow = [ev async for ev in slow]  # ends (closed) after what it had
    assert len(got_slow) == 2
    rt.close_subscribers()
    got_fast = [ev async for ev in fast]
    assert len(got_fast) == 6


async def test_input_required_continuation_gives_the_model_a_well_formed_conversation() -> None:
    model = BuiltinModel()
    asker = Agent("asker", tools=[ask], model=model)
    with trio.fail_after(TIMEOUT):
        async with open_test_server(_server(asker)) as srv, httpx.AsyncClient() as http:
            url = srv.agent_url("asker", "/a2a")
            first = await _rpc(http, url, "SendMessage", {"message": _msg("/call ask")})
            task = first["result"]["task"]
            assert task["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
            answer = _msg("Paris", taskId=task["id"], contextId=task["contextId"])
            second = await _rpc(http, url, "SendMessage", {"message": answer})
            assert second["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    # The tool call that asked is answered by the question, then comes the user's answer.
    messages = model.calls[-1].messages
    [asked] = [m for m in messages if m.tool_calls]
    assert [c.name for c in asked.tool_calls] == ["ask"]
    assert [(m.role, m.text, m.tool_call_id) for m in messages[-2:]] == [
        ("tool", "input required: Which city?", asked.tool_calls[0].id),
        ("user", "Paris", None),
    ]
