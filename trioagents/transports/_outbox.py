"""One writer per connection: a bounded outbound queue drained by a single task.

Theory of operation
-------------------
Producers (sessions, responses) call :meth:`Outbox.send`; the connection's reader answers
(``pong``, ``error``, ``session.created``) with :meth:`Outbox.send_control_nowait`. One writer
task (:meth:`Outbox.run`) takes everything queued at that moment, control replies first, and
writes it. While the client is behind, consecutive text deltas of the same response are merged
into one event before writing, never reordered and never merged across responses or sessions:
Hypercorn's per-frame cost is what limits throughput, so fewer frames is what makes Trio
competitive. :meth:`Outbox.send` has no schedule point while there is room (it is still a
cancel point), so a producer with a burst ready queues it whole before the writer runs; and
while the writer sends one batch, carriers that can (the server's Hypercorn connections, see
:data:`WRITE_BATCH`) collect the frames' bytes and write them with one system call.

The hottest path, a response's streamed text, need not build an event per piece:
:meth:`Outbox.put_text` appends the piece to the queue's last item when that is a
:class:`TextRun` of the same response, so a burst from the model is one queue item and one
frame; the merge turns runs back into text ``response.delta`` events before rendering.

Backpressure: the data lane holds ``size`` events (a :class:`TextRun` is one, of at most
``_RUN_MAX`` pieces). A producer that finds it full waits; if it
is still full after ``send_timeout`` the client is not reading, and ``on_stuck`` is called (the
connection closes with 1013). The control lane is separate and small, so the reader never
waits and a ``ping`` is answered even while responses are backed up; a client that floods it
without reading is stuck too. Once the peer is gone (:meth:`close`) sends are dropped at once,
so cleanup after a disconnect never waits on a queue nobody drains; :meth:`finish` lets the
writer drain what is queued and return (a deliberate close: the last events precede the close
frame).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import trio

from .. import uamp

__all__ = ["WRITE_BATCH", "Outbox", "TextRun", "merge_text_deltas"]

_BATCH = 128
_RUN_MAX = 256  # pieces one queued TextRun may hold (it counts as one item of the bound)

WRITE_BATCH: ContextVar[list[Callable[[], Awaitable[None]]] | None] = ContextVar(
    "trioagents_write_batch", default=None
)
"""Set while a writer sends one batch frame by frame.

