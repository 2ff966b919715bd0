"""OpenAI Realtime over WebSocket (PROTOCOLS.md §7), GA and beta, served to real SDK clients.

Theory of operation
-------------------
One WebSocket is one Realtime session: a conversation of items, a session configuration, an
input audio buffer and **at most one active response**::

    connection nursery
    ├── writer (Outbox.run): the only task that writes frames (text deltas of one item merged
    │   while the client is behind)
    └── connection scope
        ├── shutdown watcher: closes with 1001 when the server drains
        ├── one task per committed audio buffer running the agent's ``transcribe`` hooks
        └── the active response (run_response, client_tool_mode="return") in its own scope
            └── the model stream and agent tools (owned by the response)

The reader (the handler's own task) decodes frames and never waits on the response: replies go
through the outbox's control lane, ``response.create`` starts the response task in the
connection nursery, ``response.cancel`` cancels the response scope (the model stream closes,
tools are cancelled) and ``run_response`` emits ``response.cancelled``, rendered as
``response.output_item.done{incomplete}`` + ``response.done{status:"cancelled"}``.

Session tools are client functions: the response ends with ``function_call`` items and the
client answers with ``conversation.item.create{function_call_output}`` and a new
``response.create``. The conversation (items) is the source of truth: before each response the
agent's messages are rebuilt from it; after each response its output items are added to it
(agent tool exchanges are kept as hidden entries, in order). The response slot is released and
the items are added *before* ``response.done`` is queued, so a client reacting to
``response.done`` at once never sees ``conversation_already_has_active_response``.

Audio input needs a ``transcribe`` hook (without one, ``input_audio_buffer.commit`` answers
``error{audio_not_supported}``). A commit adds a user item with an ``input_audio`` part whose
``transcript`` is null and starts the hook in its own task; the transcript is stored in the
item (the user text the model sees) before ``conversation.item.input_audio_transcription.
completed`` is queued, or the item keeps no text and ``….failed`` is sent. A ``response.create``
waits for the transcriptions committed before it, so the model never sees a half-made turn.

Closing the socket cancels the active response and running transcriptions; the handler returns
only after they finished.
"""

from __future__ import annotations

import logging
from typing import Any

import attrs
import orjson
import trio
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket

from .. import uamp
from ..agent import Agent, Context, Message, Session, Skill, run_response, websocket
from ..auth import (
    AuthError,
    AuthService,
    Principal,
    ResponseHasher,
    ResponseSigner,
    base_url_of,
    bearer_token,
    denial_response,
)
from ..payments import PaymentError, PaymentsService
from ..protocols.realtime import (
    AUDIO_BUFFER_LIMIT,
    ClientEvent,
    Conversation,
    Flavour,
    RealtimeCodec,
    RealtimeError,
    ResponseRenderer,
    SessionConfig,
    audio_seconds,
    choose_flavour,
    decode_audio,
    decode_client_event,
    input_audio_item,
    merge_realtime_deltas,
    normalize_item,
    response_tools,
)
from ._runtime import Runtime
from ._wsconn import SendTexts, WebSocketConnection, send_close, text_senders
from .completions import openai_error

__all__ = ["RealtimeConnection", "RealtimeTransport", "serve_realtime_socket"]

log = logging.getLogger("trioagents.transports.realtime")

_TERMINAL = (uamp.ResponseDone, uamp.ResponseError, uamp.ResponseCancelled)


def _render(event: dict[str, Any]) -> str:
    return orjson.dumps(event).decode()


@attrs.frozen
class _ResponseOptions:
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    transcripts: tuple[trio.Event, ...] = ()  # transcriptions to wait for before the response
    frame: str = ""  # the exact frame that started the response (signed responses, §10)


