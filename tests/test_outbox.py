"""The one writer per connection (``transports/_outbox.py``) and the server's batched writes.

A producer with several events ready queues them all before the writer runs (``send`` has no
schedule point while there is room), so a burst goes out merged; order is never changed and
nothing merges across responses or sessions. On the real server the frames of one batch are
collected and written with one system call (``WRITE_BATCH``, the Hypercorn send patch).
"""

from __future__ import annotations

from typing import Any

import orjson
import trio
import trio.testing
import trio_websocket
from hypothesis import given, strategies as st

from trioagents import Agent, BuiltinModel, Reply, uamp
from trioagents.agent._builtin import split_words
from trioagents.testing import open_test_server
from trioagents.transports._outbox import _RUN_MAX, WRITE_BATCH, Outbox, merge_text_deltas

TIMEOUT = 10
WORDS = " ".join(f"w{i}" for i in range(20))


def _delta(text: str, rid: str = "r1", sid: str | None = "s1") -> uamp.ResponseDelta:
    return uamp.ResponseDelta(response_id=rid, session_id=sid, delta=uamp.TextDelta(text))


def _outbox(frames: list[Any], **kw: Any) -> Outbox:
    async def write(frame: Any) -> None:
        frames.append(frame)

    kw.setdefault("size", 256)
    return Outbox(write, lambda ev: ev, send_timeout=5, on_stuck=lambda: None, **kw)


async def test_a_burst_is_queued_whole_and_written_as_one_merged_frame() -> None:
    frames: list[Any] = []
    box = _outbox(frames)
    words = split_words(WORDS)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(box.run)
            await box.send(uamp.ResponseCreated(response_id="r1", session_id="s1"))
            for w in words:
                await box.send(_delta(w))
            await box.send(uamp.ResponseCancelled(response_id="r1", session_id="s1"))
            box.finish()
    assert [type(f) for f in frames] == [
        uamp.ResponseCreated,
        uamp.ResponseDelta,
        uamp.ResponseCancelled,
    ]
    assert frames[1].delta.text == WORDS
    assert box.events_sent == len(words) + 2
    assert box.frames_sent == 3


async def test_merging_never_crosses_responses_or_sessions_and_keeps_order() -> None:
    frames: list[Any] = []
    box = _outbox(frames)
    events = [
        _delta("a", "r1"),
        _delta("b", "r1"),
        _delta("c", "r2"),
        _delta("d", "r1"),
        _delta("e", "r1", "s2"),
        uamp.Thinking(response_id="r1", session_id="s1", content="hmm", is_delta=True),
        _delta("f", "r1"),
        _delta("g", "r1"),
    ]
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(box.run)
            for ev in events:
                await box.send(ev)
            box.finish()
    summary = [
        (f.response_id, f.session_id, f.delta.text) if type(f) is uamp.ResponseDelta else f.type
        for f in frames
    ]
    assert summary == [
        ("r1", "s1", "ab"),
        ("r2", "s1", "c"),
        ("r1", "s1", "d"),
        ("r1", "s2", "e"),
        "thinking",
        ("r1", "s1", "fg"),
    ]
    assert merge_text_deltas(events) == [
        f
        if type(f) is not uamp.ResponseDelta
        else _delta(f.delta.text, f.response_id, f.session_id)
        for f in frames
    ]


_pieces = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["r1", "r2"]), st.sampled_from(["s1", "s2"]), st.text(max_size=4)
        ),
        st.just("thinking"),
    ),
    max_size=40,
)


@given(ops=_pieces)
def test_put_text_writes_exactly_what_the_same_deltas_as_events_write(ops: list[Any]) -> None:
    """Pieces queued with put_text and the same deltas queued as events: the same frames."""

    def frames_of(use_put_text: bool) -> list[Any]:
        frames: list[Any] = []
        box = _outbox(frames, size=1000)
        for op in ops:
            if op == "thinking":
                ev = uamp.Thinking(response_id="r1", session_id="s1", content="t", is_delta=True)
                assert box.put_nowait(ev)
            elif use_put_text:
                assert box.put_text(*op)
            else:
                assert box.put_nowait(_delta(op[2], op[0], op[1]))
        box.finish()
        trio.run(box.run)
        return frames

    assert frames_of(True) == frames_of(False)


