"""A trio client for connection agents (PROTOCOLS.md §4), with reconnect.

::

    async with open_agent_client("ChatAgent", "room-1", host="127.0.0.1:8000") as client:
        client.add_listener("message", print)
        await client.send("hello")
        total = await client.call("add", 2, 3)
        async with client.stream("countdown", 3) as chunks:
            async for n in chunks:
                print(n)

Theory of operation
-------------------
The client owns one nursery (the ``async with``). Its connection loop connects, runs one
*session* per WebSocket (reader, writer, keepalive), and when the session ends decides:

* closed by us (``aclose``/leaving the block): stop;
* closed by the server with 1008 or 4000-4999: **terminal** — stop, and surface the close
  (``close`` listeners, :class:`AgentClientClosed` from ``send``/``call``/``wait_connected``);
* anything else (server restart, network loss, 40 s of silence): sleep
  ``min(base * 2**(n-1), max) * U(0.5, 1)`` and reconnect (§0.5); the attempt counter resets
  after ``backoff_reset`` seconds connected.

Sends go through one bounded queue drained by the session's single writer; while
disconnected they wait there (at most ``max_queued``; beyond, :class:`SendQueueFull`). RPC
calls are bound to the connection they were sent on: if it drops, the call fails with
:class:`AgentClientError` (the server cancelled it) and its frame is never resent.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import random as _random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Literal
from urllib.parse import quote, urlencode

import attrs
import orjson
import trio
import trio_websocket

from .._errors import TrioAgentsError
from ..connections._protocol import dumps, kebab_case

__all__ = [
    "AgentClient",
    "AgentClientError",
    "AgentClientClosed",
    "RpcError",
    "SendQueueFull",
    "CloseInfo",
    "RpcStream",
    "open_agent_client",
]

log = logging.getLogger("trioagents.client")

Message = str | bytes
QuerySource = Mapping[str, str] | Callable[[], Mapping[str, str] | Awaitable[Mapping[str, str]]]
StreamOpener = Callable[[str, int, bool], Awaitable[trio.abc.Stream]]
ListenerKind = Literal["open", "message", "state", "state_error", "close"]


class AgentClientError(TrioAgentsError):
    """Something went wrong talking to a connection agent (e.g. the connection was lost)."""

    code = "connection_error"


class AgentClientClosed(AgentClientError):
    """The client is closed for good: by :meth:`AgentClient.aclose` or by a terminal close
    code from the server (1008, 4000-4999).

    Attributes:
        close_code: the WebSocket close code (1000 when we closed).
        reason: the close reason.
    """

    code = "connection_closed"

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(f"connection closed with {close_code}: {reason}")
        self.close_code = close_code
        self.reason = reason


class RpcError(AgentClientError):
    """An RPC call answered ``success: false`` (``cancelled`` when the call was cancelled)."""

    code = "rpc_error"


class SendQueueFull(AgentClientError):
    """``max_queued`` messages already wait for the connection to come back."""

    code = "send_queue_full"


@attrs.frozen
class CloseInfo:
    """How one connection ended (passed to ``close`` listeners).

    Attributes:
        code: the close code (1006 when the connection was lost without one).
        reason: the close reason.
        terminal: no reconnect follows (we closed, or 1008 / 4000-4999 from the server).
    """

    code: int
    reason: str
    terminal: bool


def is_terminal(code: int) -> bool:
    """Close codes after which a client must not reconnect (§4): 1008 and 4000-4999."""
    return code == 1008 or 4000 <= code <= 4999


def backoff_delay(attempt: int, base: float, maximum: float, rnd: float) -> float:
    """The sleep before reconnect attempt ``attempt`` ≥ 1 (§0.5); ``rnd`` is U(0, 1)."""
    return float(min(base * 2 ** (attempt - 1), maximum) * (0.5 + 0.5 * rnd))


async def _open_tcp(host: str, port: int, secure: bool) -> trio.abc.Stream:
    if secure:
        return await trio.open_ssl_over_tcp_stream(host, port, https_compatible=True)
    return await trio.open_tcp_stream(host, port)


def _split_host(host: str, secure: bool) -> tuple[str, int, str]:
    """``"example.com:8443"`` → (hostname, port, Host header)."""
    default = 443 if secure else 80
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else default
    elif host.count(":") == 1:
        name, _, p = host.partition(":")
        port = int(p)
    else:
        name, port = host, default
    header = host if port != default or ":" in host.strip("[]") else name
    return name, port, header


class _Silent(Exception):
    pass


class RpcStream:
    """The partial results of one streaming RPC call, as an async iterator.

    After the iteration ends, :attr:`result` holds the final (``done: true``) result.
    """

    def __init__(self, recv: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        self._recv = recv
        self.done = False
        self.result: Any = None

    def __aiter__(self) -> RpcStream:
        return self

    async def __anext__(self) -> Any:
        if self.done:
            raise StopAsyncIteration
        try:
            frame = await self._recv.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self.done = True
            raise AgentClientError("the connection was lost during the call") from None
        if not frame.get("success", False):
            self.done = True
            code = "cancelled" if frame.get("cancelled") else "rpc_error"
            raise RpcError(str(frame.get("error", "rpc failed")), code=code)
        if frame.get("done", True):
            self.done = True
            self.result = frame.get("result")
            raise StopAsyncIteration
        return frame.get("result")


class AgentClient:
    """A connection to one instance of a connection agent; use :func:`open_agent_client`.

    Attributes:
        agent: the agent's wire name (kebab-case).
        name: the instance name.
        identity: the server's ``cf_agent_identity`` frame, once received.
        state: the instance's state as last seen (None before any).
        state_version: the version of :attr:`state` (0 before any; local changes keep it).
        close_info: how the client ended for good (None while running).
    """

    def __init__(
        self,
        agent: str,
        name: str = "default",
        *,
        host: str = "127.0.0.1:8000",
        query: QuerySource | None = None,
        prefix: str = "agents",
        protocol: Literal["ws", "wss"] = "ws",
        headers: Mapping[str, str] | None = None,
        max_queued: int = 100,
        ping_interval: float = 30.0,
        silence_timeout: float = 40.0,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        backoff_reset: float = 30.0,
        close_timeout: float = 5.0,
        max_message_size: int = 16 << 20,
        random: Callable[[], float] = _random.random,
        open_stream: StreamOpener = _open_tcp,
    ) -> None:
        self.agent = kebab_case(agent)
        self.name = name
        self.host = host
        self.prefix = prefix.strip("/")
        self.protocol = protocol
        self.identity: dict[str, Any] | None = None
        self.state: Any = None
        self.state_version = 0
        self.close_info: CloseInfo | None = None
        self._query = query
        self._headers = dict(headers or {})
        self._max_queued = max_queued
        self._ping_interval = ping_interval
        self._silence_timeout = silence_timeout
        self._backoff = (backoff_base, backoff_max, backoff_reset)
        self._close_timeout = close_timeout
        self._max_message_size = max_message_size
        self._random = random
        self._open_stream = open_stream
        self._queue: deque[tuple[Message, int | None]] = deque()
        self._queue_changed = trio.Event()
        self._room = trio.lowlevel.ParkingLot()
        self._listeners: dict[str, list[Callable[..., Any]]] = {}
        self._subscribers: list[trio.MemorySendChannel[Message]] = []
        self._pending: dict[str, tuple[int, trio.MemorySendChannel[dict[str, Any]]]] = {}
        self._rpc_ids = itertools.count(1)
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._generation = 0
        self._connected = trio.Event()
        self._finished = trio.Event()
        self._closing = False
        self._last_seen = 0.0
        self.connects = 0
        """How many times a connection opened (1 + reconnects)."""

    # -- addressing -------------------------------------------------------------------------------

    async def url(self) -> str:
        """The URL the next connection uses (``query`` evaluated now if it is a callable)."""
        return f"{self.protocol}://{self.host}" + await self._resource()

    async def _resource(self) -> str:
        path = f"/{self.prefix}/{quote(self.agent)}/{quote(self.name)}"
        source = self._query
        query: Any = source() if callable(source) else source
        if inspect.isawaitable(query):
            query = await query
        qs = urlencode(dict(query)) if query else ""
        return path + (f"?{qs}" if qs else "")

    @property
    def connected(self) -> bool:
        """Whether a connection is open right now."""
        return self._ws is not None

    # -- listeners --------------------------------------------------------------------------------

    def add_listener(self, kind: ListenerKind, fn: Callable[..., Any]) -> None:
        """Call ``fn`` on each event of ``kind`` (sync or async; called in order, by the reader).

        Kinds and arguments: ``open()``, ``message(data)`` (the agent's own messages, not
        framework frames), ``state(state, source)`` (source ``"server"`` or ``"client"``),
        ``state_error(error)``, ``close(info: CloseInfo)``.
        """
        self._listeners.setdefault(kind, []).append(fn)

    def remove_listener(self, kind: ListenerKind, fn: Callable[..., Any]) -> None:
        """Stop calling ``fn`` (no error if it was not registered)."""
        fns = self._listeners.get(kind, [])
        if fn in fns:
            fns.remove(fn)

    async def _emit(self, kind: str, *args: Any) -> None:
        for fn in list(self._listeners.get(kind, ())):
            result = fn(*args)
            if inspect.isawaitable(result):
                await result

    @asynccontextmanager
    async def messages(self, size: int = 256) -> AsyncIterator[trio.MemoryReceiveChannel[Message]]:
        """Receive the agent's messages (not framework frames) on a channel while the block runs.

        The reader waits for room (backpressure), so keep reading while subscribed.
        """
        send, recv = trio.open_memory_channel[Message](size)
        self._subscribers.append(send)
        try:
            async with recv:
                yield recv
        finally:
            self._subscribers.remove(send)
            send.close()

    # -- sending ----------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.close_info is not None:
            raise AgentClientClosed(self.close_info.code, self.close_info.reason)

    async def _enqueue(self, frame: Message, generation: int | None) -> None:
        self._check_open()
        while len(self._queue) >= self._max_queued:
            if not self.connected:
                raise SendQueueFull(f"{self._max_queued} messages are already waiting to be sent")
            await self._room.park()
            self._check_open()
        self._queue.append((frame, generation))
        self._queue_changed.set()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def send(self, message: str | bytes | Any) -> None:
        """Send a message (``str``/``bytes``; anything else as JSON text).

        While disconnected it waits in the send queue for the next connection.

        Raises:
            SendQueueFull: disconnected and ``max_queued`` messages already wait.
            AgentClientClosed: the client is closed for good.
        """
        frame = message if isinstance(message, (str, bytes)) else dumps(message)
        await self._enqueue(frame, None)

    async def set_state(self, state: Any) -> None:
        """Propose a new state: it applies locally at once and is sent to the agent, which
        validates it and broadcasts it to the other clients (a refusal arrives as a
        ``state_error`` event)."""
        self.state = state
        await self._enqueue(dumps({"type": "cf_agent_state", "state": state}), None)
        await self._emit("state", state, "client")

    async def wait_connected(self) -> None:
        """Wait until a connection is open.

        Raises:
            AgentClientClosed: the client closed for good first (e.g. 4000 Unauthorized).
        """
        while not self.connected:
            self._check_open()
            if self._finished.is_set():
                raise AgentClientClosed(1006, "the client stopped")
            async with trio.open_nursery() as nursery:

                async def watch(ev: trio.Event) -> None:
                    await ev.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch, self._connected)
                nursery.start_soon(watch, self._finished)
        self._check_open()

    async def wait_closed(self) -> CloseInfo:
        """Wait until the client is closed for good (terminal close code, or :meth:`aclose`).

        A handshake is accepted before the agent decides, so an agent refusing a client
        (``4000 Unauthorized``) shows up here (and in ``close`` listeners), not as a failed
        connect.
        """
        await self._finished.wait()
        assert self.close_info is not None
        return self.close_info

    async def wait_state(self, predicate: Callable[[Any], bool]) -> Any:
        """Wait until ``predicate(state)`` holds; return that state."""
        changed = trio.Event()

        def poke(*_: Any) -> None:
            changed.set()

        while not predicate(self.state):
            self._check_open()
            changed = trio.Event()
            self.add_listener("state", poke)
            self.add_listener("close", poke)
            try:
                await changed.wait()
            finally:
                self.remove_listener("state", poke)
                self.remove_listener("close", poke)
        return self.state

    # -- RPC --------------------------------------------------------------------------------------

    @asynccontextmanager
    async def stream(self, method: str, *args: Any) -> AsyncIterator[RpcStream]:
        """Call ``method`` and iterate over its partial results (``done: false`` frames).

        Leaving the block before the call finished cancels it on the server. The final
        result is ``stream.result`` after the iteration ends.

        Raises:
            RpcError: the call failed (``code == "cancelled"`` if cancelled on the server).
            AgentClientError: the connection dropped during the call.
        """
        await self.wait_connected()
        rid = f"rpc-{next(self._rpc_ids)}"
        send, recv = trio.open_memory_channel[dict[str, Any]](64)
        generation = self._generation
        self._pending[rid] = (generation, send)
        chunks = RpcStream(recv)
        try:
            frame = dumps({"type": "rpc", "id": rid, "method": method, "args": list(args)})
            await self._enqueue(frame, generation)
            yield chunks
        finally:
            self._pending.pop(rid, None)
            send.close()
            recv.close()
            if not chunks.done and self.connected and generation == self._generation:
                # A courtesy cancel: shielded and bounded, the caller may be cancelled already.
                with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
                    try:
                        await self._enqueue(
                            dumps({"type": "rpc", "id": rid, "cancel": True}), generation
                        )
                    except AgentClientError:
                        pass

    async def call(
        self, method: str, *args: Any, on_chunk: Callable[[Any], Any] | None = None
    ) -> Any:
        """Call ``method(*args)`` on the agent and return its result.

        Partial results of a streaming method go to ``on_chunk`` (else are dropped).
        Cancelling the caller cancels the call on the server.

        Raises:
            RpcError: the method raised, is unknown, or was cancelled.
            AgentClientError: the connection dropped during the call.
            AgentClientClosed: the client is closed for good.
        """
        async with self.stream(method, *args) as chunks:
            async for chunk in chunks:
                if on_chunk is not None:
                    result = on_chunk(chunk)
                    if inspect.isawaitable(result):
                        await result
            return chunks.result

    # -- the connection loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        base, maximum, reset = self._backoff
        attempt = 0
        try:
            while not self._closing:
                started = trio.current_time()
                info = await self._connect_once()
                if self._closing:
                    return
                if info is not None and is_terminal(info.code):
                    self.close_info = info
                    await self._emit("close", info)
                    return
                if info is not None:
                    await self._emit("close", info)
                    if trio.current_time() - started >= reset:
                        attempt = 0
                attempt += 1
                delay = backoff_delay(attempt, base, maximum, self._random())
                log.debug("reconnecting to %s/%s in %.2f s", self.agent, self.name, delay)
                await trio.sleep(delay)
        finally:
            self._finished.set()

    async def _connect_once(self) -> CloseInfo | None:
        """One connection: None if it never opened, else how it closed."""
        secure = self.protocol == "wss"
        resource = await self._resource()
        url = f"{self.protocol}://{self.host}{resource}"
        hostname, port, host_header = _split_host(self.host, secure)
        headers = [(k.encode(), v.encode()) for k, v in self._headers.items()]
        try:
            stream = await self._open_stream(hostname, port, secure)
        except OSError as exc:
            log.debug("cannot connect to %s: %s", url, exc)
            return None
        info: CloseInfo | None = None
        try:
            async with trio.open_nursery() as nursery:
                try:
                    ws = await trio_websocket.wrap_client_stream(
                        nursery,
                        stream,  # type: ignore[arg-type]
                        host_header,
                        resource,
                        extra_headers=headers,
                        message_queue_size=64,
                        max_message_size=self._max_message_size,
                    )
                except trio_websocket.HandshakeError as exc:
                    log.debug("handshake with %s failed: %s", url, exc)
                    nursery.cancel_scope.cancel()
                    return None
                info = await self._session(ws)
                nursery.cancel_scope.cancel()
        except* trio_websocket.ConnectionRejected as group:
            rejected = group.exceptions[0]
            status = (
                rejected.status_code
                if isinstance(rejected, trio_websocket.ConnectionRejected)
                else 0
            )
            log.debug("%s refused the connection with HTTP %s", url, status)
            if 400 <= status < 500 and status not in (408, 429):
                # Nothing will change by retrying: surface it like a terminal close.
                code = {401: 4001, 403: 4003, 404: 4004}.get(status, 4000)
                info = CloseInfo(code, f"HTTP {status} refused the connection", True)
        except* (trio_websocket.HandshakeError, OSError, trio.BrokenResourceError) as group:
            log.debug("connection to %s failed: %r", url, group.exceptions[0])
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
                await stream.aclose()
        return info

    async def _session(self, ws: trio_websocket.WebSocketConnection) -> CloseInfo:
        self._generation += 1
        generation = self._generation
        self._ws = ws
        self._last_seen = trio.current_time()
        self.connects += 1
        self._connected.set()
        self._room.unpark_all()
        info = CloseInfo(1006, "connection lost", False)
        try:
            await self._emit("open")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, ws, generation)
                nursery.start_soon(self._keepalive, ws)
                try:
                    info = await self._reader(ws)
                finally:
                    nursery.cancel_scope.cancel()
        except* _Silent:
            info = CloseInfo(1006, f"no traffic for {self._silence_timeout:g} s", False)
        finally:
            self._ws = None
            self._connected = trio.Event()
            # Calls in flight were cancelled by the server with this connection.
            for gen, send in list(self._pending.values()):
                if gen == generation:
                    send.close()
        return info

    async def _reader(self, ws: trio_websocket.WebSocketConnection) -> CloseInfo:
        while True:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                reason = exc.reason
                code = reason.code if reason is not None else 1006
                terminal = self._closing or is_terminal(code)
                return CloseInfo(code, (reason.reason if reason else None) or "", terminal)
            self._last_seen = trio.current_time()
            await self._handle(message)

    async def _handle(self, message: Message) -> None:
        frame: Any = None
        if isinstance(message, str) and message.startswith('{"type":"'):
            try:
                frame = orjson.loads(message)
            except orjson.JSONDecodeError:
                frame = None
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "cf_agent_identity":
            self.identity = frame
            return
        if kind == "cf_agent_state":
            self.state = frame.get("state")
            self.state_version = int(frame.get("version") or self.state_version)
            await self._emit("state", self.state, "server")
            return
        if kind == "cf_agent_state_error":
            await self._emit("state_error", frame.get("error"))
            return
        if kind == "rpc" and isinstance(frame.get("id"), str) and "success" in frame:
            pending = self._pending.get(frame["id"])
            if pending is not None:
                try:
                    await pending[1].send(frame)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
            return
        for sub in list(self._subscribers):
            try:
                await sub.send(message)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        await self._emit("message", message)

    async def _writer(self, ws: trio_websocket.WebSocketConnection, generation: int) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._queue_changed = trio.Event()
                await self._queue_changed.wait()
                continue
            frame, gen = queue.popleft()
            self._room.unpark_all()
            if gen is not None and gen != generation:
                continue  # an RPC frame of a connection that is gone
            try:
                await ws.send_message(frame)
            except trio_websocket.ConnectionClosed:
                if gen is None:
                    queue.appendleft((frame, gen))  # not sent: the next connection sends it
                return

    async def _keepalive(self, ws: trio_websocket.WebSocketConnection) -> None:
        async def pinger() -> None:
            while True:
                await trio.sleep(self._ping_interval)
                try:
                    await ws.ping()
                except trio_websocket.ConnectionClosed:
                    return
                self._last_seen = trio.current_time()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pinger)
            while True:
                wait = self._last_seen + self._silence_timeout - trio.current_time()
                if wait <= 0:
                    raise _Silent
                await trio.sleep(wait)

    # -- closing ----------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the connection (code 1000) and stop reconnecting. Idempotent.

        Bounded by ``close_timeout`` and shielded, so it completes even when cancelled.
        """
        self._closing = True
        if self.close_info is None:
            self.close_info = CloseInfo(1000, "client closed", True)
        self._room.unpark_all()
        ws = self._ws
        if ws is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(self._close_timeout):
                await ws.aclose()


@asynccontextmanager
async def open_agent_client(
    agent: str, name: str = "default", **options: Any
) -> AsyncIterator[AgentClient]:
    """Connect to instance ``name`` of connection agent ``agent`` for the block's duration.

    ``agent`` may be the class name (``ChatAgent``) or its kebab-case; the URL is
    ``{protocol}://{host}/{prefix}/{kebab(agent)}/{name}?{query}``. Options are
    :class:`AgentClient`'s keyword arguments: ``host``, ``query`` (a mapping, or a callable
    returning fresh values — e.g. a token — for every connect), ``prefix``, ``protocol``,
    ``headers``, ``max_queued``, the timers ``ping_interval`` / ``silence_timeout`` /
    ``backoff_base`` / ``backoff_max`` / ``backoff_reset``, ``random`` (the jitter source) and
    ``open_stream`` (how to open the byte stream; tests pass memory streams).

    The block is entered at once; connecting happens in the background (``await
    client.wait_connected()`` to wait). Leaving the block closes the connection with 1000 and
    returns after every task of the client has finished; so does cancellation.
    """
    client = AgentClient(agent, name, **options)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client._run)
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
