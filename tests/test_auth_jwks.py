"""The JWKS cache against a real HTTP issuer (PROTOCOLS.md §10).

The issuer is Starlette on ``hypercorn.trio`` at 127.0.0.1:0 serving an OpenID configuration
and a JWKS with ``Cache-Control``/``ETag``, counting every request. Cache expiry runs on the
trio clock: the tests use a ``MockClock`` at real speed and *jump* it (no real sleeps), moving
their own ``fail_after`` deadline by the same amount.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import attrs
import httpx
import hypercorn.config
import hypercorn.trio
import orjson
import pytest
import trio
import trio.testing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trioagents import uamp
from trioagents.auth import (
    AuthError,
    JWKSCache,
    JWTVerifier,
    KeyRing,
    SigningKey,
    VerifierConfig,
    jwks_document,
    openid_configuration,
    sign_response,
    verify_response_signature,
)

TIMEOUT = 10
NOW = 1_767_225_600
AUD = "helper"


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Trio's clock at real speed, so sockets and ``fail_after`` behave; tests jump it."""
    return trio.testing.MockClock(rate=1.0)


@pytest.fixture(scope="module")
def key_a() -> SigningKey:
    return SigningKey.generate("RSA")


@pytest.fixture(scope="module")
def key_b() -> SigningKey:
    return SigningKey.generate("EC")


@attrs.define(eq=False)
class Issuer:
    """The fake issuer's state; tests change ``keys`` etc. while it runs."""

    base: str = ""
    keys: list[SigningKey] = attrs.field(factory=list)
    cache_control: str | None = "max-age=120"
    discovery: bool = True
    fail: bool = False
    gate: trio.Event | None = None
    jwks_requested: trio.Event = attrs.field(factory=trio.Event)
    requests: list[tuple[str, str | None]] = attrs.field(factory=list)
    """(path, If-None-Match) of every request, in order."""
    statuses: list[int] = attrs.field(factory=list)
    """Status of every JWKS answer, in order."""

    @property
    def iss(self) -> str:
        return f"{self.base}/agents/issuer"

    def count(self, path_suffix: str) -> int:
        return sum(1 for p, _ in self.requests if p.endswith(path_suffix))

    @property
    def jwks_fetches(self) -> int:
        return self.count("/jwks.json") + self.count("/keys.json")


def _app(issuer: Issuer) -> Starlette:
    async def oidc(request: Request) -> Response:
        issuer.requests.append((request.url.path, None))
        if not issuer.discovery:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(openid_configuration(issuer.iss, jwks_uri=f"{issuer.base}/keys.json"))

    async def jwks(request: Request) -> Response:
        inm = request.headers.get("if-none-match")
        issuer.requests.append((request.url.path, inm))
        issuer.jwks_requested.set()
        if issuer.gate is not None:
            await issuer.gate.wait()
        if issuer.fail:
            issuer.statuses.append(500)
            return JSONResponse({"error": "down"}, status_code=500)
        body = orjson.dumps(jwks_document(issuer.keys))
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {"ETag": etag}
        if issuer.cache_control is not None:
            headers["Cache-Control"] = issuer.cache_control
        if inm == etag:
            issuer.statuses.append(304)
            return Response(status_code=304, headers=headers)
        issuer.statuses.append(200)
        return Response(body, media_type="application/json", headers=headers)

    return Starlette(
        routes=[
            Route("/agents/issuer/.well-known/openid-configuration", oidc),
            Route("/agents/issuer/.well-known/jwks.json", jwks),
            Route("/keys.json", jwks),
        ]
    )


@asynccontextmanager
async def open_issuer(*keys: SigningKey) -> AsyncIterator[Issuer]:
    issuer = Issuer(keys=list(keys))
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    log = logging.getLogger("tests.auth_jwks.hypercorn")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    config.errorlog = log
    app: Any = _app(issuer)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(partial(hypercorn.trio.serve, app, config))
        issuer.base = binds[0]
        try:
            yield issuer
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_verifier(issuer: Issuer, **cache: Any) -> AsyncIterator[JWTVerifier]:
    # No keep-alive: a clock jump makes Hypercorn close idle connections, and a request racing
    # that close would fail for reasons unrelated to the cache.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=5) as client:
        yield JWTVerifier(
            VerifierConfig(audiences=(AUD,), trusted_issuers={issuer.iss}),
            JWKSCache(client, **cache),
            clock=uamp.FixedClock(),
        )


def token(key: SigningKey, issuer: Issuer, **claims: Any) -> str:
    return key.sign({"iss": issuer.iss, "sub": "user-1", "aud": AUD, "exp": NOW + 600, **claims})


def advance(clock: trio.testing.MockClock, scope: trio.CancelScope, seconds: float) -> None:
    """Jump trio time, keeping the test's real-time bound where it was."""
    scope.deadline += seconds
    clock.jump(seconds)


async def reason_of(v: JWTVerifier, tok: str) -> str:
    with pytest.raises(AuthError) as info:
        await v.verify(tok)
    return info.value.reason


