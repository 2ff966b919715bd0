"""The PortalConnect daemon (PROTOCOLS.md §2): agents without a public URL.

Theory of operation
-------------------
A daemon keeps **one** WebSocket out to a hub and serves many agent sessions over it::

    PortalConnect.run (reconnect loop: backoff with jitter, terminal on auth refusal)
    └── one connection (a UampConnection whose sessions the *hub* drives)
        ├── writer (Outbox.run): the only task that writes frames
        ├── keepalive: ping every ``ping_interval``, no pong in ``pong_timeout`` ⇒ close 1011
        ├── the reader (the connection's own task): never waits on a session
        └── one task per registered agent session (UampSession.run)
            └── one cancel scope per response (run_response: model stream, tools, waits)

On every (re)connect the daemon forgets its old sessions and sends one ``session.create`` per
enabled agent entry. Each ``session.created`` from the hub (matched by ``reply_to``, then by
``agent``, then by order) starts a UAMP session served exactly as on ``/agents/{name}/uamp``:
the daemon is the UAMP *server* of those sessions, so the UAMP core (turn queue, cancel,
``tool.result``, ``payment.submit``, ``session.update``/``end``, ``ping``) is reused as is.
The only differences are on the reader: hub replies (``session.created``, ``session.error``,
``pong``, ``error``) arrive on the same socket, and an input for an agent the daemon cannot
resolve answers ``response.error{agent_not_found}``.

One registration serves *every* caller of the agent through the hub, so what identifies a
caller is per turn, never sticky on the session (the UAMP core's per-turn fields, with
``UampConnection(sticky_payments=False, turn_metadata=…)``):

* ``input.text.context`` — a trioagents hub sends ``{"caller": {"sub", "iss", "scopes"}}``
  (the caller it verified; nothing for anonymous callers). For that turn the agent sees it as
  ``ctx.context`` and ``session.metadata["context"]`` (the whole context), ``["caller"]``
  (that dict), ``["sub"]`` and ``["principal"]`` (a :class:`~trioagents.auth.Principal` with
  the hub-verified scopes, so ``@tool(scopes=…)`` works through the hub); an anonymous turn
  sees none of them. The daemon trusts its hub for this: it chose the hub and authenticated
  to it; the caller's own credential never reaches the daemon.
* ``input.text.payment_token`` and tokens submitted for a turn waiting on
  ``payment.required`` (``payment.submit``) pay for that turn only (another caller's next
  turn does not inherit them; a submission during a turn that did not ask is dropped); a token
  set by ``session.update`` — or ``payment.submit`` — between turns stays the session's
  default.

``auth`` (an :class:`~trioagents.auth.AuthService`) makes signing agents sign their responses:
``response.done.signature`` over the exact ``input.text`` frame the hub sent. A trioagents hub
does not pass that signature on (its caller never saw that frame); a hub configured to sign
re-signs what it relays with its own keys.

Losing the socket cancels every turn (each sends ``response.cancelled`` into the closed outbox,
which drops it), then the loop sleeps ``min(reconnect_delay·2^(n-1), 60)·U(0.5, 1)`` and dials
again; the failure counter resets after ``reset_after`` seconds connected. A handshake refused
with 401/403 or a close with 1008/4001/4003 ends the loop with :class:`PortalAuthError`.
"""

from __future__ import annotations

import logging
import os
import random as _random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from .. import uamp
from .._errors import TrioAgentsError
from ..agent import Agent
from ..auth import AuthService, Principal
from ..config import Config
from ..payments import PaymentBackend, PaymentsService
from ..payments._service import SERVICE_KEY as PAYMENTS_KEY
from ..protocols.portal import (
    DEFAULT_PORTAL_WS_URL,
    TERMINAL_HANDSHAKE_STATUSES,
    backoff_delay,
    is_terminal_close,
    registration,
    with_token,
)
from ..transports._runtime import Runtime
from ..transports.uamp import UampConnection, UampSession
from ._socket import (
    ConnectFailed,
    Dialer,
    DialSocket,
    HandshakeRejected,
    SocketClosed,
    dial_websocket,
    serve_dialed,
)