class RealtimeConnection(WebSocketConnection):
    """One Realtime WebSocket: the session, its conversation, its response and its outbox.

    Args:
        runtime: the server runtime.
        agent: the agent answering.
        flavour: GA or beta event naming.
        send_text: writes one text frame.
        metadata: transport facts for ``Session.metadata`` (headers, client).
        max_audio_buffer: the input audio buffer bound in decoded bytes.
        principal: the caller verified at the handshake (§10), if any.
        signer: signs each ``response.done`` (a signing agent, §10), if any.
        send_texts: writes several frames at once (the server's ``SEND_TEXTS`` extension).
    """

    def __init__(
        self,
        runtime: Runtime,
        agent: Agent,
        flavour: Flavour,
        send_text: Any,
        *,
        metadata: dict[str, Any] | None = None,
        max_audio_buffer: int = AUDIO_BUFFER_LIMIT,
        principal: Principal | None = None,
        signer: ResponseSigner | None = None,
        send_texts: SendTexts | None = None,
    ) -> None:
        super().__init__(
            runtime, send_text, _render, merge=merge_realtime_deltas, send_texts=send_texts
        )
        self.principal = principal
        self.signer = signer
        self._frame = ""  # the text frame being dispatched
        self.agent = agent
        self.flavour = flavour
        sid = runtime.ids.new("sess")
        self.codec = RealtimeCodec(flavour, runtime.ids.new, sid, agent.name)
        self.config = SessionConfig()
        self.conversation = Conversation()
        self.session = Session(
            id=sid,
            agent=agent,
            metadata={"transport": "realtime", "flavour": flavour.value, **(metadata or {})},
        )
        if principal is not None:
            self.session.metadata["principal"] = principal
            self.session.metadata["sub"] = principal.sub
        self.max_audio_buffer = max_audio_buffer
        self.audio: list[bytes] = []
        self.audio_bytes = 0
        self.active: tuple[str, trio.CancelScope] | None = None
        self.transcribing: dict[str, trio.Event] = {}
        """Audio items whose ``transcribe`` hook is running, by item id."""
        # In-band payment (§9.3): the response waiting for a token, and the latest token
        # submitted for it (a newer submission replaces an unread one).
        self._payment_for: str | None = None
        self._submitted: str | None = None
        self._payment_wakeup = trio.Event()

    # -- replies -------------------------------------------------------------------------------

    def _error(self, exc: RealtimeError) -> None:
        self.runtime.stats.errors += 1
        self.reply(self.codec.from_exception(exc))

    # -- reader --------------------------------------------------------------------------------

    def handle_frame(self, message: dict[str, Any]) -> None:
        """Handle one ``websocket.receive`` ASGI message (never blocks)."""
        limit = self.runtime.config.max_message_size
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            if len(data) > limit:
                self._too_large(len(data))
                return
            self._error(
                RealtimeError(
                    "unsupported_frame", "binary frames are not supported; send JSON text frames"
                )
            )
            return
        if len(text) > limit:
            self._too_large(len(text))
            return
        try:
            event = decode_client_event(text)
            self._frame = text
            self.dispatch(event)
        except RealtimeError as exc:
            self._error(exc)
        finally:
            self._frame = ""

    def _too_large(self, size: int) -> None:
        limit = self.runtime.config.max_message_size
        self._error(
            RealtimeError(
                "message_too_large", f"frame of {size} bytes exceeds the limit of {limit} bytes"
            )
        )
        self.close(1009, "message too large")

    def dispatch(self, ev: ClientEvent) -> None:
        """Handle one validated client event.

        Raises:
            RealtimeError: the event is refused (the caller answers with ``error``).
        """
        handler = getattr(self, "_on_" + ev.type.replace(".", "_"))
        handler(ev)

    def _on_session_update(self, ev: ClientEvent) -> None:
        session = ev.data["session"]
        candidate = attrs.evolve(
            self.config, tools=list(self.config.tools), extra=dict(self.config.extra)
        )
        candidate.update(session, ev.event_id)
        self._check_tool_names(candidate.tools, "session.tools", ev.event_id)
        token = candidate.payment_token
        if token and token != self.config.payment_token:
            self._offer_payment(token, None)
        self.config = candidate
        self.session.instructions = candidate.instructions
        self.session.client_tools = candidate.openai_tools()
        self.reply(self.codec.session_updated(candidate))

    def _check_tool_names(self, tools: list[dict[str, Any]], param: str, eid: str | None) -> None:
        agent = self.session.agent
        for t in tools:
            name = t.get("name") or t.get("function", {}).get("name")
            if name in agent.tools or name in agent.handoffs:
                raise RealtimeError(
                    "invalid_value",
                    f"client tool {name!r} has the same name as a tool of agent {agent.name!r}",
                    param=param,
                    event_id=eid,
                )

    def _on_input_audio_buffer_append(self, ev: ClientEvent) -> None:
        audio = decode_audio(ev.data["audio"], ev.event_id)
        size = len(audio)
        if self.audio_bytes + size > self.max_audio_buffer:
            raise RealtimeError(
                "input_audio_buffer_full",
                f"the input audio buffer holds at most {self.max_audio_buffer} bytes",
                param="audio",
                event_id=ev.event_id,
            )
        self.audio.append(audio)
        self.audio_bytes += size

    def _on_input_audio_buffer_commit(self, ev: ClientEvent) -> None:
        if not self.audio_bytes:
            raise RealtimeError(
                "input_audio_buffer_commit_empty",
                "the input audio buffer is empty; append audio before committing",
                event_id=ev.event_id,
            )
        agent = self.session.agent
        if not agent.has_hooks("transcribe"):
            # A text-only agent without a transcribe hook refuses audio; the buffer is dropped.
            self._clear_audio()
            raise RealtimeError(
                "audio_not_supported",
                f"agent {agent.name!r} accepts text only (no transcription); "
                "send conversation.item.create with input_text",
                event_id=ev.event_id,
            )
        audio = b"".join(self.audio)
        self._clear_audio()
        item = input_audio_item(self.runtime.ids.new("item"))
        prev = self.conversation.add(item)
        self.reply(self.codec.audio_committed(item["id"], prev))
        for out in self.codec.item_added(item, prev):
            self.reply(out)
        # The hook runs in the work nursery: the reader never waits for it. A response.create
        # that arrives meanwhile waits for it (see _respond), so the model hears the transcript.
        done = trio.Event()
        self.transcribing[item["id"]] = done
        fmt = self.config.extra.get("input_audio_format")
        assert self._nursery is not None
        self._nursery.start_soon(
            self._transcribe, item["id"], audio, fmt if isinstance(fmt, str) else "pcm16", done
        )

    async def _transcribe(self, item_id: str, audio: bytes, fmt: str, done: trio.Event) -> None:
        agent = self.session.agent
        try:
            try:
                text = await agent.run_hooks("transcribe", self.session, audio, fmt)
            except Exception as exc:  # a failing hook fails this item only (Cancelled passes)
                log.exception("transcribe hook of agent %r failed", agent.name)
                text = None
                failed: tuple[str, str] | None = (
                    "transcription_failed",
                    f"transcription failed: {type(exc).__name__}: {exc}",
                )
            else:
                failed = None
                if text is None:
                    failed = ("audio_not_supported", "no transcribe hook handled the audio")
                elif not isinstance(text, str):
                    failed = (
                        "transcription_failed",
                        f"transcribe hook returned {type(text).__name__}, expected str",
                    )
            if failed is None:
                item = self.conversation.get(item_id)  # the client may have deleted it
                if item is not None:
                    # The user text from now on. A new list: events already queued (rendered
                    # only when written) share the old one and must keep transcript null.
                    item["content"] = [{**item["content"][0], "transcript": text}]
                event = self.codec.transcription_completed(
                    item_id, text, seconds=audio_seconds(len(audio), fmt)
                )
            else:
                self.runtime.stats.errors += 1
                event = self.codec.transcription_failed(item_id, *failed)
            await self.outbox.send(event)
        finally:
            # Released only once the event is queued (send returns right after queueing it), so
            # a waiting response's response.created always follows it on the wire.
            self.transcribing.pop(item_id, None)
            done.set()

    def _clear_audio(self) -> None:
        self.audio.clear()
        self.audio_bytes = 0

    def _on_input_audio_buffer_clear(self, ev: ClientEvent) -> None:
        self._clear_audio()
        self.reply(self.codec.audio_cleared())

    def _on_conversation_item_create(self, ev: ClientEvent) -> None:
        raw: dict[str, Any] = ev.data["item"]
        eid = ev.event_id
        item = normalize_item(raw, eid)
        item_id = raw.get("id")
        if item_id is not None and (not isinstance(item_id, str) or not item_id):
            raise RealtimeError(
                "invalid_type", "'item.id' must be a string", param="item.id", event_id=eid
            )
        if item_id is not None and self.conversation.get(item_id) is not None:
            raise RealtimeError(
                "item_already_exists",
                f"the conversation already has an item {item_id!r}",
                param="item.id",
                event_id=eid,
            )
        if item["type"] == "function_call_output" and not any(
            i["type"] == "function_call" and i["call_id"] == item["call_id"]
            for i in self.conversation.items()
        ):
            raise RealtimeError(
                "invalid_value",
                f"no function_call item with call_id {item['call_id']!r} in the conversation",
                param="item.call_id",
                event_id=eid,
            )
        item = {"id": item_id or self.runtime.ids.new("item"), **item, "status": "completed"}
        try:
            prev = self.conversation.add(item, ev.data.get("previous_item_id"))
        except KeyError:
            raise RealtimeError(
                "item_not_found",
                f"previous_item_id {ev.data.get('previous_item_id')!r} names no item",
                param="previous_item_id",
                event_id=eid,
            ) from None
        for out in self.codec.item_added(item, prev):
            self.reply(out)

    def _item(self, ev: ClientEvent) -> dict[str, Any]:
        item_id: str = ev.data["item_id"]
        item = self.conversation.get(item_id)
        if item is None:
            raise RealtimeError(
                "item_not_found",
                f"the conversation has no item {item_id!r}",
                param="item_id",
                event_id=ev.event_id,
            )
        return item

    def _on_conversation_item_retrieve(self, ev: ClientEvent) -> None:
        self.reply(self.codec.item_retrieved(self._item(ev)))

    def _on_conversation_item_delete(self, ev: ClientEvent) -> None:
        item = self._item(ev)
        self.conversation.delete(item["id"])
        self.reply(self.codec.item_deleted(item["id"]))

    def _on_conversation_item_truncate(self, ev: ClientEvent) -> None:
        # Text-only: there is no audio to cut, so the item is unchanged; the request is
        # validated and confirmed as OpenAI would.
        item = self._item(ev)
        index: int = ev.data["content_index"]
        if item.get("role") != "assistant" or index >= len(item.get("content") or ()):
            raise RealtimeError(
                "invalid_value",
                "only a content part of an assistant message can be truncated",
                param="content_index",
                event_id=ev.event_id,
            )
        self.reply(self.codec.item_truncated(item["id"], index, ev.data["audio_end_ms"]))

    def _on_response_create(self, ev: ClientEvent) -> None:
        eid = ev.event_id
        if self.active is not None:
            raise RealtimeError(
                "conversation_already_has_active_response",
                f"conversation already has an active response {self.active[0]}",
                event_id=eid,
            )
        opts: dict[str, Any] = ev.data.get("response") or {}
        instructions = opts.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise RealtimeError(
                "invalid_type",
                "'response.instructions' must be a string",
                param="response.instructions",
                event_id=eid,
            )
        tools = response_tools(opts, eid)
        if tools is not None:
            self._check_tool_names(tools, "response.tools", eid)
        rid = self.runtime.ids.new("resp")
        scope = trio.CancelScope()
        self.active = (rid, scope)  # taken now: a second response.create in this batch fails
        assert self._nursery is not None
        opts_ = _ResponseOptions(
            instructions=instructions,
            tools=tools,
            transcripts=tuple(self.transcribing.values()),
            frame=self._frame,
        )
        self._nursery.start_soon(self._respond, rid, scope, opts_)

    def _on_response_cancel(self, ev: ClientEvent) -> None:
        rid = ev.data.get("response_id")
        if self.active is None or (rid and rid != self.active[0]):
            raise RealtimeError(
                "response_cancel_not_active",
                f"no active response {rid!r}" if rid else "there is no active response",
                param="response_id" if rid else None,
                event_id=ev.event_id,
            )
        self.active[1].cancel()

    def _on_payment_submit(self, ev: ClientEvent) -> None:
        # §9.3: the token becomes the session's and wakes the response waiting for one; the
        # run loop verifies it (payment.error{can_retry} or payment.accepted).
        token = (ev.data.get("payment") or {}).get("token")
        if not isinstance(token, str) or not token:
            raise RealtimeError(
                "missing_required_parameter",
                "payment.submit needs payment.token",
                param="payment.token",
                event_id=ev.event_id,
            )
        self.config.payment_token = token
        rid = ev.data.get("response_id")
        self._offer_payment(token, rid if isinstance(rid, str) else None)

    def _offer_payment(self, token: str, response_id: str | None) -> None:
        """Hand ``token`` to the response waiting for a payment (if ``response_id`` is absent
        or names it)."""
        if self._payment_for is None or (response_id and response_id != self._payment_for):
            return
        self._submitted = token
        self._payment_wakeup.set()

    async def wait_payment(self, err: PaymentError) -> str:
        """The next token submitted for the response that emitted ``payment.required``
        (``Context.wait_payment``); the run loop verifies it and bounds the wait."""
        while self._submitted is None:
            self._payment_wakeup = trio.Event()
            await self._payment_wakeup.wait()
        token, self._submitted = self._submitted, None
        return token

    # -- the response ------------------------------------------------------------------------

    def messages(self) -> list[Message]:
        """The agent's view of the conversation (rebuilt from the items before each response)."""
        out: list[Message] = []
        for item, hidden in self.conversation.entries():
            if item is None:
                out.extend(hidden)
                continue
            kind = item["type"]
            if kind == "function_call":
                call = uamp.ToolCallInfo(
                    id=item["call_id"], name=item["name"], arguments=item["arguments"]
                )
                if out and out[-1].role == "assistant":
                    out[-1] = attrs.evolve(out[-1], tool_calls=(*out[-1].tool_calls, call))
                else:
                    out.append(Message(role="assistant", content="", tool_calls=(call,)))
            elif kind == "function_call_output":
                out.append(
                    Message(role="tool", content=item["output"], tool_call_id=item["call_id"])
                )
            else:
                out.append(Message(role=item["role"], content=_content(item["content"])))
        return out

    async def _respond(self, rid: str, scope: trio.CancelScope, opts: _ResponseOptions) -> None:
        runtime = self.runtime
        state = self.session
        if opts.transcripts and not scope.cancel_called:
            # Audio committed before response.create is part of this response's input: wait
            # for its transcript. A response.cancel meanwhile cancels ``wait``; the response
            # then still runs, in a scope cancelled from the start, so the client gets
            # response.created + response.done{cancelled} for the response it asked for.
            with trio.CancelScope() as wait:
                self.active = (rid, wait)
                for done in opts.transcripts:
                    await done.wait()
            if wait.cancel_called:
                scope.cancel()
            if self.active is not None and self.active[0] == rid:
                self.active = (rid, scope)
        state.messages[:] = self.messages()
        start = len(state.messages)
        renderer = self.codec.renderer(rid)
        hasher = ResponseHasher() if self.signer is not None else None

        async def emit(event: Any) -> None:
            # The Realtime events of one UAMP event go out together or not at all: a cancel
            # lands here, before the renderer moves on, never between them (else the client
            # could see an item closed that it never saw opened). The sends themselves are
            # shielded (bounded) only so that they are not torn apart. A terminal event always
            # goes out (the terminal rule), even if a cancel raced it.
            terminal = isinstance(event, _TERMINAL)
            if not terminal:
                await trio.lowlevel.checkpoint_if_cancelled()
            if type(event) is uamp.PaymentRequired:
                # Registered before the client can see it, so a fast payment.submit is kept.
                self._payment_for, self._submitted = event.response_id, None
            elif type(event) is uamp.PaymentAccepted:
                self._payment_for = None
            if hasher is not None:
                if type(event) is uamp.ResponseDelta and type(event.delta) is uamp.TextDelta:
                    hasher.update(event.delta.text)
                elif type(event) is uamp.ResponseDone and self.signer is not None:
                    event = attrs.evolve(event, signature=self._sign(opts.frame, hasher, rid))
            out = renderer.feed(event)
            if terminal:
                self._finish(ctx, renderer, start, event)
            elif type(event) is uamp.ResponseDelta:
                runtime.stats.deltas += 1
            with trio.CancelScope(shield=True), trio.move_on_after(runtime.config.cleanup_timeout):
                for e in out:
                    await self.outbox.send(e)

        ctx = Context(
            session=state,
            response_id=rid,
            emit=emit,
            config=runtime.config,
            ids=runtime.ids,
            client_tool_mode="return",
            instructions=opts.instructions,
            client_tools=opts.tools,
            payments=PaymentsService.of(runtime),
            payment_token=self.config.payment_token,
            wait_payment=self.wait_payment,
        )
        runtime.stats.responses += 1
        try:
            with scope:
                await run_response(ctx)
        finally:
            if self._payment_for == rid:
                self._payment_for = self._submitted = None
            if self.active is not None and self.active[0] == rid:
                self.active = None

    def _sign(self, frame: str, hasher: ResponseHasher, rid: str) -> str:
        assert self.signer is not None
        return self.signer.sign(
            request_bytes=frame.encode("utf-8"),
            response_hash=hasher.hexdigest(),
            audience=self.principal.sub if self.principal is not None else None,
            response_id=rid,
        )

    def _finish(self, ctx: Context, renderer: ResponseRenderer, start: int, terminal: Any) -> None:
        # Runs before response.done is queued: the slot is free and the items are in the
        # conversation by the time the client sees it.
        if self.active is not None and self.active[0] == ctx.response_id:
            self.active = None
        if isinstance(terminal, uamp.ResponseCancelled):
            self.runtime.stats.responses_cancelled += 1
        elif isinstance(terminal, uamp.ResponseError):
            self.runtime.stats.responses_failed += 1
        returned = {c.id for c in ctx.returned_calls}
        hidden: list[Message] = []
        for m in ctx.session.messages[start:]:
            if m.role == "tool":
                hidden.append(m)
            elif m.role == "assistant":
                agent_calls = tuple(c for c in m.tool_calls if c.id not in returned)
                if agent_calls:
                    hidden.append(Message(role="assistant", content="", tool_calls=agent_calls))
        if hidden:
            self.conversation.add_hidden(hidden)
        for item in renderer.output:
            self.conversation.add(item)

    # -- lifetime ----------------------------------------------------------------------------

    async def on_open(self) -> None:
        """Run the agent's ``on_connection`` hooks before the first frame is read."""
        if self.agent.has_hooks("on_connection"):
            await self.agent.run_hooks("on_connection", self.session)

    async def serve(self, receive: Any) -> None:
        """Run the connection until the peer leaves or the server shuts down.

        ``session.created`` is sent first, unprompted. Returns only after the active response
        (if any) has finished; closing the socket cancels it.
        """
        stats = self.runtime.stats
        stats.sessions += 1
        stats.sessions_open += 1
        self.reply(self.codec.session_created(self.config))
        try:
            await super().serve(receive)
        finally:
            stats.sessions_open -= 1
            if self.agent.has_hooks("on_disconnect"):
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(self.runtime.config.cleanup_timeout),
                ):
                    await self.agent.run_hooks("on_disconnect", self.session)


