"""Drive a trioagents Realtime server with the real ``openai`` SDK (asyncio, run as a subprocess).

Usage: ``python realtime_client_script.py HTTP_URL`` — the server must serve the agents ``echo``
(the default built-in model) and ``gate`` (streams a little, then blocks until cancelled).

Prints one JSON object: for each flavour and scenario the exact sequence of event ``type``s
received, the text, statuses and every strict-validation failure of a received event against
the SDK's own pydantic union (``RealtimeServerEvent``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pydantic
from openai import AsyncOpenAI
from openai.types.beta.realtime.realtime_server_event import (
    RealtimeServerEvent as BetaServerEvent,
)
from openai.types.realtime.realtime_server_event import RealtimeServerEvent as GAServerEvent

GA_ADAPTER: Any = pydantic.TypeAdapter(GAServerEvent)
BETA_ADAPTER: Any = pydantic.TypeAdapter(BetaServerEvent)

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


class Recorder:
    """Receives events through the SDK, validates them strictly and records their types."""

    def __init__(self, conn: Any, beta: bool) -> None:
        self.conn = conn
        self.beta = beta
        self.types: list[str] = []
        self.invalid: list[str] = []

    async def next(self) -> Any:
        raw = await self.conn.recv_bytes()
        data = json.loads(raw)
        event = self.conn.parse_event(raw)  # what SDK users get
        assert event.type == data["type"], (event.type, data["type"])
        check = data
        if self.beta and data["type"] in ("session.created", "session.updated"):
            # beta's Session.model is a Literal of OpenAI's own model names; the SDK's parser
            # (construct, no validation) accepts the agent's name, strict validation would not.
            check = {**data, "session": {k: v for k, v in data["session"].items() if k != "model"}}
        try:
            (BETA_ADAPTER if self.beta else GA_ADAPTER).validate_python(check)
        except pydantic.ValidationError as exc:
            self.invalid.append(f"{data['type']}: {exc}")
        self.types.append(data["type"])
        return event

    async def until(self, kind: str) -> Any:
        while True:
            event = await self.next()
            if event.type == kind:
                return event

    def take(self) -> list[str]:
        out, self.types = self.types, []
        return out


def collapse(types: list[str]) -> list[str]:
    """Text deltas become ``type*``, one per run (merging makes their count vary)."""
    out: list[str] = []
    for t in types:
        if t.endswith("text.delta"):
            if out and out[-1] == t + "*":
                continue
            t += "*"
        out.append(t)
    return out


def user_item(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        },
    }


async def text_scenarios(conn: Any, rec: Recorder, out: dict[str, Any]) -> None:
    first = await rec.next()
    out["session"] = {
        "type": first.type,
        "model": first.session.model,
        "id": first.session.id,
    }
    await conn.send(user_item("hello there"))
    await rec.until("conversation.item.done" if not rec.beta else "conversation.item.created")
    await conn.send({"type": "response.create"})
    text = []
    while True:
        ev = await rec.next()
        if ev.type.endswith("text.delta"):
            text.append(ev.delta)
        if ev.type == "response.done":
            break
    out["text_types"] = collapse(rec.take())
    out["text"] = "".join(text)
    out["text_status"] = ev.response.status
    out["text_output"] = [
        (item.type, item.role, [(c.type, c.text) for c in item.content])
        for item in ev.response.output
    ]
    out["usage_total"] = ev.response.usage.total_tokens if ev.response.usage else None


async def function_call_scenario(conn: Any, rec: Recorder, out: dict[str, Any]) -> None:
    await conn.send({"type": "session.update", "session": {"tools": [WEATHER]}})
    upd = await rec.until("session.updated")
    out["session_tools"] = [t.name for t in upd.session.tools]
    rec.take()
    await conn.send(user_item('/call get_weather {"city": "Paris"}'))
    await conn.send({"type": "response.create"})
    call = None
    while True:
        ev = await rec.next()
        if ev.type == "response.function_call_arguments.done":
            call = ev
        if ev.type == "response.done":
            break
    out["call_types"] = collapse(rec.take())
    out["call_status"] = ev.response.status
    assert call is not None
    out["call"] = {"name": call.name, "arguments": json.loads(call.arguments)}
    out["call_item"] = [(i.type, i.name, i.call_id == call.call_id) for i in ev.response.output]
    await conn.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": call.call_id,
                "output": "sunny, 21 C",
            },
        }
    )
    await conn.send({"type": "response.create"})
    text = []
    while True:
        ev = await rec.next()
        if ev.type.endswith("text.delta"):
            text.append(ev.delta)
        if ev.type == "response.done":
            break
    out["result_types"] = collapse(rec.take())
    out["result_text"] = "".join(text)


async def cancel_scenario(conn: Any, rec: Recorder, out: dict[str, Any]) -> None:
    await rec.next()  # session.created
    await conn.send(user_item("block please"))
    await conn.send({"type": "response.create"})
    await rec.until("response.output_text.delta" if not rec.beta else "response.text.delta")
    await conn.send({"type": "response.cancel"})
    ev = await rec.until("response.done")
    out["cancel_types"] = collapse(rec.take())
    out["cancel_status"] = ev.response.status
    out["cancel_details"] = ev.response.status_details.model_dump(exclude_none=True)
    out["cancel_item_status"] = [i.status for i in ev.response.output]
    # The socket is still usable: a second cancel is an error, then a new response works.
    await conn.send({"type": "response.cancel", "event_id": "evt_client_2"})
    err = await rec.until("error")
    out["cancel_again"] = [err.error.code, err.error.event_id]
    rec.take()


async def main(url: str) -> dict[str, Any]:
    ws = "ws" + url[len("http") :]
    result: dict[str, Any] = {}
    # GA against the server-level route: base_url http://h/v1 → ws://h/v1/realtime?model=echo
    ga = AsyncOpenAI(base_url=f"{url}/v1", api_key="x")
    # GA against the per-agent route: …/agents/echo/v1/realtime?model=echo
    ga_agent = AsyncOpenAI(base_url=f"{url}/agents/echo/v1", api_key="x")
    beta = AsyncOpenAI(base_url=f"{url}/v1", api_key="x", websocket_base_url=f"{ws}/v1")
    for name, flavour, client in (
        ("ga", False, ga),
        ("ga_agent", False, ga_agent),
        ("beta", True, beta),
    ):
        out: dict[str, Any] = {}
        rt = client.beta.realtime if flavour else client.realtime
        async with rt.connect(model="echo") as conn:
            rec = Recorder(conn, flavour)
            await text_scenarios(conn, rec, out)
            if name != "ga_agent":
                await function_call_scenario(conn, rec, out)
        if name != "ga_agent":
            async with rt.connect(model="gate") as conn:
                rec2 = Recorder(conn, flavour)
                await cancel_scenario(conn, rec2, out)
                rec.invalid += rec2.invalid
        out["invalid"] = rec.invalid
        result[name] = out
    return result


async def audio_scenario(conn: Any, rec: Recorder, out: dict[str, Any]) -> None:
    """Audio in through the server's transcribe hook (the agent reads the bytes as UTF-8)."""
    import base64

    await rec.next()  # session.created
    rec.take()
    await conn.input_audio_buffer.append(audio=base64.b64encode(b"spoken ").decode())
    await conn.input_audio_buffer.append(audio=base64.b64encode(b"words").decode())
    await conn.input_audio_buffer.commit()
    ev = await rec.until("conversation.item.input_audio_transcription.completed")
    out["audio_types"] = rec.take()
    out["transcript"] = [ev.transcript, ev.content_index, ev.usage.type]
    await conn.response.create()
    text = []
    while True:
        ev = await rec.next()
        if ev.type.endswith("text.delta"):
            text.append(ev.delta)
        if ev.type == "response.done":
            break
    rec.take()
    out["audio_answer"] = "".join(text)
    out["invalid"] = rec.invalid


async def main_audio(url: str) -> dict[str, Any]:
    """``python realtime_client_script.py HTTP_URL audio``: the agent ``ears`` transcribes."""
    ws = "ws" + url[len("http") :]
    result: dict[str, Any] = {}
    ga = AsyncOpenAI(base_url=f"{url}/v1", api_key="x")
    beta = AsyncOpenAI(base_url=f"{url}/v1", api_key="x", websocket_base_url=f"{ws}/v1")
    for name, flavour, client in (("ga", False, ga), ("beta", True, beta)):
        out: dict[str, Any] = {}
        rt = client.beta.realtime if flavour else client.realtime
        async with rt.connect(model="ears") as conn:
            await audio_scenario(conn, Recorder(conn, flavour), out)
        result[name] = out
    return result


if __name__ == "__main__":
    if sys.argv[2:] == ["audio"]:
        print(json.dumps(asyncio.run(main_audio(sys.argv[1]))))
        sys.exit()
    print(json.dumps(asyncio.run(main(sys.argv[1]))))
