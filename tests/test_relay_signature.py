"""Signed Relay replies (PROTOCOLS.md §10: ``reply.metadata.signature``), alone and via the hub."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import trio
import trio_websocket
from hub_helpers import open_hub
from portal_fakes import FakeNetwork

from trioagents import Agent, BuiltinModel, Fail, uamp
from trioagents.auth import (
    AuthError,
    KeyRing,
    ResponseSigner,
    SigningKey,
    jwks_document,
    verify_response_signature,
)
from trioagents.hub import MemoryHubStore
from trioagents.portal import DialSocket, dial_websocket
from trioagents.relay import RelayConfig, RelayConnector

NOW = uamp.FixedClock().now_s()
KEY = SigningKey.generate("EC")
JWKS = jwks_document([KEY])
ISSUER = "https://agents.example/agents/athena"


def signer() -> ResponseSigner:
    return ResponseSigner(KeyRing(KEY), ISSUER, clock=uamp.FixedClock())


def dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


async def test_reply_signature_covers_the_exact_content_and_event_frame() -> None:
    net = FakeNetwork()
    connector = RelayConnector(
        Agent("athena", model=BuiltinModel()),
        RelayConfig(token="rla_x", url="ws://relay.example/v1/ws/agent"),
        ids=uamp.SequentialIds(),
        dial=net.dial,
        signer=signer(),
    )
    broken = RelayConnector(
        Agent("broken", model=BuiltinModel([Fail("nope")])),
        RelayConfig(token="rla_y", url="ws://relay.example/v1/ws/agent"),
        dial=net.dial,
        signer=signer(),
    )
    # Odd spacing and key order on purpose: the hash is over the bytes, not a re-encoding.
    frame = (
        '{"type":"event",  "event_id":"evt_1","app_id":"portal","thread_id":"t1",'
        '"session_key":"relay:portal:t1","payload":{"message":"sign this, please"}}'
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connector.run)
            relay = await net.accepted.receive()
            await relay.to_daemon.send(frame)
            reply = (await relay.recv_until("reply"))[-1]
            assert reply["content"] == "You said: sign this, please"
            signature = reply["metadata"]["signature"]
            claims = verify_response_signature(
                signature, JWKS, reply["content"], frame.encode(), issuer=ISSUER, now=NOW
            )
            assert claims["response_id"].startswith("resp_")
            assert reply["metadata"]["tokens_used"] >= 0  # the other metadata stays
            for text, request in [
                (reply["content"].replace("please", "pleasE"), frame.encode()),
                (reply["content"], frame.replace("t1", "t2").encode()),
            ]:
                with pytest.raises(AuthError) as info:
                    verify_response_signature(signature, JWKS, text, request, now=NOW)
                assert info.value.reason == "hash_mismatch"

            # Errors are not signed.
            nursery.start_soon(broken.run)
            other = await net.accepted.receive()
            await other.send(
                {"type": "event", "event_id": "evt_2", "thread_id": "t", "payload": "x"}
            )
            err = (await other.recv_until("error"))[-1]
            assert err["code"] == "AGENT_ERROR" and "signature" not in err
            nursery.cancel_scope.cancel()


class _Recording:
    """A dialer that records every frame the connector receives."""

    def __init__(self) -> None:
        self.inner = dial_websocket(cleanup_timeout=2.0)
        self.frames: list[str | bytes] = []

    @asynccontextmanager
    async def dial(self, url: str, headers: Sequence[tuple[str, str]]) -> AsyncIterator[Any]:
        async with self.inner(url, headers) as sock:
            yield _RecordingSocket(sock, self.frames)


class _RecordingSocket:
    def __init__(self, sock: DialSocket, frames: list[str | bytes]) -> None:
        self.sock = sock
        self.frames = frames

    async def send_message(self, message: str) -> None:
        await self.sock.send_message(message)

    async def get_message(self) -> str | bytes:
        message = await self.sock.get_message()
        self.frames.append(message)
        return message

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        await self.sock.aclose(code, reason)


async def test_hub_passes_the_signed_metadata_through_to_the_app() -> None:
    store = MemoryHubStore()
    await store.add_token("rla_athena", "athena", kind="relay_agent")
    await store.add_token("rlk_app", "portal", kind="relay_app")
    await store.allow("athena", "portal")
    rec = _Recording()
    with trio.fail_after(10):
        async with open_hub(store) as h, trio.open_nursery() as nursery:
            connector = RelayConnector(
                Agent("athena", model=BuiltinModel()),
                RelayConfig(token="rla_athena", url=h.ws_url + "/v1/ws/agent"),
                dial=rec.dial,
                signer=signer(),
            )
            nursery.start_soon(connector.run)
            await h.hub.wait_online("athena")
            url = h.ws_url + "/v1/ws/app?token=rlk_app"
            async with trio_websocket.open_websocket_url(url) as app:
                await app.send_message(
                    dumps(
                        {
                            "type": "event",
                            "agent_id": "athena",
                            "thread_id": "t9",
                            "payload": {"message": "via the hub"},
                        }
                    )
                )
                while True:
                    final = orjson.loads(await app.get_message())
                    if final["type"] in ("reply", "error"):
                        break
            assert final["type"] == "reply" and final["reply"] == "You said: via the hub"
            meta = final["metadata"]
            assert meta["session_key"] == "relay:athena:portal:t9"
            events = [f for f in rec.frames if orjson.loads(f).get("type") == "event"]
            assert len(events) == 1
            raw = events[0] if isinstance(events[0], bytes) else events[0].encode()
            verify_response_signature(
                meta["signature"], JWKS, final["reply"], raw, issuer=ISSUER, now=NOW
            )
            nursery.cancel_scope.cancel()
