"""The A2A task service: runs tasks, fans their events out, keeps them in the store.

Theory of operation
-------------------
One :class:`A2AService` per server lives in ``runtime.services["a2a"]``; the transport's
``lifespan`` opens it with its own nursery inside the app-services nursery::

    server lifespan (app services)
    └── A2A service nursery
        ├── cleanup loop (retention, every ``cleanup_interval`` s)
        └── one task per running A2A turn (cancel scope = CancelTask)

A task's turn runs in the service nursery, **not** in the HTTP request that created it: A2A
tasks outlive a dropped stream (§6.2), a blocking send only *waits* for the turn, and
``CancelTask`` / ``DELETE /tasks/{id}`` cancel the turn's own cancel scope. Server shutdown
cancels every turn; each records its final state (``failed``: the server shut down) under a
shielded, bounded scope before the store closes.

Each ``contextId`` is one agent :class:`~trioagents.Session` (in memory, at most
``max_contexts`` of them, least recently used evicted; the conversation is trimmed to
``max_context_messages``). Turns of one context run one at a time (a lock per context), so a
second task in a busy context stays ``submitted`` until the first ends.

Fan-out: every stream (the original one, ``SubscribeToTask``, seed ``/tasks``) is a
subscriber with its own bounded channel. The turn publishes with ``send_nowait`` and never
waits for a subscriber: one whose channel is full is **dropped** — its channel is closed, and
its stream ends with a JSON-RPC error telling the client to resubscribe or poll — while the
task and the other subscribers go on.

``input-required``: a tool raises :class:`InputRequired`; the turn stops (its scope is
cancelled once the tool call is reported), the task goes to ``input-required`` with the
question as its status message, and a later message with the same ``taskId`` continues it in
the same session (the question is the pending tool call's result, the reply a new user
message).
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import attrs
import orjson
import trio

from ... import uamp
from ...agent import Message, Session, is_cancellation, run_response
from ...agent._agent import Agent, Context, _current_call
from ...auth import Principal
from ...payments import (
    PaymentError,
    PaymentsService,
    payment_error_from_details,
    render_a2a_payment_metadata,
)
from ...protocols import a2a as proto
from .._runtime import Runtime
from .store import TaskStore

__all__ = ["A2AService", "InputRequired", "RunningTask", "ServiceOptions"]

log = logging.getLogger("trioagents.transports.a2a")


class InputRequired(Exception):
    """Raise from a tool to pause an A2A task in ``input-required``.

    The task's status message becomes ``message``; the client answers with a message on the
    same ``taskId`` and the turn continues with the answer as a new user message. Outside an
    A2A task this is an ordinary tool error.

    Args:
        message: the question for the user.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # The run loop reports tool exceptions as error results and goes on, so the request
        # is recorded on the running A2A turn here (the tool runs in a copy of the turn's
        # context, which carries the turn through this ContextVar).
        turn = _TURN.get()
        if turn is not None and turn.input_required is None:
            turn.input_required = message
            turn.asking_call = _current_call.get()


@attrs.define(eq=False)
class _Turn:
    input_required: str | None = None
    asking_call: str | None = None
    results: dict[str, str] = attrs.field(factory=dict)


_TURN: contextvars.ContextVar[_Turn | None] = contextvars.ContextVar(
    "trioagents_a2a_turn", default=None
)


@attrs.frozen
class ServiceOptions:
    """Bounds of the A2A service (set through ``A2ATransport.with_options``).

    Attributes:
        retention: seconds a finished task is kept.
        max_tasks: finished tasks kept at most.
        cleanup_interval: seconds between retention passes.
        subscriber_queue_size: stream events buffered per subscriber before it is dropped.
        max_contexts: contexts (agent sessions) kept in memory.
        max_context_messages: messages kept per context conversation.
    """

    retention: float = 3600.0
    max_tasks: int = 10_000
    cleanup_interval: float = 60.0
    subscriber_queue_size: int = 1024
    max_contexts: int = 1000
    max_context_messages: int = 200


@attrs.define(eq=False)
class _ContextState:
    session: Session
    lock: trio.Lock = attrs.field(factory=trio.Lock)


def copy_task(task: proto.Task) -> proto.Task:
    """A deep copy (what a stream item or a reader gets)."""
    return proto.task_from_json(proto.task_to_json(task))