async def test_cache_hit_then_revalidation_with_etag(
    clock: trio.testing.MockClock, key_a: SigningKey
) -> None:
    with trio.fail_after(TIMEOUT) as scope:
        async with open_issuer(key_a) as issuer, open_verifier(issuer) as v:
            for _ in range(3):
                assert (await v.verify(token(key_a, issuer))).sub == "user-1"
            # discovery, then the jwks_uri it names; the next two verifications are cache hits
            assert [p for p, _ in issuer.requests] == [
                "/agents/issuer/.well-known/openid-configuration",
                "/keys.json",
            ]
            advance(clock, scope, 119)
            await v.verify(token(key_a, issuer))
            assert issuer.jwks_fetches == 1  # max-age=120 not reached yet

            advance(clock, scope, 2)
            await v.verify(token(key_a, issuer))
            etag = issuer.requests[-1][1]
            assert issuer.requests[-1][0] == "/keys.json" and etag is not None
            assert issuer.statuses == [200, 304]
            assert issuer.count("openid-configuration") == 1  # jwks_uri remembered
            stats = v.keys.statistics()  # type: ignore[attr-defined]
            assert (stats.fetches, stats.not_modified, stats.discoveries) == (2, 1, 1)

            # The 304 renewed the lifetime: no request for another 120 s.
            advance(clock, scope, 119)
            await v.verify(token(key_a, issuer))
            assert issuer.jwks_fetches == 2


async def test_max_age_clamped_to_one_minute(
    clock: trio.testing.MockClock, key_a: SigningKey
) -> None:
    with trio.fail_after(TIMEOUT) as scope:
        async with open_issuer(key_a) as issuer, open_verifier(issuer) as v:
            issuer.cache_control = "max-age=1"
            await v.verify(token(key_a, issuer))
            advance(clock, scope, 30)
            await v.verify(token(key_a, issuer))
            assert issuer.jwks_fetches == 1
            advance(clock, scope, 31)
            await v.verify(token(key_a, issuer))
            assert issuer.jwks_fetches == 2


async def test_rotation_refetches_once_and_old_tokens_keep_verifying(
    clock: trio.testing.MockClock, key_a: SigningKey, key_b: SigningKey
) -> None:
    with trio.fail_after(TIMEOUT) as scope:
        async with open_issuer(key_a) as issuer, open_verifier(issuer) as v:
            old = token(key_a, issuer)
            await v.verify(old)
            assert issuer.jwks_fetches == 1

            issuer.keys = [key_b, key_a]  # the issuer rotates: new key first, old still published
            new = token(key_b, issuer)
            for _ in range(3):
                assert (await v.verify(new)).sub == "user-1"
                assert (await v.verify(old)).sub == "user-1"
            assert issuer.jwks_fetches == 2  # one refetch for the new kid, nothing else

            # The old key is withdrawn; once the cache revalidates, old tokens fail, new ones pass.
            issuer.keys = [key_b]
            advance(clock, scope, 121)
            assert await reason_of(v, old) == "unknown_key"
            assert (await v.verify(new)).sub == "user-1"
            assert issuer.jwks_fetches == 3
            assert issuer.statuses == [200, 200, 200]


async def test_unknown_kids_refetch_at_most_once_a_minute(
    clock: trio.testing.MockClock, key_a: SigningKey
) -> None:
    with trio.fail_after(TIMEOUT) as scope:
        async with open_issuer(key_a) as issuer, open_verifier(issuer) as v:
            await v.verify(token(key_a, issuer))
            advance(clock, scope, 61)  # the first fetch no longer counts for the rate limit
            strangers = [SigningKey.generate("EC") for _ in range(5)]
            for stranger in strangers:
                assert await reason_of(v, token(stranger, issuer)) == "unknown_key"
            assert issuer.jwks_fetches == 2  # five random kids, one refetch
            assert issuer.statuses == [200, 304]  # the refetch revalidated with the ETag
            assert (await v.verify(token(key_a, issuer))).sub == "user-1"  # known kids still fine

            advance(clock, scope, 59)
            assert await reason_of(v, token(strangers[0], issuer)) == "unknown_key"
            assert issuer.jwks_fetches == 2
            advance(clock, scope, 2)
            assert await reason_of(v, token(strangers[0], issuer)) == "unknown_key"
            assert issuer.jwks_fetches == 3