async def test_put_text_keeps_the_bound_and_refuses_when_it_cannot_queue() -> None:
    frames: list[Any] = []
    box = _outbox(frames, size=2)
    assert box.put_nowait(uamp.ResponseCreated(response_id="r1", session_id="s1"))
    assert box.put_text("r1", "s1", "a")  # a new run: the second item
    assert all(box.put_text("r1", "s1", "x") for _ in range(_RUN_MAX - 1))  # joins the run
    assert not box.put_text("r1", "s1", "y")  # the run is full and so is the queue
    assert not box.put_text("r2", "s1", "z")  # another response needs an item of its own
    box.finish()
    assert not box.put_text("r1", "s1", "late")  # finishing: nothing new
    await box.run()
    assert [type(f) for f in frames] == [uamp.ResponseCreated, uamp.ResponseDelta]
    assert frames[1].delta.text == "a" + "x" * (_RUN_MAX - 1)
    other = Outbox(_noop_write, str, size=8, send_timeout=5, on_stuck=print, merge=list)
    assert not other.put_text("r1", "s1", "a")  # a merge that does not know TextRun


async def _noop_write(frame: str) -> None:
    await trio.lowlevel.checkpoint()


async def test_send_is_still_a_cancel_point() -> None:
    frames: list[Any] = []
    box = _outbox(frames)
    with trio.CancelScope() as scope:
        scope.cancel()
        await box.send(_delta("never"))  # room in the queue, but cancelled: raises
        raise AssertionError("send did not raise Cancelled")  # pragma: no cover
    assert scope.cancelled_caught
    box.finish()
    with trio.fail_after(TIMEOUT):
        await box.run()
    assert frames == []


async def test_a_full_queue_still_makes_the_producer_wait() -> None:
    frames: list[Any] = []
    box = _outbox(frames, size=4)
    sent = 0

    async def produce() -> None:
        nonlocal sent
        for i in range(10):
            await box.send(uamp.Pong(reply_to=str(i)))
            sent += 1

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            await trio.testing.wait_all_tasks_blocked()
            assert sent == 4  # parked on the fifth: nobody has drained yet
            async with trio.open_nursery() as writer:
                writer.start_soon(box.run)
                while sent < 10:
                    await trio.testing.wait_all_tasks_blocked()
                box.finish()
    assert [f.reply_to for f in frames] == [str(i) for i in range(10)]


async def test_write_batch_flushes_once_per_batch_in_order() -> None:
    """A carrier that defers its writes registers one flush per batch (like the server)."""
    wire: list[bytes] = []
    pending: list[bytes] = []
    flushes = 0

    async def flush() -> None:
        nonlocal flushes
        flushes += 1
        wire.append(b"".join(pending))
        pending.clear()

    async def write(frame: str) -> None:
        batch = WRITE_BATCH.get()
        assert batch is not None
        if not pending:
            batch.append(flush)
        pending.append(frame.encode() + b";")

    box = Outbox(write, lambda ev: ev.reply_to, size=256, send_timeout=5, on_stuck=lambda: None)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(box.run)
            for i in range(5):
                await box.send(uamp.Pong(reply_to=str(i)))
            await trio.testing.wait_all_tasks_blocked()
            for i in range(5, 7):
                await box.send(uamp.Pong(reply_to=str(i)))
            box.finish()
    assert wire == [b"0;1;2;3;4;", b"5;6;"]
    assert flushes == 2
    assert WRITE_BATCH.get() is None


async def _frames_until_done(ws: trio_websocket.WebSocketConnection, n: int) -> list[Any]:
    out: list[Any] = []
    done = 0
    while done < n:
        ev = orjson.loads(await ws.get_message())
        out.append(ev)
        if ev["type"] in ("response.done", "response.error", "response.cancelled"):
            done += 1
    return out


async def test_server_sends_a_burst_as_one_delta_frame_per_response() -> None:
    """End to end through Hypercorn: every frame of the batch arrives intact and in order."""
    agent = Agent("burst", model=BuiltinModel(lambda request: Reply(WORDS)))
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(agent) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("burst")) as ws,
        ):
            sids = []
            for i in range(2):
                await ws.send_message(
                    orjson.dumps({"type": "session.create", "event_id": f"c{i}"}).decode()
                )
                created = orjson.loads(await ws.get_message())
                assert created["type"] == "session.created"
                assert orjson.loads(await ws.get_message())["type"] == "capabilities"
                sids.append(created["session_id"])
            for turn in range(3):
                for sid in sids:
                    await ws.send_message(
                        orjson.dumps(
                            {"type": "input.text", "session_id": sid, "text": f"t{turn}"}
                        ).decode()
                    )
                frames = await _frames_until_done(ws, len(sids))
                for sid in sids:
                    mine = [f for f in frames if f.get("session_id") == sid]
                    assert [f["type"] for f in mine] == [
                        "response.created",
                        "response.delta",
                        "response.done",
                    ]
                    assert mine[1]["delta"] == {"text": WORDS, "type": "text"}
                    assert mine[1]["response_id"] == mine[0]["response_id"]
                    assert mine[2]["response"]["output"] == [{"type": "text", "text": WORDS}]
                    assert all(f["event_id"].startswith("evt_") for f in mine)
            await ws.send_message(orjson.dumps({"type": "ping", "event_id": "p"}).decode())
            assert orjson.loads(await ws.get_message())["type"] == "pong"


