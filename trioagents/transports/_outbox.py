"""One writer per connection: a bounded outbound queue drained by a single task.

Theory of operation
-------------------
Producers (sessions, responses, the reader answering pings) call :meth:`Outbox.send`; one
writer task (:meth:`Outbox.run`) takes everything queued at that moment and writes it. While
the client is behind, consecutive text deltas of the same response are merged into one event
before writing, never reordered and never merged across responses or sessions; Hypercorn's
per-frame cost is what limits throughput, so fewer frames is what makes Trio competitive.

Backpressure: the queue holds ``outbound_queue_size`` events. A producer that finds it full
waits; if it is still full after ``send_timeout`` the client is not reading, and the outbox
calls ``on_stuck`` (the connection closes with 1013). Once the peer is gone
(:meth:`close`), sends are dropped at once so that cleanup after a disconnect never waits on a
queue nobody drains.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .. import uamp

__all__ = ["Outbox", "merge_text_deltas"]

_BATCH = 128


def merge_text_deltas(events: list[Any]) -> list[Any]:
    """Merge runs of text ``response.delta`` events of the same response (order kept)."""
    if len(events) < 2:
        return events
    out: list[Any] = []
    run: list[str] = []
    head: uamp.ResponseDelta | None = None
    for ev in events:
        if (
            type(ev) is uamp.ResponseDelta
            and type(ev.delta) is uamp.TextDelta
            and ev.event_id is None
        ):
            if (
                head is not None
                and head.response_id == ev.response_id
                and head.session_id == ev.session_id
            ):
                run.append(ev.delta.text)
                continue
            if head is not None:
                out.append(_merged(head, run))
            head, run = ev, [ev.delta.text]
            continue
        if head is not None:
            out.append(_merged(head, run))
            head, run = None, []
        out.append(ev)
    if head is not None:
        out.append(_merged(head, run))
    return out


def _merged(head: uamp.ResponseDelta, texts: list[str]) -> uamp.ResponseDelta:
    if len(texts) == 1:
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
        size: queue bound (events).
        send_timeout: how long a producer may wait for room before ``on_stuck`` is called.
        on_stuck: called once when the peer stops reading.
        merge: combines a batch of queued events before writing (default: text-delta merge).
    """

    def __init__(
        self,
        write: Callable[[str], Awaitable[None]],
        render: Callable[[Any], str],
        *,
        size: int,
        send_timeout: float,
        on_stuck: Callable[[], None],
        merge: Callable[[list[Any]], list[Any]] = merge_text_deltas,
    ) -> None:
        self._write = write
        self._render = render
        self._send_ch, self._recv_ch = trio.open_memory_channel[Any](size)
        self._send_timeout = send_timeout
        self._on_stuck = on_stuck
        self._merge = merge
        self._closed = False
        self.frames_sent = 0
        self.events_sent = 0

    @property
    def closed(self) -> bool:
        """Whether the peer is gone (sends are dropped)."""
        return self._closed

    def close(self) -> None:
        """The peer is gone: drop queued and future events. Idempotent."""
        self._closed = True

    def send_nowait(self, event: Any) -> None:
        """Queue ``event`` without waiting.

        Raises:
            trio.WouldBlock: the queue is full.
        """
        if not self._closed:
            try:
                self._send_ch.send_nowait(event)
            except trio.ClosedResourceError:  # finishing: nothing more goes out
                pass

    async def send(self, event: Any) -> None:
        """Queue ``event``, waiting for room (backpressure).

        If the queue stays full for ``send_timeout`` the peer is declared stuck (``on_stuck``)
        and this keeps waiting until the connection's cancellation reaches it.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        try:
            self._send_ch.send_nowait(event)
        except trio.ClosedResourceError:  # finishing: nothing more goes out
            await trio.lowlevel.checkpoint()
        except trio.WouldBlock:
            with trio.move_on_after(self._send_timeout):
                await self._send_ch.send(event)
                return
            self._on_stuck()
            await trio.sleep_forever()
        else:
            await trio.lowlevel.checkpoint()

    def finish(self) -> None:
        """No more events: the writer drains what is queued, then returns. Idempotent.

        Used when a connection closes on purpose (shutdown, oversized frame) so that the last
        events (errors, ``response.cancelled``, ``session.end``) precede the close frame.
        """
        self._send_ch.close()

    async def run(self) -> None:
        """The writer task: drain the queue until cancelled."""
        recv = self._recv_ch
        async for first in recv:
            batch = [first]
            while len(batch) < _BATCH:
                try:
                    batch.append(recv.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if self._closed:
                continue
            self.events_sent += len(batch)
            for ev in self._merge(batch):
                await self._write(self._render(ev))
                self.frames_sent += 1
