"""UAMP over WebSocket (PROTOCOLS.md §1): many sessions multiplexed on one socket.

Theory of operation
-------------------
One connection is one nursery with three kinds of tasks::

    connection nursery
    ├── writer (Outbox.run): the only task that writes frames
    ├── shutdown watcher: ends every session with reason "shutdown" when the server drains
    └── one task per session (UampSession.run), each inside its own cancel scope
        └── the running response (run_response) inside its own cancel scope
            └── agent tools (a nursery owned by the response)

The reader (the handler's own task) decodes frames and *never waits on a session*: inputs go
into the session's bounded turn queue with ``send_nowait``; ``response.cancel`` cancels the
response scope; ``session.end`` cancels the session scope; ``tool.result`` wakes the waiting
response. So one blocked session (waiting for a tool result, or a slow model) never blocks
another session or a ``ping``.

Each session runs its turn queue in order, one response at a time; ``run_response`` guarantees
exactly one terminal event per ``response.created``. When the socket closes, the outbox drops
further sends and the connection scope is cancelled: every session and response unwinds, and
the handler returns only after all of them have finished.

Audio input (``input.audio``) needs a ``transcribe`` hook on the agent; without one the final
chunk is answered with ``response.created`` + ``response.error{unsupported_modality}``. With one,
the reader decodes and accumulates chunks (bounded by ``max_input_audio``) and the final chunk
enqueues a turn carrying the audio: the session task runs the hook (in turn order, never in the
reader), and the transcript (plus buffered media) becomes the user message, auto-responded like
``input.text``. ``transcript.done{transcript, role:"user", content_id?}`` follows the
``response.created`` of the response the audio started (carrying its ``response_id``), or goes
out alone, without ``response_id``, when ``auto_respond`` is off. A failing hook gives
``response.created`` + ``response.error`` (``agent_error``; ``unsupported_modality`` when every
hook returned None). ``response.cancel`` does not reach a running transcription (no response
has started yet); ``session.end`` and closing the socket do.

Auth (§0.2, §10): the handshake credential (``Authorization: Bearer``, else ``?token=``) is
the default ``token`` of every ``session.create`` that carries none. With an
:class:`~trioagents.auth.AuthService` on the server, :func:`serve_uamp_socket` verifies a
presented handshake credential for the socket's agent before accepting (bad → HTTP 401; on the
agentless multi-agent ``/uamp`` it is verified per session instead, for the agent each
``session.create`` picks). The session task verifies the session's token (its own, top level
or in ``session``, else the handshake's) before it sends ``session.created``; a bad one (or
none when required) gives ``session.error{unauthorized}`` and no session. The token must also
hold the scopes of the agent's ``/uamp`` endpoint (``@websocket("/uamp", scopes=…)``,
:func:`uamp_endpoint_scopes`) — the server checks them on the handshake of a per-agent socket,
but on the unpinned ``/uamp`` the agent is only chosen by ``session.create``: lacking them gives
``session.error{unauthorized, details{reason:"missing_token"|"insufficient_scope"}}``.
``session.update{token}`` is verified (scopes too) in a connection task (the reader never
waits); a bad one gives ``session.error`` and the old token stays. Each turn first waits for
pending verifications, then refuses the input with ``session.error{unauthorized,
details{reason:"token_expired"}}`` once the token has expired; a running response is never
stopped by expiry. A signing agent puts ``response.done.signature`` over the exact text it
streamed and the exact frame that started the response.

Per-turn fields (§0.2, §1.2): ``input.text.context`` and ``input.text.payment_token`` ride on
the turn, never on the session. The context is the response's :attr:`Context.context
<trioagents.agent.Context.context>`; the payment token pays for that response (it wins over
the session's token from ``session.create``/``session.update``). An input that starts no
response (``auto_respond`` off, non-``user`` roles) hands them to the next response of the
session. A ``payment.submit`` for a response waiting on ``payment.required`` pays for that
response and, once accepted, stays the session's token for later turns (``sticky_payments``,
what one client wants; the PortalConnect daemon turns it off, as one session serves every
caller of a hub); one sent while no response waits sets the session's token.
``UampConnection(turn_metadata=…)`` lets a server expose a turn's context in
``session.metadata`` for that turn only (the daemon's hub-verified caller).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import attrs
import trio
from starlette.websockets import WebSocket

from .. import uamp
from .._errors import RemoteProtocolError
from ..agent import (
    Agent,
    Context,
    Message,
    Session,
    Skill,
    messages_from_openai,
    run_response,
    websocket,
)
from ..auth import (
    AuthError,
    AuthService,
    Principal,
    ResponseHasher,
    ResponseSigner,
    base_url_of,
    bearer_token,
    denial_response,
    require_scopes,
    uamp_error,
)
from ..payments import PaymentError, PaymentsService
from ._runtime import Runtime
from ._wsconn import SendTexts, WebSocketConnection, send_close, text_senders

__all__ = [
    "MAX_INPUT_AUDIO",
    "TurnMetadata",
    "UampTransport",
    "serve_uamp_socket",
    "uamp_endpoint_scopes",
]

log = logging.getLogger("trioagents.transports.uamp")

MAX_INPUT_AUDIO = 15 << 20
"""Default bound on one session's accumulated ``input.audio`` (decoded bytes, 15 MiB)."""

_SESSIONLESS = frozenset({"ping", "pong", "capabilities.query", "client.capabilities"})

TurnMetadata = Callable[[dict[str, Any] | None], Mapping[str, Any]]
"""``UampConnection(turn_metadata=fn)``: ``fn(context)`` maps a responding turn's
``input.text.context`` (None when the turn has none) to ``session.metadata`` entries that hold
for that turn only (a ``None`` value hides the key for the turn); the previous entries come
back when the response ends. The PortalConnect daemon uses it to expose the hub-verified
caller."""