A carrier that can collect the bytes of several frames and write them with one system call
(the server's Hypercorn connections) appends a flush to this list instead of writing, and the
writer awaits every flush once the batch is rendered. Frames are never reordered: nothing
yields between collecting and flushing.
"""


class TextRun:
    """Consecutive text pieces of one response, queued by :meth:`Outbox.put_text`.

    The hot path's queue item: a model's burst is appended here piece by piece instead of
    becoming one event object each; :func:`merge_text_deltas` turns it into one text
    ``response.delta`` before anything is written.
    """

    __slots__ = ("response_id", "session_id", "texts")

    def __init__(self, response_id: str, session_id: str | None, text: str) -> None:
        self.response_id = response_id
        self.session_id = session_id
        self.texts = [text]


def merge_text_deltas(events: list[Any]) -> list[Any]:
    """Merge runs of text ``response.delta`` events (and :class:`TextRun` items) of the same
    response and session into one text ``response.delta`` each (order kept)."""
    if len(events) == 1 and type(events[0]) is not TextRun:
        return events
    out: list[Any] = []
    run: list[str] = []
    head: Any = None  # the first event of the run being merged
    for ev in events:
        t = type(ev)
        if t is TextRun:
            texts = ev.texts
        elif t is uamp.ResponseDelta and type(ev.delta) is uamp.TextDelta:
            texts = [ev.delta.text]
        else:
            if head is not None:
                out.append(_merged(head, run))
                head, run = None, []
            out.append(ev)
            continue
        if (
            head is not None
            and head.response_id == ev.response_id
            and head.session_id == ev.session_id
        ):
            run.extend(texts)
            continue
        if head is not None:
            out.append(_merged(head, run))
        head, run = ev, list(texts)
    if head is not None:
        out.append(_merged(head, run))
    return out


def _merged(head: Any, texts: list[str]) -> uamp.ResponseDelta:
    if len(texts) == 1 and type(head) is uamp.ResponseDelta:
        return head
    return uamp.ResponseDelta(
        response_id=head.response_id,
        session_id=head.session_id,
        delta=uamp.TextDelta("".join(texts)),
    )


class Outbox:
    """The bounded outbound queue of one connection and its single writer.

    Args:
        write: writes one rendered frame to the peer.
        render: turns one event into the frame's text.
        size: data-lane bound (events).
        send_timeout: how long a producer may wait for room before ``on_stuck`` is called.
        on_stuck: called when the peer stops reading.
        merge: combines a batch of queued events before writing (default: text-delta merge).
        control_size: control-lane bound (replies from the reader).
        write_batch: instead of ``write``/``render``: writes a whole merged batch at once (one
            SSE chunk or one syscall for carriers that can).
        on_broken: if given, a write that fails because the peer is gone closes the outbox and
            calls it, and the writer returns (instead of raising).
    """

    def __init__(
        self,
        write: Callable[[str], Awaitable[None]] | None = None,
        render: Callable[[Any], str] | None = None,
        *,
        size: int,
        send_timeout: float,
        on_stuck: Callable[[], None],
        merge: Callable[[list[Any]], list[Any]] = merge_text_deltas,
        control_size: int = 64,
        write_batch: Callable[[list[Any]], Awaitable[None]] | None = None,
        on_broken: Callable[[], None] | None = None,
    ) -> None:
        if (write is None) == (write_batch is None):
            raise TypeError("give either write (with render) or write_batch")
        self._write = write
        self._render = render or str
        self._write_batch = write_batch
        self._on_broken = on_broken
        self._size = size
        self._control_size = control_size
        self._send_timeout = send_timeout
        self._on_stuck = on_stuck
        self._merge = merge
        self._data: deque[Any] = deque()
        self._control: list[Any] = []  # drained whole by the writer (a list: less memory)
        self._room = trio.lowlevel.ParkingLot()
        self._ready = trio.Event()
        self._closed = False
        self._finishing = False
        self._stuck = False  # on_stuck was called: a full lane is not waited on again
        self.frames_sent = 0
        self.events_sent = 0

    @property
    def closed(self) -> bool:
        """Whether the peer is gone (sends are dropped)."""
        return self._closed

    def close(self) -> None:
        """The peer is gone: drop queued and future events. Idempotent."""
        self._closed = True
        self._data.clear()
        self._control.clear()
        self._room.unpark_all()
        self._ready.set()

    def finish(self) -> None:
        """No more events: the writer drains what is queued, then returns. Idempotent."""
        self._finishing = True
        self._ready.set()

    def send_control_nowait(self, event: Any) -> None:
        """Queue a reply from the reader, ahead of queued data, without waiting.

        Raises:
            trio.WouldBlock: the control lane is full (the peer is not reading).
        """
        if self._closed or self._finishing:
            return
        if len(self._control) >= self._control_size:
            raise trio.WouldBlock
        self._control.append(event)
        self._ready.set()

    def put_control(self, event: Any) -> None:
        """Queue a reply from the reader, ahead of queued data, even past the lane's size.

        For a reader that applies backpressure itself: it queues the replies to one frame,
        then awaits :meth:`wait_control_room` before reading the next, so the lane never
        exceeds its size by more than one frame's replies.
        """
        if not (self._closed or self._finishing):
            self._control.append(event)
            self._ready.set()

    @property
    def control_full(self) -> bool:
        """Whether the control lane holds its size or more (the reader should wait)."""
        return len(self._control) >= self._control_size

    async def wait_control_room(self) -> None:
        """Wait until the writer has drained the control lane below its size.

        The reader's backpressure: a client that sends requests faster than it reads their
        replies is read more slowly. If the lane stays full for ``send_timeout`` the client is
        not reading at all: ``on_stuck`` is called and this waits for the cancellation.
        """
        with trio.move_on_after(self._send_timeout):
            while self.control_full and not self._closed:
                await self._room.park()
        if self.control_full and not self._closed:
            self._stuck = True
            self._on_stuck()
            await trio.sleep_forever()

    def put_nowait(self, event: Any) -> bool:
        """Queue ``event`` if there is room and the peer is there; whether it was queued.

        Neither a schedule point nor a cancel point: for a producer that checks for
        cancellation itself and calls :meth:`send` when this returns False (full, closed or
        finishing), which then waits, drops or reports exactly as usual.
        """
        if self._closed or self._finishing or len(self._data) >= self._size:
            return False
        self._data.append(event)
        self._ready.set()
        return True

    def put_text(self, response_id: str, session_id: str | None, text: str) -> bool:
        """Queue one piece of a response's text if there is room; whether it was queued.

        The piece joins the queue's last item when that is a :class:`TextRun` of the same
        response and session (so a burst is one item, not one event object per piece), else
        starts a new run. Like :meth:`put_nowait`: no schedule or cancel point, False when
        full, closed or finishing. Only for the default merge (:func:`merge_text_deltas`),
        which turns runs back into events; with another merge it always returns False.
        """
        if self._closed or self._finishing or self._merge is not merge_text_deltas:
            return False
        data = self._data
        if data:
            tail = data[-1]
            if (
                type(tail) is TextRun
                and tail.response_id == response_id
                and tail.session_id == session_id
                and len(tail.texts) < _RUN_MAX
            ):
                tail.texts.append(text)
                return True
        if len(data) >= self._size:
            return False
        data.append(TextRun(response_id, session_id, text))
        self._ready.set()
        return True

    async def send(self, event: Any) -> None:
        """Queue ``event``, waiting for room (backpressure).

        If there is no room for ``send_timeout`` the peer is declared stuck (``on_stuck``) and
        this keeps waiting until the connection's cancellation reaches it.
        """
        if self._closed or self._finishing:
            await trio.lowlevel.checkpoint()
            return
        # Room: queue without a schedule point (still a cancel point). A producer that has
        # several events ready (a burst from the model) queues them all before the writer
        # runs, so the writer sends them together and merges their text deltas; yielding
        # after each one would hand the writer one event per frame. The bound still applies:
        # a producer that never blocks elsewhere parks once it is full.
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.put_nowait(event):
            return
        if self._stuck:
            # Already declared stuck: the last events of the unwinding sessions
            # (response.cancelled…) are dropped, not waited on for another send_timeout.
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(self._send_timeout):
            while len(self._data) >= self._size and not self._closed:
                await self._room.park()
        if len(self._data) >= self._size and not self._closed:
            self._stuck = True
            self._on_stuck()
            await trio.sleep_forever()
        if self._closed:
            return
        if not self._finishing:
            self._data.append(event)
            self._ready.set()

    async def run(self) -> None:
        """The writer task: drain the lanes until :meth:`finish` (or cancellation)."""
        data, control = self._data, self._control
        while True:
            if not data and not control:
                if self._finishing or self._closed:
                    return
                self._ready = trio.Event()
                await self._ready.wait()
                continue
            batch = list(control)
            control.clear()
            for _ in range(min(len(data), _BATCH)):
                batch.append(data.popleft())
            self._room.unpark_all()
            self.events_sent += len(batch)
            try:
                await self._write_out(self._merge(batch))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                if self._on_broken is None:
                    raise
                self.close()
                self._on_broken()
                return

    async def _write_out(self, batch: list[Any]) -> None:
        if self._write_batch is not None:
            await self._write_batch(batch)
            self.frames_sent += 1
            return
        write, render = self._write, self._render
        assert write is not None
        flushes: list[Callable[[], Awaitable[None]]] = []
        token = WRITE_BATCH.set(flushes)
        try:
            for ev in batch:
                if self._closed:
                    break
                await write(render(ev))
                self.frames_sent += 1
        finally:
            WRITE_BATCH.reset(token)
        for flush in flushes:
            await flush()
