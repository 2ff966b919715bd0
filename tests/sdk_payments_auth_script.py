"""Payments and auth driven by the real third-party SDKs (asyncio, so run in a subprocess).

Usage: ``python sdk_payments_auth_script.py SECTION ARGS_JSON`` where SECTION is ``openai``,
``realtime``, ``a2a`` or ``acp`` and ARGS_JSON holds ``url`` (the server), ``api_key``,
``jwt_bot`` / ``jwt_paid`` (caller JWTs for the agents ``bot`` and ``paid``) and ``pay`` (a
funded payment token). The server (``tests/test_sdk_payments_auth.py``) requires auth, serves
``bot`` (free, signs its responses) and ``paid`` (charges per turn and per output word).

Prints one JSON object: what a user of each SDK sees — the exception classes and their fields,
texts, task states, payment metadata, and raw signatures plus the exact request bytes they sign
(the test verifies them against the agent's key and checks the ledger).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

USER_HI = [{"role": "user", "content": "hi"}]


def _chain(exc: BaseException) -> list[str]:
    """The exception's class and its bases up to ``Exception`` (what ``except`` can match)."""
    return [
        f"{k.__module__}.{k.__qualname__}"
        for k in type(exc).__mro__
        if k not in (Exception, BaseException, object)
    ]


# -- openai: Chat Completions -------------------------------------------------------------------


async def openai_section(args: dict[str, Any]) -> dict[str, Any]:
    import openai
    from openai import AsyncOpenAI

    out: dict[str, Any] = {"version": openai.__version__}
    base = args["url"] + "/v1"

    def client(api_key: str) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=base, api_key=api_key, max_retries=0)

    keyed = client(args["api_key"])
    # A paid agent without a payment token: the 402 preflight.
    try:
        await keyed.chat.completions.create(model="paid", messages=USER_HI)
    except openai.APIStatusError as exc:
        out["no_token"] = {
            "chain": _chain(exc),
            "status": exc.status_code,
            "body": exc.body,
            "json": exc.response.json(),
        }
    # A junk token: still a 402, with the sibling code.
    try:
        await keyed.chat.completions.create(
            model="paid",
            messages=USER_HI,
            extra_headers={"X-PAYMENT": "junk"},
        )
    except openai.APIStatusError as exc:
        out["junk_token"] = {"status": exc.status_code, "json": exc.response.json()}
    # With the token: the turn runs, JSON then stream.
    paid = await keyed.chat.completions.create(
        model="paid",
        messages=USER_HI,
        extra_headers={"X-PAYMENT": args["pay"]},
    )
    out["paid_json"] = paid.choices[0].message.content
    stream = await keyed.chat.completions.create(
        model="paid",
        messages=USER_HI,
        extra_headers={"X-PAYMENT": args["pay"]},
        stream=True,
    )
    out["paid_stream"] = "".join(
        [c.choices[0].delta.content or "" async for c in stream if c.choices]
    )

    # Funds running out mid-stream: an error chunk, then [DONE].
    text = ""
    try:
        async for chunk in await keyed.chat.completions.create(
            model="pricey",
            messages=USER_HI,
            extra_headers={"X-PAYMENT": args["pay_small"]},
            stream=True,
        ):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    except openai.APIError as exc:
        out["runs_out"] = {"text": text, "chain": _chain(exc), "body": exc.body}

    # Auth: a wrong key, no key at all (the SDK insists on one: drop its header), good ones.
    for name, c, headers in (
        ("wrong_key", client("sk-wrong"), {}),
        ("no_key", keyed, {"Authorization": openai.Omit()}),
    ):
        try:
            await c.chat.completions.create(
                model="bot",
                messages=USER_HI,
                extra_headers=headers,
            )
        except openai.APIStatusError as exc:
            out[name] = {
                "chain": _chain(exc),
                "status": exc.status_code,
                "body": exc.body,
                "www_authenticate": exc.response.headers.get("www-authenticate"),
            }
    ok = await keyed.chat.completions.create(model="bot", messages=USER_HI)
    out["api_key_ok"] = ok.choices[0].message.content

    # A signed agent with a JWT: the JSON response's X-Response-Signature via a raw read …
    jwt = client(args["jwt_bot"])
    raw = await jwt.chat.completions.with_raw_response.create(
        model="bot",
        messages=USER_HI,
    )
    completion = raw.parse()
    out["signed_json"] = {
        "text": completion.choices[0].message.content,
        "signature": raw.headers.get("x-response-signature"),
        "request": raw.http_request.content.decode(),
    }
    # … the SDK's stream skips the trailing ``event: response_signature`` (after [DONE]) …
    chunks = [
        c
        async for c in await jwt.chat.completions.create(
            model="bot",
            messages=USER_HI,
            stream=True,
        )
    ]
    out["signed_stream"] = {
        "text": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
        "chunks": len(chunks),
        "finish": [c.choices[0].finish_reason for c in chunks if c.choices][-1],
    }
    # … and a raw streaming read gets it.
    async with jwt.chat.completions.with_streaming_response.create(
        model="bot",
        messages=USER_HI,
        stream=True,
    ) as resp:
        lines = [line async for line in resp.iter_lines()]
        request = resp.http_request.content.decode()
    text, signature, after_done = "", None, []
    done = False
    for i, line in enumerate(lines):
        if line == "data: [DONE]":
            done = True
        elif done and line:
            after_done.append(line)
        elif line.startswith("data: "):
            chunk = json.loads(line[6:])
            if chunk.get("choices"):
                text += chunk["choices"][0]["delta"].get("content") or ""
        if line == "event: response_signature":
            signature = json.loads(lines[i + 1][6:])["signature"]
    out["signed_stream_raw"] = {
        "text": text,
        "signature": signature,
        "request": request,
        "after_done": [a.split(":")[0] for a in after_done],
    }
    return out