_ABSENT = object()


def uamp_endpoint_scopes(agent: Agent) -> tuple[str, ...]:
    """The scopes ``agent``'s ``/uamp`` WebSocket endpoint demands (``@websocket("/uamp",
    scopes=…)``), as the server enforces them on ``/agents/{name}/uamp``: the last ``/uamp``
    endpoint registered wins; none: ``()``."""
    scopes: tuple[str, ...] = ()
    for endpoint in agent.websocket_endpoints:
        if endpoint.path == "/uamp":
            scopes = endpoint.scopes
    return scopes


def normalize_tools(tools: Any) -> list[dict[str, Any]]:
    """Accept client tools as OpenAI ``{type, function{…}}`` or flat ``{type, name, …}``."""
    out: list[dict[str, Any]] = []
    for t in tools or ():
        if not isinstance(t, dict):
            continue
        if isinstance(t.get("function"), dict):
            out.append({"type": "function", "function": t["function"]})
        elif isinstance(t.get("name"), str):
            fn = {k: t[k] for k in ("name", "description", "parameters") if k in t}
            out.append({"type": "function", "function": fn})
    return out


@attrs.frozen
class _Audio:
    """A finished ``input.audio`` utterance, transcribed in the session task."""

    audio: bytes
    format: str
    media: list[uamp.ContentItem]
    content_id: str | None


@attrs.define
class _Turn:
    """One item of a session's turn queue."""

    message: Message | None
    respond: bool
    reply_to: str | None
    messages: list[Message] | None = None
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    audio: _Audio | None = None  # the user message is this audio's transcript
    frame: str | None = None  # the exact frame that started it (signed responses)
    context: dict[str, Any] | None = None  # input.text.context: this turn only
    payment_token: str | None = None  # input.text.payment_token: this turn only


class _Stuck(Exception):
    pass


