"""Payments and auth (PROTOCOLS.md §9, §10) driven by the real third-party SDKs.

The clients are asyncio libraries, so each runs ``tests/sdk_payments_auth_script.py`` in a
subprocess against a real server on 127.0.0.1:0 and prints what its user sees; the ledger and
the signatures are checked here. The server requires auth (an API key or a JWT of the trusted
issuer) and serves ``bot`` (free, signs its responses) and ``paid`` (0.10 per turn + 0.01 per
output word). Versions: openai 3.x, a2a-sdk 1.3, agent-client-protocol 0.12.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import trio
from flow_helpers import (
    ACCEPTS,
    API_KEY,
    API_KEY_SUB,
    auth_service,
    check_signature,
    expensive_tool,
    funded,
    paid_agent,
    price_of,
    serve_paid,
    spent,
    token,
)

from trioagents import Agent, BuiltinModel, CallTool, Reply
from trioagents.payments import MemoryLedger
from trioagents.testing import TestServer

SCRIPT = str(Path(__file__).with_name("sdk_payments_auth_script.py"))
TIMEOUT = 40
ANSWERS = ("Paid answer.", "Second one.")
"""What ``paid`` says, turn after turn; each costs :func:`~flow_helpers.price_of` it."""
CHARGED = sum((price_of(a) for a in ANSWERS), Decimal(0))


@asynccontextmanager
async def serve() -> AsyncIterator[tuple[TestServer, MemoryLedger, dict[str, str]]]:
    """The server, its ledger and the script's arguments: a payment token holding 1.00
    (``pay``) and one holding 0.50 (``pay_small``) for ``pricey``, whose 1.00 tool exceeds it."""
    ledger, tok = await funded("1.00")
    small = await ledger.issue_token("0.50")
    pricey = paid_agent(
        [[Reply("Let me check."), CallTool("expensive")], Reply("unreached")],
        tools=[expensive_tool([])],
        name="pricey",
    )
    agents = [paid_agent(*ANSWERS), pricey, Agent("bot", model=BuiltinModel())]
    async with serve_paid(agents, ledger, auth=auth_service(required=True)) as srv:
        args = {
            "url": srv.url,
            "api_key": API_KEY,
            "jwt_bot": token(),
            "jwt_paid": token(aud="paid"),
            "pay": tok.token,
            "token_id": tok.token_id,
            "pay_small": small.token,
            "small_id": small.token_id,
        }
        yield srv, ledger, args


async def run_script(section: str, args: dict[str, str]) -> dict[str, Any]:
    """Run one section of the client script; its JSON output."""
    proc = await trio.run_process(
        [sys.executable, SCRIPT, section, orjson.dumps(args).decode()],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    result: dict[str, Any] = orjson.loads(proc.stdout)
    return result


async def assert_charged(ledger: MemoryLedger, args: dict[str, str], amount: Decimal) -> None:
    """The token paid exactly ``amount`` and nothing is left locked."""
    assert await spent(ledger, args["token_id"]) == (amount, Decimal("1.00") - amount)
    assert ledger.open_locks() == []


async def test_openai_chat_completions_payment_auth_and_signature() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve() as (srv, ledger, args):
            out = await run_script("openai", args)
            assert out["version"].startswith("3.")

            # No payment token: the 402 preflight is an APIStatusError. The §9.2 body's
            # top-level "error" is a string, so the SDK's e.body is that code; the whole body
            # (accepts included) is e.response.json().
            no_token = out["no_token"]
            assert no_token["chain"][0] == "openai.APIStatusError"
            assert no_token["status"] == 402
            assert no_token["body"] == "PAYMENT_TOKEN_REQUIRED"
            body = no_token["json"]
            assert (body["error"], body["status_code"], body["x402Version"]) == (
                "PAYMENT_TOKEN_REQUIRED",
                402,
                2,
            )
            assert body["accepts"] == ACCEPTS
            assert body["context"]["accepts"] == ACCEPTS
            junk = out["junk_token"]
            assert junk["status"] == 402
            assert (junk["json"]["error"], junk["json"]["subcode"]) == (
                "PAYMENT_TOKEN_INVALID",
                "TOKEN_MALFORMED",
            )
            assert junk["json"]["accepts"] == ACCEPTS

            # extra_headers={"X-PAYMENT": token}: JSON then stream=True; exactly the price.
            assert (out["paid_json"], out["paid_stream"]) == ANSWERS
            await assert_charged(ledger, args, CHARGED)

            # Funds run out mid-stream (a 1.00 tool on a 0.50 token): the SDK raises APIError
            # on the error chunk, its body the error with the top-up's accepts; nothing is
            # charged (the lock is released).
            short = out["runs_out"]
            assert short["text"] == "Let me check."
            assert short["chain"][0] == "openai.APIError"
            assert short["body"]["type"] == "payment_required"
            assert short["body"]["code"] == "INSUFFICIENT_TOKEN_BALANCE"
            assert short["body"]["accepts"][0]["amount"] == "0.63"
            assert await spent(ledger, args["small_id"]) == (Decimal(0), Decimal("0.50"))

            # Auth: a wrong key and no key are AuthenticationError (401) with WWW-Authenticate.
            for name, code in (("wrong_key", "invalid_token"), ("no_key", "missing_token")):
                failure = out[name]
                assert failure["chain"][:2] == [
                    "openai.AuthenticationError",
                    "openai.APIStatusError",
                ]
                assert failure["status"] == 401
                assert failure["body"]["code"] == code
                assert failure["body"]["type"] == "invalid_request_error"
                assert failure["www_authenticate"].startswith("Bearer")
            assert out["api_key_ok"] == "You said: hi"

            # The signed agent: the X-Response-Signature header of the JSON response (raw read)
            # verifies over the exact text and the exact request bytes the SDK sent.
            signed = out["signed_json"]
            assert signed["text"] == "You said: hi"
            claims = check_signature(
                signed["signature"], signed["text"], signed["request"].encode(), srv, "alice"
            )
            assert claims["aud"] == "alice"
            # stream=True: the SDK stops at [DONE] and drains the trailing
            # ``event: response_signature`` without surfacing it or failing.
            assert out["signed_stream"] == {"text": "You said: hi", "chunks": 5, "finish": "stop"}
            raw = out["signed_stream_raw"]
            assert raw["after_done"] == ["event", "data"]
            assert raw["text"] == "You said: hi"
            check_signature(raw["signature"], raw["text"], raw["request"].encode(), srv, "alice")
            await assert_charged(ledger, args, CHARGED)  # free agent: nothing more charged


async def test_openai_realtime_auth_signature_and_payment() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve() as (srv, ledger, args):
            out = await run_script("realtime", args)

            # A refused handshake surfaces as the websockets library's InvalidStatus (the SDK
            # does not wrap it) with our 401 and the generic error body.
            for name, reason in (("wrong_key", "invalid_token"), ("no_key", "missing_token")):
                refused = out[name]
                assert refused["chain"][0] == "websockets.exceptions.InvalidStatus"
                assert refused["status"] == 401
                assert refused["body"]["error"]["code"] == "unauthorized"
                assert refused["body"]["error"]["details"]["reason"] == reason

            # The SDK's api_key (bearer) is accepted: an API key and a JWT; response.done
            # carries the signature (an extra field the SDK keeps in model_extra).
            for name, sub in (("api_key", API_KEY_SUB), ("jwt", "alice")):
                ok = out[name]
                assert (ok["first"], ok["text"], ok["status"]) == (
                    "session.created",
                    "You said: hello",
                    "completed",
                )
                check_signature(ok["signature"], ok["text"], ok["request"].encode(), srv, sub)

            # Payment: the SDK has no payment.* models; it parses them leniently (as its
            # first union member, ConversationCreatedEvent, fields in model_extra) and sends
            # payment.submit as a plain dict. A junk token first, then the real one.
            pay = out["payment"]
            events = pay["events"]
            assert [e["type"] for e in events] == [
                "conversation.item.added",
                "conversation.item.done",
                "response.created",
                "payment.required",
                "payment.error",
                "payment.accepted",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.done",
                "payment.balance",
            ]
            assert {e["class"] for e in events if e["type"].startswith("payment.")} == {
                "ConversationCreatedEvent"
            }
            required = events[3]["fields"]
            assert required["accepts"] == ACCEPTS
            assert required["requirements"]["amount"] == "0.10"
            assert required["extra"] == {"action": "pay"}
            error = events[4]["fields"]
            assert (error["code"], error["can_retry"]) == ("token_invalid", True)
            assert events[5]["fields"]["balance_remaining"] == "1.00"
            balance = events[-1]["fields"]
            assert balance["balance"] == str(Decimal("1.00") - price_of(ANSWERS[0]))
            assert pay["text"] == ANSWERS[0]
            await assert_charged(ledger, args, price_of(ANSWERS[0]))


async def test_a2a_sdk_auth_and_payment() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve() as (_, ledger, args):
            out = await run_script("a2a", args)
            # The card declares bearer security; the SDK's AuthInterceptor uses it.
            assert out["card_security"] == [{"schemes": {"bearer": {}}}]
            assert out["with_token"] == {
                "state": "TASK_STATE_COMPLETED",
                "text": "You said: hello",
                "signed": True,
            }
            # Without credentials (or with bad ones) the SDK raises A2AClientError on our 401.
            for name in ("without_token", "bad_token"):
                failure = out[name]
                assert failure["chain"] == [
                    "a2a.client.errors.A2AClientError",
                    "a2a.utils.errors.A2AError",
                ]
                assert failure["message"].startswith("HTTP Error 401")

            # Paid: input-required with the x402 metadata, then the payment message completes
            # the same task (non-streaming, then streaming with the text as artifact updates).
            for name, answer in (("paid", ANSWERS[0]), ("paid_stream", ANSWERS[1])):
                paid = out[name]
                assert paid["asked_state"] == "TASK_STATE_INPUT_REQUIRED"
                assert paid["asked_text"] == "Payment token required"
                meta = paid["asked_metadata"]
                assert meta["x402.payment.status"] == "payment-required"
                # protobuf Struct numbers are doubles: x402Version 2.0, maxTimeoutSeconds 300.0
                # compare equal to the integers we sent.
                assert meta["x402.payment.required"] == {"x402Version": 2, "accepts": ACCEPTS}
                assert paid["task_ids"] == [paid["task_id"]]
                assert (paid["done_state"], paid["done_text"]) == ("TASK_STATE_COMPLETED", answer)
            assert out["paid"]["streamed"] == ""
            assert out["paid_stream"]["streamed"] == ANSWERS[1]
            await assert_charged(ledger, args, CHARGED)


async def test_acp_sdk_auth_and_payment() -> None:
    with trio.fail_after(TIMEOUT):
        async with serve() as (_, ledger, args):
            out = await run_script("acp", args)
            # Auth over ACP HTTP is the HTTP 401 on initialize: the SDK raises
            # AcpHttpStatusError (status_code 401), not a JSON-RPC -32000.
            for name in ("http_no_token", "http_bad_token"):
                assert out[name] == {
                    "chain": ["acp.http.client.AcpHttpStatusError", "builtins.RuntimeError"],
                    "status": 401,
                }
            assert out["ws_no_token"]["chain"][0] == "websockets.exceptions.InvalidStatus"
            assert out["ws_no_token"]["status"] == 401

            for carrier, answer in (("http", ANSWERS[0]), ("ws", ANSWERS[1])):
                result = out[carrier]
                assert result["no_token"] == {
                    "chain": ["acp.exceptions.RequestError"],
                    "code": -32402,
                    "message": "Payment token required",
                    "data": {
                        "x402Version": 2,
                        "accepts": ACCEPTS,
                        "error": "PAYMENT_TOKEN_REQUIRED",
                    },
                }
                junk = result["junk_token"]
                assert junk["code"] == -32402
                assert (junk["data"]["error"], junk["data"]["subcode"]) == (
                    "PAYMENT_TOKEN_INVALID",
                    "TOKEN_MALFORMED",
                )
                assert junk["data"]["accepts"] == ACCEPTS
                assert result["updates_before_paying"] == 0
                # prompt(..., payment_token=…) goes into _meta.payment_token.
                assert result["paid"] == {"stop": "end_turn", "text": answer}
            await assert_charged(ledger, args, CHARGED)
