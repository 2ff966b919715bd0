"""Shared helpers for the hub, PortalConnect and Relay tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import httpx
import trio

from trioagents import Agent, BuiltinModel, ModelRequest, uamp
from trioagents.agent import TextChunk
from trioagents.config import Config
from trioagents.hub import Hub, HubStore, MemoryHubStore, serve_hub


def hub_config(**overrides: Any) -> Config:
    """A test config: port 0, no GC tweaks, short graceful shutdown."""
    return Config(
        host="127.0.0.1",
        port=0,
        gc_freeze=False,
        gc_gen0_threshold=None,
        graceful_timeout=2.0,
        cleanup_timeout=2.0,
    ).replace(**overrides)


@attrs.frozen
class RunningHub:
    """A hub serving on 127.0.0.1."""

    hub: Hub
    url: str

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:PORT``."""
        return "ws" + self.url[len("http") :]

    @property
    def portal_url(self) -> str:
        """The PortalConnect endpoint."""
        return self.ws_url + "/ws"

    def agent_url(self, name: str, path: str = "") -> str:
        """``{url}/agents/{name}{path}``."""
        return f"{self.url}/agents/{name}{path}"

    def agent_ws_url(self, name: str, path: str = "/uamp") -> str:
        """``{ws_url}/agents/{name}{path}``."""
        return f"{self.ws_url}/agents/{name}{path}"


@asynccontextmanager
async def open_hub(
    store: HubStore | None = None, *, port: int = 0, **hub_kwargs: Any
) -> AsyncIterator[RunningHub]:
    """Run a hub (sequential ids, fixed clock) for the duration of the block."""
    hub = Hub(
        store if store is not None else MemoryHubStore(),
        config=hub_config(port=port) if port else hub_config(),
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        **hub_kwargs,
    )
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve_hub, hub, shutdown_trigger=stop.wait))
        try:
            yield RunningHub(hub, urls[0])
        finally:
            stop.set()


class GateModel(BuiltinModel):
    """Streams the first word, then waits for ``gate``; records start and cancellation.

    Only when the user text contains ``block``; anything else is echoed like the built-in
    model.
    """

    def __init__(self, word_delay: float = 0.0) -> None:
        super().__init__(word_delay=word_delay)
        self.gate = trio.Event()
        self.started = trio.Event()
        self.cancelled = trio.Event()
        self.requests: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[Any]:  # type: ignore[override]
        self.requests.append(request)
        last = request.messages[-1].text
        if "block" in last:
            try:
                yield TextChunk("partial")
                self.started.set()
                await self.gate.wait()
                yield TextChunk(" done")
                return
            except BaseException:
                self.cancelled.set()
                raise
        async for ev in BuiltinModel(word_delay=self.word_delay).stream(request):
            yield ev


def gate_agent(name: str) -> tuple[Agent, GateModel]:
    """An agent on a :class:`GateModel`."""
    model = GateModel()
    return Agent(name, model=model), model


async def ws_handshake_status(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """Send a WebSocket upgrade over plain HTTP and return the (refusing) ``httpx.Response``.

    For checking that a handshake is refused before the upgrade (401/404 with a JSON body).
    """
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        **(headers or {}),
    }
    async with httpx.AsyncClient() as http:
        return await http.get(url.replace("ws://", "http://", 1), headers=upgrade)


def portal_cfg(url: str, *entries: tuple[str, str], **kw: Any) -> dict[str, Any]:
    """A daemon config for the hub at ``url``: ``(name, token)`` entries, fast reconnects."""
    return {
        "portal_ws_url": url,
        "agents": [{"name": n, "token": t} for n, t in entries],
        "reconnect_delay": 0.05,
        **kw,
    }
