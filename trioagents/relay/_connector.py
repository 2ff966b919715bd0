"""The Relay agent connector (PROTOCOLS.md §3.1): one dial-out socket per agent token.

Theory of operation
-------------------
::

    RelayConnector.run (reconnect loop: backoff base 1 s, cap 60 s; auth header, then ?token=)
    └── one connection (WebSocketConnection: one writer, a reader that never waits)
        ├── heartbeat: ping every ``ping_interval``; no frame within ``pong_timeout`` ⇒ 1011
        └── one task per busy ``session_key`` (events of one key in order, keys concurrently,
            at most ``max_concurrent`` running), each event one ``run_response`` bounded by
            ``event_timeout`` → ``token``… then exactly one ``reply`` or ``error``

Conversation state lives per ``session_key`` on the connector (so it survives reconnects) and
expires after ``session_ttl`` idle. An ``event_id`` that is running is ignored; one that finished
less than ``dedupe_window`` ago gets its terminal message again instead of a second run. When
the socket is lost, running events are cancelled (they send nothing; the hub reports them).
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
from ..config import Config
from ..portal._socket import (
    ConnectFailed,
    Dialer,
    DialSocket,
    HandshakeRejected,
    SocketClosed,
    dial_websocket,
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


class RelayError(TrioAgentsError):
    """The Relay connector stopped for good."""

    code = "relay_error"


class RelayAuthError(RelayError):
    """The Relay refused the token (header and ``?token=``), or closed with 1008/4001-4003."""

    code = "unauthorized"


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


@attrs.define
class RelayStats:
    """Counters of one connector."""

    connects: int = 0
    failures: int = 0
    reconnects: int = 0
    events: int = 0
    duplicates: int = 0
    last_delay: float | None = None
    last_close_code: int | None = None


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
    ) -> None:
        if not config.token.startswith("rla_"):
            log.warning("Relay agent tokens start with 'rla_'; connecting anyway")
        self.agent = agent
        self.config = config
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
        self._changed = trio.Event()

    def _set_state(self, state: str) -> None:
        self.state = state
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

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve events, and reconnect until cancelled or refused for good.

        Raises:
            RelayAuthError: the token was refused (header and query), or a terminal close.
            RelayError: ``max_retries`` consecutive failures.

        Cancellation cancels running events (they send nothing) and closes the socket.
        """
        cfg = self.config
        task_status.started()
        failures = 0
        tried_query = False
        try:
            while True:
                self._set_state("connecting")
                headers = [] if self.use_query else [("Authorization", f"Bearer {cfg.token}")]
                url = with_token(cfg.url, cfg.token) if self.use_query else cfg.url
                connected, uptime, code = False, 0.0, None
                try:
                    async with self._dial(url, headers) as sock:
                        opened = trio.current_time()
                        connected = True
                        self.stats.connects += 1
                        conn = _RelayConnection(self, sock)
                        self._set_state("connected")
                        await conn.run()
                        uptime = trio.current_time() - opened
                        code = conn.remote_close_code
                        self.stats.last_close_code = code
                except HandshakeRejected as exc:
                    if exc.status in (401, 403):
                        code = 4001
                    else:
                        log.warning("Relay refused the handshake with HTTP %d", exc.status)
                except ConnectFailed as exc:
                    log.warning("%s", exc.message)
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
        finally:
            self._set_state("stopped")


class _RelayConnection(WebSocketConnection):
    name = "Relay"

    def __init__(self, connector: RelayConnector, sock: DialSocket) -> None:
        self.connector = connector
        self.sock = sock
        super().__init__(connector.runtime, self._write, rp.dumps, merge=_merge_tokens)
        self.remote_close_code: int | None = None
        self._alive = trio.Event()
        self._keys: dict[str, deque[rp.RelayEvent]] = {}

    async def _write(self, text: str) -> None:
        try:
            await self.sock.send_message(text)
        except SocketClosed:
            self.outbox.close()

    async def _receive(self) -> dict[str, Any]:
        try:
            message = await self.sock.get_message()
        except SocketClosed as exc:
            self.remote_close_code = exc.close_code
            return {"type": "websocket.disconnect", "code": exc.close_code}
        key = "bytes" if isinstance(message, bytes) else "text"
        return {"type": "websocket.receive", key: message}

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._heartbeat)
            await self.serve(self._receive)
            nursery.cancel_scope.cancel()
        if self.close_code is not None and self.remote_close_code is None:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(self.runtime.config.cleanup_timeout),
            ):
                try:
                    await self.sock.aclose(self.close_code, self.close_reason)
                except SocketClosed:
                    pass

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
            self._accept(event)
        elif kind != "pong":
            log.debug("ignoring Relay message %r", kind)

    def _accept(self, event: rp.RelayEvent) -> None:
        c = self.connector
        if event.event_id in c.running:
            c.stats.duplicates += 1
            return
        done = c.finished.get(event.event_id)
        if done is not None and trio.current_time() - done[1] <= c.config.dedupe_window:
            c.stats.duplicates += 1
            self.reply(done[0])
            return
        c.running.add(event.event_id)
        queue = self._keys.get(event.session_key)
        if queue is not None:
            queue.append(event)
            return
        self._keys[event.session_key] = deque([event])
        assert self._nursery is not None  # handle_frame runs inside serve()
        self._nursery.start_soon(self._drain_key, event.session_key)

    async def _drain_key(self, key: str) -> None:
        queue = self._keys[key]
        try:
            while queue:
                event = queue[0]
                try:
                    async with self.connector.limiter:
                        await self._run_event(event)
                finally:
                    queue.popleft()
                    self.connector.running.discard(event.event_id)
        finally:
            for event in queue:
                self.connector.running.discard(event.event_id)
            self._keys.pop(key, None)

    async def _run_event(self, event: rp.RelayEvent) -> None:
        c = self.connector
        cfg = c.config
        c.stats.events += 1
        session = c.session_for(event.session_key)
        session.metadata["relay"] = {
            "event_id": event.event_id,
            "app_id": event.app_id,
            "thread_id": event.thread_id,
            "session_key": event.session_key,
            "payload": event.payload,
        }
        session.messages.append(Message(role="user", content=rp.user_text(event.payload)))

        async def emit(ev: Any) -> None:
            if type(ev) is uamp.ResponseDelta and type(ev.delta) is uamp.TextDelta:
                await self.outbox.send(rp.token(event.event_id, ev.delta.text))
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
            message = rp.reply(
                event.event_id,
                ctx.output_text,
                {
                    "tokens_used": usage.total_tokens if usage else 0,
                    "model": getattr(c.agent.model, "name", "unknown"),
                    "latency_ms": int((trio.current_time() - started) * 1000),
                },
            )
        else:
            err = terminal.error if isinstance(terminal, uamp.ResponseError) else None
            message = rp.error(
                event.event_id, err.message if err else "agent failed", cfg.error_code
            )
        c.remember(event.event_id, message)
        await self.outbox.send(message)


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
