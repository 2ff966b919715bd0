"""The Relay agent connector (PROTOCOLS.md §3.1): one dial-out socket per agent token.

Theory of operation
-------------------
::

    RelayConnector.run (reconnect loop: backoff base 1 s, cap 60 s; auth header, then ?token=)
    └── connector nursery
        └── one task per socket (_socket): dial, serve, then let its events end
            ├── connection (WebSocketConnection: one writer, a reader that never waits)
            │   └── heartbeat: ping every ``ping_interval``; no frame within ``pong_timeout``
            │       ⇒ 1011
            └── events nursery: one task per busy ``session_key`` (events of one key in order,
                keys concurrently, at most ``max_concurrent`` running), each event one
                ``run_response`` bounded by ``event_timeout`` → ``token``… then exactly one
                ``reply`` or ``error``

Conversation state lives per ``session_key`` on the connector (so it survives reconnects) and
expires after ``session_ttl`` idle. An ``event_id`` that is running is ignored; one that finished
less than ``dedupe_window`` ago gets its terminal message again instead of a second run.

When the socket is lost, ``on_disconnect="cancel"`` (default) cancels the running events (they
send nothing; the hub reports them) before reconnecting. ``"finish"`` reconnects at once and
lets them finish: tokens for a lost socket are dropped, and terminal messages that were not
written (at most ``resend_buffer``, oldest dropped first) are sent on the next socket.

Signed replies (§10 placement: ``reply.metadata.signature``): with a ``signer`` (a
:class:`~trioagents.auth.ResponseSigner`, e.g. ``AuthService.signer(agent.name, public_url)``
of the server that also publishes the agent's JWKS), each ``reply`` carries a response
signature JWT whose ``response_hash`` covers the exact ``content`` of the reply and whose
``request_hash`` covers the exact ``event`` frame received (the text frame's UTF-8 bytes).
Errors are never signed.

Token rotation (:meth:`RelayConnector.rotate_token`) opens the new token's socket first; the
old socket then *drains* — it lets the events running in its nursery finish (bounded by
``drain_timeout``) and is closed by the hub (4002, a replaced socket), else by us with 1000
after ``cleanup_timeout``. There are never two live sockets for one token.
"""

from __future__ import annotations

import logging
import random as _random
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from .. import uamp
from .._errors import TrioAgentsError
from ..agent import Agent, Context, Message, Session, run_response
from ..auth import ResponseSigner
from ..config import Config
from ..portal._socket import (
    ConnectFailed,
    Dialer,
    DialSocket,
    HandshakeRejected,
    SocketClosed,
    dial_websocket,
    serve_dialed,
)
from ..protocols import relay as rp
from ..protocols.portal import backoff_delay, with_token
from ..transports._runtime import Runtime
from ..transports._wsconn import WebSocketConnection

__all__ = [
    "RelayConfig",
    "RelayConnector",
    "RelayError",
    "RelayAuthError",
    "connect_relay",
    "open_relay",
]

log = logging.getLogger("trioagents.relay")

_AUTH_CLOSE = frozenset({1008, 4001})
_TERMINAL_CLOSE = frozenset({1008, 4001, 4002, 4003})
ON_DISCONNECT = ("cancel", "finish")


class RelayError(TrioAgentsError):
    """The Relay connector stopped for good."""

    code = "relay_error"


class RelayAuthError(RelayError):
    """The Relay refused the token (header and ``?token=``), or closed with 1008/4001-4003."""

    code = "unauthorized"


def _check_mode(instance: Any, attribute: Any, value: str) -> None:
    if value not in ON_DISCONNECT:
        raise ValueError(f"on_disconnect must be one of {ON_DISCONNECT}, not {value!r}")


