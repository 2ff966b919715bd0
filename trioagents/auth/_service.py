"""``AuthService``: who may call a server's agents, and the keys its responses are signed with.

Give one to the server (``AgentServer(agents, auth=AuthService(...))``); it lives in
``runtime.services["auth"]`` and the transports call :meth:`AuthService.authenticate` with the
request's credential and :meth:`AuthService.signer` for signed responses (PROTOCOLS.md §10).

* Verification: API keys and/or JWTs of ``trusted_issuers`` (audience per agent:
  ``{public_url or request base}/agents/{name}`` or the bare name). Keys come from ``keys``
  (e.g. :class:`StaticKeys`) or, when issuers are configured, a :class:`JWKSCache` whose
  ``httpx.AsyncClient`` lives as long as the server (:meth:`AuthService.lifespan`).
* ``required=False`` (default) lets anonymous callers in, but a presented invalid credential is
  always refused.
* Signing (``sign_responses``): one :class:`KeyRing` per agent, from ``signing_keys``, else
  ``{keys_dir}/{name}.pem`` (generated and saved on first run), else a key generated in memory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
from starlette.responses import JSONResponse

from .. import uamp
from ._errors import AuthError, http_failure
from ._jwks import JWKSCache
from ._keys import KeyKind, KeyRing, SigningKey, issuer_url, jwks_document
from ._signing import ResponseSigner
from ._verify import (
    DEFAULT_ALGORITHMS,
    ApiKey,
    Authenticator,
    JWTVerifier,
    KeyResolver,
    Principal,
    VerifierConfig,
)

__all__ = ["SERVICE_KEY", "AuthService", "base_url_of", "denial_response"]

SERVICE_KEY = "auth"
"""The key of the service in ``Runtime.services``."""


def denial_response(err: AuthError, *, openai: bool = False) -> JSONResponse:
    """The HTTP refusal for ``err`` (:func:`~trioagents.auth.http_failure` as a response):
    401/403 with ``WWW-Authenticate``; ``openai`` renders the OpenAI error body. For a
    WebSocket handshake, pass it to ``websocket.send_denial_response``."""
    failure = http_failure(err, openai=openai)
    return JSONResponse(failure.body, status_code=failure.status, headers=failure.headers)


def base_url_of(scope: Mapping[str, Any]) -> str:
    """``scheme://host`` of an ASGI ``scope`` (HTTP or WebSocket; ``ws`` reads as ``http``)."""
    scheme = str(scope.get("scheme", "http"))
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    host = ""
    for name, value in scope.get("headers") or ():
        if name == b"host":
            host = value.decode("latin-1")
            break
    if not host:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] in (None, 80, 443) else f"{server[0]}:{server[1]}"
    return f"{scheme}://{host}"


