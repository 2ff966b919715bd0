"""The one auth error and how each transport shows it (PROTOCOLS.md §10, §0.4).

Every failure to authenticate raises :class:`AuthError` with a machine-readable ``reason``; the
transports never build failure shapes themselves, they call the renderers here:

* HTTP: :func:`http_failure` → 401 + ``WWW-Authenticate: Bearer error="invalid_token"`` (403 +
  ``error="insufficient_scope"`` for a missing scope; no ``error`` at all when no credentials
  were sent, RFC 6750 §3.1), with a generic or an OpenAI-shaped JSON body.
* WebSocket: :func:`ws_close_code` → 4001 (bad or expired token), 4000 (none sent), 4003 (scope).
* UAMP: :func:`uamp_error` → the ``error`` object of ``session.error{unauthorized}``.
* JSON-RPC (ACP, A2A): :func:`jsonrpc_error` → error code ``-32000``.
"""

from __future__ import annotations

from typing import Any

import attrs

from .. import uamp
from .._errors import TrioAgentsError
from ..protocols import jsonrpc

__all__ = [
    "AuthError",
    "HttpFailure",
    "JSONRPC_AUTH_ERROR",
    "http_failure",
    "jsonrpc_error",
    "uamp_error",
    "ws_close_code",
]

JSONRPC_AUTH_ERROR = -32000
"""The JSON-RPC error code of an auth failure (ACP, A2A JSON-RPC)."""

#: Reasons and what they mean. Anything else is reported as ``invalid_token`` too.
REASONS: dict[str, str] = {
    "missing_token": "no credentials were sent",
    "invalid_token": "the token is malformed or its signature does not verify",
    "token_expired": "the token has expired",
    "token_not_yet_valid": "the token's nbf/iat lies in the future",
    "invalid_audience": "the token is not meant for this agent",
    "invalid_issuer": "the token's issuer is not trusted",
    "missing_claim": "a required claim is missing or has the wrong type",
    "unsupported_algorithm": "the algorithm is not allowed",
    "algorithm_mismatch": "the algorithm does not match the key type",
    "unknown_key": "no published key matches the token's kid",
    "jwks_unavailable": "the issuer's keys could not be fetched",
    "hash_mismatch": "a signed hash does not match the content",
    "insufficient_scope": "the token lacks a required scope",
}


class AuthError(TrioAgentsError):
    """A credential was missing, invalid or not good enough.

    Raised by :class:`~trioagents.auth.JWTVerifier`, :class:`~trioagents.auth.Authenticator`,
    :class:`~trioagents.auth.JWKSCache` and :func:`~trioagents.auth.verify_response_signature`.

    Attributes:
        reason: one of ``missing_token``, ``invalid_token``, ``token_expired``,
            ``token_not_yet_valid``, ``invalid_audience``, ``invalid_issuer``,
            ``missing_claim``, ``unsupported_algorithm``, ``algorithm_mismatch``,
            ``unknown_key``, ``jwks_unavailable``, ``hash_mismatch``, ``insufficient_scope``.
        code: the UAMP error code: ``unauthorized`` (``forbidden`` for ``insufficient_scope``).
        scopes: for ``insufficient_scope``, the scopes that were required.
    """

    code = "unauthorized"

    def __init__(
        self, reason: str, message: str | None = None, *, scopes: tuple[str, ...] = ()
    ) -> None:
        text = message or REASONS.get(reason, reason)
        super().__init__(
            text,
            code="forbidden" if reason == "insufficient_scope" else "unauthorized",
            details={"reason": reason},
        )
        self.reason = reason
        self.scopes = scopes

    def __repr__(self) -> str:
        return f"AuthError({self.reason!r}, {self.message!r})"


@attrs.frozen
class HttpFailure:
    """An HTTP auth failure as plain data: send ``status``, ``headers`` and JSON ``body``."""

    status: int
    headers: dict[str, str]
    body: dict[str, Any]


def _quote(text: str) -> str:
    # RFC 6750 §3: auth-param values are quoted strings; keep them to printable ASCII.
    cleaned = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "?" for c in text)
    return f'"{cleaned}"'


def http_failure(err: AuthError, *, realm: str | None = None, openai: bool = False) -> HttpFailure:
    """The HTTP response for ``err``.

    Args:
        err: the failure.
        realm: optional ``realm`` parameter of the challenge (e.g. the agent's URL).
        openai: render the OpenAI error body ``{"error":{"message","type","param","code"}}``
            (Completions routes) instead of the generic ``{"error":{"code","message","details"}}``.

    Returns:
        401 (403 for ``insufficient_scope``) with a ``WWW-Authenticate: Bearer …`` challenge.
    """
    params: list[str] = []
    if realm is not None:
        params.append(f"realm={_quote(realm)}")
    if err.reason == "insufficient_scope":
        status = 403
        params.append('error="insufficient_scope"')
        if err.scopes:
            params.append(f"scope={_quote(' '.join(err.scopes))}")
    else:
        status = 401
        if err.reason != "missing_token":
            params.append('error="invalid_token"')
    if err.reason != "missing_token":
        params.append(f"error_description={_quote(err.message)}")
    challenge = "Bearer" + (" " + ", ".join(params) if params else "")
    body: dict[str, Any]
    if openai:
        body = {
            "error": {
                "message": err.message,
                "type": "invalid_request_error" if status == 401 else "permission_error",
                "param": None,
                "code": err.reason,
            }
        }
    else:
        body = {
            "error": {"code": err.code, "message": err.message, "details": {"reason": err.reason}}
        }
    return HttpFailure(status=status, headers={"WWW-Authenticate": challenge}, body=body)


def ws_close_code(err: AuthError) -> int:
    """The WebSocket close code for ``err`` (§0.4): 4001 bad/expired, 4000 none, 4003 scope."""
    if err.reason == "insufficient_scope":
        return 4003
    if err.reason == "missing_token":
        return 4000
    return 4001


def uamp_error(err: AuthError) -> uamp.ErrorInfo:
    """The ``error`` object of the UAMP ``session.error`` (code ``unauthorized``/``forbidden``)."""
    return uamp.ErrorInfo(code=err.code, message=err.message, details={"reason": err.reason})


def jsonrpc_error(err: AuthError, id: jsonrpc.Id) -> dict[str, Any]:
    """The JSON-RPC error response for ``err``: code ``-32000``, ``data.reason``."""
    data: dict[str, Any] = {"reason": err.reason}
    if err.scopes:
        data["scopes"] = list(err.scopes)
    return jsonrpc.error(id, JSONRPC_AUTH_ERROR, err.message, data)
