"""One client connection to a connection-agent instance, and the task tree that serves it.

Theory of operation
-------------------
::

    connection (the ASGI handler's task)
    ├── writer: the only task that writes frames; drains the bounded outbound queue
    └── handlers scope (cancelled when the client leaves or the server shuts down)
        ├── reader: receives frames into the bounded inbox; notices the client leaving
        ├── shutdown watcher
        ├── dispatcher: on_connect, then each inbox frame in order (on_message awaited
        │   before the next frame is taken; state frames validated and applied in order)
        └── one task per running RPC call, each in its own cancel scope

The handshake is always accepted before ``on_connect`` runs, so a close code chosen there
(``4000 Unauthorized``) reaches the browser. Frames the client sends during ``on_connect``
wait in the inbox. ``connection.close()`` stops delivery (the handler that called it runs to
its end), lets the writer drain, then sends the close frame. The client leaving cancels every
handler at once; ``on_close`` then runs once, shielded and bounded.

Sends never block the sender of a *broadcast*: a connection whose queue is full is stuck and
closed with 1013. :meth:`Connection.send` waits for room (backpressure) up to
``config.send_timeout``.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Generator, MutableMapping
from contextlib import AbstractContextManager, aclosing
from typing import TYPE_CHECKING, Any

import trio

from ._agent import ConnectContext, _current
from ._protocol import (
    BadFrame,
    RpcCancel,
    RpcRequest,
    StateUpdate,
    dumps,
    identity_frame,
    parse_client_frame,
    rpc_error_frame,
    rpc_result_frame,
    state_error_frame,
    state_frame,
)

if TYPE_CHECKING:
    from ._agent import ConnectionAgent

__all__ = ["Connection", "encode_message"]

log = logging.getLogger("trioagents.connections")

Frame = str | bytes


def encode_message(message: Any) -> Frame:
    """``str``/``bytes`` as they are; anything else as JSON text."""
    if isinstance(message, (str, bytes)):
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    return dumps(message)


class _Done:
    """An already-finished awaitable: ``close()`` works with and without ``await``."""

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield  # pragma: no cover


_DONE = _Done()


class Connection:
    """One client of a :class:`ConnectionAgent` instance.

    Attributes:
        id: unique per client connection.
        data: free-form per-connection data for the agent's own use (a user name, a role…).
        close_code: the code this connection closed (or is closing) with, once known.
    """

    def __init__(
        self,
        connection_id: str,
        agent: ConnectionAgent,
        *,
        queue_size: int,
        send_timeout: float,
        rpc_methods: dict[str, str],
    ) -> None:
        self.id = connection_id
        self.agent = agent
        self.data: dict[str, Any] = {}
        self.close_code: int | None = None
        self.close_reason = ""
        self._size = queue_size
        self._send_timeout = send_timeout
        self._rpc_methods = rpc_methods
        self._out: deque[Frame] = deque()
        self._room = trio.lowlevel.ParkingLot()
        self._ready = trio.Event()
        self._gone = False  # the client left: sends are dropped
        self._closing = False  # close() was called: no more deliveries
        self._finishing = False  # the writer drains what is queued, then stops
        self._accepted = False
        self._protocol = True
        self._peer_code = 1005
        self._peer_reason = ""
        self._handlers = trio.CancelScope()
        self._inbox_send, self._inbox = trio.open_memory_channel[Frame](agent.max_queued_messages)
        self._rpcs: dict[str, trio.CancelScope] = {}

    def __repr__(self) -> str:
        return f"<Connection {self.id} to {self.agent.wire_name()}/{self.agent.name}>"

    @property
    def closed(self) -> bool:
        """Whether the connection is closed or closing (sends are dropped)."""
        return self._gone or self._closing

    # -- public API ------------------------------------------------------------------------------

    def accept(self) -> _Done:
        """Accept the connection (returning from ``on_connect`` does the same). Await optional."""
        return _DONE

    def close(self, code: int = 1000, reason: str = "") -> _Done:
        """Close the connection with ``code`` (e.g. ``4000, "Unauthorized"``).

        Takes effect at once: no further messages are delivered. The calling handler runs to
        its end, then running RPC calls are cancelled, what was already sent is flushed, and
        the close frame goes out. Idempotent (the first code wins). Awaiting the result is
        optional (for code ported from ``await connection.close(...)``).
        """
        if self.close_code is None and not self._gone:
            self.close_code, self.close_reason = code, reason
        self._closing = True
        self._inbox_send.close()
        return _DONE

    async def send(self, message: str | bytes | Any) -> None:
        """Send one message (``str``/``bytes``; anything else as JSON text).

        Waits while the outbound queue is full; still full after ``config.send_timeout``,
        the client is not reading and the connection closes with 1013. After the connection
        closed, sends are dropped silently.

        Cancellation: the message was queued entirely or not at all.
        """
        frame = encode_message(message)
        await trio.lowlevel.checkpoint_if_cancelled()
        if len(self._out) >= self._size and not (self._gone or self._finishing):
            with trio.move_on_after(self._send_timeout):
                while len(self._out) >= self._size and not (self._gone or self._finishing):
                    await self._room.park()
            if len(self._out) >= self._size and not (self._gone or self._finishing):
                self._stuck()
        if not (self._gone or self._finishing):
            self._out.append(frame)
            self._ready.set()
        await trio.lowlevel.cancel_shielded_checkpoint()

    # -- internals used by the agent -----------------------------------------------------------

    def _enqueue_nowait(self, frame: Frame) -> None:
        if self._gone or self._finishing:
            return
        if len(self._out) >= self._size:
            self._stuck()
            return
        self._out.append(frame)
        self._ready.set()

    def _stuck(self) -> None:
        log.warning("connection %s stopped reading; closing with 1013", self.id)
        self.close(1013, "send queue stuck")
        self._out.clear()
        self._finishing = True
        self._room.unpark_all()
        self._ready.set()
        self._handlers.cancel()

    def _peer_left(self, code: int, reason: str) -> None:
        self._gone = True
        self._peer_code, self._peer_reason = code, reason
        self._out.clear()
        self._room.unpark_all()
        self._ready.set()
        self._handlers.cancel()

    # -- the task tree ---------------------------------------------------------------------------

    async def serve(
        self,
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
        ctx: ConnectContext,
        *,
        max_message_size: int,
        cleanup_timeout: float,
        drain_hook: Callable[[Callable[[], None]], AbstractContextManager[None]],
    ) -> None:
        """Serve the connection until it closes; the WebSocket must already be accepted.

        Returns only after every handler has finished and ``on_close`` has run.
        """
        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(self._write_loop, send)
                with self._handlers, drain_hook(self._shutdown):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._read_loop, receive, max_message_size)
                        await self._dispatch(ctx, nursery)
                        nursery.cancel_scope.cancel()
                if self._gone:
                    outer.cancel_scope.cancel()
                else:
                    # A deliberate close: the last messages precede the close frame.
                    self._finishing = True
                    self._ready.set()
                    outer.cancel_scope.deadline = trio.current_time() + cleanup_timeout
        finally:
            self.agent._connections.pop(self.id, None)
            self._closing = True
            with trio.CancelScope(shield=True), trio.move_on_after(cleanup_timeout):
                if not self._gone:
                    code = self.close_code if self.close_code is not None else 1000
                    try:
                        await send(
                            {"type": "websocket.close", "code": code, "reason": self.close_reason}
                        )
                    except Exception:  # the client may be gone already
                        log.debug("close frame not sent", exc_info=True)
            if self._accepted:
                if self._gone:
                    code, reason = self._peer_code, self._peer_reason
                    clean = code not in (1005, 1006)
                else:
                    code = self.close_code if self.close_code is not None else 1000
                    reason, clean = self.close_reason, True
                with trio.CancelScope(shield=True), trio.move_on_after(cleanup_timeout):
                    _current.set(self)
                    try:
                        await self.agent.on_close(self, code, reason, clean)
                    except Exception as exc:
                        await self._report(exc)

    async def _write_loop(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        out = self._out
        while True:
            if not out:
                if self._finishing or self._gone:
                    return
                self._ready = trio.Event()
                await self._ready.wait()
                continue
            batch = list(out)
            out.clear()
            self._room.unpark_all()
            for frame in batch:
                if self._gone:
                    return
                if isinstance(frame, str):
                    await send({"type": "websocket.send", "text": frame})
                else:
                    await send({"type": "websocket.send", "bytes": frame})

    async def _read_loop(
        self, receive: Callable[[], Awaitable[MutableMapping[str, Any]]], max_message_size: int
    ) -> None:
        # Keeps reading after close() (dropping messages) so that the client leaving still
        # cancels a handler that is running.
        while True:
            message = await receive()
            kind = message.get("type")
            if kind == "websocket.disconnect":
                self._peer_left(int(message.get("code", 1005)), message.get("reason") or "")
                return
            if kind != "websocket.receive" or self._closing:
                continue
            data: Frame | None = message.get("text")
            if data is None:
                data = message.get("bytes") or b""
            if len(data) > max_message_size:
                self.close(1009, "message too large")
                continue
            try:
                self._inbox_send.send_nowait(data)
            except trio.WouldBlock:
                log.warning(
                    "connection %s: %d messages queued; closing with 1013", self.id, self._size
                )
                self.close(1013, "too many queued messages")

    def _shutdown(self) -> None:
        """The server is draining (a drain hook: called once, never blocks)."""
        self.close(1001, "server shutting down")
        self._handlers.cancel()

    async def _report(self, error: BaseException) -> None:
        """Hand a handler's exception to ``on_error``; if that raises, close with 1011."""
        try:
            await self.agent.on_error(self, error)
        except Exception:
            log.exception("on_error of %s raised; closing with 1011", self)
            self.close(1011, "internal error")

    async def _dispatch(self, ctx: ConnectContext, nursery: trio.Nursery) -> None:
        agent = self.agent
        _current.set(self)
        try:
            await agent.on_connect(self, ctx)
            protocol = agent.should_send_protocol_messages(self, ctx)
        except Exception as exc:
            # Never accept a connection whose on_connect failed: it may have been an auth check.
            await self._report(exc)
            self.close(1011, "on_connect failed")
            return
        if self._closing or self._gone:
            return
        self._protocol = protocol
        if protocol:
            self._enqueue_nowait(identity_frame(agent.name, agent.wire_name()))
            if agent.state is not None:
                self._enqueue_nowait(state_frame(agent.state, agent.state_version))
        # Registration and the current state are one step (no checkpoint): a concurrent state
        # change is either already in the state sent above or will be broadcast to us.
        agent._connections[self.id] = self
        self._accepted = True
        async for data in self._inbox:
            if self._closing:
                break
            frame = parse_client_frame(data)
            if frame is None:
                try:
                    await agent.on_message(self, data)
                except Exception as exc:
                    await self._report(exc)
            elif isinstance(frame, StateUpdate):
                await self._state_update(frame.state)
            elif isinstance(frame, RpcRequest):
                self._start_rpc(nursery, frame)
            elif isinstance(frame, RpcCancel):
                scope = self._rpcs.get(frame.id)
                if scope is not None:
                    scope.cancel()
            elif isinstance(frame, BadFrame) and frame.reply is not None:
                self._enqueue_nowait(frame.reply)

    async def _state_update(self, state: Any) -> None:
        agent = self.agent
        try:
            await agent.validate_state_change(state, self)
        except Exception as exc:
            self._enqueue_nowait(state_error_frame(str(exc) or type(exc).__name__))
            return
        try:
            await agent._apply_state(state, self)
        except Exception as exc:
            await self._report(exc)

    def _start_rpc(self, nursery: trio.Nursery, req: RpcRequest) -> None:
        attr = self._rpc_methods.get(req.method)
        if attr is None:
            self._enqueue_nowait(rpc_error_frame(req.id, f"unknown method {req.method!r}"))
        elif req.id in self._rpcs:
            self._enqueue_nowait(rpc_error_frame(req.id, f"call {req.id!r} is already running"))
        elif len(self._rpcs) >= self.agent.max_concurrent_rpc:
            self._enqueue_nowait(
                rpc_error_frame(
                    req.id, f"at most {self.agent.max_concurrent_rpc} calls may run at once"
                )
            )
        else:
            scope = trio.CancelScope()
            self._rpcs[req.id] = scope
            nursery.start_soon(self._run_rpc, req, attr, scope)

    async def _run_rpc(self, req: RpcRequest, attr: str, scope: trio.CancelScope) -> None:
        _current.set(self)
        try:
            with scope:
                result = getattr(self.agent, attr)(*req.args)
                if inspect.isasyncgen(result):
                    async with aclosing(result) as chunks:
                        async for chunk in chunks:
                            await self.send(rpc_result_frame(req.id, chunk, done=False))
                    await self.send(rpc_result_frame(req.id, None, done=True))
                else:
                    if inspect.isawaitable(result):
                        result = await result
                    await self.send(rpc_result_frame(req.id, result, done=True))
            if scope.cancelled_caught:
                await self.send(rpc_error_frame(req.id, "cancelled", cancelled=True))
        except Exception as exc:
            log.debug("rpc %s of %s failed", req.method, self, exc_info=True)
            await self.send(rpc_error_frame(req.id, str(exc) or type(exc).__name__))
        finally:
            self._rpcs.pop(req.id, None)
