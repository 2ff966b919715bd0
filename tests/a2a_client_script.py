"""Drive a trioagents server with the real a2a-sdk client (asyncio, so in its own process).

Usage: ``python a2a_client_script.py BASE_URL VERSION SCENARIO...`` where VERSION is ``1.0``
or ``0.3``. Each scenario prints one JSON line ``{"scenario": …, …}``; protobuf objects are
printed as their ProtoJSON dicts (the version-independent view the SDK gives its users).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
)
from google.protobuf.json_format import MessageToDict


def d(obj: Any) -> dict[str, Any]:
    return MessageToDict(obj)


def message(text: str, *, task_id: str = "", context_id: str = "") -> Message:
    return Message(
        message_id=str(uuid.uuid4()),
        role=Role.ROLE_USER,
        parts=[Part(text=text)],
        task_id=task_id,
        context_id=context_id,
    )


async def client_for(base: str, agent: str, version: str, *, streaming: bool) -> Any:
    async with httpx.AsyncClient() as http:
        card = await A2ACardResolver(http, f"{base}/agents/{agent}").get_agent_card()
    if version == "0.3":
        # The 1.x SDK prefers the 1.0 interface; keep only the 0.3 one to get its compat
        # transport (what a 0.3-only client of this card would use).
        keep = [i for i in card.supported_interfaces if i.protocol_version == "0.3"]
        del card.supported_interfaces[:]
        card.supported_interfaces.extend(keep)
    return ClientFactory(ClientConfig(streaming=streaming)).create(card)


async def send_all(client: Any, request: SendMessageRequest) -> list[dict[str, Any]]:
    return [d(ev) async for ev in client.send_message(request)]


async def scenario(base: str, version: str, name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"scenario": name}
    if name == "card":
        async with httpx.AsyncClient() as http:
            card = await A2ACardResolver(http, f"{base}/agents/echo").get_agent_card()
        out["card"] = d(card)
    elif name == "send":
        async with await client_for(base, "echo", version, streaming=False) as c:
            out["transport"] = type(c._transport).__name__
            out["events"] = await send_all(c, SendMessageRequest(message=message("hello there")))
            task_id = out["events"][0]["task"]["id"]
            out["get"] = d(await c.get_task(GetTaskRequest(id=task_id)))
            out["get_h1"] = d(await c.get_task(GetTaskRequest(id=task_id, history_length=1)))
    elif name == "stream":
        async with await client_for(base, "echo", version, streaming=True) as c:
            out["events"] = await send_all(c, SendMessageRequest(message=message("one two three")))
    elif name == "cancel":
        async with await client_for(base, "stuck", version, streaming=False) as c:
            req = SendMessageRequest(message=message("/call wait_forever"))
            req.configuration.return_immediately = True
            out["events"] = await send_all(c, req)
            task_id = out["events"][0]["task"]["id"]
            out["cancel"] = d(await c.cancel_task(CancelTaskRequest(id=task_id)))
            out["get"] = d(await c.get_task(GetTaskRequest(id=task_id)))
            try:
                await c.cancel_task(CancelTaskRequest(id=task_id))
            except Exception as exc:
                out["cancel_again"] = type(exc).__name__
    elif name == "resubscribe":
        async with await client_for(base, "slow", version, streaming=False) as c:
            req = SendMessageRequest(message=message("go"))
            req.configuration.return_immediately = True
            out["events"] = await send_all(c, req)
            task_id = out["events"][0]["task"]["id"]
        async with await client_for(base, "slow", version, streaming=True) as c:
            out["subscribed"] = [
                d(ev) async for ev in c.subscribe(SubscribeToTaskRequest(id=task_id))
            ]
            out["get"] = d(await c.get_task(GetTaskRequest(id=task_id)))
    elif name == "input":
        async with await client_for(base, "asker", version, streaming=False) as c:
            first = await send_all(c, SendMessageRequest(message=message("/call ask")))
            task = first[0]["task"]
            second = await send_all(
                c,
                SendMessageRequest(
                    message=message("Paris", task_id=task["id"], context_id=task["contextId"])
                ),
            )
            out["first"] = first
            out["second"] = second
    elif name == "errors":
        async with await client_for(base, "echo", version, streaming=False) as c:
            try:
                await c.get_task(GetTaskRequest(id=str(uuid.uuid4())))
            except Exception as exc:
                out["unknown_task"] = type(exc).__name__
    else:
        raise SystemExit(f"unknown scenario {name!r}")
    return out


async def main() -> None:
    base, version, *names = sys.argv[1:]
    for name in names:
        print(json.dumps(await scenario(base, version, name)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