class UampSession:
    """One UAMP session on a connection: a conversation and at most one running response."""

    def __init__(
        self, conn: UampConnection, sid: str, agent: Agent, config: dict[str, Any]
    ) -> None:
        self.conn = conn
        self.id = sid
        self.config = config
        ext = config.get("extensions") or {}
        self.auto_respond = bool(ext.get("auto_respond", True))
        self.concurrency = ext.get("concurrency", "queue")
        self.state = Session(
            id=sid,
            agent=agent,
            client_tools=normalize_tools(config.get("tools")),
            instructions=config.get("instructions"),
            metadata={"transport": "uamp", **conn.metadata},
        )
        self.token: str | None = None
        self.payment_token: str | None = None
        self.scope = trio.CancelScope()
        self.end_reason = "client_request"
        self._turns_send, self._turns_recv = trio.open_memory_channel[_Turn](
            conn.runtime.config.turn_queue_size
        )
        self.queued = 0
        self.bindable = False
        self.media: list[uamp.ContentItem] = []
        self.audio: list[bytes] = []
        self.audio_bytes = 0
        self.audio_format: str | None = None
        self.audio_content_id: str | None = None
        self._transcript: uamp.TranscriptDone | None = None  # sent right after response.created
        self.running: tuple[str, trio.CancelScope] | None = None
        self._results: dict[str, uamp.ToolResultInfo | None] = {}
        # Events exist only while someone waits (memory: thousands of idle sessions).
        self._wakeup: trio.Event | None = None
        self._reply_to: str | None = None
        # In-band payment (§9.3): the response waiting for payment.submit, and the latest
        # token submitted for it (a newer submission replaces an unread one).
        self._payment_for: str | None = None
        self._submitted: str | None = None
        self._trying: str | None = None  # handed to the run loop, not yet accepted
        self._payment_wakeup: trio.Event | None = None
        # Per-turn fields of inputs that started no response, for the next one that does.
        self._carried_context: dict[str, Any] | None = None
        self._carried_payment_token: str | None = None
        # Auth (§10): the verified caller, the session.create to confirm once verified, the
        # session.update verifications still running, and the running response's signing.
        self.principal: Principal | None = None
        self.pending_create: tuple[list[Any], str | None] | None = None
        self.auth_pending = 0
        self.auth_settled: trio.Event | None = None  # created when a check starts
        self.refused = False
        self._signing: tuple[ResponseSigner, bytes, ResponseHasher] | None = None

    # -- called by the reader (never blocks) ---------------------------------------------

    def enqueue(self, turn: _Turn) -> bool:
        """Queue a turn; False if the queue is full."""
        try:
            self._turns_send.send_nowait(turn)
        except trio.WouldBlock:
            return False
        self.queued += 1
        return True

    def cancel_response(self, response_id: str | None) -> bool:
        """Cancel the running response (if ``response_id`` matches)."""
        if self.running is None or (response_id and response_id != self.running[0]):
            return False
        self.running[1].cancel()
        return True

    def deliver_result(self, result: uamp.ToolResult) -> bool:
        """Hand a ``tool.result`` to the waiting response; False if the call is unknown."""
        if result.call_id not in self._results or self._results[result.call_id] is not None:
            return False
        self._results[result.call_id] = uamp.ToolResultInfo(
            call_id=result.call_id, result=result.result, is_error=result.is_error
        )
        if self._wakeup is not None:
            self._wakeup.set()
        return True

    def deliver_payment(self, ev: uamp.PaymentSubmit) -> bool:
        """Take a ``payment.submit``; returns whether a response was waiting for it.

        The token wakes the response waiting for payment (if ``response_id`` is absent or names
        it) and pays for that response; with ``sticky_payments`` (the default) it also becomes
        the session's payment token once accepted. A token submitted while no response waits
        becomes the session's payment token (like ``session.update``), except during a running
        response without ``sticky_payments``, where it is dropped (it belongs to that turn's
        caller, who was not asked to pay).
        """
        token = ev.payment.token
        waiting = self._payment_for is not None and (
            not ev.response_id or ev.response_id == self._payment_for
        )
        if not token:
            return waiting
        if waiting:
            self._submitted = token
            if self._payment_wakeup is not None:
                self._payment_wakeup.set()
        elif self.conn.sticky_payments or self.running is None:
            self.payment_token = token
        return waiting

    def end(self, reason: str) -> None:
        """Cancel everything in this session, then confirm with ``session.end``."""
        self.end_reason = reason
        self.scope.cancel()

    # -- the session task ------------------------------------------------------------------

    async def emit_text(self, response_id: str, text: str) -> None:
        """The running response's text sink (``Context.text_sink``): one streamed piece."""
        self.conn.runtime.stats.deltas += 1
        if self._signing is not None:
            self._signing[2].update(text)
        await trio.lowlevel.checkpoint_if_cancelled()
        outbox = self.conn.outbox
        if not outbox.put_text(response_id, self.id, text):
            await outbox.send(
                uamp.ResponseDelta(
                    response_id=response_id, session_id=self.id, delta=uamp.TextDelta(text)
                )
            )

    async def emit(self, event: Any) -> None:
        t = type(event)
        if t is uamp.ResponseDelta:  # one per streamed piece of tool progress, results…
            self.conn.runtime.stats.deltas += 1
            if self._signing is not None and type(event.delta) is uamp.TextDelta:
                self._signing[2].update(event.delta.text)
            outbox = self.conn.outbox
            await trio.lowlevel.checkpoint_if_cancelled()
            if not outbox.put_nowait(event):
                await outbox.send(event)
            return
        if t is uamp.ResponseCreated and self._transcript is not None:
            transcript, self._transcript = self._transcript, None
            await self.emit(event)
            await self.conn.outbox.send(attrs.evolve(transcript, response_id=event.response_id))
            return
        if t is uamp.ResponseCreated and self._reply_to:
            event = uamp.ResponseCreated(
                response_id=event.response_id, session_id=self.id, reply_to=self._reply_to
            )
        elif t is uamp.ToolCall:
            # Registered before the event can reach the client, so a fast tool.result is
            # never reported as unknown.
            self._results[event.call_id] = None
        elif t is uamp.ResponseDone and self._signing is not None:
            signer, frame, hasher = self._signing
            event = attrs.evolve(
                event,
                signature=signer.sign(
                    request_bytes=frame,
                    response_hash=hasher.hexdigest(),
                    audience=self.principal.sub if self.principal is not None else None,
                    response_id=event.response_id,
                ),
            )
        elif t is uamp.PaymentRequired:
            # Registered before the client can see it, so a fast payment.submit is not lost.
            self._payment_for = event.response_id
            self._submitted = None
        elif t is uamp.PaymentAccepted:
            self._payment_for = None  # negotiated: later submissions only set the session token
            if self.conn.sticky_payments and self._trying:
                self.payment_token = self._trying  # the accepted token pays for later turns too
            self._trying = None
        await self.conn.outbox.send(event)

    async def wait_payment(self, err: PaymentError) -> str:
        """The next token submitted for the response that emitted ``payment.required``
        (``Context.wait_payment``); the run loop verifies it and bounds the wait."""
        while self._submitted is None:
            self._payment_wakeup = trio.Event()
            await self._payment_wakeup.wait()
        token, self._submitted = self._submitted, None
        self._trying = token
        return token

    async def wait_tool_results(
        self, calls: list[uamp.ToolCallInfo]
    ) -> dict[str, uamp.ToolResultInfo]:
        ids = [c.id for c in calls]
        try:
            while any(self._results.get(i) is None for i in ids):
                self._wakeup = trio.Event()
                await self._wakeup.wait()
            return {i: r for i in ids if (r := self._results[i]) is not None}
        finally:
            for i in ids:
                self._results.pop(i, None)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        runtime = self.conn.runtime
        runtime.stats.sessions += 1
        runtime.stats.sessions_open += 1
        agent = self.state.agent
        try:
            with self.scope:
                task_status.started()
                if self.pending_create is not None and not await self._authenticate_create():
                    return
                if agent.has_hooks("on_connection"):
                    await agent.run_hooks("on_connection", self.state)
                async for turn in self._turns_recv:
                    self.queued -= 1
                    await self._run_turn(turn)
        finally:
            runtime.stats.sessions_open -= 1
            self.conn.sessions.pop(self.id, None)
            with trio.CancelScope(shield=True), trio.move_on_after(runtime.config.cleanup_timeout):
                if agent.has_hooks("on_disconnect") and not self.refused:
                    await agent.run_hooks("on_disconnect", self.state)
                if self.scope.cancel_called:
                    await self.conn.outbox.send(
                        uamp.SessionEnd(session_id=self.id, reason=self.end_reason)
                    )

    # -- auth (§10) ---------------------------------------------------------------------------

    async def authenticate(self, token: str | None) -> Principal | None:
        """Verify ``token`` for this session's agent, and that it holds the scopes the agent's
        ``/uamp`` endpoint demands (AuthError when refused)."""
        auth = AuthService.of(self.conn.runtime)
        if auth is None:
            return None
        base = self.conn.metadata.get("base_url", "")
        principal = await auth.authenticate(self.state.agent.name, token, base)
        scopes = uamp_endpoint_scopes(self.state.agent)
        if scopes:
            # Also on the unpinned /uamp, where the agent is chosen after the handshake.
            if principal is None:
                raise AuthError("missing_token", f"agent requires scopes: {' '.join(scopes)}")
            require_scopes(principal, scopes)
        return principal

    def _set_principal(self, token: str | None, principal: Principal | None) -> None:
        self.token, self.principal = token, principal
        if principal is not None:
            self.state.metadata["principal"] = principal
            self.state.metadata["sub"] = principal.sub

    async def _authenticate_create(self) -> bool:
        """Verify the session.create token, then confirm the session (or refuse it)."""
        assert self.pending_create is not None
        events, reply_to = self.pending_create
        self.pending_create = None
        try:
            self._set_principal(self.token, await self.authenticate(self.token))
        except AuthError as err:
            self.refused = True
            self.conn.sessions.pop(self.id, None)
            self.conn.runtime.stats.errors += 1
            await self.conn.outbox.send(
                uamp.SessionError(error=_session_refusal(err), reply_to=reply_to)
            )
            return False
        for event in events:
            await self.conn.outbox.send(event)
        return True

    async def refresh_token(self, token: str, reply_to: str | None) -> None:
        """Verify a ``session.update`` token; keep the old one if it is refused.

        The reader counted it in :attr:`auth_pending` before starting this task.
        """
        try:
            try:
                principal = await self.authenticate(token)
            except AuthError as err:
                self.conn.runtime.stats.errors += 1
                await self.conn.outbox.send(
                    uamp.SessionError(
                        session_id=self.id, error=_session_refusal(err), reply_to=reply_to
                    )
                )
            else:
                self._set_principal(token, principal)
        finally:
            self.auth_pending -= 1
            if self.auth_pending == 0 and self.auth_settled is not None:
                self.auth_settled.set()

    async def _input_allowed(self, turn: _Turn) -> bool:
        """Wait for pending token checks, then refuse the input if the token has expired."""
        while self.auth_pending and self.auth_settled is not None:
            await self.auth_settled.wait()
        auth = AuthService.of(self.conn.runtime)
        if auth is None or self.principal is None or not self.principal.is_expired(auth.now()):
            return True
        self.conn.runtime.stats.errors += 1
        err = AuthError("token_expired", "the session token has expired; send session.update")
        await self.conn.outbox.send(
            uamp.SessionError(session_id=self.id, error=uamp_error(err), reply_to=turn.reply_to)
        )
        return False

    async def _transcribe(self, turn: _Turn, audio: _Audio) -> Message | None:
        """Run the ``transcribe`` hooks; the user message, or None after a response.error."""
        agent = self.state.agent
        try:
            text = await agent.run_hooks("transcribe", self.state, audio.audio, audio.format)
        except Exception as exc:  # a failing hook fails this input only (Cancelled passes)
            log.exception("transcribe hook of agent %r failed", agent.name)
            code, message = "agent_error", f"transcription failed: {type(exc).__name__}: {exc}"
        else:
            if isinstance(text, str):
                content: str | list[uamp.ContentItem] = text
                if audio.media:
                    content = [*audio.media, uamp.TextContent(text)] if text else audio.media
                self._transcript = uamp.TranscriptDone(
                    transcript=text, role="user", content_id=audio.content_id, session_id=self.id
                )
                return Message(role="user", content=content)
            code = "unsupported_modality"
            message = (
                f"agent {agent.name!r} does not accept audio input (no transcribe hook handled it)"
                if text is None
                else f"transcribe hook returned {type(text).__name__}, expected str"
            )
        runtime = self.conn.runtime
        runtime.stats.errors += 1
        rid = runtime.ids.new("resp")
        await self.conn.outbox.send(
            uamp.ResponseCreated(response_id=rid, session_id=self.id, reply_to=turn.reply_to)
        )
        await self.conn.outbox.send(
            uamp.ResponseError(
                response_id=rid, session_id=self.id, error=uamp.ErrorInfo(code, message)
            )
        )
        return None

    def _enter_turn_metadata(self, context: dict[str, Any] | None) -> dict[str, Any]:
        """Apply the connection's ``turn_metadata`` for this turn; the entries it replaced."""
        hook = self.conn.turn_metadata
        if hook is None:
            return {}
        try:
            updates = dict(hook(context))
        except Exception:  # fail safe: the turn runs without the hook's entries
            log.exception("turn_metadata hook failed; the turn runs without its entries")
            updates = {}
        meta = self.state.metadata
        saved: dict[str, Any] = {}
        for key, value in updates.items():
            saved.setdefault(key, meta.get(key, _ABSENT))
            if value is None:
                meta.pop(key, None)
            else:
                meta[key] = value
        return saved

    def _exit_turn_metadata(self, saved: dict[str, Any]) -> None:
        meta = self.state.metadata
        for key, value in saved.items():
            if value is _ABSENT:
                meta.pop(key, None)
            else:
                meta[key] = value

    async def _run_turn(self, turn: _Turn) -> None:
        state = self.state
        if not await self._input_allowed(turn):
            return
        if turn.audio is not None:
            turn.message = await self._transcribe(turn, turn.audio)
            if turn.message is None:
                return
            if not turn.respond and self._transcript is not None:
                # No response to carry it: transcript.done goes out alone, without response_id.
                transcript, self._transcript = self._transcript, None
                await self.conn.outbox.send(transcript)
        if turn.messages is not None:
            state.messages[:] = turn.messages
        if turn.message is not None:
            last = state.messages[-1] if state.messages else None
            duplicate = (
                turn.messages is not None
                and last is not None
                and last.role == "user"
                and turn.message.role == "user"
                and last.content == turn.message.content
            )
            if not duplicate:
                state.messages.append(turn.message)
        if not turn.respond:
            # Its per-turn fields go to the response the next input (or response.create) starts.
            if turn.context is not None:
                self._carried_context = turn.context
            if turn.payment_token:
                self._carried_payment_token = turn.payment_token
            return
        context = turn.context if turn.context is not None else self._carried_context
        turn_token = turn.payment_token or self._carried_payment_token
        self._carried_context = self._carried_payment_token = None
        runtime = self.conn.runtime
        rid = runtime.ids.new("resp")
        ctx = Context(
            session=state,
            response_id=rid,
            emit=self.emit,
            config=runtime.config,
            ids=runtime.ids,
            session_id=self.id,
            client_tool_mode="wait",
            wait_tool_results=self.wait_tool_results,
            instructions=turn.instructions,
            client_tools=turn.tools,
            payments=PaymentsService.of(runtime),
            # §0.2, first match wins: the turn's own token, then the session's.
            payment_token=turn_token or self.payment_token,
            wait_payment=self.wait_payment,
            context=context,
            text_sink=partial(self.emit_text, rid),
        )
        self._reply_to = turn.reply_to
        auth = AuthService.of(runtime)
        signer = (
            auth.signer(state.agent.name, self.conn.metadata.get("base_url", "")) if auth else None
        )
        self._signing = (
            (signer, (turn.frame or "").encode("utf-8"), ResponseHasher()) if signer else None
        )
        runtime.stats.responses += 1
        terminal: Any = None
        saved = self._enter_turn_metadata(context)
        with trio.CancelScope() as scope:
            self.running = (rid, scope)
            try:
                terminal = await run_response(ctx)
            finally:
                self.running = None
                self._signing = None
                self._results.clear()
                self._payment_for = self._submitted = self._trying = None
                self._exit_turn_metadata(saved)
                if terminal is None:  # cancelled: by response.cancel, session.end or the socket
                    runtime.stats.responses_cancelled += 1
                elif isinstance(terminal, uamp.ResponseError):
                    runtime.stats.responses_failed += 1


