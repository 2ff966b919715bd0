"""Parsing a JWKS and choosing the key for a token (no I/O): shared by every key source."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs
import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ._errors import AuthError

__all__ = [
    "PublicKey",
    "decode_verified",
    "find_key",
    "key_matches_alg",
    "parse_jwks",
    "select_key",
]


@attrs.frozen
class PublicKey:
    """One verification key from a JWKS.

    Attributes:
        kid: the key id (None when the JWK has none).
        alg: the algorithm the JWK declares (None when it declares none).
        key: the ``cryptography`` public key object.
        jwk: the JWK as published.
    """

    kid: str | None
    alg: str | None
    key: Any
    jwk: dict[str, Any]


_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}


def key_matches_alg(key: Any, alg: str) -> bool:
    """Whether the public key object ``key`` is of the type algorithm ``alg`` needs."""
    if alg.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if alg in _CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, _CURVES[alg])
    if alg in ("EdDSA", "Ed25519", "Ed448"):
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def parse_jwks(document: Any) -> list[PublicKey]:
    """The usable signature keys of a JWKS document.

    Keys that are not for signatures (``use`` other than ``sig``), symmetric (``oct``), private,
    or that do not parse are skipped: one odd key never hides the others.

    Raises:
        AuthError: ``jwks_unavailable`` when ``document`` is not ``{"keys": [...]}``.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise AuthError("jwks_unavailable", "the JWKS document has no 'keys' list")
    keys: list[PublicKey] = []
    for raw in document["keys"]:
        if not isinstance(raw, Mapping) or raw.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if raw.get("use", "sig") != "sig" or "d" in raw:
            continue
        kid, alg = raw.get("kid"), raw.get("alg")
        if (kid is not None and not isinstance(kid, str)) or (
            alg is not None and not isinstance(alg, str)
        ):
            continue
        try:
            # The key type decides how to read it; the declared ``alg`` is checked per token.
            key = jwt.PyJWK({k: v for k, v in raw.items() if k != "alg"}).key
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
        keys.append(PublicKey(kid=kid, alg=alg, key=key, jwk=dict(raw)))
    return keys


def _suitable(pk: PublicKey, alg: str) -> bool:
    return (pk.alg is None or pk.alg == alg) and key_matches_alg(pk.key, alg)


def find_key(keys: Iterable[PublicKey], kid: str | None, alg: str) -> PublicKey | None:
    """The key for a token with ``kid``/``alg``, or None when none is known.

    Raises:
        AuthError: ``algorithm_mismatch`` when the ``kid`` names a key of another type or
            algorithm (a key is never used with an algorithm it was not published for).
    """
    keys = list(keys)
    if kid is not None:
        named = [k for k in keys if k.kid == kid]
        if not named:
            return None
        for k in named:
            if _suitable(k, alg):
                return k
        raise AuthError("algorithm_mismatch", f"key {kid!r} is not a key for {alg}")
    suitable = [k for k in keys if _suitable(k, alg)]
    # Without a kid the choice is only unambiguous with a single suitable key (§10).
    return suitable[0] if len(suitable) == 1 else None


def select_key(keys: Sequence[PublicKey], kid: str | None, alg: str) -> PublicKey:
    """Like :func:`find_key` but raises ``unknown_key`` when no key fits."""
    found = find_key(keys, kid, alg)
    if found is None:
        what = f"kid {kid!r}" if kid is not None else f"a single {alg} key (no kid)"
        raise AuthError("unknown_key", f"no published key matches {what}")
    return found


def decode_verified(token: str, key: PublicKey, alg: str, what: str = "token") -> dict[str, Any]:
    """The JSON claims of ``token`` once its ``alg`` signature verifies with ``key``.

    Claims (``exp``, ``iss``, …) are the caller's to check.

    Raises:
        AuthError: ``invalid_token`` — a bad signature, a malformed ``what``, or a payload
            that is not a JSON object.
    """
    try:
        decoded = jwt.api_jws.PyJWS().decode_complete(token, key.key, algorithms=[alg])
        claims = orjson.loads(decoded["payload"])
    except jwt.InvalidSignatureError:
        raise AuthError("invalid_token", "the signature does not verify") from None
    except (jwt.PyJWTError, orjson.JSONDecodeError) as exc:
        raise AuthError("invalid_token", f"invalid {what}: {exc}") from None
    if not isinstance(claims, dict):
        raise AuthError("invalid_token", "the payload is not a JSON object")
    return claims
