"""The Relay hub (PROTOCOLS.md §3.2): agents on ``/v1/ws/agent``, apps on ``/v1/ws/app``.

Theory of operation
-------------------
Each socket is a :class:`~trioagents.transports._wsconn.WebSocketConnection` (one writer, a
reader that never waits). An app's submissions go through one bounded queue and one worker,
so ``accepted`` answers keep submission order while the allowlist is read from the store. An
accepted event joins the *pending table* (``event_id`` → app link, agent, thread, payload) and
is forwarded to the agent's socket; the agent's ``token`` / ``reply`` / ``error`` are routed
back by ``event_id``. Every pending event ends exactly once: by the agent's terminal message,
by ``AGENT_TIMEOUT`` after ``agent_timeout``, or by ``AGENT_OFFLINE`` when the agent's socket
drops (closed, replaced, or silent for ``silence_timeout``). Nothing is silently lost.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket

from ..protocols import relay as rp
from ..transports._wsconn import WebSocketConnection, send_close
from ._store import Identity

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["RelayHub"]

log = logging.getLogger("trioagents.hub.relay")


@attrs.define(eq=False)
class _Pending:
    event_id: str
    app: _AppLink
    agent_id: str
    thread_id: str
    payload: Any
    session_key: str
    timer: trio.CancelScope = attrs.field(factory=trio.CancelScope)


class RelayHub:
    """The Relay routes of a :class:`~trioagents.hub.Hub`.

    Args:
        hub: the hub (store, verifier, runtime).
        agent_timeout: pending events fail with ``AGENT_TIMEOUT`` after this.
        ping_interval: how often agents are pinged.
        silence_timeout: an agent silent this long is offline.
    """

    def __init__(
        self, hub: Hub, *, agent_timeout: float, ping_interval: float, silence_timeout: float
    ) -> None:
        self.hub = hub
        self.agent_timeout = agent_timeout
        self.ping_interval = ping_interval
        self.silence_timeout = silence_timeout
        self.agents: dict[str, _AgentLink] = {}
        """Agent id → its live socket."""
        self.pending: dict[str, _Pending] = {}
        """Accepted events without a terminal message yet (event id → event)."""
        self.retiring: set[_AgentLink] = set()
        """Replaced agent sockets still finishing their in-flight events."""
        self.late_terminals = 0
        """Terminal messages for events that had already ended (ignored)."""

    async def _authorize(self, ws: WebSocket, kind: str, prefix: str) -> Identity | None:
        auth = ws.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        token = token or ws.query_params.get("token", "")
        if not token.startswith(prefix):
            return None
        return await self.hub.verifier.verify(token, kinds=(kind,))

    async def _serve(
        self, ws: WebSocket, make: Callable[[Callable[[str], Awaitable[None]]], Any]
    ) -> None:
        await ws.accept()
        send = ws._send

        async def send_text(text: str) -> None:
            await send({"type": "websocket.send", "text": text})

        link = make(send_text)
        await link.serve(ws._receive)
        if link.close_code is not None:
            await send_close(
                send, link.close_code, link.close_reason, self.hub.config.cleanup_timeout
            )

    async def agent_socket(self, ws: WebSocket) -> None:
        """``WS /v1/ws/agent`` (``rla_`` tokens)."""
        identity = await self._authorize(ws, "relay_agent", "rla_")
        if identity is None:
            await ws.send_denial_response(_denied())
            return
        await self._serve(ws, lambda send: _AgentLink(self, send, identity.subject))

    async def app_socket(self, ws: WebSocket) -> None:
        """``WS /v1/ws/app`` (``rlk_`` tokens)."""
        identity = await self._authorize(ws, "relay_app", "rlk_")
        if identity is None:
            await ws.send_denial_response(_denied())
            return
        await self._serve(ws, lambda send: _AppLink(self, send, identity.subject))

    # -- pending events -------------------------------------------------------------------------

    def finish(self, event_id: str, message: dict[str, Any]) -> None:
        """Deliver an event's terminal message to its app and forget the event."""
        pending = self.pending.pop(event_id, None)
        if pending is None:
            return
        pending.timer.cancel()
        pending.app.reply(message)
        for link in self.retiring:
            if link.agent_id == pending.agent_id:
                link.poke()

    async def wait_late_terminals(self, count: int) -> None:
        """Wait until at least ``count`` late terminal messages were ignored."""
        while self.late_terminals < count:
            await self.hub._changed.wait()

    def late_terminal(self) -> None:
        """An agent answered an event that already ended (e.g. ``AGENT_OFFLINE``): ignored."""
        self.late_terminals += 1
        self.hub._notify()

    def fail(self, pending: _Pending, code: str, message: str) -> None:
        """End one pending event with an error."""
        self.finish(
            pending.event_id,
            rp.error(pending.event_id, message, code, agent_id=pending.agent_id),
        )

    def agent_gone(self, link: _AgentLink) -> None:
        """An agent socket ended: fail its in-flight events with ``AGENT_OFFLINE``."""
        if self.agents.get(link.agent_id) is link:
            del self.agents[link.agent_id]
            self.hub._notify()
        for pending in [p for p in self.pending.values() if p.agent_id == link.agent_id]:
            if pending.event_id in link.sent:
                self.fail(pending, "AGENT_OFFLINE", f"agent {link.agent_id!r} went offline")