# -- openai: Realtime ---------------------------------------------------------------------------


def _user_item(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        },
    }


async def realtime_section(args: dict[str, Any]) -> dict[str, Any]:
    import openai
    from openai import AsyncOpenAI

    out: dict[str, Any] = {}
    base = args["url"] + "/v1"
    # Refused handshakes: the SDK's websocket library raises on the HTTP status.
    for name, key, headers in (
        ("wrong_key", "sk-wrong", {}),
        ("no_key", args["api_key"], {"Authorization": openai.Omit()}),
    ):
        c = AsyncOpenAI(base_url=base, api_key=key, max_retries=0)
        try:
            async with c.realtime.connect(model="bot", extra_headers=headers) as conn:
                out[name] = {"accepted": (await conn.recv()).type}
        except Exception as exc:
            response = getattr(exc, "response", None)
            out[name] = {
                "chain": _chain(exc),
                "status": getattr(response, "status_code", None),
                "body": json.loads(response.body) if response is not None else None,
            }

    # Accepted: an API key, then a JWT whose response is signed (response.done.signature).
    for name, key in (("api_key", args["api_key"]), ("jwt", args["jwt_bot"])):
        c = AsyncOpenAI(base_url=base, api_key=key, max_retries=0)
        async with c.realtime.connect(model="bot") as conn:
            first = await conn.recv()
            await conn.send(_user_item("hello"))
            create = {"type": "response.create"}
            await conn.send(create)
            text = ""
            while True:
                ev = await conn.recv()
                if ev.type == "response.output_text.delta":
                    text += ev.delta
                if ev.type == "response.done":
                    break
            out[name] = {
                "first": first.type,
                "text": text,
                "status": ev.response.status,
                "signature": (ev.model_extra or {}).get("signature"),
                # What the SDK put on the wire for the frame that triggered the response.
                "request": json.dumps(create),
            }

    # Payment: the SDK has no payment.* types; it parses them leniently and sends dicts as is.
    c = AsyncOpenAI(base_url=base, api_key=args["jwt_paid"], max_retries=0)
    async with c.realtime.connect(model="paid") as conn:
        await conn.recv()  # session.created
        await conn.send(_user_item("hi"))
        await conn.send({"type": "response.create"})
        seen: list[dict[str, Any]] = []
        text = ""
        while True:
            ev = await conn.recv()
            entry: dict[str, Any] = {"type": ev.type, "class": type(ev).__name__}
            if ev.type.startswith("payment."):
                entry["fields"] = {
                    k: v for k, v in (ev.model_extra or {}).items() if k not in ("event_id",)
                }
            seen.append(entry)
            if ev.type == "payment.required":
                await conn.send(
                    {
                        "type": "payment.submit",
                        "response_id": ev.response_id,
                        "payment": {"scheme": "token", "token": "junk"},
                    }
                )
            if ev.type == "payment.error":
                await conn.send(
                    {
                        "type": "payment.submit",
                        "payment": {"scheme": "token", "token": args["pay"]},
                    }
                )
            if ev.type == "response.output_text.delta":
                text += ev.delta
            if ev.type == "payment.balance":
                break
        out["payment"] = {"events": seen, "text": text}
    return out