class UampConnection(WebSocketConnection):
    """One UAMP WebSocket: the reader and the sessions (lifecycle in :class:`WebSocketConnection`).

    Args:
        runtime: the server's runtime.
        send_text: ``await send_text(frame)`` writes one text frame (the outbox's only writer).
        agent: the agent of a per-agent socket, or the default agent (None: every
            ``session.create`` must name one).
        pinned: sessions may only address ``agent``.
        metadata: copied into every session's ``session.metadata`` (``headers``, ``client``,
            ``base_url``…).
        max_input_audio: bound on one session's accumulated ``input.audio`` (decoded bytes).
        default_token: the credential of the handshake (§0.2: ``Authorization: Bearer`` or
            ``?token=``), the ``token`` of every ``session.create`` that carries none; the
            session task verifies it for the session's agent like any session token.
        sticky_payments: whether a token submitted with ``payment.submit`` for a waiting
            response also stays the session's payment token for later turns once accepted
            (what one client wants). False (the PortalConnect daemon, where one session
            serves every caller of a hub): it pays for that response only.
        turn_metadata: per-turn ``session.metadata`` entries derived from the turn's
            ``input.text.context`` (:data:`TurnMetadata`).
        send_texts: writes several frames at once (the server's ``SEND_TEXTS`` extension).
    """

    name = "UAMP"

    def __init__(
        self,
        runtime: Runtime,
        send_text: Any,
        *,
        agent: Agent | None,
        pinned: bool,
        metadata: dict[str, Any] | None = None,
        max_input_audio: int = MAX_INPUT_AUDIO,
        default_token: str | None = None,
        sticky_payments: bool = True,
        turn_metadata: TurnMetadata | None = None,
        send_texts: SendTexts | None = None,
    ) -> None:
        super().__init__(runtime, send_text, runtime.encoder.encode_text, send_texts=send_texts)
        self.agent = agent
        self.max_input_audio = max_input_audio
        self.pinned = pinned
        self.metadata = metadata or {}
        self.default_token = default_token
        self.sticky_payments = sticky_payments
        self.turn_metadata = turn_metadata
        self.sessions: dict[str, UampSession] = {}
        self._defaults: dict[str, Any] = {}
        self._frame: str | None = None  # the frame being dispatched (signed responses)

    # -- replies ----------------------------------------------------------------------------

    def _error(
        self, code: str, message: str, *, reply_to: str | None = None, sid: str | None = None
    ) -> None:
        self.runtime.stats.errors += 1
        self.reply(
            uamp.Error(
                error=uamp.ErrorInfo(code=code, message=message), reply_to=reply_to, session_id=sid
            )
        )

    # -- reader -------------------------------------------------------------------------------

    def handle_frame(self, message: dict[str, Any]) -> None:
        """Handle one ``websocket.receive`` ASGI message."""
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            if len(data) > self.runtime.config.max_message_size:
                self._too_large(len(data))
                return
            self._error(
                "unsupported_frame", "binary frames are not supported; send JSON text frames"
            )
            return
        if len(text) > self.runtime.config.max_message_size:
            self._too_large(len(text))
            return
        try:
            event = uamp.decode_client(text)
        except uamp.DecodeError as exc:
            self._error(exc.code, exc.message, reply_to=exc.event_id)
            return
        self._frame = text
        try:
            self.dispatch(event)
        finally:
            self._frame = None

    def _too_large(self, size: int) -> None:
        limit = self.runtime.config.max_message_size
        self._error(
            "message_too_large", f"frame of {size} bytes exceeds the limit of {limit} bytes"
        )
        self.close(1009, "message too large")

    def _session_for(self, event: Any) -> UampSession | None:
        sid = getattr(event, "session_id", None)
        rid = getattr(event, "event_id", None)
        if sid is not None:
            session = self.sessions.get(sid)
            if session is None:
                self._error("unknown_session", f"no open session {sid!r}", reply_to=rid, sid=sid)
            return session
        if len(self.sessions) == 1:
            return next(iter(self.sessions.values()))
        if not self.sessions:
            self._error(
                "session_required", f"send session.create before {event.type!r}", reply_to=rid
            )
        else:
            self._error(
                "session_id_required",
                f"{len(self.sessions)} sessions are open; {event.type!r} needs a session_id",
                reply_to=rid,
            )
        return None

    def dispatch(self, event: Any) -> None:
        """Route one decoded client event (never blocks)."""
        kind = event.type
        if kind == "ping":
            self.reply(uamp.Pong(reply_to=event.event_id, session_id=event.session_id))
            return
        if kind in ("pong", "client.capabilities"):
            return
        if kind == "capabilities.query":
            session = self.sessions.get(event.session_id or "") if event.session_id else None
            agent = session.state.agent if session else self.agent
            if agent is None and len(self.sessions) == 1:
                agent = next(iter(self.sessions.values())).state.agent
            if agent is None:
                caps: dict[str, Any] = {
                    "id": "trioagents",
                    "provider": "trioagents",
                    "agents": sorted(self.runtime.agents),
                }
            else:
                caps = agent.capabilities()
            self.reply(
                uamp.Capabilities(
                    capabilities=caps, reply_to=event.event_id, session_id=event.session_id
                )
            )
            return
        if kind == "session.create":
            self._create_session(event)
            return
        if isinstance(event, uamp.UnknownEvent):
            self._error(
                "unsupported_event", f"unknown event type {kind!r}", reply_to=event.event_id
            )
            return
        if kind == "session.update" and event.session_id is None and len(self.sessions) > 1:
            self._defaults.update(event.session or {})
            return
        session = self._session_for(event)
        if session is None:
            return
        handler = getattr(self, "_on_" + kind.replace(".", "_"))
        handler(session, event)

    def _create_session(self, ev: uamp.SessionCreate) -> None:
        cfg = dict(self._defaults)
        cfg.update(ev.session or {})
        name = ev.agent or cfg.get("agent")
        major = str(ev.uamp_version).split(".")[0]
        reply_to = ev.event_id

        def refuse(code: str, message: str, details: dict[str, Any] | None = None) -> None:
            self.reply(
                uamp.SessionError(
                    error=uamp.ErrorInfo(code=code, message=message, details=details),
                    reply_to=reply_to,
                )
            )

        if major != "1":
            refuse(
                "version_mismatch",
                f"UAMP {ev.uamp_version} is not supported",
                {"supported": ["1.0"]},
            )
            return
        if self.pinned:
            agent = self.agent if name in (None, self.agent.name if self.agent else None) else None
        else:
            # The socket's agent (`/uamp?agent=`, else the default) when none is named.
            agent = self.runtime.resolve(name) if name else self.agent
        if agent is None:
            if name is None:
                refuse("agent_not_found", "session.create needs 'agent' on this endpoint")
            else:
                refuse("agent_not_found", f"no agent named {name!r} here")
            return
        if len(self.sessions) >= self.runtime.config.max_sessions_per_socket:
            refuse(
                "too_many_sessions",
                f"at most {self.runtime.config.max_sessions_per_socket} sessions per socket",
            )
            return
        auth = AuthService.of(self.runtime)
        scopes = uamp_endpoint_scopes(agent)
        if scopes and auth is None:
            # Nobody can prove a scope without an auth service: fail closed, as the server
            # does for the agent's own /agents/{name}/uamp.
            refuse(
                "unauthorized",
                f"agent {agent.name!r} requires scopes: {' '.join(scopes)}",
                {"reason": "missing_token"},
            )
            return
        sid = self.runtime.ids.new("sess")
        session = UampSession(self, sid, agent, cfg)
        token = ev.token or cfg.get("token")
        session.token = token if isinstance(token, str) and token else self.default_token
        session.payment_token = ev.payment_token or cfg.get("payment_token")
        self.sessions[sid] = session
        created = [
            uamp.SessionCreated(
                session_id=sid,
                agent=agent.name,
                chat=ev.chat or cfg.get("chat"),
                session=uamp.SessionInfo(
                    id=sid,
                    status="active",
                    config=_public_config(cfg),
                    created_at=self.runtime.clock.now_s(),
                ),
                reply_to=reply_to,
            ),
            uamp.Capabilities(capabilities=agent.capabilities(), session_id=sid),
        ]
        if auth is not None:
            # Verified by the session task, which confirms (or refuses) before any turn.
            session.pending_create = (created, reply_to)
        assert self._nursery is not None
        self._nursery.start_soon(session.run)
        if session.pending_create is None:
            for event in created:
                self.reply(event)

    # -- session-scoped events ---------------------------------------------------------------

    def _on_session_update(self, s: UampSession, ev: uamp.SessionUpdate) -> None:
        cfg = ev.session or {}
        if "instructions" in cfg:
            s.state.instructions = cfg["instructions"]
        if "tools" in cfg:
            s.state.client_tools = normalize_tools(cfg["tools"])
        if "extensions" in cfg and isinstance(cfg["extensions"], dict):
            ext = cfg["extensions"]
            s.auto_respond = bool(ext.get("auto_respond", s.auto_respond))
            s.concurrency = ext.get("concurrency", s.concurrency)
        s.config.update(cfg)
        token = ev.token or cfg.get("token")
        if token and AuthService.of(self.runtime) is not None:
            s.auth_pending += 1
            if s.auth_pending == 1:
                s.auth_settled = trio.Event()
            self.start_soon(s.refresh_token, token, ev.event_id)
        elif token:
            s.token = token
        if ev.payment_token or cfg.get("payment_token"):
            s.payment_token = ev.payment_token or cfg.get("payment_token")
        self.reply(
            uamp.SessionUpdated(
                session_id=s.id,
                session=uamp.SessionInfo(id=s.id, status="active", config=_public_config(s.config)),
                reply_to=ev.event_id,
            )
        )

    def _on_session_end(self, s: UampSession, ev: uamp.SessionEnd) -> None:
        self.sessions.pop(s.id, None)
        s.end("client_request")

    def _input(
        self,
        s: UampSession,
        msg: Message | None,
        respond: bool,
        ev: Any,
        messages: list[Message] | None = None,
        audio: _Audio | None = None,
        context: dict[str, Any] | None = None,
        payment_token: str | None = None,
    ) -> None:
        s.bindable = False
        if respond and s.concurrency == "latest":
            s.cancel_response(None)
        turn = _Turn(
            message=msg,
            respond=respond,
            reply_to=ev.event_id,
            messages=messages,
            audio=audio,
            frame=self._frame,
            context=context,
            payment_token=payment_token,
        )
        if not s.enqueue(turn):
            self._error(
                "rate_limited",
                f"session {s.id} already has {self.runtime.config.turn_queue_size} inputs queued",
                reply_to=ev.event_id,
                sid=s.id,
            )
            return
        if respond:
            s.bindable = True

    def _on_input_text(self, s: UampSession, ev: uamp.InputText) -> None:
        messages = None
        if ev.messages is not None:
            try:
                messages = messages_from_openai(ev.messages)
            except RemoteProtocolError as exc:
                self._error(
                    "invalid_event", f"invalid 'messages': {exc}", reply_to=ev.event_id, sid=s.id
                )
                return
        content: str | list[uamp.ContentItem] = ev.text
        if s.media and ev.role == "user":
            content = [*s.media, uamp.TextContent(ev.text)] if ev.text else list(s.media)
            s.media.clear()
        respond = s.auto_respond and ev.role == "user"
        # context and payment_token belong to this turn only (§0.2, §1.2).
        self._input(
            s,
            Message(role=ev.role, content=content),
            respond,
            ev,
            messages,
            context=ev.context,
            payment_token=ev.payment_token,
        )

    def _on_input_audio(self, s: UampSession, ev: uamp.InputAudio) -> None:
        try:
            chunk = base64.b64decode(ev.audio, validate=True)
        except (binascii.Error, ValueError):
            self._error(
                "invalid_event",
                "input.audio: 'audio' must be base64",
                reply_to=ev.event_id,
                sid=s.id,
            )
            return
        hooked = s.state.agent.has_hooks("transcribe")
        if hooked:
            if s.audio_bytes + len(chunk) > self.max_input_audio:
                _drop_audio(s)  # the utterance is broken: the next chunk starts a new one
                self.runtime.stats.errors += 1
                self.reply(
                    uamp.Error(
                        error=uamp.ErrorInfo(
                            code="invalid_event",
                            message=f"input.audio: the accumulated audio exceeds "
                            f"{self.max_input_audio} bytes; the buffered audio was dropped",
                            details={"reason": "audio_too_large", "limit": self.max_input_audio},
                        ),
                        reply_to=ev.event_id,
                        session_id=s.id,
                    )
                )
                return
            s.audio.append(chunk)
            s.audio_bytes += len(chunk)
            s.audio_format = s.audio_format or ev.format
            s.audio_content_id = s.audio_content_id or ev.content_id
        if ev.is_final is False:
            return
        if hooked:
            audio = b"".join(s.audio)
            fmt = s.audio_format or s.config.get("input_audio_format")
            content_id = s.audio_content_id
            _drop_audio(s)
            if not audio:
                self._error(
                    "invalid_event",
                    "input.audio: no audio to transcribe (every chunk was empty)",
                    reply_to=ev.event_id,
                    sid=s.id,
                )
                return
            media, s.media = s.media, []
            utterance = _Audio(
                audio=audio,
                format=fmt if isinstance(fmt, str) else "pcm16",
                media=media,
                content_id=content_id,
            )
            self._input(s, None, s.auto_respond, ev, audio=utterance)
            return
        # No transcribe hook: a text-only agent answers with the documented error (§1.2).
        rid = self.runtime.ids.new("resp")
        self.reply(uamp.ResponseCreated(response_id=rid, session_id=s.id, reply_to=ev.event_id))
        self.reply(
            uamp.ResponseError(
                response_id=rid,
                session_id=s.id,
                error=uamp.ErrorInfo(
                    code="unsupported_modality",
                    message=f"agent {s.state.agent.name!r} does not accept audio input",
                ),
            )
        )

    def _on_input_image(self, s: UampSession, ev: uamp.InputImage) -> None:
        s.media.append(
            uamp.ImageContent(
                image=ev.image, format=ev.format, detail=ev.detail, content_id=ev.content_id
            )
        )

    def _on_input_video(self, s: UampSession, ev: uamp.InputVideo) -> None:
        s.media.append(
            uamp.VideoContent(video=ev.video, format=ev.format, content_id=ev.content_id)
        )

    def _on_input_file(self, s: UampSession, ev: uamp.InputFile) -> None:
        s.media.append(
            uamp.FileContent(
                file=ev.file, filename=ev.filename, mime_type=ev.mime_type, content_id=ev.content_id
            )
        )

    def _on_input_typing(self, s: UampSession, ev: uamp.InputTyping) -> None:
        return

    def _on_response_create(self, s: UampSession, ev: uamp.ResponseCreate) -> None:
        if s.bindable:
            s.bindable = False  # bound to the response the input already started (§1.4)
            return
        if s.running is not None or s.queued:
            self._error(
                "response_in_progress",
                "a response is already running in this session",
                reply_to=ev.event_id,
                sid=s.id,
            )
            return
        # response.instructions / response.tools apply to this response only.
        opts = ev.response or {}
        turn = _Turn(
            message=None,
            respond=True,
            reply_to=ev.event_id,
            instructions=opts.get("instructions"),
            tools=normalize_tools(opts["tools"]) if "tools" in opts else None,
            frame=self._frame,
        )
        if not s.enqueue(turn):
            self._error("rate_limited", "turn queue full", reply_to=ev.event_id, sid=s.id)

    def _on_response_cancel(self, s: UampSession, ev: uamp.ResponseCancel) -> None:
        if not s.cancel_response(ev.response_id):
            self._error(
                "no_active_response", "no response is running", reply_to=ev.event_id, sid=s.id
            )

    def _on_tool_result(self, s: UampSession, ev: uamp.ToolResult) -> None:
        if not s.deliver_result(ev):
            self._error(
                "unknown_call_id",
                f"no pending tool call {ev.call_id!r}",
                reply_to=ev.event_id,
                sid=s.id,
            )

    def _on_payment_submit(self, s: UampSession, ev: uamp.PaymentSubmit) -> None:
        waiting = s.deliver_payment(ev)
        if not ev.payment.token:
            self.runtime.stats.errors += 1
            self.reply(
                uamp.PaymentError(
                    code="token_invalid",
                    message="payment.submit needs payment.token",
                    can_retry=waiting,
                    session_id=s.id,
                )
            )

    # -- lifetime -------------------------------------------------------------------------------

    def on_shutdown(self) -> None:
        """The server is draining: end every session (reason ``shutdown``), then close 1001."""
        for s in list(self.sessions.values()):
            s.end("shutdown")
        super().on_shutdown()