@attrs.frozen(kw_only=True)
class RelayConfig:
    """Relay connector settings (§3.1; all durations in seconds).

    Attributes:
        token: the agent token (``rla_…``).
        url: the Relay's ``/v1/ws/agent`` URL.
        reconnect_delay: backoff base.
        max_retries: consecutive failures before giving up (0 = infinite).
        ping_interval: heartbeat period (15 to 60).
        pong_timeout: no frame this long after a ping ⇒ dead.
        event_timeout: one event's bound (then ``AGENT_TIMEOUT``).
        max_concurrent: events running at once (different ``session_key`` values).
        dedupe_window: a finished ``event_id`` seen again within this is not rerun.
        session_ttl: idle conversations are forgotten after this.
        error_code: code of agent failures (``AGENT_ERROR`` or ``AGENT_PROCESSING_ERROR``).
        handshake_timeout: bound on connect + upgrade.
        reset_after: connected this long resets the failure counter.
        on_disconnect: ``"cancel"`` running events when the socket is lost, or ``"finish"``
            them and send their terminal messages on the next socket.
        resend_buffer: terminal messages kept for the next socket (``"finish"``).
        drain_timeout: how long a rotated-out socket may take to finish its events.
    """

    token: str
    url: str = rp.DEFAULT_RELAY_URL
    reconnect_delay: float = 1.0
    max_retries: int = 0
    ping_interval: float = 30.0
    pong_timeout: float = 10.0
    event_timeout: float = 300.0
    max_concurrent: int = 16
    dedupe_window: float = 600.0
    session_ttl: float = 86_400.0
    error_code: str = "AGENT_ERROR"
    handshake_timeout: float = 30.0
    reset_after: float = 30.0
    on_disconnect: str = attrs.field(default="cancel", validator=_check_mode)
    resend_buffer: int = 100
    drain_timeout: float = 300.0


@attrs.define
class RelayStats:
    """Counters of one connector."""

    connects: int = 0
    failures: int = 0
    reconnects: int = 0
    events: int = 0
    duplicates: int = 0
    rotations: int = 0
    resent: int = 0
    resend_dropped: int = 0
    last_delay: float | None = None
    last_close_code: int | None = None


@attrs.define(eq=False)
class _Job:
    event: rp.RelayEvent
    conn: _RelayConnection
    frame: bytes = b""  # the exact event frame received (signed replies)


@attrs.define(eq=False)
class _Rotation:
    token: str
    done: trio.Event = attrs.field(factory=trio.Event)
    error: RelayError | None = None