# -- a2a-sdk ------------------------------------------------------------------------------------


async def a2a_section(args: dict[str, Any]) -> dict[str, Any]:
    import httpx
    from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
    from a2a.client.auth import AuthInterceptor, InMemoryContextCredentialStore
    from a2a.client.client import ClientCallContext
    from a2a.types.a2a_pb2 import Message, Part, Role, SendMessageRequest
    from google.protobuf.json_format import MessageToDict
    from google.protobuf.struct_pb2 import Struct

    def message(text: str, **extra: Any) -> Message:
        return Message(
            message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)], **extra
        )

    async def send(client: Any, msg: Message, **kw: Any) -> list[dict[str, Any]]:
        req = SendMessageRequest(message=msg)
        return [MessageToDict(e) async for e in client.send_message(req, **kw)]

    def last_status(events: list[dict[str, Any]]) -> dict[str, Any]:
        for ev in reversed(events):
            for key in ("task", "statusUpdate"):
                if key in ev and "status" in ev[key]:
                    status: dict[str, Any] = ev[key]["status"]
                    return status
        return {}

    out: dict[str, Any] = {}
    url = args["url"]
    async with httpx.AsyncClient() as http:
        card = await A2ACardResolver(http, f"{url}/agents/bot").get_agent_card()
    out["card_security"] = MessageToDict(card).get("securityRequirements")

    # The SDK's auth interceptor reads the card's security schemes and adds the bearer token.
    store = InMemoryContextCredentialStore()
    await store.set_credentials("s1", "bearer", args["jwt_bot"])
    client = ClientFactory(ClientConfig(streaming=False)).create(
        card, interceptors=[AuthInterceptor(store)]
    )
    async with client:
        events = await send(
            client, message("hello"), context=ClientCallContext(state={"sessionId": "s1"})
        )
        status = last_status(events)
        out["with_token"] = {
            "state": status["state"],
            "text": status["message"]["parts"][0]["text"],
            "signed": "response_signature" in status["message"].get("metadata", {}),
        }
        # The same client without credentials in the call context: the 401 surfaces.
        try:
            await send(client, message("hello"))
        except Exception as exc:
            out["without_token"] = {"chain": _chain(exc), "message": str(exc)}
    await store.set_credentials("s2", "bearer", "not-a-token")
    client = ClientFactory(ClientConfig(streaming=False)).create(
        card, interceptors=[AuthInterceptor(store)]
    )
    async with client:
        try:
            await send(
                client, message("hello"), context=ClientCallContext(state={"sessionId": "s2"})
            )
        except Exception as exc:
            out["bad_token"] = {"chain": _chain(exc), "message": str(exc)}

    # A paid agent (auth by an httpx client with a default header): input-required with the
    # x402 metadata, then a message carrying the payment completes the same task.
    headers = {"Authorization": "Bearer " + args["jwt_paid"]}
    async with httpx.AsyncClient(headers=headers) as http:
        paid_card = await A2ACardResolver(http, f"{url}/agents/paid").get_agent_card()
        for streaming in (False, True):
            name = "paid_stream" if streaming else "paid"
            client = ClientFactory(ClientConfig(streaming=streaming, httpx_client=http)).create(
                paid_card
            )
            first = await send(client, message("hi"))
            task = first[0]["task"]
            asked = last_status(first)
            payment = Struct()
            payment.update(
                {
                    "x402.payment.status": "payment-submitted",
                    "x402.payment.payload": {"scheme": "token", "payload": {"token": args["pay"]}},
                }
            )
            second = await send(
                client,
                message(
                    "paying", task_id=task["id"], context_id=task["contextId"], metadata=payment
                ),
            )
            done = last_status(second)
            texts = [
                p["text"]
                for ev in second
                for p in ev.get("artifactUpdate", {}).get("artifact", {}).get("parts", [])
            ]
            out[name] = {
                "asked_state": asked["state"],
                "asked_text": asked["message"]["parts"][0]["text"],
                "asked_metadata": asked["message"]["metadata"],
                "task_ids": sorted(
                    {
                        ev["task"]["id"] if "task" in ev else next(iter(ev.values()))["taskId"]
                        for ev in second
                    }
                ),
                "task_id": task["id"],
                "done_state": done["state"],
                "done_text": done["message"]["parts"][0]["text"],
                "streamed": "".join(texts),
            }
    return out