@pytest.mark.parametrize("warm", [False, True], ids=["empty-cache", "new-kid"])
async def test_concurrent_verifications_share_one_fetch(
    warm: bool, key_a: SigningKey, key_b: SigningKey
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_issuer(key_a) as issuer, open_verifier(issuer) as v:
            if warm:
                await v.verify(token(key_a, issuer))
                issuer.jwks_requested = trio.Event()
            issuer.keys = [key_b, key_a]
            before = issuer.jwks_fetches
            issuer.gate = trio.Event()
            subs: list[str] = []

            async def verify_one() -> None:
                subs.append((await v.verify(token(key_b, issuer))).sub)

            async with trio.open_nursery() as nursery:
                for _ in range(8):
                    nursery.start_soon(verify_one)
                await issuer.jwks_requested.wait()
                # Every verifier is now parked (on the lock or on the socket); only then answer.
                await trio.testing.wait_all_tasks_blocked()
                issuer.gate.set()
            assert subs == ["user-1"] * 8
            assert issuer.jwks_fetches == before + 1
            assert issuer.count("openid-configuration") == 1


async def test_discovery_fallbacks(key_a: SigningKey) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_issuer(key_a) as issuer:
            issuer.discovery = False
            async with open_verifier(issuer) as v:
                await v.verify(token(key_a, issuer))
            assert [p for p, _ in issuer.requests] == [
                "/agents/issuer/.well-known/openid-configuration",
                "/agents/issuer/.well-known/jwks.json",
            ]
            issuer.requests.clear()
            async with open_verifier(
                issuer, jwks_uris={issuer.iss: f"{issuer.base}/keys.json"}
            ) as v:
                await v.verify(token(key_a, issuer))
            assert [p for p, _ in issuer.requests] == ["/keys.json"]  # configured: no discovery


async def test_untrusted_issuer_is_never_fetched(key_a: SigningKey) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_issuer(key_a) as issuer, open_verifier(issuer) as v:
            forged = key_a.sign(
                {"iss": f"{issuer.base}/agents/evil", "sub": "x", "aud": AUD, "exp": NOW + 600}
            )
            assert await reason_of(v, forged) == "invalid_issuer"
            assert issuer.requests == []


async def test_fetch_failures(clock: trio.testing.MockClock, key_a: SigningKey) -> None:
    with trio.fail_after(TIMEOUT) as scope:
        async with open_issuer(key_a) as issuer, open_verifier(issuer) as v:
            issuer.fail = True
            assert await reason_of(v, token(key_a, issuer)) == "jwks_unavailable"
            issuer.fail = False
            await v.verify(token(key_a, issuer))  # a failure is not cached as "no keys"

            # Expired cache + issuer down: the stale keys keep working, retried after 60 s.
            issuer.fail = True
            advance(clock, scope, 121)
            assert (await v.verify(token(key_a, issuer))).sub == "user-1"
            fetches = issuer.jwks_fetches
            advance(clock, scope, 30)
            await v.verify(token(key_a, issuer))
            assert issuer.jwks_fetches == fetches
            issuer.fail = False
            advance(clock, scope, 31)
            await v.verify(token(key_a, issuer))
            assert issuer.jwks_fetches == fetches + 1
            assert issuer.statuses[-1] == 304
            assert v.keys.statistics().failures == 2  # type: ignore[attr-defined]


async def test_unreachable_issuer(key_a: SigningKey) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_issuer(key_a) as issuer:
            dead = Issuer(base=issuer.base.rsplit(":", 1)[0] + ":1")  # nothing listens on port 1
            async with open_verifier(dead) as v:
                assert await reason_of(v, token(key_a, dead)) == "jwks_unavailable"


async def test_signature_verifies_against_served_jwks(key_a: SigningKey, key_b: SigningKey) -> None:
    """A client fetches the agent's JWKS over HTTP and checks a response signature with it."""
    ring = KeyRing(key_a)
    ring.rotate(key_b, now=NOW)  # both keys published during the overlap
    with trio.fail_after(TIMEOUT):
        async with open_issuer(*ring.published(now=NOW + 1)) as issuer:
            request = b'{"input":"hi"}'
            text = "You said: hi"
            sigs = [
                sign_response(k, issuer=issuer.iss, response_text=text, request_bytes=request)
                for k in (key_a, key_b)
            ]
            async with httpx.AsyncClient() as client:
                jwks = (await client.get(f"{issuer.iss}/.well-known/jwks.json")).json()
            for sig in sigs:
                claims = verify_response_signature(sig, jwks, text, request, issuer=issuer.iss)
                assert claims["response_hash"] == hashlib.sha256(text.encode()).hexdigest()
                assert claims["request_hash"] == hashlib.sha256(request).hexdigest()
                with pytest.raises(AuthError) as info:
                    verify_response_signature(sig, jwks, "You said: hI", request)
                assert info.value.reason == "hash_mismatch"


async def test_issuer_entries_are_bounded(key_a: SigningKey) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_issuer(key_a) as issuer, httpx.AsyncClient() as client:
            names = [f"{issuer.base}/agents/a{i}" for i in range(3)]
            cache = JWKSCache(
                client, jwks_uris={n: f"{issuer.base}/keys.json" for n in names}, max_issuers=2
            )
            v = JWTVerifier(
                VerifierConfig(audiences=(AUD,), trusted_issuers=names), cache, uamp.FixedClock()
            )

            def tok(iss: str) -> str:
                return key_a.sign({"iss": iss, "sub": "u", "aud": AUD, "exp": NOW + 600})

            for name in [*names, names[2], names[0]]:
                assert (await v.verify(tok(name))).iss == name
            # a0 was forgotten when a2 arrived, so its second use fetched again.
            assert issuer.jwks_fetches == 4
            assert cache.statistics().issuers == 2
