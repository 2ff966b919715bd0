"""Paid agents over the real server (PROTOCOLS.md §9): Completions 402 + ``X-PAYMENT`` retry,
UAMP ``payment.*`` negotiation and the mid-stream top-up. The ledger is checked after each."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
import trio
import trio_websocket
from flow_helpers import ACCEPTS, expensive_tool, funded, paid_agent, serve_paid, sse_data

from trioagents import CallTool, Reply, uamp

# --------------------------------------------------------------------------------------------
# Completions
# --------------------------------------------------------------------------------------------

BODY = {"model": "paid", "messages": [{"role": "user", "content": "hi"}]}


async def test_completions_402_then_x_payment_retry() -> None:
    ledger, tok = await funded("1.00")
    log: list[str] = []
    agent = paid_agent("Paid answer.", "Second one.", "Third one.", tools=[expensive_tool(log)])
    with trio.fail_after(10):
        async with serve_paid(agent, ledger) as srv, httpx.AsyncClient() as http:
            url = srv.agent_url("paid", "/v1/chat/completions")
            r = await http.post(url, json=BODY)
            assert r.status_code == 402
            body = r.json()
            assert body["error"] == "PAYMENT_TOKEN_REQUIRED"
            assert body["subcode"] is None
            assert body["message"] == "Payment token required"
            assert body["user_message"] == "This agent requires payment."
            assert body["status_code"] == 402 and body["x402Version"] == 2
            assert body["accepts"] == ACCEPTS
            assert body["context"]["agent_name"] == "paid"
            assert body["context"]["x402Version"] == 2
            assert body["context"]["accepts"] == ACCEPTS
            assert (await ledger.balance(tok.token_id)).balance == Decimal("1.00")

            # Each token source (§0.2): X-PAYMENT, legacy X-Payment-Token, ?payment_token=.
            r = await http.post(url, json=BODY, headers={"X-PAYMENT": tok.token})
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"] == "Paid answer."
            r = await http.post(url, json=BODY, headers={"X-Payment-Token": tok.token})
            assert r.json()["choices"][0]["message"]["content"] == "Second one."
            r = await http.post(url, json=BODY, params={"payment_token": tok.token})
            assert r.json()["choices"][0]["message"]["content"] == "Third one."
            # 3 x (0.10 per turn + 2 words x 0.01)
            balance = await ledger.balance(tok.token_id)
            assert (balance.spent, balance.balance) == (Decimal("0.36"), Decimal("0.64"))

            # Streaming preflight: a bad token is a 402 too, with the token-invalid code.
            r = await http.post(url, json={**BODY, "stream": True}, headers={"X-PAYMENT": "junk"})
            assert r.status_code == 402
            assert r.json()["error"] == "PAYMENT_TOKEN_INVALID"
            assert r.json()["subcode"] == "TOKEN_MALFORMED"
            # ...and it still says what to pay, so an x402 client can retry at once.
            assert r.json()["accepts"] == ACCEPTS


async def test_completions_stream_runs_out_mid_turn_error_chunk() -> None:
    ledger, tok = await funded("0.50")
    log: list[str] = []
    agent = paid_agent(
        [[Reply("Let me check."), CallTool("expensive")], Reply("unreached")],
        tools=[expensive_tool(log)],
    )
    with trio.fail_after(10):
        async with serve_paid(agent, ledger) as srv, httpx.AsyncClient() as http:
            r = await http.post(
                srv.agent_url("paid", "/v1/chat/completions"),
                json={**BODY, "stream": True},
                headers={"X-PAYMENT": tok.token},
            )
            assert r.status_code == 200
            chunks = sse_data(r.text)
            text = "".join(
                c["choices"][0]["delta"].get("content") or ""
                for c in chunks
                if isinstance(c, dict) and c.get("choices")
            )
            assert text == "Let me check."
            assert chunks[-1] == "[DONE]"
            err = chunks[-2]["error"]
            assert err["type"] == "payment_required"
            assert err["code"] == "INSUFFICIENT_TOKEN_BALANCE"
            assert err["param"] is None
            # 1.00 asked; the token had 0.50 - 0.10 (turn) - 0.03 (3 words) = 0.37 left
            assert err["accepts"][0]["amount"] == "0.63"
            assert log == []
    balance = await ledger.balance(tok.token_id)
    assert (balance.balance, balance.spent) == (Decimal("0.50"), Decimal(0))  # released


# --------------------------------------------------------------------------------------------
# UAMP
# --------------------------------------------------------------------------------------------


async def _send(ws: trio_websocket.WebSocketConnection, **event: Any) -> None:
    await ws.send_message(orjson.dumps(event).decode())


async def _until(
    ws: trio_websocket.WebSocketConnection, pred: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    out = []
    while True:
        ev = orjson.loads(await ws.get_message())
        out.append(ev)
        if pred(ev):
            return out


def _is(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda ev: ev["type"] == kind


async def _session(ws: trio_websocket.WebSocketConnection, **extra: Any) -> str:
    await _send(ws, type="session.create", **extra)
    evs = await _until(ws, _is("capabilities"))
    return str(evs[0]["session_id"])


def _texts(events: list[dict[str, Any]]) -> str:
    return "".join(
        e["delta"]["text"]
        for e in events
        if e["type"] == "response.delta" and e["delta"]["type"] == "text"
    )


async def test_uamp_mid_stream_topup_completes_in_place() -> None:
    """The headline: text streams, an expensive tool drains the lock, the client tops up its
    token at the ledger and submits it, the same response finishes; charged exactly once."""
    ledger, tok = await funded("0.50")
    log: list[str] = []
    agent = paid_agent(
        [[Reply("Let me look that up."), CallTool("expensive")], Reply("Found it.")],
        tools=[expensive_tool(log)],
    )
    with trio.fail_after(10):
        async with (
            serve_paid(agent, ledger) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("paid")) as ws,
        ):
            sid = await _session(ws, session={"payment_token": tok.token})
            await _send(ws, type="input.text", text="find it")
            before = await _until(ws, _is("payment.required"))
            required = before[-1]
            rid = before[0]["response_id"]
            assert before[0]["type"] == "response.created"
            assert _texts(before) == "Let me look that up."
            assert required["response_id"] == rid and required["session_id"] == sid
            # 0.10 turn + 0.05 (5 words) locked; the 1.00 tool finds 0.35 left: 0.65 short
            assert required["extra"] == {
                "action": "topup",
                "amount": "0.65",
                "token_id": tok.token_id,
            }
            assert required["requirements"]["amount"] == "0.65"
            assert required["accepts"][0]["payTo"] == "acct_paid"
            assert log == []  # suspended before it ran

            # Pings and the ledger go on while the response waits.
            await _send(ws, type="ping", event_id="p1")
            assert (await _until(ws, _is("pong")))[-1]["reply_to"] == "p1"
            await ledger.topup(tok.token_id, "1.00", "client-topup-1")
            await _send(
                ws,
                type="payment.submit",
                response_id=rid,
                payment={"scheme": "token", "token": tok.token},
            )
            after = await _until(ws, _is("payment.balance"))
            kinds = [e["type"] for e in after]
            assert kinds[0] == "payment.accepted"
            assert after[0]["balance_remaining"] == "1.35"
            assert "response.created" not in kinds
            terminals = [k for k in kinds if k in uamp.TERMINAL_TYPES]
            assert terminals == ["response.done"]
            assert all(e.get("response_id", rid) == rid for e in after)
            assert _texts(before) + _texts(after) == "Let me look that up.Found it."
            done = next(e for e in after if e["type"] == "response.done")
            assert done["response"]["output"] == [
                {"type": "text", "text": "Let me look that up.Found it."}
            ]
            tool_results = [
                e["delta"]["tool_result"]["result"]
                for e in after
                if e["type"] == "response.delta" and e["delta"]["type"] == "tool_result"
            ]
            assert tool_results == ["expensive result"]
            assert log == ["expensive"]
            balance_ev = after[-1]
            # 0.10 + 0.05 + 1.00 + 0.02 (2 words) = 1.17 of 1.50
            assert balance_ev["balance"] == "0.33"
            assert balance_ev["threshold"] == "0.05"
            assert balance_ev["low_balance_warning"] is False
    balance = await ledger.balance(tok.token_id)
    assert (balance.spent, balance.balance, balance.locked) == (
        Decimal("1.17"),
        Decimal("0.33"),
        Decimal(0),
    )


async def test_uamp_pay_bad_then_good_submit_other_session_goes_on() -> None:
    ledger, tok = await funded("1.00")
    other = await ledger.issue_token("1.00")
    # One model for both sessions: session 2 answers first, while session 1 waits.
    agent = paid_agent("Other answer.", "Paid answer.", "Again now.", tools=[expensive_tool([])])
    with trio.fail_after(10):
        async with (
            serve_paid(agent, ledger) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("paid")) as ws,
        ):
            s1 = await _session(ws)
            s2 = await _session(ws)
            await _send(ws, type="input.text", text="hi", session_id=s1)
            first = await _until(ws, _is("payment.required"))
            assert [e["type"] for e in first] == ["response.created", "payment.required"]
            rid = first[0]["response_id"]
            assert first[1]["extra"] == {"action": "pay"}
            assert first[1]["requirements"]["amount"] == "0.10"

            # Session 2 answers while session 1 waits.
            await _send(ws, type="input.text", text="hi", session_id=s2, payment_token=other.token)
            evs = await _until(ws, lambda e: e["type"] == "payment.balance")
            assert {e["session_id"] for e in evs} == {s2}
            assert _texts(evs) == "Other answer."

            await _send(ws, type="payment.submit", session_id=s1, payment={"token": "junk"})
            bad = await _until(ws, _is("payment.error"))
            assert bad[-1]["code"] == "token_invalid" and bad[-1]["can_retry"] is True
            await _send(ws, type="payment.submit", session_id=s1, payment={"token": tok.token})
            evs = await _until(ws, _is("payment.balance"))
            kinds = [e["type"] for e in evs]
            assert kinds[0] == "payment.accepted"
            assert "response.created" not in kinds
            assert [k for k in kinds if k in uamp.TERMINAL_TYPES] == ["response.done"]
            assert _texts(evs) == "Paid answer."
            assert {e.get("response_id", rid) for e in evs} == {rid}
            assert evs[-1]["balance"] == "0.88"  # 0.10 + 2 words

            # The submitted token is now the session's: the next turn needs no negotiation.
            await _send(ws, type="input.text", text="again", session_id=s1)
            evs = await _until(ws, _is("payment.balance"))
            assert "payment.required" not in [e["type"] for e in evs]
    assert (await ledger.balance(tok.token_id)).spent == Decimal("0.12") + Decimal("0.12")
    assert (await ledger.balance(other.token_id)).spent == Decimal("0.12")


async def test_uamp_payment_timeout_releases_everything() -> None:
    ledger, tok = await funded("0.50")
    log: list[str] = []
    agent = paid_agent([[Reply("Working."), CallTool("expensive")]], tools=[expensive_tool(log)])
    with trio.fail_after(10):
        async with (
            serve_paid(agent, ledger, payment_timeout=0.3) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("paid")) as ws,
        ):
            await _session(ws)
            await _send(ws, type="input.text", text="go", payment_token=tok.token)
            evs = await _until(ws, lambda e: e["type"] in uamp.TERMINAL_TYPES)
            kinds = [e["type"] for e in evs]
            assert kinds[-3:] == ["payment.required", "payment.error", "response.error"]
            assert evs[-2]["code"] == "payment_timeout" and evs[-2]["can_retry"] is False
            assert evs[-1]["error"]["code"] == "payment_timeout"
            assert log == []
    balance = await ledger.balance(tok.token_id)
    assert (balance.balance, balance.spent) == (Decimal("0.50"), Decimal(0))


@pytest.mark.parametrize("how", ["response.cancel", "session.end", "disconnect"])
async def test_uamp_cancel_while_waiting_releases_the_lock(how: str) -> None:
    ledger, tok = await funded("0.50")
    log: list[str] = []
    agent = paid_agent([[Reply("Working."), CallTool("expensive")]], tools=[expensive_tool(log)])
    with trio.fail_after(10):
        async with (
            serve_paid(agent, ledger) as srv,
            trio_websocket.open_websocket_url(srv.agent_ws_url("paid")) as ws,
        ):
            sid = await _session(ws)
            await _send(ws, type="input.text", text="go", payment_token=tok.token)
            evs = await _until(ws, _is("payment.required"))
            assert len(ledger.open_locks()) == 2  # the turn's reserve and the usage lock
            if how == "response.cancel":
                await _send(ws, type="response.cancel", response_id=evs[0]["response_id"])
                end = await _until(ws, lambda e: e["type"] in uamp.TERMINAL_TYPES)
                assert end[-1]["type"] == "response.cancelled"
                assert end[-1]["partial_output"] == [{"type": "text", "text": "Working."}]
                assert ledger.open_locks() == []
            elif how == "session.end":
                await _send(ws, type="session.end", session_id=sid)
                end = await _until(ws, _is("session.end"))
                assert "response.cancelled" in [e["type"] for e in end]
                assert ledger.open_locks() == []
            # disconnect: the socket closes first, then the server waits for its cleanup
    assert log == []
    balance = await ledger.balance(tok.token_id)
    assert (balance.balance, balance.spent) == (Decimal("0.50"), Decimal(0))
