"""The hub's side of PortalConnect (`/ws`): daemon links, their sessions, and turns on them.

Theory of operation
-------------------
Each daemon socket is a :class:`DaemonLink`::

    link (the WebSocket handler's nursery)
    ├── writer (Outbox.run): the only task that writes to the daemon
    ├── shutdown watcher: the hub drains ⇒ close 1001
    └── the reader (the handler's own task)

The reader verifies each ``session.create`` token with the hub's
:class:`~trioagents.hub.TokenVerifier` — a stored API key or an AOAuth JWT
(:class:`~trioagents.hub.JWTTokenVerifier`); either way its subject (the JWT's ``sub``) must be
the agent; a refused entry gets ``session.error{unauthorized}`` and only that entry — and registers
an :class:`Inbound` for the agent — replacing an older one, which gets
``session.end{reason:"replaced"}`` — and routes the daemon's ``response.*`` events by
``session_id`` to the turn running on that session (``payment.accepted`` / ``payment.error`` /
``payment.balance``, which carry no ``response_id``, go to the session's running turn). The reader never waits on a caller: each
turn has a bounded buffer, and a caller that falls that far behind loses its turn (the daemon
gets ``response.cancel``), never the other sessions on the socket.

A turn (:meth:`Inbound.turn`) is one ``input.text`` with the full history. Turns of one agent
are serialised by a FIFO lock, as the daemon serialises them anyway; so the next
``response.created`` on the session is the turn's (also matched by ``reply_to`` when the daemon
sends one). A turn that ends early (the caller left, or gave up) sends ``response.cancel`` and
waits, shielded and bounded, for the daemon's terminal event, so the next turn starts clean.
When the socket drops, every turn of the link ends with ``agent_offline``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .. import uamp
from ..agent import AGENT_NAME_RE
from ..protocols.portal import decode_frame
from ..transports._wsconn import SendTexts, WebSocketConnection
from ._store import Identity

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = ["DaemonLink", "Inbound", "HubTurn", "TurnFailed"]

log = logging.getLogger("trioagents.hub")

_SESSION_PAYMENT_EVENTS = frozenset({"payment.accepted", "payment.error", "payment.balance"})


class TurnFailed(Exception):
    """A turn on an inbound session ended without a terminal event from the daemon."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.define(eq=False)
