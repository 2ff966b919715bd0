"""Shared set-up of the auth and payment flow tests (PROTOCOLS.md §9, §10).

* **Auth** — one trusted issuer (:data:`ISS`, :data:`ISSUER_KEY`), a signing key for the agent
  ``bot`` (:data:`AGENT_KEY`), an API key (:data:`API_KEY`); :func:`token` mints caller JWTs at
  the fixed test clock, :func:`auth_service` / :func:`serve_auth` build the server of the auth
  tests (agents ``bot``, signed, and ``plain``), :func:`check_signature` verifies a response
  signature of ``bot``.
* **Payments** — :data:`PRICING` (0.10 per turn + 0.01 per output word) and its x402
  :data:`ACCEPTS`; :func:`paid_agent` (``paid``), :func:`expensive_tool` (a 1.00 tool),
  :func:`funded` (a ledger and one token), :func:`serve_paid` (checks the ledger holds no open
  lock afterwards) and :func:`spent`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import orjson
import trio
import trio_websocket

from trioagents import Agent, BuiltinModel, Config, Reply, tool, uamp
from trioagents.auth import (
    AuthService,
    SigningKey,
    StaticKeys,
    jwks_document,
    verify_response_signature,
)
from trioagents.payments import IssuedToken, MemoryLedger, PaymentsService, Pricing
from trioagents.server import AgentServer
from trioagents.testing import TestServer, open_test_server
from trioagents.transports import DEFAULT_TRANSPORTS

CONFIG = Config(host="127.0.0.1", port=0, gc_freeze=False, graceful_timeout=5.0)
"""The test server's configuration (port 0, no GC freeze, quick shutdown)."""

# -- auth -------------------------------------------------------------------------------------

ISS = "https://issuer.example"
CLOCK_START = uamp.FixedClock().now_s()
ISSUER_KEY = SigningKey.generate("EC")
AGENT_KEY = SigningKey.generate("EC")
API_KEY = "sk-test-key"
API_KEY_SUB = "ci-bot"


def token(
    scope: str | None = None,
    *,
    aud: str = "bot",
    sub: str = "alice",
    exp: int | None = None,
    iss: str = ISS,
    key: SigningKey = ISSUER_KEY,
) -> str:
    """A JWT of the trusted issuer for ``aud`` (``exp`` default: an hour after the fixed clock)
    granting ``scope`` (space-separated; none: no ``scope`` claim)."""
    now = CLOCK_START
    claims: dict[str, Any] = {"iss": iss, "sub": sub, "aud": aud, "iat": now}
    claims["exp"] = exp or now + 3600
    if scope is not None:
        claims["scope"] = scope
    return key.sign(claims)


