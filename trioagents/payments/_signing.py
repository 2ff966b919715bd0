"""Payment-token JWTs: ES256 (EC P-256) signing and verification with pyjwt.

Kept in a few small functions so that they can later switch to the shared helpers of
``trioagents.auth`` (key storage, JWKS) without touching the ledger or the verifier.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ._errors import TOKEN_EXPIRED, TOKEN_MALFORMED, PaymentTokenInvalidError, to_decimal

__all__ = [
    "ALGORITHM",
    "PaymentClaims",
    "generate_signing_key",
    "load_signing_key",
    "dump_signing_key",
    "key_id",
    "public_jwk",
    "sign_payment_token",
    "verify_payment_jwt",
]

ALGORITHM = "ES256"
"""The only algorithm payment tokens are signed and accepted with."""

TOKEN_TYPE = "trioagents-payment+jwt"


def generate_signing_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def dump_signing_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM (for the ledger's own storage)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_signing_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    """Load a PEM private key.

    Raises:
        ValueError: not a P-256 EC private key.
    """
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("payment tokens need an EC P-256 private key")
    return key


def key_id(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """``kid``: the first 16 hex digits of SHA-256 over the DER SubjectPublicKeyInfo (§10)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def public_jwk(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The public JWK of ``key`` (``kty:"EC"``, ``crv:"P-256"``, ``alg:"ES256"``, ``kid``)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    jwk: dict[str, Any] = dict(jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True))
    jwk.update({"use": "sig", "alg": ALGORITHM, "kid": key_id(public)})
    return jwk


@attrs.frozen
class PaymentClaims:
    """The verified claims of a payment token.

    Attributes:
        token_id: the ledger's token id (``jti``).
        amount: the token's initial amount.
        currency: what the amount is in.
        expires_at: ``exp`` (Unix s).
        issuer: ``iss``.
        issued_at: ``iat`` (Unix s).
    """

    token_id: str
    amount: Decimal
    currency: str
    expires_at: int
    issuer: str | None = None
    issued_at: int | None = None


def sign_payment_token(
    key: ec.EllipticCurvePrivateKey,
    *,
    token_id: str,
    amount: Decimal,
    currency: str,
    issued_at: int,
    expires_at: int,
    issuer: str | None = None,
) -> str:
    """Sign a payment token (ES256; header ``typ`` and ``kid``; claims ``jti``, ``amount``,
    ``currency``, ``iat``, ``exp`` and ``iss`` when given)."""
    claims: dict[str, Any] = {
        "jti": token_id,
        "amount": str(amount),
        "currency": currency,
        "iat": issued_at,
        "exp": expires_at,
    }
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(
        claims, key, algorithm=ALGORITHM, headers={"kid": key_id(key), "typ": TOKEN_TYPE}
    )


def verify_payment_jwt(
    token: str,
    keys: Mapping[str, Any],
    *,
    now: float,
    leeway: float = 60.0,
    issuer: str | None = None,
) -> PaymentClaims:
    """Check a payment token's signature and times; return its claims.

    Args:
        token: the compact JWT.
        keys: public keys by ``kid`` (JWK dicts or ``cryptography`` public keys).
        now: the current Unix time (injected so tests control it).
        leeway: tolerance for ``exp`` / ``iat`` in seconds.
        issuer: when given, ``iss`` must equal it.

    Raises:
        PaymentTokenInvalidError: subcode ``TOKEN_EXPIRED`` past ``exp`` + leeway, else
            ``TOKEN_MALFORMED`` (bad signature, unknown ``kid``, wrong algorithm, missing or
            ill-typed claims, wrong issuer).
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise PaymentTokenInvalidError(f"bad token: {exc}", subcode=TOKEN_MALFORMED) from None
    if header.get("alg") != ALGORITHM:
        raise PaymentTokenInvalidError(
            f"payment tokens must be {ALGORITHM}, not {header.get('alg')!r}",
            subcode=TOKEN_MALFORMED,
        )
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None and kid is None and len(keys) == 1:
        key = next(iter(keys.values()))
    if key is None:
        raise PaymentTokenInvalidError(
            f"payment token signed by an unknown key {kid!r}",
            subcode=TOKEN_MALFORMED,
            details={"unknown_kid": kid},
        )
    if isinstance(key, Mapping):
        key = jwt.algorithms.ECAlgorithm.from_jwk(dict(key))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key = key.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise PaymentTokenInvalidError(
            "payment token key is not an EC key", subcode=TOKEN_MALFORMED
        )
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_aud": False,
                "verify_iss": False,
                "require": ["exp", "jti"],
            },
        )
    except jwt.PyJWTError as exc:
        raise PaymentTokenInvalidError(f"bad token: {exc}", subcode=TOKEN_MALFORMED) from None
    exp = claims.get("exp")
    jti = claims.get("jti")
    currency = claims.get("currency", "credits")
    if not isinstance(exp, int) or isinstance(exp, bool) or not isinstance(jti, str) or not jti:
        raise PaymentTokenInvalidError("bad token claims", subcode=TOKEN_MALFORMED)
    if not isinstance(currency, str):
        raise PaymentTokenInvalidError("bad token currency", subcode=TOKEN_MALFORMED)
    if exp > 10**12:  # §0.3: values > 10^12 are milliseconds
        exp //= 1000
    if issuer is not None and claims.get("iss") != issuer:
        raise PaymentTokenInvalidError("payment token from another issuer", subcode=TOKEN_MALFORMED)
    if now > exp + leeway:
        raise PaymentTokenInvalidError("payment token expired", subcode=TOKEN_EXPIRED, token_id=jti)
    try:
        amount = to_decimal(claims.get("amount", "0"))
    except (TypeError, ValueError):
        raise PaymentTokenInvalidError("bad token amount", subcode=TOKEN_MALFORMED) from None
    iat = claims.get("iat")
    return PaymentClaims(
        token_id=jti,
        amount=amount if amount is not None else Decimal(0),
        currency=currency,
        expires_at=exp,
        issuer=claims.get("iss") if isinstance(claims.get("iss"), str) else None,
        issued_at=iat if isinstance(iat, int) and not isinstance(iat, bool) else None,
    )