async def test_a_client_opening_many_sessions_at_once_is_slowed_down_not_closed() -> None:
    """The reader answers each session.create on the control lane; a client that sends far
    more creates than that lane holds before reading any reply is read more slowly
    (backpressure), never closed as stuck."""
    n = 300  # ~10x the control lane (64 events, two replies per create)
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(Agent("many"), max_sessions_per_socket=n) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("many")) as ws,
        ):
            for i in range(n):
                await ws.send_message(
                    orjson.dumps({"type": "session.create", "event_id": f"c{i}"}).decode()
                )
            replies = [orjson.loads(await ws.get_message()) for _ in range(2 * n)]
            created = [r for r in replies if r["type"] == "session.created"]
            assert [r["reply_to"] for r in created] == [f"c{i}" for i in range(n)]
            assert len({r["session_id"] for r in created}) == n
            assert sum(r["type"] == "capabilities" for r in replies) == n
            await ws.send_message(orjson.dumps({"type": "ping", "event_id": "p"}).decode())
            assert orjson.loads(await ws.get_message())["type"] == "pong"


async def test_control_lane_makes_the_reader_wait_then_declares_a_silent_client_stuck(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Replies may exceed the lane by one frame's worth; the reader then waits for the writer
    (backpressure), and only a lane that stays full for ``send_timeout`` means 'stuck'."""
    gate = trio.Event()
    frames: list[Any] = []
    stuck: list[float] = []

    async def write(frame: Any) -> None:
        await gate.wait()  # the client is not reading yet
        frames.append(frame)

    box = Outbox(
        write,
        lambda ev: ev,
        size=8,
        control_size=4,
        send_timeout=30,
        on_stuck=lambda: stuck.append(trio.current_time()),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(box.run)
        box.put_control("c0")
        await trio.testing.wait_all_tasks_blocked()  # the writer holds c0 in write()
        for i in range(1, 6):  # more than the lane holds: queued anyway, never refused
            box.put_control(f"c{i}")
        assert box.control_full
        reader_done = trio.Event()

        async def reader() -> None:
            await box.wait_control_room()
            reader_done.set()

        nursery.start_soon(reader)
        await trio.sleep(10)
        assert not reader_done.is_set() and not stuck  # waiting, not yet stuck
        gate.set()  # the client reads again
        await reader_done.wait()
        assert not stuck
        await trio.testing.wait_all_tasks_blocked()
        assert frames == [f"c{i}" for i in range(6)]

        gate = trio.Event()  # the client stops reading for good
        box.put_control("d0")
        await trio.testing.wait_all_tasks_blocked()  # the writer holds d0 in write()
        for i in range(1, 6):
            box.put_control(f"d{i}")
        start = trio.current_time()
        nursery.start_soon(box.wait_control_room)
        await trio.sleep(31)
        assert stuck == [start + 30]
        nursery.cancel_scope.cancel()


async def test_once_stuck_a_full_lane_drops_instead_of_waiting_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    gate = trio.Event()
    stuck: list[float] = []

    async def write(frame: Any) -> None:
        await gate.wait()  # the client never reads

    box = Outbox(write, lambda ev: ev, size=2, send_timeout=30, on_stuck=lambda: stuck.append(1.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(box.run)
        await box.send(_delta("a"))
        await trio.testing.wait_all_tasks_blocked()  # the writer holds "a"
        await box.send(_delta("b"))
        await box.send(_delta("c"))
        with trio.move_on_after(60):  # full: stuck after send_timeout, then waits forever
            await box.send(_delta("d"))
        assert stuck == [1.0]
        start = trio.current_time()
        await box.send(_delta("e"))  # the unwinding session's last event: dropped at once
        assert trio.current_time() == start and stuck == [1.0]
        nursery.cancel_scope.cancel()
