"""Auth and signed responses (PROTOCOLS.md §10) over Realtime, A2A and ACP (HTTP and WS)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import trio
import trio_websocket
from flow_helpers import bearer, check_signature as check, serve_auth as serve, token

TIMEOUT = 10


# -- Realtime ---------------------------------------------------------------------------------


async def ws_refusal(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """A WebSocket handshake over plain HTTP (the server refuses it before upgrading)."""
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        **(headers or {}),
    }
    async with httpx.AsyncClient() as http:
        r = await http.get(url.replace("ws://", "http://", 1), headers=upgrade)
    assert r.status_code != 101
    return r


async def test_realtime_handshake_refuses_missing_or_bad_credentials() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(required=True) as srv:
            url = srv.agent_ws_url("bot", "/v1/realtime")
            missing = await ws_refusal(url)
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == "Bearer"
            assert missing.json()["error"]["details"]["reason"] == "missing_token"
            bad = await ws_refusal(url, bearer(token(aud="someone-else")))
            assert bad.status_code == 401
            assert 'error="invalid_token"' in bad.headers["www-authenticate"]
            assert bad.json()["error"]["details"]["reason"] == "invalid_audience"
            # The server-level route refuses too.
            also = await ws_refusal(f"{srv.ws_url}/v1/realtime?model=bot")
            assert also.status_code == 401


async def realtime_turn(
    url: str, headers: list[tuple[bytes, bytes]]
) -> tuple[str, str, dict[str, Any]]:
    """(the response.create frame, the text deltas, the response.done event)."""
    async with trio_websocket.open_websocket_url(url, extra_headers=headers) as ws:
        first = orjson.loads(await ws.get_message())
        assert first["type"] == "session.created"
        item = {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hello"}],
            },
        }
        await ws.send_message(orjson.dumps(item).decode())
        frame = '{"type": "response.create",  "event_id": "evt_client_1"}'
        await ws.send_message(frame)
        text = ""
        while True:
            ev = orjson.loads(await ws.get_message())
            if ev["type"] in ("response.output_text.delta", "response.text.delta"):
                text += ev["delta"]
            if ev["type"] == "response.done":
                return frame, text, ev


async def test_realtime_signed_response_done_and_token_in_query() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(required=True) as srv:
            url = srv.agent_ws_url("bot", "/v1/realtime")
            frame, text, done = await realtime_turn(
                url, [(b"authorization", b"Bearer " + token().encode())]
            )
            assert text == "You said: hello"
            assert done["response"]["status"] == "completed"
            check(done["signature"], text, frame.encode(), srv, "alice")
            # ?token= works for browsers; an agent that does not sign omits the signature.
            plain = srv.agent_ws_url("plain", "/v1/realtime") + "?token=" + token(aud="plain")
            _, text, done = await realtime_turn(plain, [])
            assert text == "You said: hello"
            assert "signature" not in done


# -- A2A --------------------------------------------------------------------------------------


def a2a_body(text: str) -> bytes:
    message = {
        "kind": "message",
        "messageId": "m-" + text,
        "role": "user",
        "parts": [{"kind": "text", "text": text}],
    }
    return orjson.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "message/send", "params": {"message": message}}
    )


async def test_a2a_refuses_bad_credentials_and_card_declares_security_when_required() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(required=True) as srv, httpx.AsyncClient() as http:
            json_ct = {"Content-Type": "application/json"}
            r = await http.post(
                srv.agent_url("bot", "/a2a"), content=a2a_body("hi"), headers=json_ct
            )
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["error"]["details"]["reason"] == "missing_token"
            r = await http.post(
                srv.agent_url("bot", "/a2a"),
                content=a2a_body("hi"),
                headers={**json_ct, **bearer("not-a-token")},
            )
            assert r.status_code == 401
            assert 'error="invalid_token"' in r.headers["www-authenticate"]
            seed = {"messages": [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]}
            r = await http.post(srv.agent_url("bot", "/tasks"), json=seed)
            assert r.status_code == 401
            r = await http.get(srv.agent_url("bot", "/tasks/nope"))
            assert r.status_code == 401
            card = (await http.get(srv.agent_url("bot", "/.well-known/agent-card.json"))).json()
            assert card["securitySchemes"] == {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            }
            assert card["security"] == [{"bearer": []}]
        async with serve(required=False) as srv, httpx.AsyncClient() as http:
            card = (await http.get(srv.agent_url("bot", "/.well-known/agent-card.json"))).json()
            assert "securitySchemes" not in card
            assert "security" not in card
            # Anonymous callers are let in when auth is not required.
            r = await http.post(
                srv.agent_url("plain", "/a2a"), content=a2a_body("hi"), headers=json_ct
            )
            assert r.status_code == 200
            assert r.json()["result"]["status"]["state"] == "completed"


async def test_a2a_signed_final_status_json_rpc_and_seed() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(required=True) as srv, httpx.AsyncClient() as http:
            body = a2a_body("sign me")
            r = await http.post(
                srv.agent_url("bot", "/a2a"),
                content=body,
                headers={"Content-Type": "application/json", **bearer(token())},
            )
            assert r.status_code == 200
            task = r.json()["result"]
            assert task["status"]["state"] == "completed"
            text = "".join(p["text"] for a in task["artifacts"] for p in a["parts"])
            assert text == "You said: sign me"
            signature = task["status"]["message"]["metadata"]["response_signature"]
            check(signature, text, body, srv, "alice")
            # The unsigned agent puts no signature on its final status.
            r = await http.post(
                srv.agent_url("plain", "/a2a"),
                content=body,
                headers={"Content-Type": "application/json", **bearer(token(aud="plain"))},
            )
            status = r.json()["result"]["status"]
            assert "response_signature" not in (status["message"].get("metadata") or {})
            # Seed REST: the task.completed event carries it, over the exact POST body.
            seed = orjson.dumps(
                {"messages": [{"role": "user", "parts": [{"type": "text", "text": "seed"}]}]}
            )
            r = await http.post(
                srv.agent_url("bot", "/tasks"),
                content=seed,
                headers={"Content-Type": "application/json", **bearer(token())},
            )
            assert r.status_code == 200
            events: dict[str, Any] = {}
            text = ""
            for block in r.text.split("\n\n"):
                lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
                if "event" in lines:
                    data = orjson.loads(lines["data"])
                    events[lines["event"]] = data
                    if lines["event"] == "task.message":
                        text += data["parts"][0]["text"]
            assert text == "You said: seed"
            check(
                events["task.completed"]["metadata"]["response_signature"], text, seed, srv, "alice"
            )


# -- ACP --------------------------------------------------------------------------------------


async def test_acp_http_and_ws_refuse_bad_credentials() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(required=True) as srv, httpx.AsyncClient() as http:
            init = {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {"protocolVersion": 1},
            }
            r = await http.post(srv.agent_url("bot", "/acp"), json=init)
            assert r.status_code == 401
            assert r.headers["www-authenticate"] == "Bearer"
            r = await http.post(srv.agent_url("bot", "/acp"), json=init, headers=bearer("nope"))
            assert r.status_code == 401
            assert 'error="invalid_token"' in r.headers["www-authenticate"]
            r = await http.get(
                srv.agent_url("bot", "/acp"), headers={"Accept": "text/event-stream"}
            )
            assert r.status_code == 401
            r = await http.post(srv.agent_url("bot", "/acp"), json=init, headers=bearer(token()))
            assert r.status_code == 200
            assert r.headers["acp-connection-id"]
            for path in ("/acp", "/acp/stream"):
                refused = await ws_refusal(srv.agent_ws_url("bot", path))
                assert refused.status_code == 401
                assert refused.json()["error"]["details"]["reason"] == "missing_token"


async def test_acp_ws_signed_prompt_result() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve(required=True) as srv:
            headers = [(b"authorization", b"Bearer " + token().encode())]
            async with trio_websocket.open_websocket_url(
                srv.agent_ws_url("bot", "/acp"), extra_headers=headers
            ) as ws:

                async def call(frame: str, id: Any) -> tuple[dict[str, Any], str]:
                    await ws.send_message(frame)
                    text = ""
                    while True:
                        msg = orjson.loads(await ws.get_message())
                        if msg.get("method") == "session/update":
                            update = msg["params"]["update"]
                            if update.get("sessionUpdate") == "agent_message_chunk":
                                text += update["content"]["text"]
                        elif msg.get("id") == id:
                            return msg, text

                init = (
                    '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":1}}'
                )
                await call(init, 0)
                new = orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "session/new",
                        "params": {"cwd": "/tmp", "mcpServers": []},
                    }
                ).decode()
                sid = (await call(new, 1))[0]["result"]["sessionId"]
                frame = orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 2,
                        "method": "session/prompt",
                        "params": {"sessionId": sid, "prompt": [{"type": "text", "text": "acp"}]},
                    }
                ).decode()
                reply, text = await call(frame, 2)
                assert reply["result"]["stopReason"] == "end_turn"
                assert text == "You said: acp"
                check(reply["result"]["_meta"]["signature"], text, frame.encode(), srv, "alice")