def _session_refusal(err: AuthError) -> uamp.ErrorInfo:
    """The ``error`` of a ``session.error`` refusing a credential: always ``unauthorized``
    (§1.3 has no ``forbidden``); ``details.reason`` tells why (``insufficient_scope`` with the
    required ``scopes``)."""
    info = uamp_error(err)
    if err.reason != "insufficient_scope":
        return info
    return uamp.ErrorInfo(
        code="unauthorized",
        message=err.message,
        details={"reason": err.reason, "scopes": list(err.scopes)},
    )


def _drop_audio(s: UampSession) -> None:
    s.audio.clear()
    s.audio_bytes = 0
    s.audio_format = s.audio_content_id = None


def _public_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if k not in ("token", "payment_token")}


async def serve_uamp_socket(
    ws: WebSocket,
    agent: Agent | None,
    *,
    pinned: bool,
    max_input_audio: int = MAX_INPUT_AUDIO,
) -> None:
    """Serve one UAMP WebSocket.

    The handshake credential (§0.2: ``Authorization: Bearer``, else ``?token=``) is the default
    ``token`` of every ``session.create`` that carries none. With an
    :class:`~trioagents.auth.AuthService` on the server and ``agent`` known, a presented
    credential is verified for ``agent`` before the handshake completes: a bad one refuses it
    with 401 (+ ``WWW-Authenticate``) and the socket never opens (none is fine: sessions may
    bring their own). Without ``agent`` (``/uamp`` on a multi-agent server, no ``?agent=``),
    its audience is the agent each ``session.create`` picks, so it is verified there, per
    session (``session.error{unauthorized}``).

    Args:
        ws: the Starlette WebSocket (not yet accepted).
        agent: the agent of a per-agent route, or the default agent on ``/uamp``.
        pinned: sessions may only address ``agent`` (per-agent route).
        max_input_audio: bound on one session's accumulated ``input.audio`` (decoded bytes).

    Cancellation cancels every session of the socket and closes it.
    """
    runtime = Runtime.of(ws)
    token = bearer_token(ws.headers, ws.query_params)
    auth = AuthService.of(runtime)
    # The server's endpoint-scope check verified it already for this agent (ws.state).
    if auth is not None and token and agent is not None and not _verified(ws):
        try:
            await auth.authenticate(agent.name, token, base_url_of(ws.scope))
        except AuthError as err:
            await ws.send_denial_response(denial_response(err))
            return
    await ws.accept()
    send_text, send_texts = text_senders(ws)
    conn = UampConnection(
        runtime,
        send_text,
        send_texts=send_texts,
        agent=agent,
        pinned=pinned,
        metadata={
            "headers": dict(ws.headers),
            "client": ws.client,
            "base_url": base_url_of(ws.scope),
        },
        max_input_audio=max_input_audio,
        default_token=token,
    )
    await conn.serve(ws._receive)
    if conn.close_code is not None:
        await send_close(
            ws._send, conn.close_code, conn.close_reason, runtime.config.cleanup_timeout
        )


def _verified(ws: WebSocket) -> bool:
    """Whether the server authenticated this handshake already (a scoped endpoint)."""
    return getattr(ws.state, "principal", None) is not None


class UampTransport(Skill):
    """Serves the agent over UAMP at ``/agents/{name}/uamp``.

    Args:
        max_input_audio: bound on one session's accumulated ``input.audio`` (decoded bytes);
            beyond it the buffered audio is dropped and the chunk answered with
            ``error{invalid_event, details{reason:"audio_too_large"}}``.
    """

    def __init__(self, *, max_input_audio: int = MAX_INPUT_AUDIO) -> None:
        self.max_input_audio = max_input_audio

    @websocket("/uamp")
    async def uamp_socket(self, ws: WebSocket) -> None:
        """The per-agent UAMP endpoint."""
        await serve_uamp_socket(ws, self.agent, pinned=True, max_input_audio=self.max_input_audio)