@attrs.define(eq=False)
class RunningTask:
    """A task whose turn is running (or about to): its scope, subscribers and artifact.

    Attributes:
        task: the live task (mutated by the turn).
        scope: the turn's cancel scope.
        done: set when the turn ended (terminal or interrupted state recorded).
        cancel_requested: ``CancelTask`` asked for it.
        payment_token: the token paying for the turn (``X-PAYMENT`` or an
            ``x402.payment.payload`` message), if any.
        pay_in_band: a payment error stops the task in ``input-required`` with the x402
            metadata (JSON-RPC); ``False`` fails it (seed REST).
        payment_error: the payment error that ended the turn, if one did.
        sign: turns the response text into its signature (a signing agent, §10), if any.
    """

    task: proto.Task
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)
    cancel_requested: bool = False
    subscribers: list[trio.MemorySendChannel[Any]] = attrs.field(factory=list)
    artifact_id: str = ""
    chunks: int = 0
    emitted: list[str] = attrs.field(factory=list)
    held: str | None = None
    payment_token: str | None = None
    pay_in_band: bool = True
    payment_error: PaymentError | None = None
    sign: Callable[[str], str] | None = None

    def subscribe(self, size: int) -> trio.MemoryReceiveChannel[Any]:
        """A new subscriber: its channel starts with a snapshot of the task."""
        send, recv = trio.open_memory_channel[Any](size)
        send.send_nowait(proto.TaskSnapshot(copy_task(self.task)))
        if self.done.is_set():
            send.close()
        else:
            self.subscribers.append(send)
        return recv

    def publish(self, event: proto.StreamEvent) -> None:
        """Give ``event`` to every subscriber without waiting; drop those that are full."""
        for send in list(self.subscribers):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                log.info("dropping a slow subscriber of A2A task %s", self.task.id)
                self.subscribers.remove(send)
                send.close()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self.subscribers.remove(send)  # the stream went away

    def close_subscribers(self) -> None:
        """The turn ended: every stream ends after what it already has."""
        for send in self.subscribers:
            send.close()
        self.subscribers.clear()


def new_uuid(ids: uamp.IdFactory) -> str:
    """A UUID v4 (§0.3) from the runtime's id factory (deterministic in tests)."""
    return str(uuid.UUID(hex=ids.hex(16), version=4))


def content_of(parts: list[dict[str, Any]]) -> str | list[Any]:
    """Canonical A2A parts → an agent message's content (text, images, files)."""
    if all("text" in p for p in parts):
        return "\n".join(p["text"] for p in parts)
    items: list[Any] = []
    for p in parts:
        mime = p.get("mediaType") or None
        if "text" in p:
            items.append(uamp.TextContent(p["text"]))
        elif "data" in p:
            items.append(uamp.TextContent(orjson.dumps(p["data"]).decode()))
        else:
            ref: Any = p["raw"] if "raw" in p else {"url": p["url"]}
            if mime and mime.startswith("image/"):
                items.append(uamp.ImageContent(image=ref, format=mime.split("/", 1)[1]))
            else:
                items.append(uamp.FileContent(file=ref, filename=p.get("filename"), mime_type=mime))
    return items


