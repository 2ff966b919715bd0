"""Serving connection agents: the instance registry, state stores, and the routes.

:class:`ConnectionHost` is what :class:`~trioagents.AgentServer` builds from its
``connection_agents``. It contributes the routes ``WS /agents/{agent}/{instance}`` and
``WS /agents/{agent}`` (instance ``default``) — mounted after every other route, so they never
shadow an agent's own endpoints — and a lifespan that opens the state stores and owns the
instances' nursery.

Instances start on first use: the stored state is loaded (or ``initial_state`` used),
``on_start`` runs, and the instance task lives in the host's nursery until the server stops.
Two connections racing to the same new instance get the same object.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from ..transports._runtime import Runtime
from ._agent import ConnectContext, ConnectionAgent, ConnectRequest, rpc_methods
from ._connection import Connection
from ._protocol import RESERVED_SEGMENTS, kebab_case, valid_instance_name
from ._store import MemoryStateStore, SqliteStateStore, StateStore

__all__ = ["ConnectionHost", "STATE_DB_ENV", "DEFAULT_STATE_DB"]

log = logging.getLogger("trioagents.connections")

STATE_DB_ENV = "TRIOAGENTS_STATE_DB"
"""Environment variable naming the SQLite file for connection-agent state."""

DEFAULT_STATE_DB = "trioagents-state.db"
"""The state file used when neither the class nor the environment names one."""


def _not_found(code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, "details": {}}}, 404)


class _Entry:
    def __init__(self, cls: type[ConnectionAgent]) -> None:
        self.cls = cls
        self.name = cls.wire_name()
        self.rpc = rpc_methods(cls)
        self.store: StateStore | None = None


class ConnectionHost:
    """The connection agents of one server.

    Args:
        runtime: the server's runtime (config, ids, shutdown signal).
        classes: the :class:`ConnectionAgent` subclasses to serve.

    Raises:
        TypeError: something that is not a ConnectionAgent subclass.
        ValueError: two classes answer to the same name, or a name is not a valid segment.
    """

    def __init__(self, runtime: Runtime, classes: Iterable[type[ConnectionAgent]]) -> None:
        self.runtime = runtime
        self._by_alias: dict[str, _Entry] = {}
        self.entries: list[_Entry] = []
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, ConnectionAgent)):
                raise TypeError(f"{cls!r} is not a ConnectionAgent subclass")
            entry = _Entry(cls)
            if not valid_instance_name(entry.name):
                raise ValueError(f"{entry.name!r} is not a valid agent name")
            self.entries.append(entry)
            for alias in {entry.name, cls.__name__, kebab_case(cls.__name__)}:
                other = self._by_alias.get(alias)
                if other is not None and other is not entry:
                    raise ValueError(
                        f"{other.cls.__name__} and {cls.__name__} both answer to {alias!r}"
                    )
                self._by_alias[alias] = entry
        self._instances: dict[tuple[str, str], ConnectionAgent] = {}
        self._starting: dict[tuple[str, str], trio.Event] = {}
        self._nursery: trio.Nursery | None = None

    def resolve(self, name: str) -> type[ConnectionAgent] | None:
        """The class ``name`` addresses (its wire name, class name or kebab-case)."""
        entry = self._by_alias.get(name)
        return entry.cls if entry else None

    def instance(self, agent: str, name: str = "default") -> ConnectionAgent | None:
        """The running instance ``name`` of ``agent``, if it has started."""
        entry = self._by_alias.get(agent)
        return self._instances.get((entry.name, name)) if entry else None

    # -- lifespan -------------------------------------------------------------------------------

    def _make_store(self, cls: type[ConnectionAgent], shared: dict[str, StateStore]) -> StateStore:
        if cls.store_factory is not None:
            return cls.store_factory()
        db = cls.db if cls.db is not None else os.environ.get(STATE_DB_ENV, DEFAULT_STATE_DB)
        if db == ":memory:":
            return MemoryStateStore()
        key = os.path.abspath(db)
        if key not in shared:
            shared[key] = SqliteStateStore(db)
        return shared[key]

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Open the state stores and the instances' nursery for the life of the server.

        On exit every instance is cancelled, then the stores close (bounded by
        ``cleanup_timeout``).
        """
        if not self.entries:
            yield
            return
        shared: dict[str, StateStore] = {}
        opened: list[StateStore] = []
        try:
            for entry in self.entries:
                entry.store = self._make_store(entry.cls, shared)
                if not any(s is entry.store for s in opened):
                    await entry.store.open()
                    opened.append(entry.store)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    yield
                finally:
                    self._nursery = None
                    nursery.cancel_scope.cancel()
        finally:
            self._instances.clear()
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(self.runtime.config.cleanup_timeout),
            ):
                for store in opened:
                    await store.aclose()

    # -- instances ------------------------------------------------------------------------------

    async def get_instance(self, cls: type[ConnectionAgent], name: str) -> ConnectionAgent:
        """The instance ``name`` of ``cls``, started (state loaded, ``on_start`` run) if new.

        Raises:
            RuntimeError: the server is not running (no lifespan).
            Exception: whatever loading the state or ``on_start`` raised (nothing is kept,
                so the next connection tries again).
        """
        entry = self._by_alias[cls.wire_name()]
        key = (entry.name, name)
        while True:
            found = self._instances.get(key)
            if found is not None:
                return found
            starting = self._starting.get(key)
            if starting is None:
                break
            await starting.wait()
        if self._nursery is None:
            raise RuntimeError("connection agents are served only while the server runs")
        done = self._starting[key] = trio.Event()
        try:
            agent = cls()
            agent.name = name
            agent._store = entry.store
            if entry.store is not None:
                loaded = await entry.store.load(entry.name, name)
            else:
                loaded = None
            if loaded is not None:
                agent._state, agent._version = loaded
            else:
                agent._state = cls.initial_state
            await self._nursery.start(self._run_instance, agent, key)
            self._instances[key] = agent
            return agent
        finally:
            del self._starting[key]
            done.set()

    async def _run_instance(
        self,
        agent: ConnectionAgent,
        key: tuple[str, str],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            async with trio.open_nursery() as nursery:
                agent.nursery = nursery
                await agent.on_start()
                task_status.started()
                await trio.sleep_forever()
        except Exception:
            # A failing background task ends this instance, not the server: the next
            # connection to it starts a fresh one (from the saved state).
            log.exception("connection agent %s/%s failed", key[0], key[1])
            if self._instances.get(key) is agent:
                del self._instances[key]
            for conn in agent.get_connections():
                conn.close(1011, "agent failed")

    # -- routes ---------------------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        """``WS /agents/{agent}/{instance}`` and ``WS /agents/{agent}`` (none without classes)."""
        if not self.entries:
            return []
        return [
            WebSocketRoute("/agents/{agent}/{instance}", self._endpoint),
            WebSocketRoute("/agents/{agent}", self._endpoint),
        ]

    async def _endpoint(self, ws: WebSocket) -> None:
        agent_name = ws.path_params.get("agent", "")
        instance = ws.path_params.get("instance", "default")
        cls = self.resolve(agent_name)
        if cls is None:
            await ws.send_denial_response(
                _not_found("agent_not_found", f"no connection agent named {agent_name!r}")
            )
            return
        if not valid_instance_name(instance):
            reason = (
                f"{instance!r} names a transport, not an instance"
                if instance in RESERVED_SEGMENTS
                else f"{instance!r} is not a valid instance name"
            )
            await ws.send_denial_response(_not_found("route_not_found", reason))
            return
        await self.serve_socket(ws, cls, instance)

    async def serve_socket(self, ws: WebSocket, cls: type[ConnectionAgent], instance: str) -> None:
        """Serve one WebSocket for instance ``instance`` of ``cls``.

        Always accepts the handshake first, so close codes reach browsers. Returns after the
        connection has closed and ``on_close`` has run. Cancellation cancels its handlers.
        """
        runtime = self.runtime
        config = runtime.config
        await ws.accept()
        send = ws._send
        try:
            agent = await self.get_instance(cls, instance)
        except Exception:
            log.exception("connection agent %s/%s could not start", cls.wire_name(), instance)
            with trio.CancelScope(shield=True), trio.move_on_after(config.cleanup_timeout):
                await send(
                    {"type": "websocket.close", "code": 1011, "reason": "agent failed to start"}
                )
            return
        entry = self._by_alias[cls.wire_name()]
        conn = Connection(
            runtime.ids.new("conn"),
            agent,
            queue_size=config.outbound_queue_size,
            send_timeout=config.send_timeout,
            rpc_methods=entry.rpc,
        )
        client = ws.client
        ctx = ConnectContext(
            request=ConnectRequest(
                url=str(ws.url),
                headers=ws.headers,
                cookies=ws.cookies,
                query=ws.query_params,
                client=(client.host, client.port) if client else None,
            )
        )
        stats = runtime.stats
        stats.connections += 1
        stats.connections_open += 1
        try:
            await conn.serve(
                ws._receive,
                send,
                ctx,
                max_message_size=config.max_message_size,
                cleanup_timeout=config.cleanup_timeout,
                drain_hook=runtime.drain_hook,
            )
        finally:
            stats.connections_open -= 1