def _denied() -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "unauthorized", "message": "a valid token is required", "details": {}}},
        status_code=401,
    )


class _AgentLink(WebSocketConnection):
    name = "Relay agent"

    def __init__(
        self, relay: RelayHub, send_text: Callable[[str], Awaitable[None]], agent_id: str
    ) -> None:
        super().__init__(relay.hub.runtime, send_text, rp.dumps)
        self.relay = relay
        self.agent_id = agent_id
        self.sent: set[str] = set()
        self.replaced = False
        self._heard = trio.Event()
        self._idle = trio.Event()

    async def on_open(self) -> None:
        old = self.relay.agents.get(self.agent_id)
        self.relay.agents[self.agent_id] = self
        if old is not None:
            old.retire()
        self.relay.hub._notify()
        assert self._nursery is not None
        self._nursery.start_soon(self._keepalive)

    def in_flight(self) -> bool:
        """Whether events forwarded on this socket still wait for their terminal message."""
        return any(eid in self.relay.pending for eid in self.sent)

    def retire(self) -> None:
        """A newer socket of the agent took over: new events go there; this one closes with
        4002 once its in-flight events have ended (rotation drains), or after
        ``agent_timeout``."""
        self.replaced = True
        if not self.in_flight() or self._nursery is None:
            self.close(4002, "replaced by a newer connection")
        else:
            self._nursery.start_soon(self._close_when_idle)

    async def _close_when_idle(self) -> None:
        self.relay.retiring.add(self)
        try:
            with trio.move_on_after(self.relay.agent_timeout):
                while self.in_flight():
                    self._idle = trio.Event()
                    await self._idle.wait()
        finally:
            self.relay.retiring.discard(self)
        self.close(4002, "replaced by a newer connection")

    def poke(self) -> None:
        """One of the agent's events ended (a retiring socket re-checks what it waits for)."""
        self._idle.set()

    async def serve(self, receive: Callable[[], Awaitable[Any]]) -> None:
        try:
            await super().serve(receive)
        finally:
            self.relay.agent_gone(self)

    async def _keepalive(self) -> None:
        # Quiet for ping_interval ⇒ ping; still nothing by silence_timeout ⇒ offline.
        relay = self.relay
        while True:
            self._heard = trio.Event()
            with trio.move_on_after(relay.ping_interval):
                await self._heard.wait()
                continue
            self.reply({"type": "ping"})
            with trio.move_on_after(max(relay.silence_timeout - relay.ping_interval, 0)):
                await self._heard.wait()
                continue
            log.warning("Relay agent %s silent; offline", self.agent_id)
            self.close(1011, "keepalive timeout")
            return

    def forward(self, pending: _Pending) -> None:
        """Send an accepted event to the agent."""
        self.sent.add(pending.event_id)
        self.reply(
            {
                "type": "event",
                "event_id": pending.event_id,
                "app_id": pending.app.app_id,
                "thread_id": pending.thread_id,
                "session_key": rp.agent_session_key(pending.app.app_id, pending.thread_id),
                "payload": pending.payload,
            }
        )

    def handle_frame(self, message: dict[str, Any]) -> None:
        self._heard.set()
        try:
            obj = rp.parse(message.get("text") or message.get("bytes") or b"")
        except rp.RelayProtocolError as exc:
            self.reply(rp.error(None, exc.message, exc.code))
            return
        kind = obj["type"]
        if kind == "ping":
            self.reply({"type": "pong"})
            return
        eid = obj.get("event_id")
        pending = self.relay.pending.get(eid) if isinstance(eid, str) else None
        if pending is None or pending.agent_id != self.agent_id:
            if kind in ("reply", "error") and isinstance(eid, str):
                self.relay.late_terminal()
            return
        if kind == "token" and isinstance(obj.get("token"), str):
            pending.app.reply(rp.token(pending.event_id, obj["token"], agent_id=self.agent_id))
        elif kind == "reply":
            raw = obj.get("metadata")
            metadata: dict[str, Any] = raw if isinstance(raw, dict) else {}
            self.sent.discard(pending.event_id)
            self.relay.finish(
                pending.event_id,
                {
                    "type": "reply",
                    "event_id": pending.event_id,
                    "agent_id": self.agent_id,
                    "thread_id": pending.thread_id,
                    "reply": obj.get("content", ""),
                    "payload": pending.payload,
                    "metadata": {**metadata, "session_key": pending.session_key},
                },
            )
        elif kind == "error":
            self.sent.discard(pending.event_id)
            code = obj.get("code") if isinstance(obj.get("code"), str) else "AGENT_ERROR"
            self.relay.fail(pending, str(code), str(obj.get("error", "agent error")))


