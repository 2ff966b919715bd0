"""The user-facing side of connection agents: :class:`ConnectionAgent` and :func:`rpc`."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar, overload

import attrs
import trio
from starlette.datastructures import Headers, QueryParams

from ._protocol import kebab_case, state_frame
from ._store import StateStore, _encode

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = [
    "ConnectionAgent",
    "ConnectRequest",
    "ConnectContext",
    "rpc",
    "current_connection",
    "StateChangeRejected",
]

log = logging.getLogger("trioagents.connections")

F = TypeVar("F", bound=Callable[..., Any])

_current: contextvars.ContextVar[Connection] = contextvars.ContextVar("trioagents_connection")

_RPC_ATTR = "__trioagents_rpc__"


def current_connection() -> Connection:
    """The connection whose handler (``on_message``, an ``@rpc`` method…) is running.

    Raises:
        LookupError: called outside a connection handler.
    """
    return _current.get()


@overload
def rpc(fn: F, /) -> F: ...
@overload
def rpc(*, name: str | None = None) -> Callable[[F], F]: ...
def rpc(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Expose a method of a :class:`ConnectionAgent` to clients' ``call(method, *args)``.

    The method receives the frame's ``args`` positionally. A coroutine's return value is the
    result; an async generator streams: each value it yields is sent as a ``done: false``
    frame, then a final ``done: true`` frame (result ``null``). An exception becomes
    ``{"success": false, "error": str(exc)}``. The client may cancel a running call; the
    method then sees ``trio.Cancelled``. :func:`current_connection` names the caller.

    Only decorated methods are callable over the wire. ``name`` overrides the wire name.
    """

    def mark(f: F) -> F:
        setattr(f, _RPC_ATTR, name or f.__name__)
        return f

    return mark(fn) if fn is not None else mark