class HubTurn:
    """One ``input.text`` sent to a daemon and the events that answer it."""

    event_id: str
    send: trio.MemorySendChannel[Any]
    recv: trio.MemoryReceiveChannel[Any]
    response_id: str | None = None
    terminal: Any = None
    failure: TurnFailed | None = None
    cancel_requested: bool = False

    def push(self, event: Any) -> bool:
        """Buffer one event for the caller; False when the buffer is full."""
        try:
            self.send.send_nowait(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return True
        except trio.WouldBlock:
            return False
        if event.type in uamp.TERMINAL_TYPES:
            self.terminal = event
            self.send.close()
        return True

    def fail(self, code: str, message: str) -> None:
        """End the turn without a terminal event (the caller sees :class:`TurnFailed`)."""
        if self.failure is None and self.terminal is None:
            self.failure = TurnFailed(code, message)
        self.send.close()


class Inbound:
    """An agent registered by a daemon: one UAMP session on a :class:`DaemonLink`."""

    def __init__(self, link: DaemonLink, session_id: str, agent: str) -> None:
        self.link = link
        self.session_id = session_id
        self.agent = agent
        self.gone: str | None = None
        self.current: HubTurn | None = None
        self._lock = trio.Lock()

    def deliver(self, event: Any) -> None:
        """Route one daemon event of this session to the running turn (never blocks)."""
        turn = self.current
        if turn is None:
            return
        if type(event) is uamp.ResponseCreated:
            if turn.response_id is not None or event.reply_to not in (None, turn.event_id):
                return
            turn.response_id = event.response_id
            if turn.cancel_requested:
                self.link.cancel_response(self.session_id, event.response_id)
        elif turn.response_id is None:
            return
        elif event.type in _SESSION_PAYMENT_EVENTS and getattr(event, "response_id", None) is None:
            pass  # payment.accepted/error/balance name no response: they are the running turn's
        elif getattr(event, "response_id", None) != turn.response_id:
            return
        if not turn.push(event):
            log.warning("caller of %s fell behind; cancelling its turn", self.agent)
            turn.fail("slow_consumer", "the caller did not keep up with the agent's stream")
            self.request_cancel(turn)

    def request_cancel(self, turn: HubTurn) -> None:
        """Ask the daemon to cancel ``turn`` (now if it started, else when it does)."""
        if turn.cancel_requested:
            return
        turn.cancel_requested = True
        if turn.response_id is not None:
            self.link.cancel_response(self.session_id, turn.response_id)

    def retire(self, code: str, message: str) -> None:
        """This registration is over (socket gone, replaced, ended): fail its turn."""
        if self.gone is None:
            self.gone = message
        if self.current is not None:
            self.current.fail(code, message)

    @asynccontextmanager
    async def turn(self, input_event: uamp.InputText, buffer: int) -> AsyncIterator[HubTurn]:
        """Run one turn: send ``input_event`` and yield the :class:`HubTurn` receiving it.

        Turns of one agent run one at a time, in arrival order. Leaving the block before the
        terminal event (cancellation included) sends ``response.cancel`` and waits, shielded
        and bounded by ``cleanup_timeout``, for the daemon to finish the response.

        Raises:
            TurnFailed: the registration is gone before the turn could start.
        """
        async with self._lock:
            if self.gone is not None:
                raise TurnFailed("agent_offline", self.gone)
            send, recv = trio.open_memory_channel[Any](buffer)
            turn = HubTurn(event_id=input_event.event_id or "", send=send, recv=recv)
            self.current = turn
            try:
                await self.link.outbox.send(input_event)
                yield turn
            finally:
                if turn.terminal is None and turn.failure is None and self.gone is None:
                    with (
                        trio.CancelScope(shield=True),
                        trio.move_on_after(self.link.hub.runtime.config.cleanup_timeout),
                    ):
                        self.request_cancel(turn)
                        async for _ in recv:
                            pass
                self.current = None
                recv.close()


class DaemonLink(WebSocketConnection):
    """One PortalConnect daemon socket on the hub (see the module docstring)."""

    name = "PortalConnect"

    def __init__(
        self,
        hub: Hub,
        send_text: Callable[[str], Awaitable[None]],
        identity: Identity,
        *,
        send_texts: SendTexts | None = None,
    ) -> None:
        super().__init__(
            hub.runtime, send_text, hub.runtime.encoder.encode_text, send_texts=send_texts
        )
        self.hub = hub
        self.identity = identity
        self.sessions: dict[str, Inbound] = {}

    def cancel_response(self, session_id: str, response_id: str) -> None:
        """Send ``response.cancel`` for one response (never blocks)."""
        self.reply(uamp.ResponseCancel(session_id=session_id, response_id=response_id))

    async def serve(self, receive: Callable[[], Awaitable[Any]]) -> None:
        """Read the daemon's frames until it leaves or the hub shuts down.

        Returns after every turn of this link has been told it is over (``agent_offline``).
        """
        try:
            await super().serve(receive)
        finally:
            for inbound in list(self.sessions.values()):
                self.hub.unregister(inbound)
                inbound.retire(
                    "agent_offline", f"agent {inbound.agent!r} went offline (its daemon left)"
                )
            self.sessions.clear()

    # -- reader -----------------------------------------------------------------------------

    def _error(self, code: str, message: str, reply_to: str | None = None) -> None:
        self.reply(uamp.Error(error=uamp.ErrorInfo(code=code, message=message), reply_to=reply_to))

    def handle_frame(self, message: dict[str, Any]) -> None:
        """Handle one frame from the daemon (never waits: token checks run as tasks)."""
        text = message.get("text")
        limit = self.hub.runtime.config.max_message_size
        if text is None:
            self._error("unsupported_frame", "binary frames are not supported")
            return
        if len(text) > limit:
            self._error("message_too_large", f"frame exceeds {limit} bytes")
            self.close(1009, "message too large")
            return
        try:
            event = decode_frame(text, prefer="client")
        except uamp.DecodeError as exc:
            self._error(exc.code, exc.message, exc.event_id)
            return
        kind = event.type
        if kind == "session.create":
            assert self._nursery is not None  # handle_frame runs inside serve()
            self._nursery.start_soon(self._register, event)
        elif kind == "ping":
            self.reply(uamp.Pong(reply_to=event.event_id))
        elif kind == "pong":
            return
        elif kind == "session.end":
            inbound = self.sessions.pop(event.session_id or "", None)
            if inbound is not None:
                self.hub.unregister(inbound)
                inbound.retire("agent_offline", f"agent {inbound.agent!r} ended its session")
        elif kind == "error":
            reply_to = event.reply_to
            for inbound in self.sessions.values():
                turn = inbound.current
                if turn is not None and reply_to and turn.event_id == reply_to:
                    turn.fail(event.error.code, event.error.message)
                    return
            log.info("daemon error %s: %s", event.error.code, event.error.message)
        else:
            sid = getattr(event, "session_id", None)
            inbound = self.sessions.get(sid) if sid else None
            if inbound is not None:
                inbound.deliver(event)

    async def _register(self, ev: uamp.SessionCreate) -> None:
        cfg = ev.session or {}
        name = ev.agent or cfg.get("agent")
        token = ev.token or cfg.get("token")
        reply_to = ev.event_id

        def refuse(code: str, message: str) -> None:
            self.reply(
                uamp.SessionError(
                    error=uamp.ErrorInfo(code=code, message=message), reply_to=reply_to
                )
            )

        if not isinstance(name, str) or not AGENT_NAME_RE.fullmatch(name):
            refuse("agent_not_found", "session.create needs a valid 'agent'")
            return
        if str(ev.uamp_version).split(".")[0] != "1":
            refuse("version_mismatch", f"UAMP {ev.uamp_version} is not supported")
            return
        identity = (
            await self.hub.verifier.verify(token, kinds=("agent",))
            if isinstance(token, str)
            else None
        )
        if identity is None or identity.subject != name:
            refuse("unauthorized", f"the token does not authorise agent {name!r}")
            return
        if len(self.sessions) >= self.hub.runtime.config.max_sessions_per_socket:
            refuse("too_many_sessions", "too many agents on one daemon socket")
            return
        sid = self.hub.runtime.ids.new("sess")
        inbound = Inbound(self, sid, name)
        self.sessions[sid] = inbound
        self.reply(
            uamp.SessionCreated(
                session_id=sid,
                agent=name,
                session=uamp.SessionInfo(
                    id=sid,
                    status="active",
                    config={"agent": name},
                    created_at=self.hub.runtime.clock.now_s(),
                ),
                reply_to=reply_to,
            )
        )
        self.hub.register(inbound)
