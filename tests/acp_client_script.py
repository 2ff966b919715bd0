"""Drive a trioagents ACP agent with the real ``agent-client-protocol`` Python SDK (asyncio).

Run by ``tests/test_acp.py`` in a subprocess, so no asyncio loop is mixed into Trio::

    python tests/acp_client_script.py stdio AGENT_TARGET
    python tests/acp_client_script.py http URL [ws URL …]

Prints one JSON object: for each carrier, what a user of the SDK would look at.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import acp
from acp import RequestError, connect_to_agent, spawn_agent_process, text_block


class Recorder:
    """The client side: records every ``session/update`` in arrival order."""

    def __init__(self) -> None:
        self.log: list[Any] = []
        self.first_chunk = asyncio.Event()

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        data = update.model_dump(by_alias=True, exclude_none=True, mode="json")
        self.log.append({"session": session_id, **data})
        if data.get("sessionUpdate") == "agent_message_chunk":
            self.first_chunk.set()

    async def request_permission(self, *args: Any, **kwargs: Any) -> Any:
        raise RequestError.method_not_found("session/request_permission")


def _text(entries: list[Any]) -> str:
    return "".join(
        e["content"]["text"] for e in entries if e.get("sessionUpdate") == "agent_message_chunk"
    )


async def _prompt(conn: Any, rec: Recorder, sid: str, text: str) -> dict[str, Any]:
    start = len(rec.log)
    try:
        resp = await conn.prompt(session_id=sid, prompt=[text_block(text)])
    except RequestError as exc:
        return {"error": exc.code, "message": str(exc), "updates": rec.log[start:]}
    updates = rec.log[start:]
    rec.log.append({"response": resp.stop_reason})
    out: dict[str, Any] = {
        "stop": resp.stop_reason,
        "text": _text(updates),
        "updates": updates,
    }
    if resp.usage is not None:
        out["usage"] = resp.usage.model_dump(by_alias=True, exclude_none=True)
    return out


async def exercise(conn: Any, rec: Recorder) -> dict[str, Any]:
    """The same conversation on every carrier."""
    out: dict[str, Any] = {}
    init = await conn.initialize(protocol_version=1)
    out["init"] = init.model_dump(by_alias=True, exclude_none=True, mode="json")
    session = await conn.new_session(cwd="/tmp", mcp_servers=[])
    sid = session.session_id
    out["session_id"] = sid
    out["hello"] = await _prompt(conn, rec, sid, "hello world")
    out["tool"] = await _prompt(conn, rec, sid, "/call add")
    out["think"] = await _prompt(conn, rec, sid, "/think")
    out["fail"] = await _prompt(conn, rec, sid, "/fail")

    # Cancel mid-prompt: wait for the first chunk, try a second prompt (busy), then cancel.
    rec.first_chunk = asyncio.Event()
    start = len(rec.log)
    slow = asyncio.ensure_future(conn.prompt(session_id=sid, prompt=[text_block("slow please")]))
    await asyncio.wait_for(rec.first_chunk.wait(), 10)
    try:
        await conn.prompt(session_id=sid, prompt=[text_block("hello again")])
        out["busy"] = {"error": None}
    except RequestError as exc:
        out["busy"] = {"error": exc.code}
    await conn.cancel(session_id=sid)
    resp = await asyncio.wait_for(slow, 10)
    rec.log.append({"response": resp.stop_reason})
    out["cancel"] = {"stop": resp.stop_reason, "chunks": len(rec.log) - start - 1}
    # The next prompt of the same session: nothing of the cancelled one may arrive after its
    # answer, so everything logged from here on belongs to "after".
    mark = len(rec.log)
    after = await _prompt(conn, rec, sid, "after")
    out["after"] = {"stop": after["stop"], "text": _text(rec.log[mark:])}

    # Two sessions on one connection are independent.
    other = await conn.new_session(cwd="/tmp", mcp_servers=[])
    out["other"] = await _prompt(conn, rec, other.session_id, "second session")
    return out


async def run_stdio(target: str) -> dict[str, Any]:
    rec = Recorder()
    async with spawn_agent_process(
        rec, sys.executable, "-m", "trioagents.transports.acp", target
    ) as (conn, process):
        out = await exercise(conn, rec)
    # spawn_agent_process closes stdin, then waits; 0 means we exited on our own (no SIGTERM).
    out["exit_code"] = process.returncode
    return out


async def run_remote(kind: str, url: str) -> dict[str, Any]:
    rec = Recorder()
    if kind == "http":
        from acp.http import create_http_stream

        transport = create_http_stream(url)
    else:
        from acp.ws import create_websocket_stream

        transport = await create_websocket_stream(url)
    conn = connect_to_agent(rec, transport)
    try:
        return await exercise(conn, rec)
    finally:
        await conn.close()


async def main(argv: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {"acp_version": acp.__name__}
    pairs = list(zip(argv[::2], argv[1::2], strict=True))
    for kind, arg in pairs:
        if kind == "stdio":
            results[kind] = await asyncio.wait_for(run_stdio(arg), 30)
        else:
            results[kind] = await asyncio.wait_for(run_remote(kind, arg), 30)
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1:]))))
