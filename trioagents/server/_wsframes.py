"""Several WebSocket text frames in one write, on Hypercorn's trio worker.

The ASGI way to send a frame is ``await send({"type": "websocket.send", "text": …})``: one
message per frame, through Starlette's wrapper, Hypercorn's ``WSStream.app_send`` dispatch,
wsproto's serializer and the connection's send path. A connection's writer (see
:mod:`trioagents.transports._outbox`) usually has several frames ready at once (a response's
``response.created``, its merged text, its ``response.done``), so the server offers the
transports an ASGI scope extension, :data:`~trioagents.transports._wsconn.SEND_TEXTS`: an
``await send_texts([text, …])`` that serializes every frame and hands the bytes to Hypercorn
as one ``Data`` event (one system call). The bytes are exactly those of separate sends.

It keeps ``app_send``'s rules: nothing is written once the stream is closed or after the
close frame (wsproto only sends messages in state ``OPEN``), and a connection that negotiated
an extension (permessage-deflate) is serialized by wsproto itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.protocol.events import Data
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from wsproto.connection import ConnectionState
from wsproto.events import TextMessage

from ..transports._wsconn import SEND_TEXTS

__all__ = ["hypercorn_send_texts", "prepare_scope", "text_frames"]

_OPEN = ConnectionState.OPEN
_CONNECTED = ASGIWebsocketState.CONNECTED


def text_frames(texts: list[str]) -> bytes:
    """The bytes of one unmasked, unfragmented, uncompressed text frame per item (RFC 6455)."""
    out = bytearray()
    for text in texts:
        payload = text.encode()
        n = len(payload)
        if n < 126:
            out += b"\x81" + n.to_bytes(1, "big")
        elif n < 65536:
            out += b"\x81\x7e" + n.to_bytes(2, "big")
        else:
            out += b"\x81\x7f" + n.to_bytes(8, "big")
        out += payload
    return bytes(out)


def hypercorn_send_texts(
    send: Callable[[Any], Awaitable[None]],
) -> Callable[[list[str]], Awaitable[None]] | None:
    """``send_texts`` for the ASGI ``send`` of a Hypercorn WebSocket, else None.

    Call it only after ``websocket.accept``; before that (or after the close) it falls back
    to one ``websocket.send`` per frame, which Hypercorn refuses or ignores as it should.
    """
    stream = getattr(send, "__self__", None)
    if not isinstance(stream, WSStream):
        return None

    async def send_texts(texts: list[str]) -> None:
        if not texts:
            return
        conn = getattr(stream, "connection", None)  # set by the accept
        if stream.closed or stream.state is not _CONNECTED or conn is None:
            for text in texts:  # Hypercorn decides (ignores, or raises as for any send)
                await send({"type": "websocket.send", "text": text})
            return
        if conn.state is not _OPEN:
            return  # the close frame went (or is going) out: wsproto would refuse these too
        if conn._proto.extensions:  # permessage-deflate: wsproto compresses
            data = b"".join([conn.send(TextMessage(data=text)) for text in texts])
        else:
            data = text_frames(texts)
        await stream.send(Data(stream_id=stream.stream_id, data=data))

    return send_texts


def prepare_scope(scope: Any, send: Callable[[Any], Awaitable[None]]) -> Any:
    """The scope the server's and the hub's routes see.

    A trailing ``/`` is ignored (§0.1), and a WebSocket on Hypercorn gets the
    :data:`~trioagents.transports._wsconn.SEND_TEXTS` extension.
    """
    path = scope.get("path", "")
    if len(path) > 1 and path.endswith("/"):
        scope = dict(scope, path=path.rstrip("/") or "/")
    if scope.get("type") == "websocket":
        send_texts = hypercorn_send_texts(send)
        if send_texts is not None:
            extensions = dict(scope.get("extensions") or {})
            extensions[SEND_TEXTS] = send_texts
            scope = dict(scope, extensions=extensions)
    return scope