class _AppLink(WebSocketConnection):
    name = "Relay app"

    def __init__(
        self, relay: RelayHub, send_text: Callable[[str], Awaitable[None]], app_id: str
    ) -> None:
        super().__init__(relay.hub.runtime, send_text, rp.dumps)
        self.relay = relay
        self.app_id = app_id
        self._send_q, self._recv_q = trio.open_memory_channel[dict[str, Any]](
            relay.hub.config.turn_queue_size * 4
        )

    async def on_open(self) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._worker)

    async def serve(self, receive: Callable[[], Awaitable[Any]]) -> None:
        try:
            await super().serve(receive)
        finally:
            # The app left: its pending events are dropped (the agent's answers go nowhere).
            for p in [p for p in self.relay.pending.values() if p.app is self]:
                self.relay.pending.pop(p.event_id, None)
                p.timer.cancel()

    def handle_frame(self, message: dict[str, Any]) -> None:
        try:
            obj = rp.parse(message.get("text") or message.get("bytes") or b"")
        except rp.RelayProtocolError as exc:
            self.reply(rp.error(None, exc.message, exc.code))
            return
        if obj["type"] == "ping":
            self.reply({"type": "pong"})
            return
        try:
            self._send_q.send_nowait(obj)
        except trio.WouldBlock:
            self.reply(rp.error(None, "too many submissions queued", "RATE_LIMITED"))

    async def _worker(self) -> None:
        # One at a time, in order: `accepted` answers keep submission order.
        async for obj in self._recv_q:
            if obj["type"] == "event":
                await self._submit(obj)
            elif obj["type"] == "discover":
                await self._discover()
            else:
                self.reply(
                    rp.error(None, f"unknown message type {obj['type']!r}", "INVALID_MESSAGE")
                )

    async def _discover(self) -> None:
        records = await self.relay.hub.store.list_agents()
        listed = []
        for r in records:
            if await self.relay.hub.store.is_allowed(r.name, self.app_id):
                listed.append(
                    {"agent_id": r.name, "name": r.name, "online": r.name in self.relay.agents}
                )
        self.reply({"type": "agents", "agents": listed})

    async def _submit(self, obj: dict[str, Any]) -> None:
        relay = self.relay
        try:
            agent_id, thread_id, payload = rp.parse_app_event(obj)
        except rp.RelayProtocolError as exc:
            self.reply(rp.error(None, exc.message, exc.code))
            return
        store = relay.hub.store
        if await store.get_agent(agent_id) is None:
            self.reply(
                rp.error(None, f"no agent {agent_id!r}", "AGENT_NOT_FOUND", agent_id=agent_id)
            )
            return
        if not await store.is_allowed(agent_id, self.app_id):
            self.reply(
                rp.error(
                    None,
                    f"app {self.app_id!r} may not send events to {agent_id!r}",
                    "NOT_ALLOWED",
                    agent_id=agent_id,
                )
            )
            return
        link = relay.agents.get(agent_id)
        if link is None:
            self.reply(
                rp.error(None, f"agent {agent_id!r} is offline", "AGENT_OFFLINE", agent_id=agent_id)
            )
            return
        event_id = relay.hub.runtime.ids.new("evt")
        pending = _Pending(
            event_id=event_id,
            app=self,
            agent_id=agent_id,
            thread_id=thread_id,
            payload=payload,
            session_key=rp.hub_session_key(agent_id, self.app_id, thread_id),
        )
        relay.pending[event_id] = pending
        self.reply(
            {
                "type": "accepted",
                "event_id": event_id,
                "agent_id": agent_id,
                "session_key": pending.session_key,
                "status": "accepted",
            }
        )
        link.forward(pending)
        assert self._nursery is not None
        self._nursery.start_soon(self._timer, pending)

    async def _timer(self, pending: _Pending) -> None:
        with pending.timer:
            await trio.sleep(self.relay.agent_timeout)
            self.relay.fail(
                pending,
                "AGENT_TIMEOUT",
                f"no answer from {pending.agent_id!r} within {self.relay.agent_timeout:g} s",
            )
