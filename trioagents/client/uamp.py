"""A trio UAMP client: many sessions multiplexed on one WebSocket (trio-websocket).

::

    async with open_uamp_client("ws://127.0.0.1:8000/agents/echo/uamp") as client:
        session = await client.create_session()
        reply = await session.ask("hello")

One reader task routes server events by ``session_id`` into each session's bounded channel;
replies to a client event (``reply_to``) resolve the waiter that sent it. When the socket
closes, every waiter and every session channel is woken (:class:`UampClosed`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import orjson
import trio
import trio_websocket

from .. import uamp
from .._errors import TrioAgentsError

__all__ = [
    "open_uamp_client",
    "UampClient",
    "UampClientSession",
    "UampClosed",
    "UampError",
    "ResponseResult",
]


class UampClosed(TrioAgentsError):
    """The UAMP socket closed while something was waiting on it."""

    code = "connection_closed"


class UampError(TrioAgentsError):
    """The server answered with ``error`` / ``session.error`` / ``response.error``."""


@attrs.frozen
class ResponseResult:
    """Everything one response sent, in order, and how it ended."""

    response_id: str
    events: list[Any]
    terminal: Any

    @property
    def text(self) -> str:
        """The concatenated text deltas."""
        return "".join(
            e.delta.text
            for e in self.events
            if type(e) is uamp.ResponseDelta and type(e.delta) is uamp.TextDelta
        )

    @property
    def status(self) -> str:
        """``completed``, ``error`` or ``cancelled``."""
        return {"response.done": "completed", "response.error": "error"}.get(
            self.terminal.type, "cancelled"
        )


class UampClientSession:
    """One session on a :class:`UampClient`. Events for it arrive on :attr:`events`."""

    def __init__(self, client: UampClient, created: uamp.SessionCreated, queue_size: int) -> None:
        self.client = client
        self.id = created.session_id
        self.agent = created.agent
        self.created = created
        self._send_ch, self.events = trio.open_memory_channel[Any](queue_size)

    async def send(self, event: Any) -> str:
        """Send a session-scoped event (``session_id`` filled in); returns its ``event_id``."""
        return await self.client.send(attrs.evolve(event, session_id=self.id))

    async def input_text(self, text: str, **fields: Any) -> str:
        """Send ``input.text``; returns its ``event_id``."""
        return await self.send(uamp.InputText(text=text, **fields))

    async def cancel(self, response_id: str | None = None) -> str:
        """Send ``response.cancel``."""
        return await self.send(uamp.ResponseCancel(response_id=response_id))

    async def tool_result(self, call_id: str, result: str, *, is_error: bool | None = None) -> str:
        """Send ``tool.result`` for a ``tool.call``."""
        return await self.send(uamp.ToolResult(call_id=call_id, result=result, is_error=is_error))

    async def end(self) -> None:
        """Send ``session.end`` and wait for the server's confirmation."""
        await self.send(uamp.SessionEnd())
        async for ev in self.events:
            if ev.type == "session.end":
                return

    async def collect(self, response_id: str | None = None) -> ResponseResult:
        """Read this session's events until one response ends; return all of them.

        Raises:
            UampClosed: the socket closed first.
        """
        seen: list[Any] = []
        rid = response_id
        async for ev in self.events:
            ev_rid = getattr(ev, "response_id", None)
            if rid is None and ev.type == "response.created":
                rid = ev_rid
            if rid is not None and ev_rid == rid:
                seen.append(ev)
                if ev.type in uamp.TERMINAL_TYPES:
                    return ResponseResult(response_id=rid, events=seen, terminal=ev)
        raise UampClosed("socket closed before the response ended")

    async def ask(self, text: str, **fields: Any) -> str:
        """Send ``text`` and return the answer's text.

        Raises:
            UampError: the response failed or was cancelled.
            UampClosed: the socket closed first.
        """
        await self.input_text(text, **fields)
        result = await self.collect()
        if result.terminal.type != "response.done":
            err = getattr(result.terminal, "error", None)
            raise UampError(
                err.message if err else "response cancelled", code=err.code if err else "cancelled"
            )
        return result.text