__all__ = [
    "AgentEntry",
    "PortalConfig",
    "PortalConnect",
    "PortalError",
    "PortalAuthError",
    "PortalGaveUp",
    "PortalStats",
    "connect_portal",
    "open_portal",
]

log = logging.getLogger("trioagents.portal")

AgentResolver = Callable[[str], Agent | None]


class PortalError(TrioAgentsError):
    """The PortalConnect daemon stopped for good."""

    code = "portal_error"


class PortalAuthError(PortalError):
    """The hub refused our credentials (handshake 401/403, close 1008/4001/4003, or every
    agent entry refused with ``session.error{unauthorized}``). Reconnecting would not help."""

    code = "unauthorized"


class PortalGaveUp(PortalError):
    """``max_reconnect_attempts`` consecutive failures, or a lost socket without
    ``auto_reconnect``."""

    code = "connection_failed"


@attrs.frozen
class AgentEntry:
    """One agent the daemon registers: its ``name`` and its token (AOAuth JWT or API key)."""

    name: str
    token: str | None = None


def _entries(value: Any) -> tuple[AgentEntry, ...]:
    out = []
    for item in value or ():
        if isinstance(item, AgentEntry):
            out.append(item)
        elif isinstance(item, Mapping) and isinstance(item.get("name"), str):
            token = item.get("token")
            out.append(
                AgentEntry(name=item["name"], token=token if isinstance(token, str) else None)
            )
        else:
            raise ValueError(f"agent entries are {{name, token}} objects, got {item!r}")
    return tuple(out)


def _default_url() -> str:
    return os.environ.get("PORTAL_WS_URL") or DEFAULT_PORTAL_WS_URL


@attrs.frozen(kw_only=True)
class PortalConfig:
    """PortalConnect settings (the names of the original skill, PROTOCOLS.md §2).

    Attributes:
        portal_ws_url: the hub's ``/ws`` URL (env ``PORTAL_WS_URL``, else
            ``wss://roborum.ai/ws``); the connection token is added as ``?token=``.
        agents: ``[{name, token}]``; omitted with ``token`` set ⇒ the host agent with it.
        token: the connection token (default: the first entry's).
        auto_reconnect: dial again after a lost socket.
        reconnect_delay: backoff base in seconds.
        max_reconnect_attempts: consecutive failures before giving up (0 = infinite).
        ping_interval: seconds between our pings.
        pong_timeout: a ping without a pong for this long ⇒ the socket is dead (close 1011).
        handshake_timeout: bound on connect + upgrade.
        reset_after: seconds connected after which the failure counter resets.
        max_message_size: largest frame accepted from the hub.
    """

    portal_ws_url: str = attrs.field(factory=_default_url)
    agents: tuple[AgentEntry, ...] = attrs.field(default=(), converter=_entries)
    token: str | None = None
    auto_reconnect: bool = True
    reconnect_delay: float = 5.0
    max_reconnect_attempts: int = 0
    ping_interval: float = 55.0
    pong_timeout: float = 10.0
    handshake_timeout: float = 30.0
    reset_after: float = 30.0
    max_message_size: int = 1 << 20

    @property
    def connection_token(self) -> str | None:
        """The ``?token=`` value: ``token``, else the first entry's token."""
        if self.token:
            return self.token
        return next((e.token for e in self.agents if e.token), None)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PortalConfig:
        """Build from the original skill's config dict (unknown keys are ignored).

        Raises:
            ValueError: an agent entry is not a ``{name, token}`` object.
        """
        fields = attrs.fields_dict(cls)
        return cls(**{k: v for k, v in data.items() if k in fields and v is not None})


@attrs.define
class PortalStats:
    """Counters of one :class:`PortalConnect` (monotonic)."""

    connects: int = 0
    """Sockets opened."""
    failures: int = 0
    """Failed dials and lost sockets, all time."""
    reconnects: int = 0
    """Backoff sleeps taken."""
    registrations: int = 0
    """``session.created`` received."""
    keepalive_timeouts: int = 0
    """Pings that got no pong in time."""
    last_delay: float | None = None
    """The last backoff sleep, in seconds."""
    last_close_code: int | None = None
    """The hub's close code of the last lost socket."""


@attrs.frozen
class _Outcome:
    connected: bool
    uptime: float = 0.0
    terminal: str | None = None