class RelayConnector:
    """Serves ``agent`` to a Relay hub over one socket for one agent token.

    Run several connectors (one per token) for several agents in one process.

    Args:
        agent: the agent answering events.
        config: a :class:`RelayConfig`.
        runtime_config: limits (queue sizes, ``cleanup_timeout``, ``max_steps``…).
        ids: id factory.
        clock: wall clock.
        random: uniform ``[0, 1)`` source for the backoff jitter.
        dial: how to open the socket (tests pass in-memory fakes).
        signer: sign each ``reply`` (``metadata.signature``, see the module docstring).
    """

    def __init__(
        self,
        agent: Agent,
        config: RelayConfig,
        *,
        runtime_config: Config | None = None,
        ids: uamp.IdFactory | None = None,
        clock: uamp.Clock | None = None,
        random: Callable[[], float] | None = None,
        dial: Dialer | None = None,
        signer: ResponseSigner | None = None,
    ) -> None:
        if not config.token.startswith("rla_"):
            log.warning("Relay agent tokens start with 'rla_'; connecting anyway")
        self.agent = agent
        self.signer = signer
        self.config = config
        """The settings; :meth:`rotate_token` replaces ``token``."""
        rc = runtime_config or Config()
        self.runtime = Runtime(
            config=rc,
            agents={agent.name: agent},
            ids=ids or uamp.RandomIds(),
            clock=clock or uamp.SystemClock(),
        )
        self._random = random or _random.random
        self._dial = dial or dial_websocket(
            handshake_timeout=config.handshake_timeout, cleanup_timeout=rc.cleanup_timeout
        )
        self.sessions: dict[str, tuple[Session, float]] = {}
        """``session_key`` → (conversation, last used)."""
        self.finished: dict[str, tuple[dict[str, Any], float]] = {}
        """``event_id`` → (terminal message, when) for the dedupe window."""
        self.running: set[str] = set()
        self.limiter = trio.CapacityLimiter(config.max_concurrent)
        self.stats = RelayStats()
        self.state = "idle"
        self.use_query = False
        self.sockets: list[_RelayConnection] = []
        """The live sockets (two only while a rotated-out one drains; never two per token)."""
        self.current: _RelayConnection | None = None
        self.resend: deque[dict[str, Any]] = deque()
        """Terminal messages waiting for the next socket (``on_disconnect="finish"``)."""
        self._keys: dict[str, deque[_Job]] = {}
        self._rotation: _Rotation | None = None
        self._changed = trio.Event()

    def _set_state(self, state: str) -> None:
        self.state = state
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_connected(self, *, connects: int = 1) -> None:
        """Wait until socket number ``connects`` (or later) is open. Cancelling only stops
        the wait.

        Raises:
            RelayError: the connector stopped for good first.
        """
        while not (self.state == "connected" and self.stats.connects >= connects):
            if self.state == "stopped":
                raise RelayError("the connector stopped")
            await self._changed.wait()

    async def wait_sockets(self, count: int) -> None:
        """Wait until exactly ``count`` sockets are live (e.g. 1 after a rotation drained)."""
        while len(self.sockets) != count:
            await self._changed.wait()

    async def rotate_token(self, token: str) -> None:
        """Serve with ``token`` from now on (§3.1 rotation).

        Opens a socket with the new token first; once it is up, the old socket stops being
        the current one, lets its running events finish (``drain_timeout``) and closes with
        1000. When not connected, the next connect attempt simply uses the new token.

        Raises:
            RelayAuthError: the new token was refused (the old socket keeps serving).
            RelayError: the new socket could not be opened, or the connector stopped.
        """
        if token == self.config.token and self._rotation is None:
            await trio.lowlevel.checkpoint()
            return
        if self.state != "connected":
            self.config = attrs.evolve(self.config, token=token)
            await trio.lowlevel.checkpoint()
            return
        rotation = self._rotation = _Rotation(token)
        self._poke()
        await rotation.done.wait()
        if rotation.error is not None:
            raise rotation.error

    def session_for(self, key: str) -> Session:
        """The conversation of ``session_key`` (expired ones are forgotten first)."""
        now = trio.current_time()
        ttl = self.config.session_ttl
        for k in [k for k, (_, used) in self.sessions.items() if now - used > ttl]:
            del self.sessions[k]
        entry = self.sessions.get(key)
        session = (
            entry[0]
            if entry
            else Session(
                id=self.runtime.ids.new("sess"), agent=self.agent, metadata={"transport": "relay"}
            )
        )
        self.sessions[key] = (session, now)
        return session

    def remember(self, event_id: str, message: dict[str, Any]) -> None:
        """Keep a terminal message for the dedupe window."""
        now = trio.current_time()
        window = self.config.dedupe_window
        for k in [k for k, (_, t) in self.finished.items() if now - t > window]:
            del self.finished[k]
        self.finished[event_id] = (message, now)

    def buffer_terminal(self, message: dict[str, Any]) -> None:
        """Keep a terminal message for the next socket (oldest dropped past ``resend_buffer``)."""
        if len(self.resend) >= self.config.resend_buffer:
            dropped = self.resend.popleft()
            self.stats.resend_dropped += 1
            log.warning("Relay resend buffer full; dropping the answer to %s", dropped["event_id"])
        self.resend.append(message)

    async def deliver_terminal(self, origin: _RelayConnection, message: dict[str, Any]) -> None:
        """Send an event's terminal message on its socket, else (``"finish"``) on the current
        socket, else keep it for the next one."""
        if origin.alive:
            await origin.send_terminal(message)
        elif self.config.on_disconnect == "finish":
            current = self.current
            if current is not None and current.alive:
                self.stats.resent += 1
                await current.send_terminal(message)
            else:
                self.buffer_terminal(message)
                await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.checkpoint()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve events, and reconnect until cancelled or refused for good.

        Raises:
            RelayAuthError: the token was refused (header and query), or a terminal close.
            RelayError: ``max_retries`` consecutive failures.

        Cancellation cancels running events (they send nothing) and closes the sockets.
        """
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                await self._reconnect_loop(nursery)
        except* RelayError as group:
            raise group.exceptions[0] from None
        finally:
            self.current = None
            self._set_state("stopped")
            rotation, self._rotation = self._rotation, None
            if rotation is not None:
                rotation.error = RelayError("the connector stopped")
                rotation.done.set()

    async def _reconnect_loop(self, nursery: trio.Nursery) -> None:
        cfg = self.config
        failures = 0
        tried_query = False
        while True:
            self._set_state("connecting")
            rotation = self._rotation
            if rotation is not None:  # asked while the socket was being lost
                self.config = attrs.evolve(self.config, token=rotation.token)
            cfg = self.config
            connected, uptime, code = False, 0.0, None
            outcome = await nursery.start(self._socket, cfg.token, self.use_query)
            if isinstance(outcome, HandshakeRejected):
                if outcome.status in (401, 403):
                    code = 4001
                else:
                    log.warning("Relay refused the handshake with HTTP %d", outcome.status)
            elif isinstance(outcome, ConnectFailed):
                log.warning("%s", outcome.message)
            else:
                connected = True
                self.stats.connects += 1
                if rotation is not None and self._rotation is rotation:
                    self._rotation = None
                    self.stats.rotations += 1
                    rotation.done.set()
                self.current = outcome
                self._set_state("connected")
                conn = await self._serve_until_lost(nursery, outcome)
                self.current = None
                uptime = trio.current_time() - conn.opened
                code = conn.remote_close_code
                self.stats.last_close_code = code
            cfg = self.config
            if code in _TERMINAL_CLOSE:
                if code in _AUTH_CLOSE and not tried_query and not self.use_query:
                    tried_query = self.use_query = True  # retry once with ?token=
                    continue
                raise RelayAuthError(f"the Relay refused the agent token ({code})")
            self.stats.failures += 1
            if connected and uptime >= cfg.reset_after:
                failures = 0
            failures += 1
            if cfg.max_retries and failures > cfg.max_retries:
                raise RelayError(f"gave up after {failures} consecutive failures")
            delay = backoff_delay(failures, cfg.reconnect_delay, self._random)
            self.stats.reconnects += 1
            self.stats.last_delay = delay
            self._set_state("backoff")
            await trio.sleep(delay)

    async def _serve_until_lost(
        self, nursery: trio.Nursery, conn: _RelayConnection
    ) -> _RelayConnection:
        # Wait for the socket to be lost, handling rotations; returns the last current socket.
        while True:
            while not conn.lost.is_set() and self._rotation is None:
                await self._changed.wait()
            if conn.lost.is_set():
                return conn
            rotation = self._rotation
            assert rotation is not None
            new = await self._open_rotated(nursery, rotation.token)
            if self._rotation is rotation:
                self._rotation = None
            if isinstance(new, _RelayConnection):
                self.config = attrs.evolve(self.config, token=rotation.token)
                self.stats.connects += 1
                self.stats.rotations += 1
                conn.drain()
                conn = self.current = new
                self._poke()
            else:
                rotation.error = new
            rotation.done.set()

    async def _open_rotated(self, nursery: trio.Nursery, token: str) -> Any:
        # Never two live sockets per token: a draining socket of this token goes first.
        while any(s.token == token for s in self.sockets):
            await self._changed.wait()
        outcome = await nursery.start(self._socket, token, self.use_query)
        if (
            isinstance(outcome, HandshakeRejected)
            and outcome.status in (401, 403)
            and not self.use_query
        ):
            outcome = await nursery.start(self._socket, token, True)
        if isinstance(outcome, HandshakeRejected):
            return RelayAuthError(f"the Relay refused the new token (HTTP {outcome.status})")
        if isinstance(outcome, ConnectFailed):
            return RelayError(f"could not open a socket with the new token: {outcome.message}")
        return outcome

    async def _socket(
        self, token: str, use_query: bool, *, task_status: trio.TaskStatus[Any]
    ) -> None:
        # One socket and the events it brought. Reports the open connection, or the dial
        # error, through task_status; never raises.
        cfg = self.config
        headers = [] if use_query else [("Authorization", f"Bearer {token}")]
        url = with_token(cfg.url, token) if use_query else cfg.url
        conn: _RelayConnection | None = None
        finish = cfg.on_disconnect == "finish"
        async with trio.open_nursery() as events:
            try:
                async with self._dial(url, headers) as sock:
                    conn = _RelayConnection(self, sock, token, events)
                    self.sockets.append(conn)
                    task_status.started(conn)
                    await conn.run()
            except (HandshakeRejected, ConnectFailed) as exc:
                if conn is not None:
                    raise
                task_status.started(exc)
                return
            finally:
                if conn is not None:
                    conn.socket_ended(keep_unsent=finish)
                    self.sockets.remove(conn)
                    if finish:
                        conn.lost.set()
                    else:
                        events.cancel_scope.cancel()
                    self._poke()
        if conn is not None:
            conn.lost.set()
            self._poke()

    # -- events ---------------------------------------------------------------------------------

    def accept(self, conn: _RelayConnection, event: rp.RelayEvent, frame: bytes = b"") -> None:
        """Queue an event that arrived on ``conn`` as ``frame`` (duplicates are not rerun)."""
        if event.event_id in self.running:
            self.stats.duplicates += 1
            return
        done = self.finished.get(event.event_id)
        if done is not None and trio.current_time() - done[1] <= self.config.dedupe_window:
            self.stats.duplicates += 1
            conn.reply(done[0])
            return
        self.running.add(event.event_id)
        job = _Job(event, conn, frame)
        queue = self._keys.get(event.session_key)
        if queue is not None:
            queue.append(job)
            return
        self._keys[event.session_key] = deque([job])
        conn.start_key(event.session_key)

    async def drain_key(self, key: str, owner: _RelayConnection) -> None:
        """Run the events of one ``session_key`` in order (a task of ``owner``'s events)."""
        queue = self._keys[key]
        try:
            while queue:
                job = queue[0]
                try:
                    async with self.limiter:
                        await self._run_event(job)
                finally:
                    queue.popleft()
                    self.running.discard(job.event.event_id)
        finally:
            owner.key_done()
            # Cancelled with events still queued: those of a live socket (a rotation's new
            # one) carry on in its nursery; the others are dropped (the hub reports them).
            live = deque(j for j in queue if j.conn.alive)
            for j in queue:
                if not j.conn.alive:
                    self.running.discard(j.event.event_id)
            if live:
                self._keys[key] = live
                live[0].conn.start_key(key)
            else:
                self._keys.pop(key, None)

    async def _run_event(self, job: _Job) -> None:
        event = job.event
        cfg = self.config
        self.stats.events += 1
        session = self.session_for(event.session_key)
        session.metadata["relay"] = {
            "event_id": event.event_id,
            "app_id": event.app_id,
            "thread_id": event.thread_id,
            "session_key": event.session_key,
            "payload": event.payload,
        }
        session.messages.append(Message(role="user", content=rp.user_text(event.payload)))

        async def emit(ev: Any) -> None:
            # Tokens for a lost socket are dropped.
            if (
                type(ev) is uamp.ResponseDelta
                and type(ev.delta) is uamp.TextDelta
                and job.conn.alive
            ):
                await job.conn.outbox.send(rp.token(event.event_id, ev.delta.text))
            else:
                await trio.lowlevel.checkpoint()

        ctx = Context(
            session=session,
            response_id=self.runtime.ids.new("resp"),
            emit=emit,
            config=self.runtime.config,
            ids=self.runtime.ids,
            client_tool_mode="return",
        )
        started = trio.current_time()
        terminal: Any = None
        with trio.move_on_after(cfg.event_timeout) as timeout:
            terminal = await run_response(ctx)
        if timeout.cancelled_caught:
            message = rp.error(
                event.event_id, f"no answer within {cfg.event_timeout:g} s", "AGENT_TIMEOUT"
            )
        elif isinstance(terminal, uamp.ResponseDone):
            usage = terminal.response.usage
            content = ctx.output_text
            metadata: dict[str, Any] = {
                "tokens_used": usage.total_tokens if usage else 0,
                "model": getattr(self.agent.model, "name", "unknown"),
                "latency_ms": int((trio.current_time() - started) * 1000),
            }
            if self.signer is not None:
                metadata["signature"] = self.signer.sign(
                    request_bytes=job.frame, response_text=content, response_id=ctx.response_id
                )
            message = rp.reply(event.event_id, content, metadata)
        else:
            err = terminal.error if isinstance(terminal, uamp.ResponseError) else None
            message = rp.error(
                event.event_id, err.message if err else "agent failed", cfg.error_code
            )
        self.remember(event.event_id, message)
        await self.deliver_terminal(job.conn, message)


class _RelayConnection(WebSocketConnection):
    name = "Relay"

    def __init__(
        self, connector: RelayConnector, sock: DialSocket, token: str, events: trio.Nursery
    ) -> None:
        self.connector = connector
        self.sock = sock
        self.token = token
        self.events = events
        super().__init__(connector.runtime, self._write, self._render, merge=_merge_tokens)
        self.remote_close_code: int | None = None
        self.opened = trio.current_time()
        self.lost = trio.Event()
        self.draining = False
        self.ended = False
        self.key_tasks = 0
        self.unsent: dict[str, dict[str, Any]] = {}
        """Terminal messages queued but not yet written (event id → message)."""
        self._writing: dict[str, Any] | None = None
        self._idle = trio.Event()
        self._alive = trio.Event()

    @property
    def alive(self) -> bool:
        """Whether frames can still be written to this socket."""
        return not self.ended and not self.outbox.closed

    def _render(self, message: dict[str, Any]) -> str:
        self._writing = message if message.get("type") in ("reply", "error") else None
        return rp.dumps(message)

    async def _write(self, text: str) -> None:
        written = self._writing
        try:
            await self.sock.send_message(text)
        except SocketClosed:
            self.outbox.close()
            return
        if written is not None and isinstance(written.get("event_id"), str):
            self.unsent.pop(written["event_id"], None)

    async def send_terminal(self, message: dict[str, Any]) -> None:
        """Queue an event's terminal message, remembered until written."""
        self.unsent[message["event_id"]] = message
        await self.outbox.send(message)

    def socket_ended(self, *, keep_unsent: bool) -> None:
        """The socket is gone: with ``keep_unsent``, unwritten terminals go to the buffer."""
        self.ended = True
        if keep_unsent:
            for message in self.unsent.values():
                self.connector.buffer_terminal(message)
        self.unsent.clear()

    def start_key(self, key: str) -> None:
        """Run ``key``'s queue in this socket's events nursery."""
        self.key_tasks += 1
        self.events.start_soon(self.connector.drain_key, key, self)

    def key_done(self) -> None:
        """One ``session_key`` task of this socket ended."""
        self.key_tasks -= 1
        self._idle.set()

    def drain(self) -> None:
        """Rotated out: finish the running events, then close with 1000."""
        self.draining = True
        if self._nursery is None or self.close_code is not None:
            return
        self._nursery.start_soon(self._close_when_idle)

    async def _close_when_idle(self) -> None:
        with trio.move_on_after(self.connector.config.drain_timeout):
            while self.key_tasks:
                self._idle = trio.Event()
                await self._idle.wait()
        # A hub closes a replaced socket itself (4002) once its events are answered; give it
        # ``cleanup_timeout`` to do so rather than racing it with our own close frame (this
        # task ends with the socket). Then close it ourselves.
        await trio.sleep(self.runtime.config.cleanup_timeout)
        self.close(1000, "token rotated")

    async def on_open(self) -> None:
        # Answers finished while no socket was up go first.
        c = self.connector
        while c.resend:
            c.stats.resent += 1
            await self.send_terminal(c.resend.popleft())

    async def run(self) -> None:
        self.remote_close_code = await serve_dialed(self, self.sock, self._heartbeat)

    async def _heartbeat(self) -> None:
        cfg = self.connector.config
        while True:
            await trio.sleep(cfg.ping_interval)
            self._alive = trio.Event()
            self.reply({"type": "ping"})
            with trio.move_on_after(cfg.pong_timeout):
                await self._alive.wait()
                continue
            log.warning("Relay silent for %g s after a ping; reconnecting", cfg.pong_timeout)
            self.close(1011, "heartbeat timeout")
            return

    def handle_frame(self, message: dict[str, Any]) -> None:
        self._alive.set()  # any frame proves the socket alive
        data = message.get("text") or message.get("bytes") or b""
        try:
            obj = rp.parse(data)
        except rp.RelayProtocolError as exc:
            self.reply(rp.error(None, exc.message, exc.code))
            return
        kind = obj["type"]
        if kind == "ping":
            self.reply({"type": "pong"})
        elif kind == "event":
            try:
                event = rp.parse_agent_event(obj)
            except rp.RelayProtocolError as exc:
                eid = obj.get("event_id")
                self.reply(rp.error(eid if isinstance(eid, str) else None, exc.message, exc.code))
                return
            frame = data.encode("utf-8") if isinstance(data, str) else bytes(data)
            self.connector.accept(self, event, frame)
        elif kind != "pong":
            log.debug("ignoring Relay message %r", kind)


def _merge_tokens(batch: list[Any]) -> list[Any]:
    # While the hub is behind, consecutive tokens of one event go as one frame (never reordered,
    # never across events).
    out: list[Any] = []
    for msg in batch:
        prev = out[-1] if out else None
        if (
            prev is not None
            and msg.get("type") == "token"
            and prev.get("type") == "token"
            and prev.get("event_id") == msg.get("event_id")
        ):
            out[-1] = {**prev, "token": prev["token"] + msg["token"]}
        else:
            out.append(msg)
    return out


def connect_relay(
    nursery: trio.Nursery, agent: Agent, config: RelayConfig, **kwargs: Any
) -> RelayConnector:
    """Start a :class:`RelayConnector` in ``nursery``; terminal errors propagate into it."""
    connector = RelayConnector(agent, config, **kwargs)
    nursery.start_soon(connector.run)
    return connector


@asynccontextmanager
async def open_relay(
    agents: Iterable[tuple[Agent, RelayConfig]], **kwargs: Any
) -> AsyncIterator[list[RelayConnector]]:
    """Run one connector per ``(agent, config)`` (one socket per token) for the block.

    Raises:
        RelayError: a connector stopped for good (the block is cancelled).
    """
    connectors = [RelayConnector(a, c, **kwargs) for a, c in agents]
    try:
        async with trio.open_nursery() as nursery:
            for connector in connectors:
                nursery.start_soon(connector.run)
            yield connectors
            nursery.cancel_scope.cancel()
    except* RelayError as group:
        raise group.exceptions[0] from None