def _content(parts: list[dict[str, Any]]) -> str | list[uamp.ContentItem]:
    items: list[uamp.ContentItem] = []
    media = False
    for p in parts:
        kind = p.get("type")
        if kind in ("input_text", "output_text"):
            items.append(uamp.TextContent(p["text"]))
        elif kind in ("input_audio", "output_audio"):
            if p.get("transcript"):
                items.append(uamp.TextContent(p["transcript"]))
        elif kind == "input_image":
            media = True
            items.append(uamp.ImageContent(image={"url": p["image_url"]}, detail=p.get("detail")))
    if media:
        return items
    return "".join(i.text for i in items if isinstance(i, uamp.TextContent))


async def serve_realtime_socket(
    ws: WebSocket,
    agent: Agent,
    *,
    seed_path: bool,
    max_audio_buffer: int = AUDIO_BUFFER_LIMIT,
) -> None:
    """Serve one Realtime WebSocket for ``agent``.

    Args:
        ws: the Starlette WebSocket (not yet accepted).
        agent: the agent answering.
        seed_path: the connection came in on the seed route (``/agents/{name}/realtime``).
        max_audio_buffer: the input audio buffer bound in decoded bytes.

    A ``call_id`` or ``intent=transcription`` query (SIP calls, transcription sessions) is
    accepted, answered with ``error`` and closed with 1008. Cancellation cancels the active
    response and closes the socket.

    Auth (§10): with an :class:`~trioagents.auth.AuthService` on the server, the bearer
    credential (``Authorization`` or ``?token=``) is verified before the handshake completes;
    a bad one (or none when required) refuses the handshake with 401 and ``WWW-Authenticate``.
    """
    runtime = Runtime.of(ws)
    query = dict(ws.query_params)
    headers = {k.lower(): v for k, v in ws.headers.items()}
    flavour = choose_flavour(headers, query, seed_path=seed_path)
    principal: Principal | None = None
    signer: ResponseSigner | None = None
    auth = AuthService.of(runtime)
    if auth is not None:
        base = base_url_of(ws.scope)
        try:
            principal = await auth.authenticate(
                agent.name, bearer_token(ws.headers, ws.query_params), base
            )
        except AuthError as refused:
            await ws.send_denial_response(denial_response(refused))
            return
        signer = auth.signer(agent.name, base)
    await ws.accept()
    send = ws._send
    send_text, send_texts = text_senders(ws)
    conn = RealtimeConnection(
        runtime,
        agent,
        flavour,
        send_text,
        send_texts=send_texts,
        metadata={"headers": headers, "client": ws.client},
        max_audio_buffer=max_audio_buffer,
        principal=principal,
        signer=signer,
    )
    unsupported: str | None = None
    if "call_id" in query:
        unsupported = "call_id"
    elif query.get("intent") == "transcription":
        unsupported = "intent"
    if unsupported is not None:
        what = "joining calls (call_id)" if unsupported == "call_id" else "transcription sessions"
        err = conn.codec.error(
            "unsupported_session",
            f"{what} are not supported by this server; connect with ?model=<agent>",
            param=unsupported,
        )
        with trio.move_on_after(runtime.config.cleanup_timeout) as cs:
            cs.shield = True
            try:
                await send_text(_render(err))
            except Exception:
                log.debug("error event not sent", exc_info=True)
        await send_close(send, 1008, "unsupported session type", runtime.config.cleanup_timeout)
        return
    await conn.serve(ws._receive)
    if conn.close_code is not None:
        await send_close(send, conn.close_code, conn.close_reason, runtime.config.cleanup_timeout)