def bearer(value: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``value`` (none: no header)."""
    return {"Authorization": f"Bearer {value}"} if value else {}


def auth_service(
    *,
    required: bool = False,
    api_keys: dict[str, str] | None = None,
    signed: Iterable[str] = ("bot",),
) -> AuthService:
    """Trust :data:`ISS`; ``signed`` agents sign with :data:`AGENT_KEY`; API keys
    (default: :data:`API_KEY` for ``ci-bot``)."""
    names = list(signed)
    return AuthService(
        required=required,
        api_keys={API_KEY: API_KEY_SUB} if api_keys is None else api_keys,
        trusted_issuers=[ISS],
        keys=StaticKeys({ISS: jwks_document([ISSUER_KEY])}),
        sign_responses=names,
        signing_keys={name: AGENT_KEY for name in names},
    )


@asynccontextmanager
async def serve_auth(
    *, required: bool = False, clock: uamp.FixedClock | None = None
) -> AsyncIterator[TestServer]:
    """A server with the agents ``bot`` (signs its responses) and ``plain``."""
    server = AgentServer(
        [Agent("bot", model=BuiltinModel()), Agent("plain", model=BuiltinModel())],
        config=CONFIG,
        ids=uamp.SequentialIds(),
        clock=clock or uamp.FixedClock(),
        auth=auth_service(required=required),
    )
    async with open_test_server(server) as srv:
        yield srv


def check_signature(
    signature: str, text: str, request: bytes, srv: TestServer, sub: str | None
) -> dict[str, Any]:
    """The signature verifies against ``bot``'s key over exactly ``text`` and ``request``
    (for the caller ``sub``); returns its claims."""
    claims = verify_response_signature(
        signature,
        jwks_document([AGENT_KEY]),
        text,
        request,
        issuer=srv.agent_url("bot"),
        audience=sub,
        now=CLOCK_START + 1,
    )
    assert claims["iss"] == srv.agent_url("bot")
    return claims


# -- payments ---------------------------------------------------------------------------------

PRICING = Pricing(per_turn="0.10", per_output_token="0.01")
"""What :func:`paid_agent` charges: 0.10 per turn plus 0.01 per output token (word)."""

ACCEPTS = [
    {
        "scheme": "token",
        "network": "trioagents",
        "amount": "0.10",
        "asset": "trioagents:credits",
        "payTo": "acct_paid",
        "maxTimeoutSeconds": 300,
        "extra": {"tokenType": "jwt"},
    }
]
"""The x402 ``accepts`` a :func:`paid_agent` served by :func:`serve_paid` asks for."""


def price_of(text: str) -> Decimal:
    """What one turn answering ``text`` costs under :data:`PRICING` (built-in model: words)."""
    return Decimal("0.10") + Decimal("0.01") * len(text.split())


def expensive_tool(log: list[str], gate: trio.Event | None = None) -> Callable[..., Any]:
    """A tool costing 1.00 that appends to ``log`` (then waits for ``gate``, if given)."""

    @tool(price="1.00")
    async def expensive() -> str:
        """Costs a lot."""
        log.append("expensive")
        if gate is not None:
            await gate.wait()
        return "expensive result"

    return expensive


def paid_agent(
    script: Sequence[Any] | str,
    *more: str,
    tools: Iterable[Callable[..., Any]] = (),
    name: str = "paid",
    pricing: Pricing = PRICING,
) -> Agent:
    """The agent ``paid`` under :data:`PRICING`, its built-in model playing ``script`` (a list
    of steps, or reply texts as positional strings)."""
    steps = [Reply(script), *(Reply(r) for r in more)] if isinstance(script, str) else script
    return Agent(name, model=BuiltinModel(list(steps)), tools=tools, pricing=pricing)


async def funded(amount: str) -> tuple[MemoryLedger, IssuedToken]:
    """A fresh ledger and one token holding ``amount``."""
    ledger = MemoryLedger()
    return ledger, await ledger.issue_token(amount)


async def spent(ledger: MemoryLedger, token_id: str) -> tuple[Decimal, Decimal]:
    """``(spent, balance)`` of a token."""
    b = await ledger.balance(token_id)
    return b.spent, b.balance


def paid_server(
    agents: Agent | Sequence[Agent],
    ledger: MemoryLedger,
    *,
    auth: AuthService | None = None,
    **overrides: Any,
) -> AgentServer:
    """The server of the payment tests: every default transport, payments to ``acct_paid``."""
    return AgentServer(
        agents if isinstance(agents, Agent) else list(agents),
        config=CONFIG.replace(**overrides),
        ids=uamp.SequentialIds(),
        clock=uamp.FixedClock(),
        transports=DEFAULT_TRANSPORTS,
        payments=PaymentsService(ledger, pay_to="acct_paid"),
        auth=auth,
    )


@asynccontextmanager
async def serve_paid(
    agents: Agent | Sequence[Agent],
    ledger: MemoryLedger,
    *,
    auth: AuthService | None = None,
    **overrides: Any,
) -> AsyncIterator[TestServer]:
    """Serve :func:`paid_server`; afterwards, whatever happened, no lock is left open."""
    async with open_test_server(paid_server(agents, ledger, auth=auth, **overrides)) as srv:
        yield srv
    assert ledger.open_locks() == []


# -- wire -------------------------------------------------------------------------------------


def sse_data(text: str) -> list[Any]:
    """The ``data:`` items of an SSE body, JSON-decoded (``[DONE]`` kept as the string)."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


# -- reading what the server sent -----------------------------------------------------------


def dumps(obj: Any) -> str:
    """JSON text (a text frame; bytes would be a binary frame)."""
    return orjson.dumps(obj).decode()


async def until(ws: trio_websocket.WebSocketConnection, *kinds: str) -> list[dict[str, Any]]:
    """UAMP events up to and including the first of one of ``kinds``."""
    out = []
    while True:
        ev = orjson.loads(await ws.get_message())
        out.append(ev)
        if ev["type"] in kinds:
            return out


def text_of(events: list[dict[str, Any]]) -> str:
    """The streamed text of UAMP ``events`` (text deltas concatenated)."""
    return "".join(
        e["delta"]["text"]
        for e in events
        if e["type"] == "response.delta" and e["delta"]["type"] == "text"
    )


def sse_parts(body: str) -> tuple[str, list[Any], str | None]:
    """(concatenated content, data items, signature) of a Completions SSE body."""
    content, items, signature = "", [], None
    for block in body.split("\n\n"):
        lines = block.splitlines()
        if not lines:
            continue
        if lines[0] == "event: response_signature":
            signature = orjson.loads(lines[1][6:])["signature"]
            continue
        for line in lines:
            if line.startswith("data: "):
                data = line[6:]
                item = data if data == "[DONE]" else orjson.loads(data)
                items.append(item)
                if isinstance(item, dict) and item.get("choices"):
                    content += item["choices"][0]["delta"].get("content") or ""
    return content, items, signature
