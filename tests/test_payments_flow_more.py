"""Paid agents over ACP, A2A, Realtime and PortalConnect on the real server (PROTOCOLS.md §9.1).

Each test checks the protocol's payment signal, the retry with a token, the exact charge, and
that the ledger holds no open lock afterwards."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import orjson
import trio
import trio_websocket
from flow_helpers import ACCEPTS, funded, paid_agent, serve_paid, spent
from portal_fakes import FakeNetwork, fake_portal

from trioagents.payments import PaymentsService

TIMEOUT = 10


def _rpc(id: int, method: str, params: dict[str, Any]) -> str:
    return orjson.dumps({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).decode()


# --------------------------------------------------------------------------------------------
# ACP
# --------------------------------------------------------------------------------------------


async def _acp_reply(ws: trio_websocket.WebSocketConnection, id: int) -> tuple[list[Any], Any]:
    """The notifications before the response to ``id``, and that response."""
    seen: list[Any] = []
    while True:
        msg = orjson.loads(await ws.get_message())
        if msg.get("id") == id and "method" not in msg:
            return seen, msg
        seen.append(msg)


async def test_acp_32402_then_prompt_with_token() -> None:
    ledger, tok = await funded("1.00")
    agent = paid_agent("Paid answer.", "Second one.")
    with trio.fail_after(TIMEOUT):
        async with (
            serve_paid(agent, ledger) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("paid", "/acp")) as ws,
        ):
            await ws.send_message(_rpc(1, "initialize", {"protocolVersion": 1}))
            await _acp_reply(ws, 1)
            await ws.send_message(_rpc(2, "session/new", {"cwd": "/", "mcpServers": []}))
            sid = (await _acp_reply(ws, 2))[1]["result"]["sessionId"]
            prompt = [{"type": "text", "text": "hi"}]

            await ws.send_message(_rpc(3, "session/prompt", {"sessionId": sid, "prompt": prompt}))
            updates, reply = await _acp_reply(ws, 3)
            assert updates == []
            assert reply["error"] == {
                "code": -32402,
                "message": "Payment token required",
                "data": {"x402Version": 2, "accepts": ACCEPTS, "error": "PAYMENT_TOKEN_REQUIRED"},
            }
            # A bad token: still -32402, with the sibling code.
            await ws.send_message(
                _rpc(
                    4, "session/prompt", {"sessionId": sid, "prompt": prompt, "payment_token": "x"}
                )
            )
            reply = (await _acp_reply(ws, 4))[1]
            assert reply["error"]["code"] == -32402
            assert reply["error"]["data"]["error"] == "PAYMENT_TOKEN_INVALID"
            assert reply["error"]["data"]["subcode"] == "TOKEN_MALFORMED"
            assert await spent(ledger, tok.token_id) == (Decimal(0), Decimal("1.00"))

            # The client repeats the prompt with the token: payment_token, then _meta.
            await ws.send_message(
                _rpc(
                    5,
                    "session/prompt",
                    {"sessionId": sid, "prompt": prompt, "payment_token": tok.token},
                )
            )
            updates, reply = await _acp_reply(ws, 5)
            assert reply["result"]["stopReason"] == "end_turn"
            text = "".join(u["params"]["update"]["content"]["text"] for u in updates)
            assert text == "Paid answer."
            await ws.send_message(
                _rpc(
                    6,
                    "session/prompt",
                    {"sessionId": sid, "prompt": prompt, "_meta": {"payment_token": tok.token}},
                )
            )
            updates, reply = await _acp_reply(ws, 6)
            assert reply["result"]["stopReason"] == "end_turn"
            text = "".join(u["params"]["update"]["content"]["text"] for u in updates)
            assert text == "Second one."
            # 2 x (0.10 per turn + 2 words x 0.01)
            assert await spent(ledger, tok.token_id) == (Decimal("0.24"), Decimal("0.76"))
            await ws.aclose()


async def test_acp_http_seed_submit_x_payment() -> None:
    ledger, tok = await funded("1.00")
    agent = paid_agent("Paid answer.")
    body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "prompt/submit",
        "params": {"messages": [{"role": "user", "content": "hi"}]},
    }
    with trio.fail_after(TIMEOUT):
        async with serve_paid(agent, ledger) as srv, httpx.AsyncClient() as http:
            url = srv.agent_url("paid", "/acp")
            r = await http.post(url, json=body)
            assert r.status_code == 200
            assert r.json()["id"] == 7
            assert r.json()["error"]["code"] == -32402
            assert r.json()["error"]["data"]["accepts"] == ACCEPTS
            r = await http.post(url, json=body, headers={"X-PAYMENT": tok.token})
            assert r.json() == {
                "jsonrpc": "2.0",
                "id": 7,
                "result": {"status": "complete", "content": "Paid answer."},
            }
            assert await spent(ledger, tok.token_id) == (Decimal("0.12"), Decimal("0.88"))


# --------------------------------------------------------------------------------------------
# A2A
# --------------------------------------------------------------------------------------------


def _send(id: int, text: str, **extra: Any) -> dict[str, Any]:
    message = {"kind": "message", "messageId": f"m{id}", "role": "user"}
    message["parts"] = [{"kind": "text", "text": text}]
    return {
        "jsonrpc": "2.0",
        "id": id,
        "method": "message/send",
        "params": {"message": {**message, **extra}},
    }


async def test_a2a_input_required_then_payment_submitted() -> None:
    ledger, tok = await funded("1.00")
    agent = paid_agent("Paid answer.", "Second one.")
    with trio.fail_after(TIMEOUT):
        async with serve_paid(agent, ledger) as srv, httpx.AsyncClient() as http:
            url = srv.agent_url("paid", "/a2a")
            task = (await http.post(url, json=_send(1, "hi"))).json()["result"]
            assert task["kind"] == "task"
            assert task["status"]["state"] == "input-required"
            assert task["status"]["message"]["role"] == "agent"
            assert task["status"]["message"]["metadata"] == {
                "x402.payment.status": "payment-required",
                "x402.payment.required": {"x402Version": 2, "accepts": ACCEPTS},
            }
            assert task.get("artifacts", []) == []

            # A bad payload: the task asks again, saying why.
            bad = {"x402.payment.status": "payment-submitted", "x402.payment.payload": "junk"}
            again = await http.post(url, json=_send(2, "paying", taskId=task["id"], metadata=bad))
            status = again.json()["result"]["status"]
            assert status["state"] == "input-required"
            assert status["message"]["metadata"]["x402.payment.error"] == "PAYMENT_TOKEN_INVALID"
            # A payload without a token is a params error, the task is untouched.
            empty = {"x402.payment.status": "payment-submitted", "x402.payment.payload": {}}
            r = await http.post(url, json=_send(3, "paying", taskId=task["id"], metadata=empty))
            assert r.json()["error"]["code"] == -32602

            # The x402 payload object resumes the same task: the pending request is answered.
            paid = {
                "x402.payment.status": "payment-submitted",
                "x402.payment.payload": {"scheme": "token", "payload": {"token": tok.token}},
            }
            r = await http.post(url, json=_send(4, "paying", taskId=task["id"], metadata=paid))
            done = r.json()["result"]
            assert done["id"] == task["id"]
            assert done["status"]["state"] == "completed"
            assert done["artifacts"][0]["parts"] == [{"kind": "text", "text": "Paid answer."}]
            assert await spent(ledger, tok.token_id) == (Decimal("0.12"), Decimal("0.88"))

            # Or the client resends with X-PAYMENT (a new task here).
            r = await http.post(url, json=_send(5, "again"), headers={"X-PAYMENT": tok.token})
            done = r.json()["result"]
            assert done["status"]["state"] == "completed"
            assert done["artifacts"][0]["parts"] == [{"kind": "text", "text": "Second one."}]
            assert await spent(ledger, tok.token_id) == (Decimal("0.24"), Decimal("0.76"))


async def test_a2a_resend_on_task_with_x_payment() -> None:
    ledger, tok = await funded("1.00")
    agent = paid_agent("Paid answer.")
    with trio.fail_after(TIMEOUT):
        async with serve_paid(agent, ledger) as srv, httpx.AsyncClient() as http:
            url = srv.agent_url("paid", "/a2a")
            task = (await http.post(url, json=_send(1, "hi"))).json()["result"]
            assert task["status"]["state"] == "input-required"
            r = await http.post(
                url, json=_send(2, "hi", taskId=task["id"]), headers={"X-PAYMENT": tok.token}
            )
            done = r.json()["result"]
            assert (done["id"], done["status"]["state"]) == (task["id"], "completed")
            assert done["status"]["message"]["parts"] == [{"kind": "text", "text": "Paid answer."}]
            assert await spent(ledger, tok.token_id) == (Decimal("0.12"), Decimal("0.88"))


def _sse_events(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for block in text.split("\n\n"):
        event, data = "message", None
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data = orjson.loads(line[6:])
        if data is not None:
            out.append((event, data))
    return out


async def test_a2a_seed_rest_task_failed_then_new_task_with_x_payment() -> None:
    ledger, tok = await funded("1.00")
    agent = paid_agent("Paid answer.")
    body = {"message": {"role": "user", "parts": [{"type": "text", "text": "hi"}]}}
    with trio.fail_after(TIMEOUT):
        async with serve_paid(agent, ledger) as srv, httpx.AsyncClient() as http:
            url = srv.agent_url("paid", "/tasks")
            events = _sse_events((await http.post(url, json=body)).text)
            assert [e for e, _ in events] == ["task.started", "task.failed"]
            task_id = events[0][1]["id"]
            assert events[1][1] == {
                "id": task_id,
                "status": "failed",
                "code": "payment_required",
                "status_code": 402,
                "error": "Payment required",
                "accepts": ACCEPTS,
            }
            status = (await http.get(f"{url}/{task_id}")).json()
            assert status["status"] == "failed"

            events = _sse_events(
                (await http.post(url, json=body, headers={"X-PAYMENT": tok.token})).text
            )
            names = [e for e, _ in events]
            assert names[0] == "task.started" and names[-1] == "task.completed"
            assert set(names[1:-1]) == {"task.message"}
            text = "".join(d["parts"][0]["text"] for e, d in events if e == "task.message")
            assert text == "Paid answer."
            assert events[0][1]["id"] != task_id
            assert await spent(ledger, tok.token_id) == (Decimal("0.12"), Decimal("0.88"))


# --------------------------------------------------------------------------------------------
# Realtime
# --------------------------------------------------------------------------------------------


async def _until(ws: trio_websocket.WebSocketConnection, kind: str) -> list[dict[str, Any]]:
    """Events up to and including the first of type ``kind``."""
    got: list[dict[str, Any]] = []
    while not got or got[-1]["type"] != kind:
        got.append(orjson.loads(await ws.get_message()))
    return got


def _rt(kind: str, **fields: Any) -> str:
    return orjson.dumps({"type": kind, **fields}).decode()


USER_HI = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}


async def test_realtime_payment_required_submit_resumes() -> None:
    ledger, tok = await funded("1.00")
    agent = paid_agent("Paid answer.", "Second one.")
    with trio.fail_after(TIMEOUT):
        async with (
            serve_paid(agent, ledger) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("paid", "/v1/realtime")) as ws,
        ):
            await _until(ws, "session.created")
            await ws.send_message(_rt("conversation.item.create", item=USER_HI))
            await ws.send_message(_rt("response.create"))
            got = await _until(ws, "payment.required")
            assert got[-2]["type"] == "response.created"
            required = got[-1]
            rid = required["response_id"]
            assert rid == got[-2]["response"]["id"]
            assert required["requirements"]["amount"] == "0.10"
            assert required["requirements"]["currency"] == "credits"
            assert required["accepts"] == ACCEPTS
            assert required["extra"] == {"action": "pay"}

            # A bad token: payment.error{can_retry}, the response keeps waiting.
            await ws.send_message(_rt("payment.submit", payment={"scheme": "token", "token": "x"}))
            err = (await _until(ws, "payment.error"))[-1]
            assert (err["code"], err["can_retry"]) == ("token_invalid", True)
            # No token at all: a Realtime error, the socket stays open.
            await ws.send_message(_rt("payment.submit", event_id="e1", payment={}))
            bad = (await _until(ws, "error"))[-1]
            assert bad["error"]["code"] == "missing_required_parameter"

            await ws.send_message(
                _rt(
                    "payment.submit",
                    response_id=rid,
                    payment={"scheme": "token", "token": tok.token},
                )
            )
            got = await _until(ws, "payment.balance")
            kinds = [e["type"] for e in got]
            assert kinds[0] == "payment.accepted"
            assert got[0]["balance_remaining"] == "1.00"
            assert "response.created" not in kinds  # resumed under the same response
            text = "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")
            assert text == "Paid answer."
            done = next(e for e in got if e["type"] == "response.done")
            assert (done["response"]["id"], done["response"]["status"]) == (rid, "completed")
            assert kinds[-2:] == ["response.done", "payment.balance"]
            assert got[-1]["balance"] == "0.88"
            assert await spent(ledger, tok.token_id) == (Decimal("0.12"), Decimal("0.88"))

            # The submitted token is the session's now: the next response just runs.
            await ws.send_message(_rt("response.create"))
            got = await _until(ws, "payment.balance")
            kinds = [e["type"] for e in got]
            assert "payment.required" not in kinds and "payment.accepted" not in kinds
            text = "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")
            assert text == "Second one."
            assert await spent(ledger, tok.token_id) == (Decimal("0.24"), Decimal("0.76"))
            await ws.aclose()


async def test_realtime_session_update_token_and_timeout() -> None:
    ledger, tok = await funded("1.00")
    agent = paid_agent("Paid answer.")
    with trio.fail_after(TIMEOUT):
        async with (
            serve_paid(agent, ledger, payment_timeout=0.3) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("paid", "/v1/realtime")) as ws,
        ):
            await _until(ws, "session.created")
            # Nothing submitted within payment_timeout: payment.error then a failed response.
            await ws.send_message(_rt("response.create"))
            got = await _until(ws, "response.done")
            kinds = [e["type"] for e in got]
            assert kinds == [
                "response.created",
                "payment.required",
                "payment.error",
                "response.done",
            ]
            assert (got[2]["code"], got[2]["can_retry"]) == ("payment_timeout", False)
            assert got[3]["response"]["status"] == "failed"
            assert got[3]["response"]["status_details"]["error"]["code"] == "payment_timeout"

            # A token set by session.update pays for the next response.
            await ws.send_message(_rt("session.update", session={"payment_token": tok.token}))
            updated = (await _until(ws, "session.updated"))[-1]
            assert "payment_token" not in updated["session"]
            await ws.send_message(_rt("conversation.item.create", item=USER_HI))
            await ws.send_message(_rt("response.create"))
            got = await _until(ws, "payment.balance")
            text = "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")
            assert text == "Paid answer."
            assert await spent(ledger, tok.token_id) == (Decimal("0.12"), Decimal("0.88"))
            await ws.aclose()


# --------------------------------------------------------------------------------------------
# PortalConnect (a fake hub on memory sockets)
# --------------------------------------------------------------------------------------------


async def test_portal_payment_required_submit_resumes() -> None:
    ledger, tok = await funded("1.00")
    net = FakeNetwork()
    portal = fake_portal(
        net,
        [paid_agent("Paid answer.")],
        ("paid", "t"),
        payments=PaymentsService(ledger, pay_to="acct_paid"),
    )
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(portal.run)
            hub = await net.accepted.receive()
            create = await hub.recv()
            assert create["type"] == "session.create"
            sid = "sess_hub1"
            await hub.send(
                {
                    "type": "session.created",
                    "session_id": sid,
                    "agent": "paid",
                    "reply_to": create["event_id"],
                    "session": {"id": sid, "status": "active"},
                }
            )
            await hub.send({"type": "input.text", "session_id": sid, "text": "hi"})
            required = (await hub.recv_until("payment.required"))[-1]
            assert required["session_id"] == sid
            assert required["accepts"] == ACCEPTS
            await hub.send(
                {
                    "type": "payment.submit",
                    "session_id": sid,
                    "response_id": required["response_id"],
                    "payment": {"scheme": "token", "token": tok.token},
                }
            )
            got = await hub.recv_until("payment.balance")
            kinds = [e["type"] for e in got]
            assert kinds[0] == "payment.accepted" and kinds[-2:] == [
                "response.done",
                "payment.balance",
            ]
            text = "".join(e["delta"]["text"] for e in got if e["type"] == "response.delta")
            assert text == "Paid answer."
            assert await spent(ledger, tok.token_id) == (Decimal("0.12"), Decimal("0.88"))
            nursery.cancel_scope.cancel()
    assert ledger.open_locks() == []


async def test_realtime_session_update_wakes_a_waiting_response() -> None:
    ledger, tok = await funded("1.00")
    agent = paid_agent("Paid answer.")
    with trio.fail_after(TIMEOUT):
        async with (
            serve_paid(agent, ledger) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("paid", "/v1/realtime")) as ws,
        ):
            await _until(ws, "session.created")
            await ws.send_message(_rt("conversation.item.create", item=USER_HI))
            await ws.send_message(_rt("response.create"))
            await _until(ws, "payment.required")
            await ws.send_message(_rt("session.update", session={"payment_token": tok.token}))
            got = await _until(ws, "payment.balance")
            kinds = [e["type"] for e in got]
            assert kinds.index("session.updated") < kinds.index("payment.accepted")
            text = "".join(e["delta"] for e in got if e["type"] == "response.output_text.delta")
            assert text == "Paid answer."
            assert await spent(ledger, tok.token_id) == (Decimal("0.12"), Decimal("0.88"))
            await ws.aclose()
