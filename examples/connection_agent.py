"""A chat room as a connection agent (Cloudflare Agents style), plus a UAMP assistant.

``ChatRoom`` is written as WebSocket connection handlers: every instance
(``ws://HOST/agents/chat-room/{room}?name=ann``) is one room with its own saved state; what one
member says is broadcast to the others. It also offers RPC methods (``members``, and
``countdown``, which streams). The ``assistant`` agent is an ordinary trioagents agent (the
built-in offline model echoes you): open http://127.0.0.1:8000/ for the demo chat page.

Run it::

    python examples/connection_agent.py         # http://127.0.0.1:8000, Ctrl+C stops it

and talk to a room from Python::

    from trioagents.client import open_agent_client

    async with open_agent_client("ChatRoom", "lobby", host="127.0.0.1:8000",
                                 query={"name": "ann"}) as room:
        room.add_listener("message", print)
        await room.send("hello, everyone")
        print(await room.call("members"))

or from a browser: ``import { AgentClient } from "/static/trioagents.js"``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import trio
import trio.lowlevel

from trioagents import Agent, AgentServer, Config, serve
from trioagents.connections import ConnectContext, Connection, ConnectionAgent, rpc


class ChatRoom(ConnectionAgent):
    """One chat room per instance; the state counts the messages ever sent in it."""

    initial_state = {"messages": 0}

    async def on_connect(self, connection: Connection, ctx: ConnectContext) -> None:
        name = ctx.request.query.get("name")
        if not name:
            # The handshake is already accepted, so a browser sees this code and reason.
            connection.close(4000, "Unauthorized: add ?name=YOUR_NAME")
            return
        connection.data["name"] = name
        await self.broadcast({"type": "joined", "name": name}, exclude=[connection])

    async def on_message(self, connection: Connection, message: str | bytes) -> None:
        text = message if isinstance(message, str) else message.decode(errors="replace")
        await self.broadcast(
            {"type": "said", "name": connection.data["name"], "text": text}, exclude=[connection]
        )
        # update_state computes the new state under the state lock: no lost updates.
        await self.update_state(lambda s: {**s, "messages": s["messages"] + 1})

    async def on_close(
        self, connection: Connection, code: int, reason: str, was_clean: bool
    ) -> None:
        await self.broadcast({"type": "left", "name": connection.data["name"]})

    @rpc
    async def members(self) -> list[str]:
        """The names of everyone in the room."""
        return sorted(c.data["name"] for c in self.get_connections())

    @rpc
    async def countdown(self, n: int) -> AsyncIterator[int]:
        """Stream n, n-1, …, 1 (one partial result each)."""
        for i in range(n, 0, -1):
            yield i
            await trio.lowlevel.checkpoint()


agent = Agent("assistant", instructions="You are a helpful assistant.")
connection_agents = [ChatRoom]


def make_server(**config: Any) -> AgentServer:
    """The server for this example (settings from the environment, then ``config``)."""
    return AgentServer(agent, config=Config.load(**config), connection_agents=connection_agents)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    trio.run(serve, make_server())
