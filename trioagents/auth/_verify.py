"""Verifying bearer tokens: AOAuth-style JWTs and API keys (PROTOCOLS.md §10, §0.2).

Theory of operation. :meth:`JWTVerifier.verify` works in an order that never lets an untrusted
token make us do work for its author:

1. size, header and algorithm: ``none``, ``HS*`` and anything outside the allow-list are
   refused before any key is looked at (so a public key can never be used as an HMAC secret);
2. the *unverified* ``iss`` is checked against the trusted issuers / self-issued lists, so
   keys are only ever fetched from issuers we trust;
3. the key is chosen by ``kid`` from the issuer's keys (a :class:`KeyResolver`, normally the
   :class:`~trioagents.auth.JWKSCache`), and must be of the type the algorithm needs;
4. the signature is verified; only then are the claims read: ``exp`` (required), ``nbf`` and
   ``iat`` (60 s leeway), ``aud``, ``sub``, ``scope``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import attrs
import jwt

from .. import uamp
from ._errors import AuthError
from ._jwk import PublicKey, decode_verified, key_matches_alg, parse_jwks, select_key
from ._keys import issuer_url

__all__ = [
    "ApiKey",
    "Authenticator",
    "JWTVerifier",
    "KeyResolver",
    "Principal",
    "StaticKeys",
    "VerifierConfig",
    "bearer_token",
    "require_scopes",
]

DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
_MS_THRESHOLD = 10**12  # §0.3: JWT times above this are milliseconds


@attrs.frozen
class Principal:
    """Who is calling, as proven by a verified token.

    Attributes:
        sub: the caller (``sub`` claim; the API key's name for API keys).
        iss: the issuer (``"api_key"`` for API keys).
        scopes: the granted scopes, filtered to the allowed ones.
        claims: every claim of the token (empty for API keys).
        expires_at: ``exp`` in Unix seconds (None for API keys).
    """

    sub: str
    iss: str
    scopes: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = attrs.field(factory=dict)
    expires_at: int | None = None

    def is_expired(self, now: float) -> bool:
        """Whether the token has expired at Unix time ``now`` (re-check before each turn of a
        long-lived session)."""
        return self.expires_at is not None and now >= self.expires_at

    def has_scopes(self, required: Iterable[str]) -> bool:
        """Whether every scope in ``required`` was granted."""
        return set(required) <= self.scopes


def require_scopes(principal: Principal, required: Iterable[str]) -> None:
    """Check that ``principal`` holds every scope in ``required``.

    Raises:
        AuthError: ``insufficient_scope`` (rendered as 403 / close 4003 / ``forbidden``).
    """
    missing = tuple(sorted(set(required) - principal.scopes))
    if missing:
        raise AuthError("insufficient_scope", f"missing scope: {' '.join(missing)}", scopes=missing)


class KeyResolver(Protocol):
    """Where a verifier gets an issuer's public keys (:class:`~trioagents.auth.JWKSCache`,
    :class:`StaticKeys`)."""

    async def get_key(self, issuer: str, kid: str | None, alg: str) -> PublicKey:
        """The key for a token of ``issuer`` with ``kid`` and ``alg``.

        Raises:
            AuthError: ``unknown_key``, ``algorithm_mismatch`` or ``jwks_unavailable``.
        """
        ...


@attrs.define(eq=False)
class StaticKeys:
    """Fixed JWKS documents per issuer (no I/O): for tests, and issuers configured by hand.

    Attributes:
        jwks: issuer → JWKS document ``{"keys": [...]}``.
    """

    jwks: Mapping[str, Mapping[str, Any]]
    _parsed: dict[str, list[PublicKey]] = attrs.field(init=False, factory=dict)

    async def get_key(self, issuer: str, kid: str | None, alg: str) -> PublicKey:
        """The key of ``issuer`` for ``kid``/``alg`` (never blocks).

        Raises:
            AuthError: ``unknown_key`` (or ``algorithm_mismatch``).
        """
        doc = self.jwks.get(issuer.rstrip("/"), self.jwks.get(issuer))
        if doc is None:
            raise AuthError("unknown_key", f"no keys configured for issuer {issuer!r}")
        if issuer not in self._parsed:
            self._parsed[issuer] = parse_jwks(doc)
        return select_key(self._parsed[issuer], kid, alg)


def _check_algorithms(_: Any, __: Any, value: tuple[str, ...]) -> None:
    for alg in value:
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            raise ValueError(f"algorithm {alg!r} may never be accepted (§10)")


def _issuers(value: Iterable[str]) -> frozenset[str]:
    return frozenset(i.rstrip("/") for i in value)


@attrs.frozen(kw_only=True)
class VerifierConfig:
    """What a :class:`JWTVerifier` accepts.

    Attributes:
        audiences: accepted ``aud`` values; a token's ``aud`` must contain one of them.
            :meth:`for_agent` gives ``{public_url}/agents/{name}`` and the bare name.
        trusted_issuers: issuers accepted as they are (exact, trailing ``/`` ignored).
        self_issued_allow: ``fnmatch`` patterns of other issuers accepted (self-issued
            tokens: agents signing with their own published keys), e.g. ``https://*.example.com/agents/*``.
        self_issued_deny: ``fnmatch`` patterns refused even when trusted or allowed.
        algorithms: allowed algorithms; ``none`` and ``HS*`` are refused at construction.
        leeway: seconds of clock skew tolerated on ``nbf`` and ``iat``.
        allowed_scopes: scopes that may be granted (None keeps every scope of the token).
        max_token_size: longer tokens are refused unread.
    """

    audiences: tuple[str, ...]
    trusted_issuers: frozenset[str] = attrs.field(default=frozenset(), converter=_issuers)
    self_issued_allow: tuple[str, ...] = ()
    self_issued_deny: tuple[str, ...] = ()
    algorithms: tuple[str, ...] = attrs.field(
        default=DEFAULT_ALGORITHMS, validator=_check_algorithms
    )
    leeway: float = 60.0
    allowed_scopes: frozenset[str] | None = None
    max_token_size: int = 16 * 1024

    @classmethod
    def for_agent(cls, name: str, public_url: str, **kwargs: Any) -> VerifierConfig:
        """The config of agent ``name``: audience ``{public_url}/agents/{name}`` or ``name``;
        ``kwargs`` as the attributes (an explicit ``audiences`` replaces the default)."""
        kwargs.setdefault("audiences", (issuer_url(public_url, name), name))
        return cls(**kwargs)

    def issuer_allowed(self, issuer: str) -> bool:
        """Whether tokens of ``issuer`` may be verified at all (deny wins over everything)."""
        iss = issuer.rstrip("/")
        if any(fnmatch.fnmatchcase(iss, p) for p in self.self_issued_deny):
            return False
        if iss in self.trusted_issuers:
            return True
        return any(fnmatch.fnmatchcase(iss, p) for p in self.self_issued_allow)


def _seconds(value: Any, claim: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError("missing_claim", f"claim {claim!r} must be a number")
    return value / 1000 if value > _MS_THRESHOLD else float(value)


def _scopes(value: Any) -> set[str]:
    if value is None:
        return set()
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return set(value)
    raise AuthError("missing_claim", "claim 'scope' must be a space-separated string")


@attrs.define(eq=False)
class JWTVerifier:
    """Verifies AOAuth-style JWTs into :class:`Principal` (see the module docstring).

    Attributes:
        config: what is accepted.
        keys: where issuers' keys come from (normally a :class:`~trioagents.auth.JWKSCache`).
        clock: wall clock for ``exp``/``nbf``/``iat`` (the runtime's, so tests can fix time).
    """

    config: VerifierConfig
    keys: KeyResolver
    clock: uamp.Clock = attrs.field(factory=uamp.SystemClock)

    async def verify(self, token: str) -> Principal:
        """Verify ``token`` and return the caller.

        May fetch the issuer's keys (through :attr:`keys`); if cancelled meanwhile, nothing is
        cached and the next call fetches again.

        Raises:
            AuthError: with the ``reason`` of the first check that failed.
        """
        cfg = self.config
        if not token or len(token) > cfg.max_token_size:
            raise AuthError("invalid_token", "the token is empty or too long")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise AuthError("invalid_token", f"malformed token: {exc}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in cfg.algorithms:
            raise AuthError("unsupported_algorithm", f"algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("invalid_token", "the 'kid' header must be a string")
        iss = unverified.get("iss")
        if not isinstance(iss, str) or not iss:
            raise AuthError("missing_claim", "the token has no 'iss'")
        if not cfg.issuer_allowed(iss):
            raise AuthError("invalid_issuer", f"issuer {iss!r} is not trusted")

        key = await self.keys.get_key(iss, kid, alg)
        if not key_matches_alg(key.key, alg):  # resolvers check too; this one is the last word
            raise AuthError("algorithm_mismatch", f"the key is not a key for {alg}")
        return self._check_claims(decode_verified(token, key, alg), iss)

    def _check_claims(self, claims: dict[str, Any], iss: str) -> Principal:
        cfg = self.config
        now = self.clock.now_s()
        if "exp" not in claims:
            raise AuthError("missing_claim", "the token has no 'exp'")
        exp = _seconds(claims["exp"], "exp")
        if now >= exp:
            raise AuthError("token_expired")
        for name in ("nbf", "iat"):
            if name in claims and _seconds(claims[name], name) > now + cfg.leeway:
                raise AuthError("token_not_yet_valid", f"the token's {name!r} is in the future")
        aud = claims.get("aud")
        auds = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        accepted = {a.rstrip("/") for a in cfg.audiences}
        if not any(isinstance(a, str) and a.rstrip("/") in accepted for a in auds):
            raise AuthError("invalid_audience", f"audience {aud!r} is not this agent")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError("missing_claim", "the token has no 'sub'")
        scopes = _scopes(claims.get("scope"))
        if cfg.allowed_scopes is not None:
            scopes &= cfg.allowed_scopes
        return Principal(
            sub=sub, iss=iss, scopes=frozenset(scopes), claims=claims, expires_at=int(exp)
        )


@attrs.frozen
class ApiKey:
    """A configured API key: who it stands for and what it may do.

    Attributes:
        sub: the principal's name.
        scopes: granted scopes.
    """

    sub: str
    scopes: frozenset[str] = frozenset()


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


@attrs.define(eq=False)
class Authenticator:
    """Turns a bearer credential into a :class:`Principal`: an API key, else a JWT.

    Attributes:
        verifier: JWT verification (None: API keys only).
        api_keys: secret → :class:`ApiKey`. Compared in constant time; only digests are kept.
    """

    verifier: JWTVerifier | None = None
    api_keys: Mapping[str, ApiKey] = attrs.field(factory=dict)
    _digests: list[tuple[bytes, ApiKey]] = attrs.field(init=False, factory=list)

    def __attrs_post_init__(self) -> None:
        self._digests = [(_digest(k), v) for k, v in self.api_keys.items()]

    async def authenticate(self, token: str | None) -> Principal:
        """The caller behind ``token``.

        Raises:
            AuthError: ``missing_token`` when ``token`` is None or empty; otherwise as
                :meth:`JWTVerifier.verify` (``invalid_token`` when no JWT verifier is set).
        """
        if not token:
            raise AuthError("missing_token")
        digest = _digest(token)
        match: ApiKey | None = None
        for known, key in self._digests:  # no early exit: same time for every key
            if hmac.compare_digest(known, digest):
                match = key
        if match is not None:
            return Principal(sub=match.sub, iss="api_key", scopes=match.scopes)
        if self.verifier is None:
            raise AuthError("invalid_token", "unknown API key")
        return await self.verifier.verify(token)


def bearer_token(headers: Mapping[str, str], query: Mapping[str, str] | None = None) -> str | None:
    """The credential of a request (§0.2): ``Authorization: Bearer <token>``, else ``?token=``.

    ``headers`` may be Starlette's case-insensitive headers or a plain dict (either case).
    A non-Bearer ``Authorization`` header is ignored.
    """
    value = headers.get("authorization") or headers.get("Authorization")
    if value:
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if query is not None:
        return query.get("token") or None
    return None
