"""The programs in ``examples/`` run for real, exactly as their docstrings tell users to run them.

Self-contained examples run as subprocesses and must exit 0 with the output they promise (and
nothing on stderr, under ``-W error -X dev``). Served examples are started with
``trioagents serve FILE --port 0`` and called over HTTP, UAMP and their own endpoints.
"""

from __future__ import annotations

import importlib.util
import re
import signal
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import orjson
import trio

from tests.test_cli import open_cli_server, open_server_process
from trioagents import Agent, uamp
from trioagents.client import open_uamp_client
from trioagents.testing import open_test_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 20


async def run_example(name: str) -> list[str]:
    """Run ``python examples/NAME`` to completion; return its stdout lines."""
    with trio.fail_after(TIMEOUT):
        # -W error -X dev: a stray ResourceWarning or an unawaited coroutine shows on stderr.
        result = await trio.run_process(
            [sys.executable, "-W", "error", "-X", "dev", str(EXAMPLES / name)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    stdout, stderr = result.stdout.decode(), result.stderr.decode()
    assert result.returncode == 0, f"{name} exited {result.returncode}:\n{stdout}\n{stderr}"
    assert stderr == "", stderr
    return stdout.splitlines()


def load_example(name: str) -> ModuleType:
    """Import ``examples/NAME`` as a module (not as ``__main__``)."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name.removesuffix('.py')}", EXAMPLES / name
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _chat(text: str, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **fields}


def _sse_datas(body: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body (JSON decoded), checking the single final [DONE]."""
    datas = [line[6:] for line in body.splitlines() if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    assert datas.count("[DONE]") == 1
    return [orjson.loads(d) for d in datas[:-1]]


# ---------------------------------------------------------------------------------------------
# Self-contained examples


async def test_uamp_client_example() -> None:
    lines = await run_example("uamp_client.py")
    assert re.fullmatch(r"server listening on http://127\.0\.0\.1:\d+", lines[0])
    assert lines[-1] == "server stopped"
    sessions = sorted(lines[1:-1])
    assert len(sessions) == 3, lines
    chat, story, tool = sessions
    assert chat == "[chat]   completed: 'You said: hello from the first session'"
    assert tool == "[tool]   completed: 'add returned: 5' (tool calls: add)"
    m = re.fullmatch(r"\[story\]  cancelled after 5 deltas, partial: '(.*)'\.\.\.", story)
    assert m, story
    # What was streamed before the cancel is kept; the 200-word story was not finished.
    assert m.group(1).startswith("You said: once upon a")


async def test_openai_client_example() -> None:
    lines = await run_example("openai_client.py")
    assert re.fullmatch(r"server listening on http://127\.0\.0\.1:\d+", lines[0])
    assert lines[1:] == [
        "plain:     'You said: What is Trio?' (finish_reason=stop)",
        "streaming: 'You' ' said:' ' stream' ' this' ' please' (finish_reason=stop)",
        'tool call: get_weather({"city": "Paris"}) (finish_reason=tool_calls)',
        "answer:    'get_weather returned: sunny, 24 °C'",
        "server stopped",
    ]


# ---------------------------------------------------------------------------------------------
# Served examples


async def test_hello_agent_with_the_cli() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_cli_server(str(EXAMPLES / "hello_agent.py")) as srv:
            assert "agent 'hello':" in srv.output
            assert "single-agent mode" in srv.output
            async with httpx.AsyncClient(base_url=srv.url) as http:
                r = await http.get("/agents")
                [info] = r.json()["agents"]
                assert (info["name"], info["tools"]) == ("hello", ["brew_tea", "shout"])

                r = await http.post("/v1/chat/completions", json=_chat('/call shout {"text":"hi"}'))
                assert r.json()["choices"][0]["message"]["content"] == "shout returned: HI!"

                # The async tool's progress, as the docstring's streaming curl shows it.
                request = _chat(
                    '/call brew_tea {"minutes": 3}',
                    stream=True,
                    stream_options={"include_agent_events": True},
                )
                async with http.stream("POST", "/v1/chat/completions", json=request) as resp:
                    assert resp.status_code == 200
                    events = _sse_datas((await resp.aread()).decode())
            agent_events = [e for e in events if "type" in e]
            assert [e["type"] for e in agent_events] == [
                "tool_call",
                "tool_progress",
                "tool_progress",
                "tool_progress",
                "tool_result",
            ]
            assert [e["text"] for e in agent_events if e["type"] == "tool_progress"] == [
                "steeping: 1/3 min",
                "steeping: 2/3 min",
                "steeping: 3/3 min",
            ]
            assert agent_events[-1]["result"] == "tea is ready after 3 min"
            # Progress and result carry the id of the call they belong to.
            assert {e["call_id"] for e in agent_events} == {agent_events[0]["call_id"]}
            content = "".join(
                e["choices"][0]["delta"].get("content") or "" for e in events if "choices" in e
            )
            assert content == "brew_tea returned: tea is ready after 3 min"

            async with open_uamp_client(srv.ws_url + "/agents/hello/uamp") as client:
                session = await client.create_session()
                assert await session.ask("hello there") == "You said: hello there"
            assert await srv.stop(signal.SIGINT) == 0


async def test_hello_agent_run_directly() -> None:
    """``python examples/hello_agent.py``: port from the environment (0 here), Ctrl+C stops it."""
    running_on = re.compile(r"Running on (http://\S+)")
    with trio.fail_after(TIMEOUT):
        async with open_server_process(
            [sys.executable, str(EXAMPLES / "hello_agent.py")],
            pattern=running_on,
            env={"TRIOAGENTS_PORT": "0"},
        ) as srv:
            async with httpx.AsyncClient(base_url=srv.url) as http:
                r = await http.post(
                    "/v1/chat/completions", json=_chat('/call shout {"text":"direct"}')
                )
                assert r.json()["choices"][0]["message"]["content"] == "shout returned: DIRECT!"
            assert await srv.stop(signal.SIGINT) == 0
            assert "received SIGINT; shutting down gracefully" in srv.output


async def test_skills_and_hooks_with_the_cli() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_cli_server(f"{EXAMPLES / 'skills_and_hooks.py'}:agents") as srv:
            assert "single-agent mode" not in srv.output
            async with httpx.AsyncClient(base_url=srv.url) as http:
                r = await http.get("/agents")
                assert [a["name"] for a in r.json()["agents"]] == ["triage", "billing"]

                async def ask(agent: str, text: str) -> str:
                    r = await http.post(f"/agents/{agent}/v1/chat/completions", json=_chat(text))
                    assert r.status_code == 200, r.text
                    return str(r.json()["choices"][0]["message"]["content"])

                # The skill's tool (2 LLM calls on triage: the call, then the answer).
                answer = await ask("triage", '/call lookup_order {"order_id": "A-17"}')
                assert answer == 'lookup_order returned: {"status":"shipped","total":42.5}'
                # The handoff (1 LLM call on triage, then billing answers: 1 on billing).
                assert await ask("triage", "/call transfer_to_billing") == (
                    "Billing desk here. What can I do for your invoice?"
                )

                # The skill's HTTP endpoint: one instance, and so one state, per agent.
                triage = (await http.get("/agents/triage/stats")).json()
                billing = (await http.get("/agents/billing/stats")).json()
                assert triage["agent"] == "triage"
                assert triage["llm_calls"] == 3  # counted by the before_llm hook
                assert triage["tools"] == ["lookup_order"]
                assert triage["last_system_prompt"] == (
                    "You greet customers and send billing questions to the billing desk.\n\n"
                    "You work at the front desk. This is turn 1 of the conversation."
                )
                assert billing["agent"] == "billing"
                assert billing["llm_calls"] == 1
                assert "You work at the billing desk." in billing["last_system_prompt"]
                r = await http.get("/agents/nobody/stats")
                assert r.status_code == 404

            # Over UAMP the handoff lasts: the next turn of the session is billing's.
            async with open_uamp_client(srv.ws_url + "/agents/triage/uamp") as client:
                session = await client.create_session()
                assert await session.ask("hi") == "You said: hi"
                assert await session.ask("/call transfer_to_billing") == (
                    "Billing desk here. What can I do for your invoice?"
                )
                assert await session.ask("my invoice is wrong") == (
                    "Billing desk: noted 'my invoice is wrong'. A refund is on its way."
                )
            async with httpx.AsyncClient(base_url=srv.url) as http:
                billing = (await http.get("/agents/billing/stats")).json()
                assert billing["llm_calls"] == 3
                assert "This is turn 3 of the conversation." in billing["last_system_prompt"]
            assert await srv.stop(signal.SIGINT) == 0


async def test_hello_agent_progress_names_the_tool_call() -> None:
    hello = load_example("hello_agent.py")
    agent = Agent("hello", tools=[hello.shout, hello.brew_tea])
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(agent) as srv,
            open_uamp_client(srv.agent_ws_url("hello")) as client,
        ):
            session = await client.create_session()
            await session.input_text('/call brew_tea {"minutes": 2}')
            result = await session.collect()
    deltas = [e.delta for e in result.events if type(e) is uamp.ResponseDelta]
    [call] = [d.tool_call for d in deltas if d.type == "tool_call"]
    progress = [d.tool_progress for d in deltas if d.type == "tool_progress"]
    assert [p.text for p in progress] == ["steeping: 1/2 min", "steeping: 2/2 min"]
    assert {p.call_id for p in progress} == {call.id}