class RealtimeTransport(Skill):
    """Serves the agent over OpenAI Realtime (GA and beta) on WebSocket.

    Routes: ``/agents/{name}/realtime`` (seed; beta names unless the client sends ``model``),
    ``/agents/{name}/v1/realtime`` and, server level, ``/v1/realtime?model={name}``.

    Args:
        max_audio_buffer: the input audio buffer bound per connection, in decoded bytes.
    """

    def __init__(self, *, max_audio_buffer: int = AUDIO_BUFFER_LIMIT) -> None:
        self.max_audio_buffer = max_audio_buffer

    @websocket("/realtime")
    async def realtime_seed(self, ws: WebSocket) -> None:
        """The seed route ``/agents/{name}/realtime``."""
        await serve_realtime_socket(
            ws, self.agent, seed_path=True, max_audio_buffer=self.max_audio_buffer
        )

    @websocket("/v1/realtime")
    async def realtime_v1(self, ws: WebSocket) -> None:
        """``/agents/{name}/v1/realtime`` (the openai SDK with ``base_url=…/agents/{name}/v1``)."""
        await serve_realtime_socket(
            ws, self.agent, seed_path=False, max_audio_buffer=self.max_audio_buffer
        )

    @staticmethod
    def server_routes(runtime: Runtime) -> list[BaseRoute]:
        """``WS /v1/realtime?model={name}``: unknown model → the handshake is refused (404)."""

        async def endpoint(ws: WebSocket) -> None:
            model = ws.query_params.get("model")
            agent = runtime.resolve(model)
            transport = None
            if agent is not None:
                transport = next(
                    (s for s in agent.skills if isinstance(s, RealtimeTransport)), None
                )
            if agent is None or transport is None:
                if model is None:
                    denial = openai_error(
                        "'model' is required: it names the agent",
                        status=400,
                        param="model",
                        code="missing_required_parameter",
                    )
                else:
                    denial = openai_error(
                        f"The model {model!r} does not exist",
                        status=404,
                        param="model",
                        code="model_not_found",
                    )
                await ws.send_denial_response(denial)
                return
            await transport.realtime_v1(ws)

        return [WebSocketRoute("/v1/realtime", endpoint)]