class PortalConnect:
    """A daemon serving ``agents`` through a hub, over one dial-out WebSocket.

    Args:
        config: a :class:`PortalConfig` or the original skill's dict.
        agents: the in-process agents; the first is the *host* agent.
        runtime_config: limits and time bounds of the served sessions (queue sizes,
            ``cleanup_timeout``, ``tool_result_timeout``…).
        ids: id factory (``SequentialIds`` in tests).
        clock: wall clock for timestamps.
        random: uniform ``[0, 1)`` source for the backoff jitter (injected in tests).
        dial: how to open the socket (default: trio-websocket); tests pass in-memory fakes.
        payments: charge paid agents (``Agent(pricing=…)``, PROTOCOLS.md §9) with this
            :class:`~trioagents.payments.PaymentsService` or payment backend, negotiated
            in-band with ``payment.*`` events as over UAMP. Without it every agent is free.
        auth: sign the agents' responses (``response.done.signature``, §10) with this
            :class:`~trioagents.auth.AuthService` (its ``sign_responses``/``signing_keys``;
            set its ``public_url`` so the issuer is an absolute URL).

    Use :func:`open_portal` or :func:`connect_portal`, or await :meth:`run` yourself.

    Raises:
        ValueError: no agent entries and no way to derive one.
    """

    def __init__(
        self,
        config: PortalConfig | Mapping[str, Any],
        agents: Agent | Iterable[Agent] = (),
        *,
        runtime_config: Config | None = None,
        ids: uamp.IdFactory | None = None,
        clock: uamp.Clock | None = None,
        random: Callable[[], float] | None = None,
        dial: Dialer | None = None,
        payments: PaymentsService | PaymentBackend | None = None,
        auth: AuthService | None = None,
    ) -> None:
        self.config = config if isinstance(config, PortalConfig) else PortalConfig.from_dict(config)
        agent_list = [agents] if isinstance(agents, Agent) else list(agents)
        self.host: Agent | None = agent_list[0] if agent_list else None
        entries = self.config.agents
        if not entries:
            if self.host is None or not self.config.token:
                raise ValueError(
                    "PortalConnect needs agents=[{name, token}] (or a host agent + token)"
                )
            entries = (AgentEntry(self.host.name, self.config.token),)
        self.entries: tuple[AgentEntry, ...] = entries
        rc = runtime_config or Config()
        self.runtime = Runtime(
            config=rc,
            agents={a.name: a for a in agent_list},
            ids=ids or uamp.RandomIds(),
            clock=clock or uamp.SystemClock(),
        )
        if payments is not None:
            self.runtime.services[PAYMENTS_KEY] = (
                payments if isinstance(payments, PaymentsService) else PaymentsService(payments)
            )
        if auth is not None:
            self.runtime.services["auth"] = auth
            auth.bind(self.runtime)
        self._random = random or _random.random
        self._dial = dial or dial_websocket(
            max_message_size=self.config.max_message_size,
            handshake_timeout=self.config.handshake_timeout,
            cleanup_timeout=rc.cleanup_timeout,
        )
        self._resolver: AgentResolver | None = None
        self.disabled: set[str] = set()
        """Entries the hub refused with ``session.error{unauthorized}``."""
        self.registered: dict[str, str] = {}
        """Agent name → hub session id on the current connection."""
        self.state = "idle"
        """``idle``, ``connecting``, ``connected``, ``backoff`` or ``stopped``."""
        self.stats = PortalStats()
        self.error: PortalError | None = None
        self._changed = trio.Event()
        self._connection: _DaemonConnection | None = None

    # -- agents ---------------------------------------------------------------------------

    def set_agent_resolver(self, fn: AgentResolver | None) -> None:
        """Resolve agent names with ``fn(name) -> Agent | None`` first (multi-agent daemons)."""
        self._resolver = fn

    def resolve_agent(self, name: str) -> Agent | None:
        """The agent serving ``name``: the resolver, then in-process agents, then the host."""
        if self._resolver is not None:
            agent = self._resolver(name)
            if agent is not None:
                return agent
        agent = self.runtime.agents.get(name)
        if agent is not None:
            return agent
        if self.host is not None and self.host.name == name:
            return self.host
        return None

    # -- state ------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _set_state(self, state: str) -> None:
        self.state = state
        self._notify()

    @property
    def enabled_entries(self) -> list[AgentEntry]:
        """Entries still registered on each connect (not refused as unauthorized)."""
        return [e for e in self.entries if e.name not in self.disabled]

    async def wait_registered(self, *, connects: int = 1) -> None:
        """Wait until connection number ``connects`` (or a later one) has every enabled entry
        registered.

        Raises:
            PortalError: the daemon stopped for good first.

        Cancelling it only stops the wait.
        """
        while not (
            self.state == "connected"
            and self.stats.connects >= connects
            and all(e.name in self.registered for e in self.enabled_entries)
        ):
            if self.state == "stopped":
                raise self.error or PortalGaveUp("the daemon stopped")
            await self._changed.wait()

    async def wait_state(self, state: str) -> None:
        """Wait until :attr:`state` is ``state``. Cancelling it only stops the wait."""
        while self.state != state:
            await self._changed.wait()

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, and reconnect until cancelled or refused for good.

        Reports ``task_status.started()`` at once (the hub may be unreachable for a while).

        Raises:
            PortalAuthError: the hub refused our credentials.
            PortalGaveUp: too many consecutive failures, or the socket was lost without
                ``auto_reconnect``.

        Cancellation closes the socket and cancels every turn (each ends with
        ``response.cancelled``, sent if the socket still works) before it propagates.
        """
        cfg = self.config
        task_status.started()
        failures = 0
        try:
            while True:
                self._set_state("connecting")
                outcome = await self._connect_once()
                if outcome.terminal is not None:
                    self.error = PortalAuthError(outcome.terminal)
                    raise self.error
                self.stats.failures += 1
                if outcome.connected and outcome.uptime >= cfg.reset_after:
                    failures = 0
                failures += 1
                if not cfg.auto_reconnect:
                    self.error = PortalGaveUp("connection lost and auto_reconnect is off")
                    raise self.error
                if cfg.max_reconnect_attempts and failures > cfg.max_reconnect_attempts:
                    self.error = PortalGaveUp(
                        f"gave up after {failures} consecutive failures "
                        f"(max_reconnect_attempts={cfg.max_reconnect_attempts})"
                    )
                    raise self.error
                delay = backoff_delay(failures, cfg.reconnect_delay, self._random)
                self.stats.reconnects += 1
                self.stats.last_delay = delay
                log.info("reconnecting to the hub in %.2f s (attempt %d)", delay, failures)
                self._set_state("backoff")
                await trio.sleep(delay)
        finally:
            self.registered.clear()
            self.state = "stopped"
            self._notify()

    async def _connect_once(self) -> _Outcome:
        cfg = self.config
        url = with_token(cfg.portal_ws_url, cfg.connection_token)
        try:
            async with self._dial(url, ()) as sock:
                opened = trio.current_time()
                self.stats.connects += 1
                conn = _DaemonConnection(self, sock)
                self._connection = conn
                try:
                    await conn.run()
                finally:
                    self._connection = None
                    self.registered.clear()
                uptime = trio.current_time() - opened
                code = conn.remote_close_code
                self.stats.last_close_code = code
                if is_terminal_close(code):
                    return _Outcome(True, uptime, f"the hub closed the socket with {code}")
                if conn.all_refused:
                    return _Outcome(True, uptime, "the hub refused every agent token")
                return _Outcome(True, uptime)
        except HandshakeRejected as exc:
            if exc.status in TERMINAL_HANDSHAKE_STATUSES:
                return _Outcome(False, terminal=f"the hub refused the handshake ({exc.status})")
            log.warning("hub refused the handshake with HTTP %d", exc.status)
            return _Outcome(False)
        except ConnectFailed as exc:
            log.warning("%s", exc.message)
            return _Outcome(False)


class _DaemonConnection(UampConnection):
    """One hub socket: a UAMP connection whose sessions are opened by ``session.created``."""

    def __init__(self, portal: PortalConnect, sock: DialSocket) -> None:
        self.portal = portal
        self.sock = sock
        super().__init__(
            portal.runtime,
            self._write,
            agent=None,
            pinned=False,
            metadata={"transport": "portal"},
            # One registration serves every caller: what a turn brings is that turn's only.
            sticky_payments=False,
            turn_metadata=_caller_metadata,
        )
        self.waiting: dict[str, AgentEntry] = {}
        self.unresolved: dict[str, str] = {}
        self.remote_close_code: int | None = None
        self.all_refused = False
        self._pong = trio.Event()

    async def _write(self, text: str) -> None:
        try:
            await self.sock.send_message(text)
        except SocketClosed:
            # The reader sees the close too and ends the connection; drop what is queued.
            self.outbox.close()

    async def run(self) -> None:
        """Register every entry, serve until the socket ends, then close it with our code."""
        portal = self.portal
        for entry in portal.enabled_entries:
            eid = portal.runtime.ids.new("evt")
            self.waiting[eid] = entry
            await self.outbox.send(registration(entry.name, entry.token, event_id=eid))
        portal._set_state("connected")
        self.remote_close_code = await serve_dialed(self, self.sock, self._keepalive)

    async def _keepalive(self) -> None:
        cfg = self.portal.config
        while True:
            await trio.sleep(cfg.ping_interval)
            self._pong = trio.Event()
            self.reply(uamp.Ping(event_id=self.runtime.ids.new("evt")))
            with trio.move_on_after(cfg.pong_timeout):
                await self._pong.wait()
                continue
            self.portal.stats.keepalive_timeouts += 1
            log.warning("no pong from the hub within %g s; reconnecting", cfg.pong_timeout)
            self.close(1011, "keepalive timeout")
            return

    # -- reader -------------------------------------------------------------------------------

    def dispatch(self, event: Any) -> None:
        """Route one frame from the hub: its replies here, turn traffic to the UAMP core."""
        if isinstance(event, uamp.UnknownEvent) and event.type in uamp.SERVER_EVENT_TYPES:
            try:
                event = uamp.converter.structure(event.raw, uamp.SERVER_EVENT_TYPES[event.type])
            except Exception:
                log.warning("hub sent an invalid %r event", event.type, exc_info=True)
                return
        kind = event.type
        if kind == "session.created":
            self._on_registered(event)
        elif kind == "session.error":
            self._on_refused(event)
        elif kind == "pong":
            self._pong.set()
        elif kind == "error":
            log.warning("hub error %s: %s", event.error.code, event.error.message)
        elif kind in uamp.SERVER_EVENT_TYPES and kind not in uamp.CLIENT_EVENT_TYPES:
            log.debug("ignoring %r from the hub", kind)
        elif kind == "session.create":
            self._error("unsupported_event", "the daemon does not accept session.create")
        elif kind == "input.text" and event.session_id in self.unresolved:
            self._unresolved_input(event)
        else:
            super().dispatch(event)

    def _take_waiting(self, ev: Any) -> AgentEntry | None:
        reply_to = getattr(ev, "reply_to", None)
        if reply_to and reply_to in self.waiting:
            return self.waiting.pop(reply_to)
        name = getattr(ev, "agent", None)
        if name is None and isinstance(getattr(ev, "session", None), uamp.SessionInfo):
            agent = ev.session.config.get("agent")
            name = agent if isinstance(agent, str) else None
        for key, entry in self.waiting.items():
            if name is None or entry.name == name:
                return self.waiting.pop(key)
        return None

    def _on_registered(self, ev: uamp.SessionCreated) -> None:
        entry = self._take_waiting(ev)
        if entry is None:
            log.warning("session.created %s matches no registration", ev.session_id)
            return
        sid = ev.session_id
        self._open_session(sid, entry.name)
        self.portal.registered[entry.name] = sid
        self.portal.stats.registrations += 1
        log.info("agent %s registered with the hub (session %s)", entry.name, sid)
        self.portal._notify()

    def _open_session(self, sid: str, name: str) -> None:
        agent = self.portal.resolve_agent(name)
        if agent is None:
            self.unresolved[sid] = name
            return
        self.unresolved.pop(sid, None)
        session = UampSession(self, sid, agent, {"agent": name, "modalities": ["text"]})
        self.sessions[sid] = session
        assert self._nursery is not None  # dispatch runs inside serve()
        self._nursery.start_soon(session.run)

    def _on_refused(self, ev: uamp.SessionError) -> None:
        entry = self._take_waiting(ev)
        name = entry.name if entry else "?"
        log.warning("hub refused agent %s: %s (%s)", name, ev.error.message, ev.error.code)
        if entry is not None and ev.error.code == "unauthorized":
            self.portal.disabled.add(entry.name)
            self.portal._notify()
            if not self.portal.enabled_entries:
                self.all_refused = True
                self.close(1000, "every agent token was refused")

    def _unresolved_input(self, ev: uamp.InputText) -> None:
        sid = ev.session_id
        assert sid is not None
        name = self.unresolved[sid]
        if self.portal.resolve_agent(name) is not None:  # a resolver was set since
            self._open_session(sid, name)
            super().dispatch(ev)
            return
        rid = self.runtime.ids.new("resp")
        self.reply(uamp.ResponseCreated(response_id=rid, session_id=sid, reply_to=ev.event_id))
        self.reply(
            uamp.ResponseError(
                response_id=rid,
                session_id=sid,
                error=uamp.ErrorInfo(
                    code="agent_not_found", message=f"this daemon has no agent named {name!r}"
                ),
            )
        )

    def _on_session_end(self, s: UampSession, ev: uamp.SessionEnd) -> None:
        # The hub ended one registration (e.g. "replaced" by a newer daemon of that agent):
        # cancel its turns; the entry comes back on the next connect.
        self.sessions.pop(s.id, None)
        name = s.config.get("agent")
        if isinstance(name, str) and self.portal.registered.get(name) == s.id:
            del self.portal.registered[name]
            self.portal._notify()
        s.end(ev.reason or "client_request")


def _caller_metadata(context: dict[str, Any] | None) -> dict[str, Any]:
    """The ``session.metadata`` entries of one daemon turn (the connection's ``turn_metadata``).

    ``context`` is the turn's ``input.text.context``; a trioagents hub puts the caller it
    verified there as ``{"caller": {"sub", "iss", "scopes"}}``. Every key is returned (``None``
    hides it), so an anonymous turn never sees a previous caller.
    """
    caller = context.get("caller") if isinstance(context, dict) else None
    entries: dict[str, Any] = {
        "context": context if isinstance(context, dict) else None,
        "caller": None,
        "sub": None,
        "principal": None,
    }
    if isinstance(caller, dict) and isinstance(caller.get("sub"), str):
        scopes = caller.get("scopes")
        entries["caller"] = caller
        entries["sub"] = caller["sub"]
        entries["principal"] = Principal(
            sub=caller["sub"],
            iss=str(caller.get("iss") or "hub"),
            scopes=frozenset(s for s in scopes if isinstance(s, str))
            if isinstance(scopes, list)
            else frozenset(),
            claims={"via": "hub"},
        )
    return entries


def connect_portal(
    nursery: trio.Nursery,
    config: PortalConfig | Mapping[str, Any],
    agents: Agent | Iterable[Agent] = (),
    **kwargs: Any,
) -> PortalConnect:
    """Start a PortalConnect daemon in ``nursery`` and return it.

    Terminal errors (:class:`PortalAuthError`, :class:`PortalGaveUp`) propagate into
    ``nursery``; cancel the nursery to stop the daemon. ``kwargs`` go to :class:`PortalConnect`.
    """
    portal = PortalConnect(config, agents, **kwargs)
    nursery.start_soon(portal.run)
    return portal


@asynccontextmanager
async def open_portal(
    config: PortalConfig | Mapping[str, Any],
    agents: Agent | Iterable[Agent] = (),
    **kwargs: Any,
) -> AsyncIterator[PortalConnect]:
    """Run a PortalConnect daemon for the duration of the block.

    Leaving the block (or cancelling it) stops the daemon, cancelling its turns.

    Raises:
        PortalAuthError: the hub refused our credentials (the block is cancelled).
        PortalGaveUp: too many consecutive failures (the block is cancelled).
    """
    portal = PortalConnect(config, agents, **kwargs)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(portal.run)
            yield portal
            nursery.cancel_scope.cancel()
    except* PortalError as group:
        raise group.exceptions[0] from None