# -- agent-client-protocol (HTTP and WebSocket) ------------------------------------------------


class _Recorder:
    """The ACP client side: records ``session/update`` notifications."""

    def __init__(self) -> None:
        self.log: list[Any] = []

    async def session_update(self, session_id: str, update: Any, **kwargs: Any) -> None:
        self.log.append(update.model_dump(by_alias=True, exclude_none=True, mode="json"))

    async def request_permission(self, *args: Any, **kwargs: Any) -> Any:
        from acp import RequestError

        raise RequestError.method_not_found("session/request_permission")


async def acp_section(args: dict[str, Any]) -> dict[str, Any]:
    from acp import RequestError, connect_to_agent, text_block
    from acp.http import create_http_stream
    from acp.ws import create_websocket_stream

    out: dict[str, Any] = {}
    http_url = args["url"] + "/agents/paid/acp"
    ws_url = "ws" + http_url[len("http") :]

    # Auth: HTTP refuses initialize with 401, the WebSocket handshake with 401.
    for name, headers in (
        ("http_no_token", None),
        ("http_bad_token", {"Authorization": "Bearer x"}),
    ):
        conn = connect_to_agent(_Recorder(), create_http_stream(http_url, headers=headers))
        try:
            await conn.initialize(protocol_version=1)
            out[name] = {"accepted": True}
        except Exception as exc:
            out[name] = {"chain": _chain(exc), "status": getattr(exc, "status_code", None)}
        finally:
            await conn.close()
    try:
        transport = await create_websocket_stream(ws_url)
        await transport.close()
        out["ws_no_token"] = {"accepted": True}
    except Exception as exc:
        response = getattr(exc, "response", None)
        out["ws_no_token"] = {
            "chain": _chain(exc),
            "status": getattr(response, "status_code", None),
        }

    # Payment over both carriers, authenticated with the bearer JWT.
    auth = {"Authorization": "Bearer " + args["jwt_paid"]}
    for name in ("http", "ws"):
        rec = _Recorder()
        if name == "http":
            transport = create_http_stream(http_url, headers=auth)
        else:
            transport = await create_websocket_stream(ws_url, headers=auth)
        conn = connect_to_agent(rec, transport)
        result: dict[str, Any] = {}
        try:
            await conn.initialize(protocol_version=1)
            session = await conn.new_session(cwd="/tmp", mcp_servers=[])
            sid = session.session_id
            for case, extra in (("no_token", {}), ("junk_token", {"payment_token": "junk"})):
                try:
                    await conn.prompt(session_id=sid, prompt=[text_block("hi")], **extra)
                    result[case] = {"error": None}
                except RequestError as exc:
                    result[case] = {
                        "chain": _chain(exc),
                        "code": exc.code,
                        "message": str(exc),
                        "data": exc.data,
                    }
            result["updates_before_paying"] = len(rec.log)
            # The SDK puts extra keyword arguments into the request's ``_meta``.
            resp = await conn.prompt(
                session_id=sid, prompt=[text_block("hi")], payment_token=args["pay"]
            )
            result["paid"] = {
                "stop": resp.stop_reason,
                "text": "".join(
                    u["content"]["text"]
                    for u in rec.log
                    if u.get("sessionUpdate") == "agent_message_chunk"
                ),
            }
        finally:
            await conn.close()
        out[name] = result
    return out


SECTIONS = {
    "openai": openai_section,
    "realtime": realtime_section,
    "a2a": a2a_section,
    "acp": acp_section,
}


async def main(section: str, args: dict[str, Any]) -> dict[str, Any]:
    return await asyncio.wait_for(SECTIONS[section](args), 30)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))))