def rpc_methods(cls: type) -> dict[str, str]:
    """The ``@rpc`` methods of ``cls``: wire name → attribute name."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            wire = getattr(value, _RPC_ATTR, None)
            if isinstance(wire, str):
                found[wire] = attr
    return found


class StateChangeRejected(Exception):
    """Raise from :meth:`ConnectionAgent.validate_state_change` to refuse a client's state.

    Any exception refuses it; this one exists so the message is obviously meant for the
    client (it is sent as ``{"type":"cf_agent_state_error","error": str(exc)}``).
    """


@attrs.frozen
class ConnectRequest:
    """The HTTP request that opened a connection.

    Attributes:
        url: the full URL (``ws://host/agents/chat-agent/room?token=…``).
        headers: request headers; ``headers.get("authorization")`` is case-insensitive.
        cookies: cookies by name.
        query: query parameters (``query.get("token")``).
        client: ``(host, port)`` of the peer, when known.
    """

    url: str
    headers: Headers
    cookies: dict[str, str]
    query: QueryParams
    client: tuple[str, int] | None = None


@attrs.frozen
class ConnectContext:
    """What :meth:`ConnectionAgent.on_connect` learns about a new connection.

    Attributes:
        request: the opening HTTP request (headers, cookies, URL).
    """

    request: ConnectRequest


class ConnectionAgent:
    """An agent written as WebSocket connection handlers (Cloudflare Agents style, §4).

    Subclass it and override the hooks you need; serve it with
    ``AgentServer(..., connection_agents=[MyAgent])``. Each *instance* — ``WS
    /agents/{agent}/{instance}``, ``default`` when omitted — is one object of your class,
    created on first use, with its own JSON :attr:`state` that survives restarts.

    ``{agent}`` is the class name, its kebab-case (``ChatAgent`` → ``chat-agent``) or
    :attr:`agent_name`.

    Lifecycle rules the server guarantees for each connection: ``on_connect`` runs first;
    ``on_message`` never runs before it returns and sees messages one at a time, in order;
    a handler still running when the client leaves is cancelled; ``on_close`` runs exactly
    once for every accepted connection, after its last message; an exception in a handler
    goes to ``on_error`` and the connection stays open (unless ``on_error`` raises: close
    1011). Connections never affect each other.

    Class options:
        agent_name: the wire name (default: kebab-case of the class name).
        initial_state: the state of an instance that never saved one (None: no state).
        db: SQLite file for state; None reads ``TRIOAGENTS_STATE_DB``, else
            ``trioagents-state.db`` in the working directory; ``":memory:"`` keeps state in
            memory only.
        store_factory: builds the state store (overrides ``db``).
        max_queued_messages: client messages buffered while a handler is busy; beyond, the
            client is not being served fast enough and the connection closes with 1013.
        max_concurrent_rpc: RPC calls one connection may run at once (more are refused).

    Instance attributes:
        name: the instance name (``room-1``).
        nursery: the instance's own nursery (lives as long as the server) for background work
            that belongs to the instance, not to one connection.
    """

    agent_name: ClassVar[str | None] = None
    initial_state: ClassVar[Any] = None
    db: ClassVar[str | None] = None
    store_factory: ClassVar[Callable[[], StateStore] | None] = None
    max_queued_messages: ClassVar[int] = 256
    max_concurrent_rpc: ClassVar[int] = 64

    name: str
    nursery: trio.Nursery

    def __init__(self) -> None:
        self.name = "default"
        self._state: Any = None
        self._version = 0
        self._store: StateStore | None = None
        self._state_lock = trio.Lock()
        self._connections: dict[str, Connection] = {}

    @classmethod
    def wire_name(cls) -> str:
        """The name clients address this class by (``agent_name`` or kebab-case)."""
        return cls.agent_name or kebab_case(cls.__name__)

    # -- hooks (override) -----------------------------------------------------------------------

    async def on_start(self) -> None:
        """Called once when the instance starts (state already loaded), before any connection."""

    async def on_connect(self, connection: Connection, ctx: ConnectContext) -> None:
        """A client connected. Return to accept it, or ``connection.close(4000, "Unauthorized")``.

        The WebSocket handshake has already completed, so a browser sees the close code.
        Messages the client sends meanwhile wait until this returns.
        """

    async def on_message(self, connection: Connection, message: str | bytes) -> None:
        """One message from a client (framework frames — state, RPC — never arrive here)."""

    async def on_close(
        self, connection: Connection, code: int, reason: str, was_clean: bool
    ) -> None:
        """An accepted connection ended (after its last message). Runs shielded, bounded by
        ``config.cleanup_timeout``; sending to ``connection`` is a no-op by now."""

    async def on_error(self, connection: Connection, error: BaseException) -> None:
        """A handler of ``connection`` raised ``error``. Default: log it; the connection stays
        open. Raise to close the connection with 1011."""
        log.error(
            "connection agent %s/%s: handler failed on %s",
            self.wire_name(),
            self.name,
            connection.id,
            exc_info=error,
        )

    async def on_state_update(self, state: Any, source: Connection | Literal["server"]) -> None:
        """Called after every state change, once it has been saved and broadcast."""

    async def validate_state_change(self, state: Any, connection: Connection) -> None:
        """Vet a state a client proposes; raise (e.g. :class:`StateChangeRejected`) to refuse.

        A refusal is sent to that client alone as ``cf_agent_state_error``.
        """

    def should_send_protocol_messages(self, connection: Connection, ctx: ConnectContext) -> bool:
        """Whether this connection gets ``cf_agent_identity`` and ``cf_agent_state`` frames."""
        return True

    # -- state ----------------------------------------------------------------------------------

    @property
    def state(self) -> Any:
        """The current state (None until one is set and no ``initial_state``)."""
        return self._state

    @property
    def state_version(self) -> int:
        """How many times the state has changed over the instance's whole life."""
        return self._version

    async def set_state(self, state: Any) -> None:
        """Replace the whole state: save it, send it to every connection, then call
        :meth:`on_state_update` with source ``"server"``.

        Concurrent calls are applied one at a time, and every connection sees the changes in
        the same order with increasing ``version``.

        Raises:
            TypeError: ``state`` is not JSON-serializable (nothing changed).

        Cancellation: if cancelled while saving, the change may or may not have been saved
        but was not broadcast; the in-memory state is unchanged.
        """
        await self._apply_state(state, "server")

    async def update_state(self, change: Callable[[Any], Any]) -> Any:
        """Like :meth:`set_state` with ``change(current_state)``, computed while holding the
        state lock: concurrent read-modify-write updates never lose each other's changes.

        Returns:
            The new state.

        Raises:
            TypeError: the new state is not JSON-serializable (nothing changed).
        """
        return await self._apply_state(change, "server", compute=True)

    async def _apply_state(
        self, state: Any, source: Connection | Literal["server"], *, compute: bool = False
    ) -> Any:
        async with self._state_lock:
            if compute:
                state = state(self._state)
            version = self._version + 1
            if self._store is not None:
                await self._store.save(self.wire_name(), self.name, state, version)
            else:
                _encode(state)  # the same check a store makes: JSON-serializable or TypeError
            self._state, self._version = state, version
            frame = state_frame(state, version)
            # Enqueueing on every connection has no checkpoint in between, so no other state
            # change or broadcast can interleave: every connection sees one global order.
            for conn in list(self._connections.values()):
                if conn is not source and conn._protocol:
                    conn._enqueue_nowait(frame)
        await self.on_state_update(state, source)
        return state

    # -- connections ----------------------------------------------------------------------------

    def get_connections(self) -> list[Connection]:
        """The accepted, still open connections of this instance."""
        return list(self._connections.values())

    def get_connection(self, connection_id: str) -> Connection | None:
        """The open connection with this id, if any."""
        return self._connections.get(connection_id)

    async def broadcast(
        self, message: str | bytes | Any, exclude: Iterable[Connection | str] = ()
    ) -> None:
        """Send ``message`` to every accepted connection except ``exclude`` (connections or
        ids). Non-``str``/``bytes`` messages are sent as JSON text.

        Never waits for a slow client: one whose outbound queue is full is closed with 1013.
        Broadcasts and state changes reach every connection in the same order.
        """
        from ._connection import encode_message

        frame = encode_message(message)
        skip = {c if isinstance(c, str) else c.id for c in exclude}
        for conn in list(self._connections.values()):
            if conn.id not in skip:
                conn._enqueue_nowait(frame)
        await trio.lowlevel.checkpoint()