class A2AService:
    """Runs and stores the A2A tasks of one server (see the module docstring).

    Args:
        runtime: the server's runtime (config, ids, clock).
        store: the opened task store.
        nursery: the service nursery (owned by the transport's lifespan).
        options: bounds.
    """

    def __init__(
        self,
        runtime: Runtime,
        store: TaskStore,
        nursery: trio.Nursery,
        options: ServiceOptions,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.nursery = nursery
        self.options = options
        self.running: dict[str, RunningTask] = {}
        self._contexts: OrderedDict[tuple[str, str], _ContextState] = OrderedDict()

    # -- lifecycle -----------------------------------------------------------------------

    def _now(self) -> float:
        return self.runtime.clock.now_ms() / 1000

    async def recover(self) -> int:
        """Tasks left ``submitted``/``working`` by a previous process are marked ``failed``."""
        stale = await self.store.list_states({"submitted", "working"})
        for task in stale:
            self._finish_state(task, "failed", "the server restarted while the task was running")
            task.error_code = "interrupted"
            await self.store.save(task)
        return len(stale)

    async def cleanup(self) -> int:
        """One retention pass (finished tasks older than ``retention``, beyond ``max_tasks``)."""
        return await self.store.cleanup(
            older_than=self._now() - self.options.retention,
            max_finished=self.options.max_tasks,
        )

    async def cleanup_loop(self) -> None:
        """Run :meth:`cleanup` every ``cleanup_interval`` seconds until cancelled."""
        while True:
            await trio.sleep(self.options.cleanup_interval)
            try:
                await self.cleanup()
            except Exception:
                log.exception("A2A task cleanup failed")

    # -- lookups -------------------------------------------------------------------------

    async def find(self, agent: Agent, task_id: str) -> proto.Task | None:
        """The task (live if running, else from the store), if it belongs to ``agent``."""
        rt = self.running.get(task_id)
        task = rt.task if rt is not None else await self.store.get(task_id)
        if task is None or task.agent != agent.name:
            return None
        return task

    async def list_tasks(self, agent: Agent, context_id: str | None, limit: int) -> list[Any]:
        """The newest tasks of ``agent``, running ones in their live state."""
        tasks = await self.store.list_tasks(agent=agent.name, context_id=context_id, limit=limit)
        return [self.running[t.id].task if t.id in self.running else t for t in tasks]

    def _context(self, agent: Agent, context_id: str) -> _ContextState:
        key = (agent.name, context_id)
        state = self._contexts.get(key)
        if state is None:
            state = _ContextState(
                Session(
                    id=self.runtime.ids.new("sess"),
                    agent=agent,
                    metadata={"transport": "a2a", "context_id": context_id},
                )
            )
            self._contexts[key] = state
            # Evict the least recently used idle contexts beyond the bound.
            for old_key in list(self._contexts):
                if len(self._contexts) <= self.options.max_contexts:
                    break
                if not self._contexts[old_key].lock.locked() and old_key != key:
                    del self._contexts[old_key]
        self._contexts.move_to_end(key)
        return state

    # -- starting and continuing tasks ---------------------------------------------------

    async def start(
        self,
        agent: Agent,
        message: dict[str, Any],
        *,
        prior: list[Message] | None = None,
        metadata: dict[str, Any] | None = None,
        payment_token: str | None = None,
        pay_in_band: bool = True,
        principal: Principal | None = None,
        sign: Callable[[str], str] | None = None,
    ) -> RunningTask:
        """Create a task for ``message`` (or continue the one its ``taskId`` names) and start
        its turn in the service nursery.

        ``payment_token`` pays for the turn (§9.1). A payment error ends the turn in
        ``input-required`` with the x402 metadata when ``pay_in_band`` (JSON-RPC), else in
        ``failed`` (seed REST). Continuing a task stopped for payment retries its turn: the
        continuing message (the ``payment-submitted`` one) is recorded in the history but not
        added to the conversation, which already holds the unanswered request.

        ``principal`` (the verified caller, §10) goes into the context's session metadata
        (``principal``, ``sub``); ``sign`` signs the text of a completed turn, put on the final
        status message as ``metadata.response_signature``.

        Raises:
            proto.A2AError: ``-32001`` unknown ``taskId``; ``-32004`` the task is terminal or
                still running.
        """
        now = self._now()
        task_id = message.get("taskId")
        if task_id:
            existing = await self.find(agent, task_id)
            if existing is None:
                raise proto.A2AError(proto.TASK_NOT_FOUND, f"Task not found: {task_id}")
            if existing.finished:
                raise proto.A2AError(
                    proto.UNSUPPORTED_OPERATION,
                    f"Task {task_id} is {existing.state}: a terminal task cannot be continued",
                )
            if task_id in self.running:
                raise proto.A2AError(
                    proto.UNSUPPORTED_OPERATION,
                    f"Task {task_id} is still {existing.state}; wait for input-required",
                )
            task = existing
            retry = task.status_message is not None and bool(
                (task.status_message.get("metadata") or {}).get("x402.payment.status")
            )
            message = dict(message, contextId=task.context_id)
            task.history.append(message)
            if retry:
                message = dict(message, retryPayment=True)
            task.status_message = None
            task.artifacts = []
        else:
            context_id = message.get("contextId") or new_uuid(self.runtime.ids)
            task = proto.Task(
                id=new_uuid(self.runtime.ids),
                context_id=context_id,
                agent=agent.name,
                state="submitted",
                timestamp=proto.iso_timestamp(self.runtime.clock.now_ms()),
                created_at=now,
                updated_at=now,
                metadata=metadata or None,
            )
            message = dict(message, contextId=context_id, taskId=task.id)
            task.history.append(message)
        task.updated_at = now
        rt = RunningTask(
            task=task,
            artifact_id=new_uuid(self.runtime.ids),
            payment_token=payment_token,
            pay_in_band=pay_in_band,
            sign=sign,
        )
        context = self._context(agent, task.context_id)
        if principal is not None:
            context.session.metadata["principal"] = principal
            context.session.metadata["sub"] = principal.sub
        if prior:
            context.session.messages.extend(prior)
        await self.store.save(task)
        self.running[task.id] = rt
        self.nursery.start_soon(self._run_turn, rt, context, message)
        return rt

    async def cancel(self, agent: Agent, task_id: str) -> tuple[proto.Task, bool]:
        """Cancel a task: ``(task, whether it was cancelled)``; a finished task is returned
        as is. The caller's deadline bounds the wait for the turn to record ``canceled``.

        Raises:
            proto.A2AError: ``-32001`` for an unknown task.
        """
        task = await self.find(agent, task_id)
        if task is None:
            raise proto.A2AError(proto.TASK_NOT_FOUND, f"Task not found: {task_id}")
        if task.finished:
            return task, False
        rt = self.running.get(task_id)
        if rt is not None:
            rt.cancel_requested = True
            rt.scope.cancel()
            await rt.done.wait()
            return rt.task, True
        # Interrupted (input-required) with no turn running: cancel it in the store.
        self._finish_state(task, "canceled", None)
        await self.store.save(task)
        return task, True

    # -- the turn ------------------------------------------------------------------------

    def _finish_state(self, task: proto.Task, state: str, text: str | None) -> None:
        task.state = state
        task.updated_at = self._now()
        task.timestamp = proto.iso_timestamp(self.runtime.clock.now_ms())
        if text is not None:
            task.status_message = {
                "messageId": new_uuid(self.runtime.ids),
                "role": "agent",
                "parts": [{"text": text}],
                "contextId": task.context_id,
                "taskId": task.id,
            }
            if state == "failed":
                task.error = text

    def _emit_chunk(self, rt: RunningTask, text: str, last: bool) -> None:
        rt.emitted.append(text)
        whole = "".join(rt.emitted)
        artifact = {"artifactId": rt.artifact_id, "name": "response", "parts": [{"text": whole}]}
        rt.task.artifacts = [artifact]
        rt.publish(
            proto.ArtifactUpdate(
                task_id=rt.task.id,
                context_id=rt.task.context_id,
                artifact={
                    "artifactId": rt.artifact_id,
                    "name": "response",
                    "parts": [{"text": text}],
                },
                append=rt.chunks > 0,
                last_chunk=last,
            )
        )
        rt.chunks += 1

    async def _run_turn(
        self, rt: RunningTask, context: _ContextState, message: dict[str, Any]
    ) -> None:
        task = rt.task
        turn = _Turn()
        _TURN.set(turn)  # this task runs in its own copy of the context
        cfg = self.runtime.config
        session = context.session
        final: tuple[str, str | None] | None = None
        try:
            with rt.scope:
                async with context.lock:
                    task.state = "working"
                    task.timestamp = proto.iso_timestamp(self.runtime.clock.now_ms())
                    task.updated_at = self._now()
                    await self.store.save(task)
                    rt.publish(proto.StatusUpdate(copy_task(task), final=False))
                    if not message.get("retryPayment"):
                        self._prepare_conversation(session, task.id, message)
                    final = await self._respond(rt, session, turn)
        except Exception as exc:  # a bug of ours: the task fails, the server goes on
            log.exception("A2A task %s failed", task.id)
            final = ("failed", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if final is None:
                if turn.input_required is not None:
                    final = ("input-required", turn.input_required)
                elif rt.cancel_requested:
                    final = ("canceled", None)
                else:
                    final = ("failed", "the server shut down while the task was running")
            with trio.CancelScope(shield=True), trio.move_on_after(cfg.cleanup_timeout):
                try:
                    await self._record_end(rt, session, turn, *final)
                finally:
                    self.running.pop(task.id, None)
                    rt.done.set()
                    rt.close_subscribers()

    def _prepare_conversation(
        self, session: Session, task_id: str, message: dict[str, Any]
    ) -> None:
        session.messages.append(Message(role="user", content=content_of(message["parts"])))
        excess = len(session.messages) - self.options.max_context_messages
        if excess > 0:
            # Trim from the front, at a user message so tool results keep their calls.
            cut = next(
                (i for i, m in enumerate(session.messages) if i >= excess and m.role == "user"),
                len(session.messages) - 1,
            )
            del session.messages[:cut]

    @staticmethod
    def _answer_open_calls(session: Session, turn: _Turn) -> None:
        # The run loop answered the open tool calls of the interrupted turn with "cancelled";
        # an input-required task gives them their real results instead (the question for the
        # call that asked), so the continued conversation reads as the model expects.
        while (
            session.messages
            and session.messages[-1].role == "assistant"
            and not session.messages[-1].tool_calls
        ):
            session.messages.pop()
        i = len(session.messages)
        while i > 0 and session.messages[i - 1].role == "tool":
            i -= 1
            m = session.messages[i]
            if m.tool_call_id == turn.asking_call:
                result = f"input required: {turn.input_required}"
            else:
                result = turn.results.get(m.tool_call_id or "", m.text)
            session.messages[i] = attrs.evolve(m, content=result)

    async def _respond(
        self, rt: RunningTask, session: Session, turn: _Turn
    ) -> tuple[str, str | None]:
        runtime = self.runtime

        async def emit(ev: Any) -> None:
            await trio.lowlevel.checkpoint()
            t = type(ev)
            if t is uamp.ResponseDelta:
                d = ev.delta
                if type(d) is uamp.TextDelta and d.text:
                    # Hold one chunk back so the last one can carry lastChunk:true.
                    if rt.held is not None:
                        self._emit_chunk(rt, rt.held, last=False)
                    rt.held = d.text
                elif type(d) is uamp.ToolResultDelta:
                    turn.results[d.tool_result.call_id] = d.tool_result.result
            elif t is uamp.ToolCallDone and turn.input_required is not None:
                rt.scope.cancel()

        ctx = Context(
            session=session,
            response_id=runtime.ids.new("resp"),
            emit=emit,
            config=runtime.config,
            ids=runtime.ids,
            client_tool_mode="return",
            payments=PaymentsService.of(runtime),
            payment_token=rt.payment_token,
        )
        runtime.stats.responses += 1
        try:
            terminal = await run_response(ctx)
        except BaseException as exc:
            if is_cancellation(exc):
                if turn.input_required is not None:
                    self._answer_open_calls(session, turn)
                else:
                    runtime.stats.responses_cancelled += 1
            raise
        if isinstance(terminal, uamp.ResponseError):
            runtime.stats.responses_failed += 1
            details = terminal.error.details
            payment = (
                payment_error_from_details({**details, "message": terminal.error.message})
                if details
                else None
            )
            if payment is not None:
                rt.payment_error = payment
                if rt.pay_in_band:
                    return "input-required", payment.message
            rt.task.error_code = terminal.error.code
            return "failed", terminal.error.message
        return "completed", ctx.output_text

    async def _record_end(
        self, rt: RunningTask, session: Session, turn: _Turn, state: str, text: str | None
    ) -> None:
        task = rt.task
        if rt.held is not None:
            self._emit_chunk(rt, rt.held, last=True)
            rt.held = None
        if state == "completed" and rt.emitted:
            task.artifacts = [
                {"artifactId": rt.artifact_id, "name": "response", "parts": [{"text": text or ""}]}
            ]
        if state == "canceled" and not rt.emitted:
            task.artifacts = []
        self._finish_state(task, state, text if state != "canceled" else None)
        if rt.payment_error is not None and task.status_message is not None:
            if state == "input-required":
                task.status_message["metadata"] = render_a2a_payment_metadata(rt.payment_error)
            task.error_code = None if state == "input-required" else task.error_code
        if rt.sign is not None and state == "completed" and task.status_message is not None:
            sent = "".join(rt.emitted) if rt.emitted else (text or "")
            meta = dict(task.status_message.get("metadata") or {})
            meta["response_signature"] = rt.sign(sent)
            task.status_message["metadata"] = meta
        if task.status_message is not None and state in ("completed", "input-required"):
            task.history.append(task.status_message)
        rt.publish(proto.StatusUpdate(copy_task(task), final=True))
        await self.store.save(task)
