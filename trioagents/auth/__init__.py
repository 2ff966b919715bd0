"""Authentication and response signing (PROTOCOLS.md §10, §0.2).

Building blocks the transports call; none of them starts a task:

* **Keys** — :class:`SigningKey` (RSA 2048 / EC P-256, PEM load/save, public JWK, ``kid``),
  :class:`KeyRing` (active + retired keys that stay published), :func:`jwks_document`,
  :func:`openid_configuration`, :func:`issuer_url`.
* **Verification** — :class:`JWTVerifier` with a :class:`VerifierConfig` turns a bearer JWT into
  a :class:`Principal`; :class:`Authenticator` adds API keys; :func:`bearer_token` reads the
  credential of a request; :func:`require_scopes` checks scopes. Keys come from a
  :class:`KeyResolver`: the :class:`JWKSCache` (HTTP, ``Cache-Control``/``ETag``, rotation by
  ``kid``) or :class:`StaticKeys`.
* **Failures** — one :class:`AuthError` with a ``reason``; :func:`http_failure`,
  :func:`ws_close_code`, :func:`uamp_error` and :func:`jsonrpc_error` render it per transport.
* **Service** — :class:`AuthService` (``AgentServer(auth=…)``): per-agent verification and
  signing keys, in ``runtime.services["auth"]``.
* **Signed responses** — :func:`sign_response` / :class:`ResponseSigner` (with
  :class:`ResponseHasher` for streamed text) and :func:`verify_response_signature` for clients.

Exception tree::

    TrioAgentsError
    └── AuthError      reason: missing_token, invalid_token, token_expired, token_not_yet_valid,
                       invalid_audience, invalid_issuer, missing_claim, unsupported_algorithm,
                       algorithm_mismatch, unknown_key, jwks_unavailable, hash_mismatch,
                       insufficient_scope
"""

from ._errors import (
    JSONRPC_AUTH_ERROR as JSONRPC_AUTH_ERROR,
    AuthError as AuthError,
    HttpFailure as HttpFailure,
    http_failure as http_failure,
    jsonrpc_error as jsonrpc_error,
    uamp_error as uamp_error,
    ws_close_code as ws_close_code,
)
from ._jwk import PublicKey as PublicKey, parse_jwks as parse_jwks
from ._jwks import (
    JWKSCache as JWKSCache,
    JWKSCacheStatistics as JWKSCacheStatistics,
    cache_max_age as cache_max_age,
)
from ._keys import (
    RESPONSE_SIGNATURE_LIFETIME as RESPONSE_SIGNATURE_LIFETIME,
    KeyRing as KeyRing,
    SigningKey as SigningKey,
    issuer_url as issuer_url,
    jwks_document as jwks_document,
    openid_configuration as openid_configuration,
)
from ._service import (
    AuthService as AuthService,
    base_url_of as base_url_of,
    denial_response as denial_response,
)
from ._signing import (
    ResponseHasher as ResponseHasher,
    ResponseSigner as ResponseSigner,
    sha256_hex as sha256_hex,
    sign_response as sign_response,
    verify_response_signature as verify_response_signature,
)
from ._verify import (
    ApiKey as ApiKey,
    Authenticator as Authenticator,
    JWTVerifier as JWTVerifier,
    KeyResolver as KeyResolver,
    Principal as Principal,
    StaticKeys as StaticKeys,
    VerifierConfig as VerifierConfig,
    bearer_token as bearer_token,
    require_scopes as require_scopes,
)

__all__ = [
    "JSONRPC_AUTH_ERROR",
    "RESPONSE_SIGNATURE_LIFETIME",
    "ApiKey",
    "AuthError",
    "AuthService",
    "Authenticator",
    "HttpFailure",
    "JWKSCache",
    "JWKSCacheStatistics",
    "JWTVerifier",
    "KeyResolver",
    "KeyRing",
    "Principal",
    "PublicKey",
    "ResponseHasher",
    "ResponseSigner",
    "SigningKey",
    "StaticKeys",
    "VerifierConfig",
    "base_url_of",
    "denial_response",
    "bearer_token",
    "cache_max_age",
    "http_failure",
    "issuer_url",
    "jsonrpc_error",
    "jwks_document",
    "openid_configuration",
    "parse_jwks",
    "require_scopes",
    "sha256_hex",
    "sign_response",
    "uamp_error",
    "verify_response_signature",
    "ws_close_code",
]
