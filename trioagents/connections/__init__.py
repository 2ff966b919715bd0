"""Connection agents: agents written as WebSocket connection handlers (PROTOCOLS.md §4).

Users of Cloudflare's Agents SDK will recognise the model::

    from trioagents.connections import ConnectionAgent, rpc

    class Counter(ConnectionAgent):
        initial_state = {"count": 0}

        async def on_connect(self, connection, ctx):
            if ctx.request.query.get("token") != "secret":
                connection.close(4000, "Unauthorized")

        async def on_message(self, connection, message):
            await self.broadcast(message, exclude=[connection])

        @rpc
        async def increment(self, by=1):
            await self.set_state({"count": self.state["count"] + by})
            return self.state["count"]

    server = AgentServer([], connection_agents=[Counter])  # WS /agents/counter/{instance}

Each instance (``/agents/counter/room-1``) is one object with its own JSON state, saved in
SQLite and restored after a restart; every connection's handlers run in that connection's
nursery. The Python client is :func:`trioagents.client.open_agent_client`; the browser client
is ``/static/trioagents.js``.
"""

from __future__ import annotations

from ._agent import (
    ConnectContext as ConnectContext,
    ConnectionAgent as ConnectionAgent,
    ConnectRequest as ConnectRequest,
    StateChangeRejected as StateChangeRejected,
    current_connection as current_connection,
    rpc as rpc,
)
from ._connection import Connection as Connection
from ._host import (
    DEFAULT_STATE_DB as DEFAULT_STATE_DB,
    STATE_DB_ENV as STATE_DB_ENV,
    ConnectionHost as ConnectionHost,
)
from ._protocol import kebab_case as kebab_case
from ._store import (
    MemoryStateStore as MemoryStateStore,
    SqliteStateStore as SqliteStateStore,
    StateStore as StateStore,
)

__all__ = [
    "ConnectContext",
    "ConnectRequest",
    "Connection",
    "ConnectionAgent",
    "ConnectionHost",
    "DEFAULT_STATE_DB",
    "MemoryStateStore",
    "STATE_DB_ENV",
    "SqliteStateStore",
    "StateChangeRejected",
    "StateStore",
    "current_connection",
    "kebab_case",
    "rpc",
]
