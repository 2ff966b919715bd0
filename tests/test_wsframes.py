"""Several text frames in one write (``server/_wsframes.py``, the ``SEND_TEXTS`` extension).

Every UAMP burst in the suite goes through it (``test_outbox.py`` checks one end to end).
The bytes must be exactly what wsproto writes for separate sends, compressed connections
must still be compressed by wsproto, and a user's own ``@websocket`` handler can use the
extension too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import trio
import trio_websocket
import websockets
from hypothesis import given, strategies as st
from starlette.websockets import WebSocket
from wsproto.frame_protocol import FrameProtocol

from trioagents import Agent, BuiltinModel, Reply, websocket
from trioagents.server._wsframes import text_frames
from trioagents.testing import open_test_server
from trioagents.transports._outbox import Outbox
from trioagents.transports._wsconn import SEND_TEXTS, text_senders

TIMEOUT = 10
WORDS = " ".join(f"w{i}" for i in range(20))


def _wsproto_bytes(texts: list[str]) -> bytes:
    proto = FrameProtocol(client=False, extensions=[])
    return b"".join(proto.send_data(text, fin=True) for text in texts)


@given(st.lists(st.text(max_size=200), max_size=5))
def test_frames_are_the_bytes_wsproto_writes(texts: list[str]) -> None:
    assert text_frames(texts) == _wsproto_bytes(texts)


def test_every_length_encoding_matches_wsproto() -> None:
    # 7-bit, 16-bit and 64-bit payload lengths, on both sides of each boundary.
    for n in (0, 1, 125, 126, 127, 65535, 65536, 70000):
        texts = ["x" * n, "é" * (n // 2)]
        assert text_frames(texts) == _wsproto_bytes(texts), n


async def _write(text: str) -> None:
    await trio.lowlevel.checkpoint()


async def test_put_nowait_queues_only_while_there_is_room_and_a_peer() -> None:
    box = Outbox(_write, size=2, send_timeout=5, on_stuck=print)
    assert box.put_nowait("a") and box.put_nowait("b")
    assert not box.put_nowait("c")  # full: the caller falls back to send() and waits
    box.finish()
    assert not box.put_nowait("d")  # finishing: nothing new after the last events
    closed = Outbox(_write, size=2, send_timeout=5, on_stuck=print)
    closed.close()
    assert not closed.put_nowait("e")


def _deflate_turn(url: str) -> tuple[str, list[dict[str, Any]]]:
    """One UAMP turn from the ``websockets`` client, which negotiates permessage-deflate."""

    async def main() -> tuple[str, list[dict[str, Any]]]:
        async with websockets.connect(url, compression="deflate") as ws:
            extensions = ws.response.headers.get("sec-websocket-extensions", "")
            await ws.send(orjson.dumps({"type": "session.create"}).decode())
            sid = orjson.loads(await ws.recv())["session_id"]
            await ws.recv()  # capabilities
            await ws.send(
                orjson.dumps({"type": "input.text", "session_id": sid, "text": "x"}).decode()
            )
            frames: list[dict[str, Any]] = []
            while not frames or frames[-1]["type"] != "response.done":
                frames.append(orjson.loads(await ws.recv()))
            return extensions, frames

    return asyncio.run(main())


async def test_a_compressed_connection_is_still_compressed_by_wsproto() -> None:
    agent = Agent("zip", model=BuiltinModel(lambda request: Reply(WORDS)))
    with trio.fail_after(TIMEOUT):
        async with open_test_server(agent) as srv:
            extensions, frames = await trio.to_thread.run_sync(
                _deflate_turn, srv.agent_ws_url("zip")
            )
    assert extensions.startswith("permessage-deflate")
    assert [f["type"] for f in frames] == ["response.created", "response.delta", "response.done"]
    assert frames[1]["delta"]["text"] == WORDS


class Feed(Agent):
    """A user's own WebSocket endpoint writing with the extension."""

    @websocket("/feed")
    async def feed(self, ws: WebSocket) -> None:
        await ws.accept()
        _, send_texts = text_senders(ws)
        assert send_texts is not None and SEND_TEXTS in ws.scope["extensions"]
        await send_texts(["one", "two", "x" * 300])
        await ws.send_text("four")  # the ASGI path, after the batch: order kept
        await ws.receive()  # until the client leaves


async def test_a_user_handler_can_write_several_frames_at_once() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            open_test_server(Feed("feed")) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("feed", "/feed")) as ws,
        ):
            got = [await ws.get_message() for _ in range(4)]
            assert got == ["one", "two", "x" * 300, "four"]