class AuthService:
    """Authentication and response signing for the agents of one server.

    Args:
        required: refuse anonymous callers (``missing_token``). A presented credential is
            always verified, and refused when invalid, whatever this says.
        api_keys: secret → :class:`ApiKey` (or just the principal's name).
        trusted_issuers: JWT issuers accepted.
        self_issued_allow: ``fnmatch`` patterns of further accepted issuers.
        self_issued_deny: ``fnmatch`` patterns of refused issuers.
        audiences: accepted ``aud`` values for every agent (default per agent: its issuer URL
            ``{public_url}/agents/{name}`` and its bare name).
        algorithms: accepted JWT algorithms.
        allowed_scopes: scopes that may be granted (None: all).
        keys: where issuers' keys come from (default: a :class:`JWKSCache` over HTTP when any
            issuer is configured).
        jwks_uris: issuer → ``jwks_uri`` for the default cache.
        public_url: the server's public base URL (default ``config.public_url``, else the
            request's scheme + ``Host``).
        sign_responses: sign every agent's responses (True) or those of the named agents.
        signing_keys: agent name → :class:`SigningKey` or :class:`KeyRing`.
        keys_dir: where agents' keys are loaded from or generated into (``{name}.pem``).
        key_kind: ``"RSA"`` (RS256) or ``"EC"`` (ES256) for generated keys.
        http_timeout: seconds bounding each JWKS fetch of the default cache.
    """

    def __init__(
        self,
        *,
        required: bool = False,
        api_keys: Mapping[str, ApiKey | str] | None = None,
        trusted_issuers: Collection[str] = (),
        self_issued_allow: Collection[str] = (),
        self_issued_deny: Collection[str] = (),
        audiences: Collection[str] | None = None,
        algorithms: Collection[str] = DEFAULT_ALGORITHMS,
        allowed_scopes: Collection[str] | None = None,
        keys: KeyResolver | None = None,
        jwks_uris: Mapping[str, str] | None = None,
        public_url: str | None = None,
        sign_responses: bool | Collection[str] = False,
        signing_keys: Mapping[str, SigningKey | KeyRing] | None = None,
        keys_dir: str | os.PathLike[str] | None = None,
        key_kind: KeyKind = "RSA",
        http_timeout: float = 10.0,
    ) -> None:
        self.required = required
        self.api_keys = {
            k: (v if isinstance(v, ApiKey) else ApiKey(sub=v)) for k, v in (api_keys or {}).items()
        }
        self.trusted_issuers = tuple(trusted_issuers)
        self.self_issued_allow = tuple(self_issued_allow)
        self.self_issued_deny = tuple(self_issued_deny)
        self.audiences = tuple(audiences) if audiences is not None else None
        self.algorithms = tuple(algorithms)
        self.allowed_scopes = frozenset(allowed_scopes) if allowed_scopes is not None else None
        self.keys = keys
        self.jwks_uris = dict(jwks_uris or {})
        self.public_url = public_url
        self.sign_responses = sign_responses
        self.keys_dir = keys_dir
        self.key_kind: KeyKind = key_kind
        self.http_timeout = http_timeout
        self._rings: dict[str, KeyRing] = {
            name: (k if isinstance(k, KeyRing) else KeyRing(k))
            for name, k in (signing_keys or {}).items()
        }
        self._clock: uamp.Clock = uamp.SystemClock()
        self._authenticator = Authenticator(api_keys=self.api_keys)
        # Validate the verifier settings now (e.g. "none"/HS* algorithms), not on first use.
        VerifierConfig(audiences=("x",), algorithms=self.algorithms)

    @classmethod
    def of(cls, runtime: Any) -> AuthService | None:
        """The service of a server's ``runtime`` (``None``: auth is off)."""
        value = getattr(runtime, "services", {}).get(SERVICE_KEY)
        return value if isinstance(value, AuthService) else None

    @property
    def verifies_jwts(self) -> bool:
        """Whether JWTs can be verified at all (a key source and at least one issuer)."""
        return self.keys is not None and bool(self.trusted_issuers or self.self_issued_allow)

    @asynccontextmanager
    async def lifespan(self, runtime: Any) -> AsyncIterator[AuthService]:
        """Serve as ``runtime``'s auth service for the duration of the block: take its clock
        and public URL, load or generate the signing keys, and own the JWKS HTTP client."""
        runtime.services[SERVICE_KEY] = self
        self.bind(runtime)
        for name in runtime.agents:
            if self.signs(name) and name not in self._rings:
                self._rings[name] = KeyRing(await trio.to_thread.run_sync(self._load_key, name))
        try:
            if self.keys is None and (self.trusted_issuers or self.self_issued_allow):
                async with httpx.AsyncClient(timeout=self.http_timeout) as client:
                    self.keys = JWKSCache(client, jwks_uris=self.jwks_uris)
                    try:
                        yield self
                    finally:
                        self.keys = None
            else:
                yield self
        finally:
            if runtime.services.get(SERVICE_KEY) is self:
                del runtime.services[SERVICE_KEY]

    def bind(self, runtime: Any) -> None:
        """Take ``runtime``'s clock and ``config.public_url`` (done by :meth:`lifespan`)."""
        self._clock = runtime.clock
        if self.public_url is None:
            self.public_url = getattr(runtime.config, "public_url", None)

    # -- verification ---------------------------------------------------------------------------

    def audiences_for(self, agent: str, base_url: str) -> tuple[str, ...]:
        """The accepted ``aud`` values of ``agent``."""
        if self.audiences is not None:
            return self.audiences
        return (issuer_url(self.public_url or base_url, agent), agent)

    async def authenticate(self, agent: str, token: str | None, base_url: str) -> Principal | None:
        """The caller of ``agent`` behind ``token`` (``None``: anonymous, allowed).

        Args:
            agent: the agent's name (its audience).
            token: the presented credential (:func:`~trioagents.auth.bearer_token`), if any.
            base_url: ``scheme://host`` of the request (for the default audience).

        Raises:
            AuthError: an invalid credential, or none while :attr:`required`.
        """
        if not token:
            if self.required:
                raise AuthError("missing_token")
            return None
        if not self.verifies_jwts:
            return await self._authenticator.authenticate(token)
        assert self.keys is not None
        config = VerifierConfig(
            audiences=self.audiences_for(agent, base_url),
            trusted_issuers=self.trusted_issuers,
            self_issued_allow=self.self_issued_allow,
            self_issued_deny=self.self_issued_deny,
            algorithms=self.algorithms,
            allowed_scopes=self.allowed_scopes,
        )
        verifier = JWTVerifier(config, self.keys, clock=self._clock)
        return await Authenticator(verifier=verifier, api_keys=self.api_keys).authenticate(token)

    def now(self) -> float:
        """The server's wall clock, Unix seconds (for token expiry checks)."""
        return float(self._clock.now_s())

    # -- signing ----------------------------------------------------------------------------

    def signs(self, agent: str) -> bool:
        """Whether ``agent``'s responses are signed."""
        if isinstance(self.sign_responses, bool):
            return self.sign_responses or agent in self._rings
        return agent in self.sign_responses

    def _load_key(self, agent: str) -> SigningKey:
        if self.keys_dir is None:
            return SigningKey.generate(self.key_kind)
        path = os.path.join(os.fspath(self.keys_dir), f"{agent}.pem")
        return SigningKey.load_or_generate(path, self.key_kind)

    def ring(self, agent: str) -> KeyRing | None:
        """``agent``'s key ring, or ``None`` when it does not sign."""
        if not self.signs(agent):
            return None
        ring = self._rings.get(agent)
        if ring is None:  # served without the lifespan (unusual): generate in memory
            ring = self._rings[agent] = KeyRing(SigningKey.generate(self.key_kind))
        return ring

    def issuer(self, agent: str, base_url: str) -> str:
        """``agent``'s issuer: ``{public_url or base_url}/agents/{agent}``."""
        return issuer_url(self.public_url or base_url, agent)

    def signer(self, agent: str, base_url: str) -> ResponseSigner | None:
        """The signer of ``agent``'s responses, or ``None`` when it does not sign."""
        ring = self.ring(agent)
        if ring is None:
            return None
        return ResponseSigner(ring, self.issuer(agent, base_url), clock=self._clock)

    def jwks(self, agent: str | None = None) -> dict[str, list[dict[str, str]]] | None:
        """The published JWKS of ``agent`` (``None``: it does not sign), or of every signing
        agent when ``agent`` is None (the server's union, possibly empty)."""
        now = self.now()
        if agent is not None:
            ring = self.ring(agent)
            return ring.jwks(now=now) if ring is not None else None
        keys = [k for ring in self._rings.values() for k in ring.published(now=now)]
        return jwks_document(keys)
