"""An in-memory "network" for PortalConnect / Relay daemon tests (autojump_clock friendly)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio

from trioagents import uamp
from trioagents.portal import (
    ConnectFailed,
    DialSocket,
    HandshakeRejected,
    PortalConnect,
    SocketClosed,
)


class FakeSocket:
    """The daemon's end of a fake WebSocket."""

    def __init__(
        self, inbox: trio.MemoryReceiveChannel[Any], outbox: trio.MemorySendChannel[str]
    ) -> None:
        self.inbox = inbox
        self.outbox = outbox
        self.closed: SocketClosed | None = None
        self.closed_with: int | None = None

    async def send_message(self, message: str) -> None:
        if self.closed is not None:
            raise self.closed
        try:
            await self.outbox.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = SocketClosed(1006)
            raise self.closed from None

    async def get_message(self) -> str | bytes:
        if self.closed is not None:
            raise self.closed
        try:
            item = await self.inbox.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self.closed = SocketClosed(1006)
            raise self.closed from None
        if isinstance(item, SocketClosed):
            self.closed = item
            raise item
        return item  # type: ignore[no-any-return]

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self.closed_with is None:
            self.closed_with = code
        self.closed = self.closed or SocketClosed(code, reason)
        self.outbox.close()
        await trio.lowlevel.checkpoint()


class HubEnd:
    """The hub's end of a fake WebSocket: JSON in, JSON out."""

    def __init__(
        self,
        url: str,
        headers: Sequence[tuple[str, str]],
        to_daemon: trio.MemorySendChannel[Any],
        from_daemon: trio.MemoryReceiveChannel[str],
        sock: FakeSocket,
    ) -> None:
        self.url = url
        self.headers = list(headers)
        self.to_daemon = to_daemon
        self.from_daemon = from_daemon
        self.sock = sock

    async def send(self, obj: dict[str, Any]) -> None:
        await self.to_daemon.send(orjson.dumps(obj).decode())

    async def recv(self) -> dict[str, Any]:
        """The next frame from the daemon (raises EndOfChannel once it closed)."""
        data: dict[str, Any] = orjson.loads(await self.from_daemon.receive())
        return data

    async def recv_until(self, kind: str) -> list[dict[str, Any]]:
        """Frames up to and including the first of type ``kind``."""
        out = []
        while True:
            ev = await self.recv()
            out.append(ev)
            if ev["type"] == kind:
                return out

    async def close(self, code: int, reason: str = "") -> None:
        """The hub closes the socket with ``code``."""
        await self.to_daemon.send(SocketClosed(code, reason))

    async def wait_closed(self) -> None:
        """Wait until the daemon's side is gone (drains its frames)."""
        try:
            while True:
                await self.from_daemon.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return


class FakeNetwork:
    """A dialer whose attempts follow ``plan``: "accept", "refuse" or an HTTP status."""

    def __init__(self, plan: Sequence[str | int] = ()) -> None:
        self.plan = list(plan)
        self.dial_times: list[float] = []
        self._accepted_send, self.accepted = trio.open_memory_channel[HubEnd](16)

    @asynccontextmanager
    async def dial(self, url: str, headers: Sequence[tuple[str, str]]) -> AsyncIterator[DialSocket]:
        self.dial_times.append(trio.current_time())
        step = self.plan.pop(0) if self.plan else "accept"
        await trio.lowlevel.checkpoint()
        if step == "refuse":
            raise ConnectFailed("connection refused")
        if isinstance(step, int):
            raise HandshakeRejected(step)
        to_daemon_send, to_daemon_recv = trio.open_memory_channel[Any](256)
        from_daemon_send, from_daemon_recv = trio.open_memory_channel[str](256)
        sock = FakeSocket(to_daemon_recv, from_daemon_send)
        self._accepted_send.send_nowait(
            HubEnd(url, headers, to_daemon_send, from_daemon_recv, sock)
        )
        try:
            yield sock
        finally:
            from_daemon_send.close()


def fake_portal(
    net: FakeNetwork, agents: Any, *entries: tuple[str, str], **kwargs: Any
) -> PortalConnect:
    """A daemon dialing ``net`` (``ws://hub.example/ws``) with deterministic ids, clock and
    backoff jitter; ``entries`` are ``(name, token)``. ``payments=`` and ``auth=`` go to the
    daemon, any other keyword to its config."""
    daemon = {k: kwargs.pop(k) for k in ("payments", "auth") if k in kwargs}
    config = {
        "portal_ws_url": "ws://hub.example/ws",
        "agents": [{"name": n, "token": t} for n, t in entries],
        **kwargs,
    }
    return PortalConnect(
        config,
        agents,
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        random=lambda: 0.0,
        dial=net.dial,
        **daemon,
    )