class UampClient:
    """A UAMP connection; use :func:`open_uamp_client`."""

    def __init__(
        self, ws: trio_websocket.WebSocketConnection, *, ids: uamp.IdFactory, queue_size: int
    ) -> None:
        self.ws = ws
        self.ids = ids
        self.sessions: dict[str, UampClientSession] = {}
        self._queue_size = queue_size
        self._waiters: dict[str, trio.MemorySendChannel[Any]] = {}
        self._other_send, self.events = trio.open_memory_channel[Any](queue_size)
        """Events not tied to an open session (``error``, ``pong``…)."""
        self.closed = trio.Event()
        self._encoder = uamp.Encoder(ids=ids)

    async def send(self, event: Any) -> str:
        """Send ``event`` (``event_id`` stamped if missing); returns its ``event_id``."""
        d = self._encoder.to_dict(event)
        await self.ws.send_message(orjson.dumps(d).decode())
        return str(d["event_id"])

    async def send_raw(self, data: str | bytes) -> None:
        """Send a raw frame (tests use it for malformed input)."""
        await self.ws.send_message(data)

    async def request(self, event: Any) -> Any:
        """Send ``event`` and wait for the event whose ``reply_to`` names it."""
        event_id = event.event_id or self.ids.new("evt")
        send_ch, recv_ch = trio.open_memory_channel[Any](1)
        self._waiters[event_id] = send_ch
        try:
            await self.send(attrs.evolve(event, event_id=event_id))
            async with recv_ch:
                try:
                    return await recv_ch.receive()
                except trio.EndOfChannel:
                    raise UampClosed("socket closed before the reply") from None
        finally:
            self._waiters.pop(event_id, None)

    async def create_session(self, agent: str | None = None, **session: Any) -> UampClientSession:
        """Open a session (``session.create``) and wait for ``session.created``.

        Raises:
            UampError: ``session.error`` (unknown agent, too many sessions…).
        """
        reply = await self.request(uamp.SessionCreate(agent=agent, session=session or None))
        if reply.type != "session.created":
            err = reply.error
            raise UampError(err.message, code=err.code, details=err.details)
        return self.sessions[reply.session_id]

    async def ping(self) -> Any:
        """Send ``ping`` and wait for the ``pong``."""
        return await self.request(uamp.Ping())

    async def _reader(self) -> None:
        try:
            while True:
                try:
                    text = await self.ws.get_message()
                except trio_websocket.ConnectionClosed:
                    return
                ev = uamp.decode_server(text)
                if type(ev) is uamp.SessionCreated:
                    self.sessions[ev.session_id] = UampClientSession(self, ev, self._queue_size)
                reply_to = getattr(ev, "reply_to", None)
                waiter = self._waiters.pop(reply_to, None) if reply_to else None
                if waiter is not None:
                    waiter.send_nowait(ev)
                    if type(ev) is not uamp.ResponseCreated:
                        continue
                sid = getattr(ev, "session_id", None)
                session = self.sessions.get(sid) if sid else None
                if session is not None:
                    await session._send_ch.send(ev)
                    if ev.type == "session.end":
                        self.sessions.pop(session.id, None)
                        session._send_ch.close()
                elif type(ev) is not uamp.Capabilities:
                    await self._other_send.send(ev)
        finally:
            self.closed.set()
            for w in self._waiters.values():
                w.close()
            for s in self.sessions.values():
                s._send_ch.close()
            self._other_send.close()


@asynccontextmanager
async def open_uamp_client(
    url: str,
    *,
    ids: uamp.IdFactory | None = None,
    queue_size: int = 1024,
    max_message_size: int = 16 << 20,
) -> AsyncIterator[UampClient]:
    """Connect to a UAMP endpoint; the client's reader lives as long as the ``async with``.

    Leaving the block closes the socket. Cancellation closes it too.
    """
    async with (
        trio_websocket.open_websocket_url(url, max_message_size=max_message_size) as ws,
        trio.open_nursery() as nursery,
    ):
        client = UampClient(ws, ids=ids or uamp.RandomIds(), queue_size=queue_size)
        nursery.start_soon(client._reader)
        try:
            yield client
        finally:
            nursery.cancel_scope.cancel()
            if ws.closed is not None:
                # The server closed the WebSocket: trio-websocket's client then waits for the
                # server's TCP close, and leaving before it comes would leave the socket to the
                # garbage collector. Close our end ourselves.
                await trio.aclose_forcefully(ws._stream)
