"""Signed responses (PROTOCOLS.md §10): a JWT binding a response text to its request.

The agent signs ``response_hash`` (SHA-256 of the exact UTF-8 response text, deltas
concatenated as sent) and ``request_hash`` (SHA-256 of the exact request bytes received)
with its active key; clients check both against what they received and the signature against
the agent's published JWKS (``{iss}/.well-known/jwks.json``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import jwt

from .. import uamp
from ._errors import AuthError
from ._jwk import decode_verified, parse_jwks, select_key
from ._keys import RESPONSE_SIGNATURE_LIFETIME, KeyRing, SigningKey

__all__ = [
    "ResponseHasher",
    "ResponseSigner",
    "sha256_hex",
    "sign_response",
    "verify_response_signature",
]

SIGNATURE_ALGORITHMS = ("RS256", "ES256")


def sha256_hex(data: bytes | str) -> str:
    """Lowercase hex SHA-256 of ``data`` (``str`` is hashed as UTF-8)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()


@attrs.define(eq=False)
class ResponseHasher:
    """Hashes a response text incrementally, delta by delta as it is sent.

    Same result as :func:`sha256_hex` over the concatenated text, without keeping the text.
    """

    _hash: Any = attrs.field(init=False, factory=hashlib.sha256)

    def update(self, delta: str) -> None:
        """Add a text delta exactly as it was sent."""
        self._hash.update(delta.encode("utf-8"))

    def hexdigest(self) -> str:
        """The lowercase hex SHA-256 of everything added so far."""
        return str(self._hash.hexdigest())


def sign_response(
    key: SigningKey,
    *,
    issuer: str,
    request_bytes: bytes,
    response_text: str | None = None,
    response_hash: str | None = None,
    audience: str | None = None,
    response_id: str | None = None,
    now: int | None = None,
    jti: str | None = None,
) -> str:
    """The signature JWT of one response.

    Header ``{"alg","typ":"JWT","kid"}``; claims ``iss``, ``iat``, ``exp`` = ``iat`` + 300,
    ``jti``, ``response_hash``, ``request_hash`` and, when given, ``aud`` and ``response_id``.

    Args:
        key: the agent's active key.
        issuer: the agent's issuer, ``{public_url}/agents/{name}``.
        request_bytes: the exact request bytes (HTTP body, or the WS frame that triggered it).
        response_text: the exact full response text; or pass ``response_hash`` instead
            (from a :class:`ResponseHasher`).
        response_hash: lowercase hex SHA-256 of the response text.
        audience: the caller's ``sub`` when authenticated.
        response_id: the response id, when there is one.
        now: ``iat`` in Unix seconds (default: the system clock).
        jti: the token id (default: a random UUID).

    Raises:
        ValueError: neither or both of ``response_text`` and ``response_hash``.
    """
    if (response_text is None) == (response_hash is None):
        raise ValueError("pass exactly one of response_text and response_hash")
    iat = int(time.time()) if now is None else int(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "iat": iat,
        "exp": iat + RESPONSE_SIGNATURE_LIFETIME,
        "jti": jti if jti is not None else str(uuid.uuid4()),
        "response_hash": response_hash
        if response_hash is not None
        else sha256_hex(response_text or ""),
        "request_hash": sha256_hex(request_bytes),
    }
    if audience is not None:
        claims["aud"] = audience
    if response_id is not None:
        claims["response_id"] = response_id
    return key.sign(claims)


@attrs.define(eq=False)
class ResponseSigner:
    """Signs an agent's responses with the active key of its ring.

    Attributes:
        keys: the agent's key ring.
        issuer: ``{public_url}/agents/{name}``.
        clock: wall clock for ``iat`` (the runtime's).
        new_jti: makes the ``jti`` (default: a random UUID); inject for deterministic tests.
    """

    keys: KeyRing
    issuer: str
    clock: uamp.Clock = attrs.field(factory=uamp.SystemClock)
    new_jti: Callable[[], str] | None = None

    def sign(
        self,
        *,
        request_bytes: bytes,
        response_text: str | None = None,
        response_hash: str | None = None,
        audience: str | None = None,
        response_id: str | None = None,
    ) -> str:
        """:func:`sign_response` with the active key, the issuer, the clock and a fresh ``jti``."""
        return sign_response(
            self.keys.active,
            issuer=self.issuer,
            request_bytes=request_bytes,
            response_text=response_text,
            response_hash=response_hash,
            audience=audience,
            response_id=response_id,
            now=self.clock.now_s(),
            jti=self.new_jti() if self.new_jti is not None else str(uuid.uuid4()),
        )


def verify_response_signature(
    token: str,
    jwks: Mapping[str, Any],
    response_text: str,
    request_bytes: bytes,
    *,
    issuer: str | None = None,
    audience: str | None = None,
    now: float | None = None,
    leeway: float = 60.0,
) -> dict[str, Any]:
    """Check a response signature (for clients and tests) and return its claims.

    Args:
        token: the signature JWT.
        jwks: the agent's JWKS document (``GET {iss}/.well-known/jwks.json``).
        response_text: the full response text as received (deltas concatenated).
        request_bytes: the exact request bytes that were sent.
        issuer: when given, ``iss`` must equal it.
        audience: when given, ``aud`` must equal it.
        now: Unix seconds for the ``exp``/``iat`` checks (default: the system clock).
        leeway: clock skew tolerated on ``iat``.

    Raises:
        AuthError: ``unsupported_algorithm``, ``unknown_key``, ``algorithm_mismatch``,
            ``invalid_token`` (bad signature or claims), ``token_expired``,
            ``token_not_yet_valid``, ``invalid_issuer``, ``invalid_audience`` or
            ``hash_mismatch`` (the text or the request differs from what was signed).
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise AuthError("invalid_token", f"malformed signature: {exc}") from None
    alg = header.get("alg")
    if alg not in SIGNATURE_ALGORITHMS:
        raise AuthError("unsupported_algorithm", f"algorithm {alg!r} is not accepted")
    kid = header.get("kid")
    key = select_key(parse_jwks(jwks), kid if isinstance(kid, str) else None, alg)
    claims = decode_verified(token, key, alg, "signature")
    t = time.time() if now is None else now
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or not isinstance(iat, int | float):
        raise AuthError("missing_claim", "the signature needs 'exp' and 'iat'")
    if t >= exp:
        raise AuthError("token_expired", "the signature has expired")
    if iat > t + leeway:
        raise AuthError("token_not_yet_valid", "the signature's 'iat' is in the future")
    if issuer is not None and claims.get("iss") != issuer:
        raise AuthError("invalid_issuer", f"signed by {claims.get('iss')!r}, not {issuer!r}")
    if audience is not None and claims.get("aud") != audience:
        raise AuthError("invalid_audience", f"signed for {claims.get('aud')!r}")
    for claim, expected in (
        ("response_hash", sha256_hex(response_text)),
        ("request_hash", sha256_hex(request_bytes)),
    ):
        got = claims.get(claim)
        if not isinstance(got, str) or not hmac.compare_digest(got, expected):
            raise AuthError("hash_mismatch", f"{claim} does not match")
    return claims
