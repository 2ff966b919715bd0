"""Signing keys, the key ring, and the documents that publish them (PROTOCOLS.md §10).

A :class:`SigningKey` is one private key (RSA 2048 → ``RS256`` or EC P-256 → ``ES256``) with its
``kid`` (the first 16 hex digits of SHA-256 over the DER SubjectPublicKeyInfo) and its public
JWK. A :class:`KeyRing` holds the active key and the retired ones, which stay published for the
longest lifetime of a token they signed so that verifiers can still check those tokens.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

__all__ = [
    "KeyRing",
    "SigningKey",
    "issuer_url",
    "jwks_document",
    "openid_configuration",
]

KeyKind = Literal["RSA", "EC"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

#: Lifetime of a response signature (``exp = iat + 300``): the default time a retired key stays
#: published.
RESPONSE_SIGNATURE_LIFETIME = 300


def _b64url_uint(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode("ascii")


def issuer_url(public_url: str, agent: str) -> str:
    """The issuer (and default audience) of an agent: ``{public_url}/agents/{agent}``."""
    return f"{public_url.rstrip('/')}/agents/{agent}"


@attrs.frozen(eq=False, repr=False)
class SigningKey:
    """A private signing key: RSA 2048 (``RS256``) or EC P-256 (``ES256``).

    Build one with :meth:`generate`, :meth:`from_pem`, :meth:`load` or :meth:`load_or_generate`.

    Attributes:
        private_key: the ``cryptography`` private key.
        alg: ``"RS256"`` or ``"ES256"``.
        kid: first 16 hex digits of SHA-256 over the DER SubjectPublicKeyInfo.
    """

    private_key: PrivateKey
    alg: str
    kid: str

    @classmethod
    def from_private_key(cls, private_key: Any) -> SigningKey:
        """Wrap a ``cryptography`` RSA (≥ 2048 bits) or EC P-256 private key.

        Raises:
            ValueError: another key type, curve or a short RSA key.
        """
        if isinstance(private_key, rsa.RSAPrivateKey):
            if private_key.key_size < 2048:
                raise ValueError("RSA signing keys must have at least 2048 bits")
            alg = "RS256"
        elif isinstance(private_key, ec.EllipticCurvePrivateKey):
            if not isinstance(private_key.curve, ec.SECP256R1):
                raise ValueError("EC signing keys must use the P-256 curve")
            alg = "ES256"
        else:
            raise ValueError(f"unsupported signing key type {type(private_key).__name__}")
        der = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(private_key=private_key, alg=alg, kid=hashlib.sha256(der).hexdigest()[:16])

    @classmethod
    def generate(cls, kind: KeyKind = "RSA") -> SigningKey:
        """A fresh key: ``"RSA"`` (2048 bits, RS256) or ``"EC"`` (P-256, ES256)."""
        if kind == "RSA":
            return cls.from_private_key(rsa.generate_private_key(65537, 2048))
        if kind == "EC":
            return cls.from_private_key(ec.generate_private_key(ec.SECP256R1()))
        raise ValueError(f"unknown key kind {kind!r} (expected 'RSA' or 'EC')")

    @classmethod
    def from_pem(cls, data: bytes | str, password: bytes | None = None) -> SigningKey:
        """Load a PEM private key (PKCS#8, PKCS#1 or SEC1).

        Raises:
            ValueError: not a PEM private key, a wrong password, or an unsupported key.
        """
        raw = data.encode("ascii") if isinstance(data, str) else data
        return cls.from_private_key(serialization.load_pem_private_key(raw, password))

    def to_pem(self, password: bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM (encrypted when ``password`` is given)."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def public_pem(self) -> bytes:
        """The public key as SubjectPublicKeyInfo PEM."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], password: bytes | None = None) -> SigningKey:
        """Read a PEM private key from ``path`` (blocking file I/O: call from a thread in
        async code, or at start-up)."""
        return cls.from_pem(Path(path).read_bytes(), password)

    def save(self, path: str | os.PathLike[str], password: bytes | None = None) -> None:
        """Write the private key as PEM to ``path``, readable by the owner only.

        The file is written next to ``path`` and renamed into place, so a crash never leaves a
        half-written key (blocking file I/O).
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self.to_pem(password))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load_or_generate(
        cls, path: str | os.PathLike[str], kind: KeyKind = "RSA", password: bytes | None = None
    ) -> SigningKey:
        """The key stored at ``path``; on first run a new one is generated and stored there."""
        if Path(path).exists():
            return cls.load(path, password)
        key = cls.generate(kind)
        key.save(path, password)
        return key

    def public_jwk(self) -> dict[str, str]:
        """The public JWK: ``{"kty":"RSA","use":"sig","alg":"RS256","kid","n","e"}`` or
        ``{"kty":"EC","use":"sig","alg":"ES256","kid","crv":"P-256","x","y"}``."""
        public = self.private_key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            return {
                "kty": "RSA",
                "use": "sig",
                "alg": self.alg,
                "kid": self.kid,
                "n": _b64url_uint(numbers.n),
                "e": _b64url_uint(numbers.e),
            }
        point = public.public_numbers()
        return {
            "kty": "EC",
            "use": "sig",
            "alg": self.alg,
            "kid": self.kid,
            "crv": "P-256",
            "x": _b64url_uint(point.x, 32),
            "y": _b64url_uint(point.y, 32),
        }

    def sign(self, claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None) -> str:
        """A compact JWT over ``claims`` with header ``{"alg","typ":"JWT","kid"}``."""
        header = {"typ": "JWT", "kid": self.kid, **(headers or {})}
        return jwt.encode(dict(claims), self.private_key, algorithm=self.alg, headers=header)

    def __repr__(self) -> str:
        return f"SigningKey(alg={self.alg!r}, kid={self.kid!r})"


@attrs.frozen
class _Retired:
    key: SigningKey
    until: float


@attrs.define(eq=False)
class KeyRing:
    """The active signing key plus retired keys that stay published.

    A retired key stays in :meth:`published` until ``retired_at + retention`` (the longest
    lifetime of a token it signed; by default the 300 s of a response signature). Times are
    Unix seconds from the caller's clock, so the ring holds no clock itself.

    Attributes:
        active: the key new tokens are signed with.
        retention: seconds a retired key stays published.
    """

    active: SigningKey
    retention: float = RESPONSE_SIGNATURE_LIFETIME
    _retired: list[_Retired] = attrs.field(factory=list, init=False)

    def rotate(self, new_key: SigningKey, *, now: float) -> None:
        """Make ``new_key`` active; the old one stays published for ``retention`` seconds."""
        if new_key.kid == self.active.kid:
            return
        self._retired = [r for r in self._retired if r.key.kid != new_key.kid]
        self._retired.append(_Retired(self.active, now + self.retention))
        self.active = new_key

    def published(self, *, now: float) -> list[SigningKey]:
        """The active key first, then retired keys still within their retention (pruned)."""
        self._retired = [r for r in self._retired if r.until > now]
        return [self.active, *(r.key for r in self._retired)]

    def get(self, kid: str, *, now: float) -> SigningKey | None:
        """The published key with ``kid``, if any."""
        return next((k for k in self.published(now=now) if k.kid == kid), None)

    def jwks(self, *, now: float) -> dict[str, list[dict[str, str]]]:
        """The JWKS document of the published keys."""
        return jwks_document(self.published(now=now))


def jwks_document(keys: Iterable[SigningKey]) -> dict[str, list[dict[str, str]]]:
    """``{"keys": [public JWK, …]}``, without duplicate ``kid`` (the union of several rings)."""
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    for key in keys:
        if key.kid not in seen:
            seen.add(key.kid)
            out.append(key.public_jwk())
    return {"keys": out}


def openid_configuration(
    issuer: str,
    *,
    jwks_uri: str | None = None,
    algorithms: Sequence[str] = ("RS256", "ES256"),
) -> dict[str, Any]:
    """The ``/.well-known/openid-configuration`` document of an agent.

    Args:
        issuer: ``{public_url}/agents/{name}`` (see :func:`issuer_url`).
        jwks_uri: defaults to ``{issuer}/.well-known/jwks.json``.
        algorithms: the algorithms of the published keys.
    """
    return {
        "issuer": issuer,
        "jwks_uri": jwks_uri or f"{issuer.rstrip('/')}/.well-known/jwks.json",
        "id_token_signing_alg_values_supported": list(algorithms),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope"],
    }
