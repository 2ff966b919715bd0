"""Auth building blocks (PROTOCOLS.md §10): keys, JWT verification, failure shapes, signatures.

No network here: keys come from :class:`StaticKeys` (the HTTP JWKS cache is tested in
``test_auth_jwks.py``). Time is a :class:`uamp.FixedClock`, so every expiry check is exact.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from trioagents import TrioAgentsError, uamp
from trioagents.auth import (
    JSONRPC_AUTH_ERROR,
    ApiKey,
    Authenticator,
    AuthError,
    JWTVerifier,
    KeyRing,
    Principal,
    ResponseHasher,
    ResponseSigner,
    SigningKey,
    StaticKeys,
    VerifierConfig,
    bearer_token,
    cache_max_age,
    http_failure,
    issuer_url,
    jsonrpc_error,
    jwks_document,
    openid_configuration,
    parse_jwks,
    require_scopes,
    sha256_hex,
    sign_response,
    uamp_error,
    verify_response_signature,
    ws_close_code,
)

TIMEOUT = 5
ISS = "https://issuer.example/agents/hub"
AUD = "https://agents.example/agents/helper"
NOW = 1_767_225_600  # FixedClock's default, in seconds


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey.generate("RSA")


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey.generate("EC")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    """A compact JWT built by hand; ``sign(signing_input) -> bytes`` (None: empty signature)."""
    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(claims))}"
    sig = sign(signing_input.encode()) if sign is not None else b""
    return f"{signing_input}.{b64(sig)}"


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "sub": "user-1",
        "aud": AUD,
        "iat": NOW - 10,
        "exp": NOW + 600,
        "scope": "chat tools:run admin",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def verifier(*keys: SigningKey, **config: Any) -> JWTVerifier:
    config.setdefault("trusted_issuers", {ISS})
    cfg = VerifierConfig.for_agent("helper", "https://agents.example", **config)
    return JWTVerifier(cfg, StaticKeys({ISS: jwks_document(keys)}), clock=uamp.FixedClock())


async def reason_of(v: JWTVerifier, token: str) -> str:
    with trio.fail_after(TIMEOUT), pytest.raises(AuthError) as info:
        await v.verify(token)
    return info.value.reason


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["RSA", "EC"])
def test_key_kid_pem_round_trip_and_jwk(kind: str, tmp_path: Path) -> None:
    key = SigningKey.generate(kind)  # type: ignore[arg-type]
    public = key.private_key.public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key.kid == hashlib.sha256(der).hexdigest()[:16]
    assert key.alg == ("RS256" if kind == "RSA" else "ES256")

    path = tmp_path / "keys" / "agent.pem"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = SigningKey.load(path)
    assert (loaded.kid, loaded.alg) == (key.kid, key.alg)
    assert SigningKey.from_pem(key.to_pem(b"pw"), b"pw").kid == key.kid
    assert SigningKey.load_or_generate(path).kid == key.kid  # existing key reused

    jwk = key.public_jwk()
    if kind == "RSA":
        assert set(jwk) == {"kty", "use", "alg", "kid", "n", "e"}
        assert (jwk["kty"], jwk["e"]) == ("RSA", "AQAB")
        assert isinstance(public, rsa.RSAPublicKey)
        n = int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=="), "big")
        assert n == public.public_numbers().n
    else:
        assert set(jwk) == {"kty", "use", "alg", "kid", "crv", "x", "y"}
        assert (jwk["kty"], jwk["crv"]) == ("EC", "P-256")
        assert len(base64.urlsafe_b64decode(jwk["x"] + "=")) == 32
    assert (jwk["use"], jwk["alg"], jwk["kid"]) == ("sig", key.alg, key.kid)
    # The published JWK verifies what the key signs (independently of our verifier).
    token = key.sign({"hello": "world"})
    assert jwt.get_unverified_header(token) == {"alg": key.alg, "typ": "JWT", "kid": key.kid}
    assert jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[key.alg]) == {"hello": "world"}


def test_load_or_generate_creates_on_first_run(tmp_path: Path) -> None:
    path = tmp_path / "new.pem"
    key = SigningKey.load_or_generate(path, "EC")
    assert path.exists() and key.alg == "ES256"
    assert SigningKey.load_or_generate(path, "EC").kid == key.kid


def test_unsupported_keys_refused() -> None:
    with pytest.raises(ValueError, match="2048"):
        SigningKey.from_private_key(rsa.generate_private_key(65537, 1024))
    with pytest.raises(ValueError, match="P-256"):
        SigningKey.from_private_key(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ValueError, match="unsupported"):
        SigningKey.from_private_key(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(ValueError):
        SigningKey.generate("DSA")  # type: ignore[arg-type]


def test_key_ring_keeps_retired_keys_published(rsa_key: SigningKey, ec_key: SigningKey) -> None:
    ring = KeyRing(rsa_key, retention=300)
    assert [k.kid for k in ring.published(now=0)] == [rsa_key.kid]
    ring.rotate(ec_key, now=1000)
    assert ring.active is ec_key
    assert [k["kid"] for k in ring.jwks(now=1299)["keys"]] == [ec_key.kid, rsa_key.kid]
    assert ring.get(rsa_key.kid, now=1299) is rsa_key
    assert [k["kid"] for k in ring.jwks(now=1300)["keys"]] == [ec_key.kid]  # retention over
    assert ring.get(rsa_key.kid, now=1300) is None
    ring.rotate(ec_key, now=2000)  # same key: no-op
    assert ring.published(now=2000) == [ec_key]


def test_documents(rsa_key: SigningKey, ec_key: SigningKey) -> None:
    doc = jwks_document([rsa_key, ec_key, rsa_key])  # union without duplicates
    assert [k["kid"] for k in doc["keys"]] == [rsa_key.kid, ec_key.kid]
    assert [(k.kid, k.alg) for k in parse_jwks(doc)] == [
        (rsa_key.kid, "RS256"),
        (ec_key.kid, "ES256"),
    ]
    iss = issuer_url("https://h.example/", "alice.bot")
    assert iss == "https://h.example/agents/alice.bot"
    oidc = openid_configuration(iss)
    assert oidc["issuer"] == iss
    assert oidc["jwks_uri"] == "https://h.example/agents/alice.bot/.well-known/jwks.json"
    assert oidc["id_token_signing_alg_values_supported"] == ["RS256", "ES256"]


def test_parse_jwks_skips_unusable_keys(rsa_key: SigningKey) -> None:
    good = rsa_key.public_jwk()
    doc = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {**good, "use": "enc", "kid": "enc"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {**good, "kid": 7},
            "not a key",
            good,
        ]
    }
    assert [k.kid for k in parse_jwks(doc)] == [rsa_key.kid]
    with pytest.raises(AuthError) as info:
        parse_jwks({"nokeys": []})
    assert info.value.reason == "jwks_unavailable"


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec"])
async def test_verify_round_trip(kind: str, rsa_key: SigningKey, ec_key: SigningKey) -> None:
    key = rsa_key if kind == "rsa" else ec_key
    v = verifier(rsa_key, ec_key, allowed_scopes=frozenset({"chat", "tools:run"}))
    with trio.fail_after(TIMEOUT):
        principal = await v.verify(key.sign(claims()))
    assert principal == Principal(
        sub="user-1",
        iss=ISS,
        scopes=frozenset({"chat", "tools:run"}),  # "admin" filtered out
        claims=claims(),
        expires_at=NOW + 600,
    )
    assert not principal.is_expired(NOW + 599) and principal.is_expired(NOW + 600)


async def test_eddsa_accepted() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    jwk = {**jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key(), as_dict=True), "kid": "ed"}
    v = JWTVerifier(
        VerifierConfig(audiences=(AUD,), trusted_issuers={ISS}),
        StaticKeys({ISS: {"keys": [jwk]}}),
        clock=uamp.FixedClock(),
    )
    token = jwt.encode(claims(), private, algorithm="EdDSA", headers={"kid": "ed"})
    with trio.fail_after(TIMEOUT):
        assert (await v.verify(token)).sub == "user-1"


async def test_audience_forms_and_scopes(rsa_key: SigningKey) -> None:
    v = verifier(rsa_key)
    with trio.fail_after(TIMEOUT):
        assert (await v.verify(rsa_key.sign(claims(aud="helper")))).sub == "user-1"
        assert (await v.verify(rsa_key.sign(claims(aud=["other", AUD + "/"])))).sub == "user-1"
        listed = await v.verify(rsa_key.sign(claims(scope=["a", "b"])))
        assert listed.scopes == {"a", "b"}  # no allowed_scopes: every scope kept
        none = await v.verify(rsa_key.sign(claims(scope=None)))
        assert none.scopes == frozenset()
        ms = await v.verify(rsa_key.sign(claims(exp=(NOW + 60) * 1000)))  # §0.3: ms
        assert ms.expires_at == NOW + 60


async def test_leeway_on_nbf_and_iat(rsa_key: SigningKey) -> None:
    v = verifier(rsa_key)
    with trio.fail_after(TIMEOUT):
        assert await v.verify(rsa_key.sign(claims(nbf=NOW + 59, iat=NOW + 59)))
    assert await reason_of(v, rsa_key.sign(claims(nbf=NOW + 61))) == "token_not_yet_valid"
    assert await reason_of(v, rsa_key.sign(claims(iat=NOW + 61))) == "token_not_yet_valid"


async def test_rejections(rsa_key: SigningKey, ec_key: SigningKey) -> None:
    v = verifier(rsa_key, ec_key)
    public_pem = rsa_key.public_pem()

    def hs256(data: bytes) -> bytes:
        return hmac.new(public_pem, data, hashlib.sha256).digest()

    def ec_sign(data: bytes) -> bytes:
        assert isinstance(ec_key.private_key, ec.EllipticCurvePrivateKey)
        return jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256).sign(
            data, ec_key.private_key
        )

    other = SigningKey.generate("RSA")
    impostor = SigningKey(private_key=other.private_key, alg="RS256", kid=rsa_key.kid)
    cases = {
        # alg none, with and without a signature
        "unsupported_algorithm": [
            forge({"alg": "none", "typ": "JWT"}, claims()),
            forge({"alg": "None", "kid": rsa_key.kid}, claims(), lambda d: b"x"),
            # the classic confusion: HS256 keyed with the published RSA public key
            forge({"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}, claims(), hs256),
            forge({"alg": "RS512", "kid": rsa_key.kid}, claims()),
            forge({"typ": "JWT"}, claims()),
        ],
        # ES256 signature claiming the RSA key's kid: the key type does not fit the alg
        "algorithm_mismatch": [
            forge({"alg": "ES256", "kid": rsa_key.kid}, claims(), ec_sign),
            forge({"alg": "RS256", "kid": ec_key.kid}, claims()),
        ],
        "token_expired": [rsa_key.sign(claims(exp=NOW)), rsa_key.sign(claims(exp=NOW - 3600))],
        "token_not_yet_valid": [rsa_key.sign(claims(nbf=NOW + 3600))],
        "invalid_audience": [
            rsa_key.sign(claims(aud="https://agents.example/agents/other")),
            rsa_key.sign(claims(aud=["other", "x"])),
            rsa_key.sign(claims(aud=None)),
            rsa_key.sign(claims(aud=5)),
        ],
        "invalid_issuer": [rsa_key.sign(claims(iss="https://evil.example/agents/hub"))],
        "missing_claim": [
            rsa_key.sign(claims(exp=None)),
            rsa_key.sign(claims(sub=None)),
            rsa_key.sign(claims(iss=None)),
            rsa_key.sign(claims(exp="tomorrow")),
            rsa_key.sign(claims(scope={"a": 1})),
        ],
        "unknown_key": [
            other.sign(claims()),  # a kid nobody published
        ],
        "invalid_token": [
            impostor.sign(claims()),  # right kid, wrong key: the signature fails
            rsa_key.sign(claims())[:-4] + "AAAA",
            "not-a-jwt",
            "",
            "a.b.c",
            "x" * 20_000,
            forge({"alg": "RS256", "kid": 5}, claims()),
        ],
    }
    for expected, tokens in cases.items():
        for token in tokens:
            assert await reason_of(v, token) == expected, (expected, token[:60])


async def test_no_kid_needs_a_single_suitable_key(rsa_key: SigningKey, ec_key: SigningKey) -> None:
    token = jwt.encode(claims(), rsa_key.private_key, algorithm="RS256")  # no kid header
    with trio.fail_after(TIMEOUT):
        # RSA + EC published: only one key is suitable for RS256
        assert (await verifier(rsa_key, ec_key).verify(token)).sub == "user-1"
    second = SigningKey.generate("RSA")
    assert await reason_of(verifier(rsa_key, second), token) == "unknown_key"


async def test_self_issued_allow_and_deny(rsa_key: SigningKey) -> None:
    self_iss = "https://bob.example/agents/bob"
    keys = StaticKeys({self_iss: jwks_document([rsa_key])})

    def v(**cfg: Any) -> JWTVerifier:
        return JWTVerifier(
            VerifierConfig.for_agent("helper", "https://agents.example", **cfg),
            keys,
            clock=uamp.FixedClock(),
        )

    token = rsa_key.sign(claims(iss=self_iss))
    with trio.fail_after(TIMEOUT):
        allowed = v(self_issued_allow=("https://*.example/agents/*",))
        assert (await allowed.verify(token)).iss == self_iss
    assert await reason_of(v(), token) == "invalid_issuer"
    denied = v(self_issued_allow=("https://*",), self_issued_deny=("https://bob.example/*",))
    assert await reason_of(denied, token) == "invalid_issuer"
    trusted_but_denied = v(trusted_issuers={self_iss + "/"}, self_issued_deny=("*bob*",))
    assert await reason_of(trusted_but_denied, token) == "invalid_issuer"


def test_config_refuses_none_and_hmac() -> None:
    for alg in ("none", "HS256", "hs512"):
        with pytest.raises(ValueError, match="never"):
            VerifierConfig(audiences=("a",), algorithms=("RS256", alg))
    cfg = VerifierConfig.for_agent("bot", "https://h.example/")
    assert cfg.audiences == ("https://h.example/agents/bot", "bot")
    assert cfg.algorithms == ("RS256", "ES256", "EdDSA")
    assert cfg.leeway == 60


async def test_authenticator_api_keys_then_jwt(rsa_key: SigningKey) -> None:
    auth = Authenticator(
        verifier(rsa_key), api_keys={"sk-test-1": ApiKey("ci", frozenset({"chat"}))}
    )
    with trio.fail_after(TIMEOUT):
        assert await auth.authenticate("sk-test-1") == Principal(
            sub="ci", iss="api_key", scopes=frozenset({"chat"})
        )
        assert (await auth.authenticate(rsa_key.sign(claims()))).sub == "user-1"
        for missing in (None, ""):
            with pytest.raises(AuthError) as info:
                await auth.authenticate(missing)
            assert info.value.reason == "missing_token"
        with pytest.raises(AuthError) as info:
            await Authenticator(api_keys={"k": ApiKey("x")}).authenticate("sk-wrong")
        assert info.value.reason == "invalid_token"


def test_bearer_token_and_scopes() -> None:
    assert bearer_token({"authorization": "Bearer abc"}) == "abc"
    assert bearer_token({"Authorization": "bearer  abc "}) == "abc"
    assert bearer_token({"authorization": "Basic dXNlcg=="}, {"token": "q"}) == "q"
    assert bearer_token({}, {"token": "q"}) == "q"
    assert bearer_token({"authorization": "Bearer "}) is None
    assert bearer_token({}, {}) is None
    p = Principal(sub="u", iss=ISS, scopes=frozenset({"chat"}))
    require_scopes(p, ["chat"])
    with pytest.raises(AuthError) as info:
        require_scopes(p, ["chat", "tools:run", "admin"])
    assert (info.value.reason, info.value.scopes) == ("insufficient_scope", ("admin", "tools:run"))
    assert info.value.code == "forbidden"


# ---------------------------------------------------------------------------------------------
# Failure shapes per transport
# ---------------------------------------------------------------------------------------------


def test_failure_shapes() -> None:
    expired = AuthError("token_expired")
    assert isinstance(expired, TrioAgentsError) and expired.code == "unauthorized"

    http = http_failure(expired)
    assert http.status == 401
    assert http.headers == {
        "WWW-Authenticate": 'Bearer error="invalid_token", error_description="the token has expired"'
    }
    assert http.body == {
        "error": {
            "code": "unauthorized",
            "message": "the token has expired",
            "details": {"reason": "token_expired"},
        }
    }
    openai_body = http_failure(expired, openai=True).body
    assert set(openai_body["error"]) == {"message", "type", "param", "code"}
    assert openai_body["error"]["code"] == "token_expired"

    missing = http_failure(AuthError("missing_token"), realm="helper")
    assert (missing.status, missing.headers["WWW-Authenticate"]) == (401, 'Bearer realm="helper"')

    scope = http_failure(AuthError("insufficient_scope", "missing scope", scopes=("a", "b")))
    assert scope.status == 403
    assert scope.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="a b", error_description="missing scope"'
    )
    quoted = http_failure(AuthError("invalid_token", 'bad "quote"\n'))
    assert quoted.headers["WWW-Authenticate"].endswith('error_description="bad ?quote??"')

    assert ws_close_code(expired) == 4001
    assert ws_close_code(AuthError("missing_token")) == 4000
    assert ws_close_code(AuthError("insufficient_scope")) == 4003

    assert uamp_error(expired) == uamp.ErrorInfo(
        code="unauthorized", message="the token has expired", details={"reason": "token_expired"}
    )
    event = uamp.SessionError(error=uamp_error(expired), reply_to="c1")
    wire = uamp.converter.unstructure(event)
    assert wire["type"] == "session.error" and wire["error"]["code"] == "unauthorized"

    assert jsonrpc_error(expired, 7) == {
        "jsonrpc": "2.0",
        "id": 7,
        "error": {
            "code": JSONRPC_AUTH_ERROR,
            "message": "the token has expired",
            "data": {"reason": "token_expired"},
        },
    }
    assert JSONRPC_AUTH_ERROR == -32000


def test_cache_max_age() -> None:
    assert cache_max_age(None) == 3600
    assert cache_max_age("public, max-age=120") == 120
    assert cache_max_age("max-age=5") == 60
    assert cache_max_age("max-age=999999") == 86400
    assert cache_max_age("no-store") == 60
    assert cache_max_age("public") == 3600
    assert cache_max_age('s-maxage=10, MAX-AGE="7200"') == 7200


# ---------------------------------------------------------------------------------------------
# Response signatures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_response_signature_round_trip(kind: str, rsa_key: SigningKey, ec_key: SigningKey) -> None:
    key = rsa_key if kind == "rsa" else ec_key
    text = "Héllo wörld — 你好 🌍"
    request = b'{"model":"helper","messages":[{"role":"user","content":"hi"}]}'
    issuer = "http://127.0.0.1:8000/agents/helper"
    token = sign_response(
        key,
        issuer=issuer,
        response_text=text,
        request_bytes=request,
        audience="user-1",
        response_id="resp_1",
        now=NOW,
        jti="5f0c6d2e-1111-4222-8333-944455556666",
    )
    assert jwt.get_unverified_header(token) == {"alg": key.alg, "typ": "JWT", "kid": key.kid}
    payload = jwt.decode(token, options={"verify_signature": False})
    assert payload == {
        "iss": issuer,
        "iat": NOW,
        "exp": NOW + 300,
        "jti": "5f0c6d2e-1111-4222-8333-944455556666",
        "response_hash": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "request_hash": hashlib.sha256(request).hexdigest(),
        "aud": "user-1",
        "response_id": "resp_1",
    }
    jwks = KeyRing(key).jwks(now=NOW)
    got = verify_response_signature(
        token, jwks, text, request, issuer=issuer, audience="user-1", now=NOW + 1
    )
    assert got == payload

    def reason(**kw: Any) -> str:
        args: dict[str, Any] = {
            "token": token,
            "jwks": jwks,
            "response_text": text,
            "request_bytes": request,
            "now": NOW + 1,
        }
        args.update(kw)
        with pytest.raises(AuthError) as info:
            verify_response_signature(**args)
        return info.value.reason

    assert reason(response_text=text[:-1] + "🌎") == "hash_mismatch"  # one character changed
    assert reason(response_text=text + " ") == "hash_mismatch"
    assert reason(request_bytes=request.replace(b"hi", b"hI")) == "hash_mismatch"
    assert reason(now=NOW + 300) == "token_expired"
    assert reason(now=NOW - 120) == "token_not_yet_valid"
    assert reason(issuer="http://other/agents/x") == "invalid_issuer"
    assert reason(audience="user-2") == "invalid_audience"
    assert reason(jwks=jwks_document([SigningKey.generate("EC")])) == "unknown_key"
    head, body, sig = token.split(".")
    tampered_claims = orjson.loads(base64.urlsafe_b64decode(body + "==="))
    tampered_claims["response_hash"] = sha256_hex("something else")
    tampered = f"{head}.{b64(orjson.dumps(tampered_claims))}.{sig}"
    assert reason(token=tampered, response_text="something else") == "invalid_token"
    assert reason(token=forge({"alg": "none"}, payload)) == "unsupported_algorithm"


def test_streamed_hash_and_signer(ec_key: SigningKey, rsa_key: SigningKey) -> None:
    deltas = ["You ", "said: ", "héllo", ""]
    hasher = ResponseHasher()
    for d in deltas:
        hasher.update(d)
    assert (
        hasher.hexdigest() == sha256_hex("".join(deltas)) == sha256_hex(b"You said: h\xc3\xa9llo")
    )

    ring = KeyRing(rsa_key)
    jtis = iter(["jti-1", "jti-2"])
    signer = ResponseSigner(
        ring, "https://a.example/agents/helper", uamp.FixedClock(), lambda: next(jtis)
    )
    first = signer.sign(request_bytes=b"{}", response_hash=hasher.hexdigest(), response_id="r1")
    ring.rotate(ec_key, now=NOW)
    second = signer.sign(request_bytes=b"{}", response_text="You said: héllo")
    assert jwt.get_unverified_header(first)["kid"] == rsa_key.kid
    assert jwt.get_unverified_header(second)["kid"] == ec_key.kid
    jwks = ring.jwks(now=NOW + 10)  # both published during the overlap
    for token, jti in ((first, "jti-1"), (second, "jti-2")):
        got = verify_response_signature(token, jwks, "You said: héllo", b"{}", now=NOW + 10)
        assert (got["jti"], got["iat"], "aud" in got) == (jti, NOW, False)
    with pytest.raises(ValueError):
        sign_response(ec_key, issuer="i", request_bytes=b"")
