"""Completions SSE: the events queued together go out in one body chunk (byte-exact).

The response is driven as an ASGI app with a recording ``send``, so the test sees exactly the
``http.response.body`` messages the server writes, then over the real server for the bytes.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import trio

from trioagents import Agent, BuiltinModel, Reply, uamp
from trioagents.agent import Message, Session
from trioagents.config import Config
from trioagents.protocols.completions import parse_request
from trioagents.testing import open_test_server
from trioagents.transports import Runtime
from trioagents.transports.completions import CompletionsResponse

TIMEOUT = 10
WORDS = " ".join(f"w{i}" for i in range(20))


def _chunks(body: bytes) -> list[Any]:
    assert body.endswith(b"data: [DONE]\n\n")
    events = body.split(b"\n\n")
    assert events[-1] == b""
    out = []
    for ev in events[:-1]:
        assert ev.startswith(b"data: ") and b"\n" not in ev
        out.append(ev[6:] if ev == b"data: [DONE]" else orjson.loads(ev[6:]))
    return out


async def _drive(agent: Agent, word_delay: float | None = None) -> list[dict[str, Any]]:
    runtime = Runtime(
        config=Config(),
        agents={agent.name: agent},
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
    )
    session = Session(id="sess_1", agent=agent, messages=[Message(role="user", content="hi")])
    req = parse_request(b'{"messages":[{"role":"user","content":"hi"}],"stream":true}')
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        await trio.lowlevel.checkpoint()

    with trio.fail_after(TIMEOUT):
        await CompletionsResponse(runtime, session, req)({"type": "http"}, receive, send)
    return sent


async def test_a_burst_is_one_body_chunk() -> None:
    agent = Agent("burst", model=BuiltinModel(lambda request: Reply(WORDS)))
    sent = await _drive(agent)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    bodies = [m for m in sent[1:] if m["type"] == "http.response.body"]
    assert len(bodies) == 1 and bodies[0]["more_body"] is False
    chunks = _chunks(bodies[0]["body"])
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert [d["content"] for d in deltas[1:-1]] == [
        w if i == 0 else " " + w for i, w in enumerate(WORDS.split())
    ]  # still one SSE event per model delta: only the write is combined
    assert deltas[-1] == {} and chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1] == b"[DONE]"


async def test_paced_deltas_are_not_held_back(autojump_clock: trio.abc.Clock) -> None:
    """Events that arrive apart are written as they come (one chunk each)."""
    agent = Agent("paced", model=BuiltinModel(lambda request: Reply("a b c"), word_delay=1.0))
    sent = await _drive(agent)
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    # role + "a" | " b" | " c" + finish + [DONE]
    assert len(bodies) == 3
    texts = [
        c["choices"][0]["delta"].get("content")
        for b in bodies
        for c in _chunks(b + (b"" if b.endswith(b"[DONE]\n\n") else b"data: [DONE]\n\n"))[:-1]
    ]
    assert texts == ["", "a", " b", " c", None]


async def test_real_server_streams_exact_bytes() -> None:
    agent = Agent("burst", model=BuiltinModel(lambda request: Reply(WORDS)))
    with trio.fail_after(TIMEOUT):
        async with open_test_server(agent) as srv, httpx.AsyncClient() as http:
            for _ in range(3):  # keep-alive reuse after a one-chunk response
                r = await http.post(
                    srv.agent_url("burst", "/v1/chat/completions"),
                    json={"messages": [{"role": "user", "content": "hi"}], "stream": True},
                )
                assert r.status_code == 200
                chunks = _chunks(r.content)
                text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
                assert text == WORDS
                assert len(chunks) == 20 + 3
