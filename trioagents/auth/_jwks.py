"""A cache of issuers' JWKS that follows key rotation (PROTOCOLS.md §10).

Theory of operation. Each issuer has one entry: its ``jwks_uri``, the keys of the last good
fetch, the ``ETag`` and an expiry on the **trio clock** (so tests move time with
``MockClock``). A lookup that the fresh entry answers costs no I/O and no lock. Otherwise the
caller takes the issuer's lock — concurrent verifications of the same unknown ``kid`` wait for
one fetch instead of each making their own — and looks again, then:

* entry expired (or empty): revalidate (``If-None-Match``; 304 keeps the keys, renews expiry);
* entry fresh but the ``kid`` unknown: refetch, at most once per ``refetch_interval`` (60 s)
  per issuer, so random ``kid`` values cannot turn us into a traffic generator (routine
  fetches do not count: a rotation just after one is picked up at once);
* a failed fetch keeps stale keys (retried after ``min_max_age``) and fails only when there are
  none.

The ``jwks_uri`` is the configured one, else ``jwks_uri`` from
``{iss}/.well-known/openid-configuration``, else ``{iss}/.well-known/jwks.json``. Rotation
needs nothing special: the publisher serves old and new keys side by side, a token with the
new ``kid`` triggers the refetch, and tokens with the old ``kid`` verify as long as the
latest document still holds that key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import attrs
import httpx
import orjson
import trio

from ._errors import AuthError
from ._jwk import PublicKey, find_key, parse_jwks, select_key

__all__ = ["JWKSCache", "JWKSCacheStatistics", "cache_max_age"]

log = logging.getLogger("trioagents.auth")

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)\"?", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|[,\s])(no-cache|no-store)(?:$|[,\s=])", re.IGNORECASE)


def cache_max_age(
    cache_control: str | None,
    *,
    default: float = 3600.0,
    minimum: float = 60.0,
    maximum: float = 86400.0,
) -> float:
    """Seconds to keep a JWKS per its ``Cache-Control`` header, clamped to ``[minimum, maximum]``.

    No header (or no ``max-age``) gives ``default``; ``no-cache``/``no-store`` give ``minimum``
    (keys are still needed between fetches, and the clamp bounds the refetch rate).
    """
    age = default
    if cache_control:
        if _NO_CACHE.search(cache_control):
            age = minimum
        elif m := _MAX_AGE.search(cache_control):
            age = float(m.group(1))
    return min(max(age, minimum), maximum)


@attrs.frozen
class JWKSCacheStatistics:
    """Counters of a :class:`JWKSCache` (monotonic).

    Attributes:
        fetches: JWKS requests sent (200 and 304 and failures).
        not_modified: of which answered 304.
        discoveries: ``openid-configuration`` requests sent.
        failures: fetches that failed (network error, bad status, bad document).
        issuers: issuers with an entry.
    """

    fetches: int
    not_modified: int
    discoveries: int
    failures: int
    issuers: int


@attrs.define(eq=False)
class _Entry:
    lock: trio.Lock = attrs.field(factory=trio.Lock)
    jwks_uri: str | None = None
    keys: list[PublicKey] | None = None
    etag: str | None = None
    expires_at: float = float("-inf")
    last_refetch: float = float("-inf")


def _by_issuer(value: Mapping[str, str]) -> dict[str, str]:
    return {k.rstrip("/"): v for k, v in value.items()}


@attrs.define(eq=False)
class JWKSCache:
    """Issuers' public keys, fetched over HTTP and cached with rotation (module docstring).

    It is a :class:`~trioagents.auth.KeyResolver` for :class:`~trioagents.auth.JWTVerifier`.
    The cache owns no task and no connection: fetches run in the verifying task, through the
    injected client (whose timeouts bound them; the caller owns the client's lifetime).

    Attributes:
        client: the HTTP client used for every fetch.
        jwks_uris: issuer → configured ``jwks_uri`` (skips discovery).
        default_max_age: cache lifetime without ``Cache-Control: max-age``.
        min_max_age: lower clamp of the lifetime, and the retry delay after a failed fetch.
        max_max_age: upper clamp of the lifetime.
        refetch_interval: at most one refetch per issuer per this many seconds for unknown kids.
        max_document_size: larger JWKS / discovery documents are refused.
        max_issuers: issuers kept; the oldest idle ones are forgotten beyond it.
    """

    client: httpx.AsyncClient
    jwks_uris: Mapping[str, str] = attrs.field(factory=dict, converter=_by_issuer)
    default_max_age: float = 3600.0
    min_max_age: float = 60.0
    max_max_age: float = 86400.0
    refetch_interval: float = 60.0
    max_document_size: int = 1 << 20
    max_issuers: int = 1024
    _entries: dict[str, _Entry] = attrs.field(init=False, factory=dict)
    _fetches: int = attrs.field(init=False, default=0)
    _not_modified: int = attrs.field(init=False, default=0)
    _discoveries: int = attrs.field(init=False, default=0)
    _failures: int = attrs.field(init=False, default=0)

    def statistics(self) -> JWKSCacheStatistics:
        """A snapshot of the counters."""
        return JWKSCacheStatistics(
            fetches=self._fetches,
            not_modified=self._not_modified,
            discoveries=self._discoveries,
            failures=self._failures,
            issuers=len(self._entries),
        )

    async def get_key(self, issuer: str, kid: str | None, alg: str) -> PublicKey:
        """The key of ``issuer`` for a token with ``kid`` and ``alg``, fetching if needed.

        If cancelled during a fetch, the entry is left as it was (the next call fetches).

        Raises:
            AuthError: ``unknown_key`` (no such key, even after the allowed refetch),
                ``algorithm_mismatch`` (``kid`` names a key of another type), or
                ``jwks_unavailable`` (no keys could ever be fetched).
        """
        iss = issuer.rstrip("/")
        entry = self._entries.get(iss)
        if entry is None:
            self._evict()
            entry = self._entries[iss] = _Entry(jwks_uri=self.jwks_uris.get(iss))
        if entry.keys is not None and trio.current_time() < entry.expires_at:
            found = find_key(entry.keys, kid, alg)
            if found is not None:
                return found
        async with entry.lock:
            # Look again: whoever held the lock may have fetched what we need.
            now = trio.current_time()
            if entry.keys is not None and now < entry.expires_at:
                found = find_key(entry.keys, kid, alg)
                if found is not None:
                    return found
                # Only refetches for unknown kids count toward the rate limit: a rotation
                # right after a routine fetch must not fail for a minute.
                if now - entry.last_refetch < self.refetch_interval:
                    raise AuthError(
                        "unknown_key", f"no key {kid!r} for {iss!r} (refetch rate-limited)"
                    )
                previous, entry.last_refetch = entry.last_refetch, now
            else:
                previous = entry.last_refetch
            try:
                await self._refresh(iss, entry)
            except trio.Cancelled:
                # The fetch never happened as far as the rate limit is concerned.
                entry.last_refetch = previous
                raise
            return select_key(entry.keys or [], kid, alg)

    def _evict(self) -> None:
        # Bounded memory even with broad self-issued patterns: drop the oldest idle issuers.
        for iss in list(self._entries):
            if len(self._entries) < self.max_issuers:
                return
            if not self._entries[iss].lock.locked():
                del self._entries[iss]

    async def _refresh(self, iss: str, entry: _Entry) -> None:
        try:
            await self._fetch(iss, entry)
        except AuthError as exc:
            self._failures += 1
            if entry.keys is None:
                raise
            # Serve the stale keys rather than fail every token; retry after the minimum age.
            log.warning("JWKS refresh for %s failed, keeping cached keys: %s", iss, exc.message)
            entry.expires_at = trio.current_time() + self.min_max_age

    async def _get(self, url: str, headers: dict[str, str]) -> tuple[httpx.Response, bytes]:
        try:
            async with self.client.stream("GET", url, headers=headers) as response:
                length = response.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > self.max_document_size:
                    raise AuthError("jwks_unavailable", f"{url} is too large")
                body = await response.aread()
        except httpx.HTTPError as exc:
            raise AuthError("jwks_unavailable", f"cannot fetch {url}: {exc!r}") from None
        if len(body) > self.max_document_size:
            raise AuthError("jwks_unavailable", f"{url} is too large")
        return response, body

    async def _discover(self, iss: str) -> str:
        self._discoveries += 1
        response, body = await self._get(
            f"{iss}/.well-known/openid-configuration", {"Accept": "application/json"}
        )
        if response.status_code == 200:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                doc = None
            uri = doc.get("jwks_uri") if isinstance(doc, dict) else None
            if isinstance(uri, str) and uri.startswith(("https://", "http://")):
                return uri
        return f"{iss}/.well-known/jwks.json"

    async def _fetch(self, iss: str, entry: _Entry) -> None:
        uri = entry.jwks_uri or await self._discover(iss)
        headers = {"Accept": "application/json"}
        if entry.etag is not None and entry.keys is not None:
            headers["If-None-Match"] = entry.etag
        self._fetches += 1
        response, body = await self._get(uri, headers)
        max_age = cache_max_age(
            response.headers.get("cache-control"),
            default=self.default_max_age,
            minimum=self.min_max_age,
            maximum=self.max_max_age,
        )
        if response.status_code == 304 and entry.keys is not None:
            self._not_modified += 1
            entry.jwks_uri = uri
            entry.expires_at = trio.current_time() + max_age
            return
        if response.status_code != 200:
            if uri != self.jwks_uris.get(iss):
                entry.jwks_uri = None  # discover again next time: the issuer may have moved
            raise AuthError("jwks_unavailable", f"{uri} answered {response.status_code}")
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise AuthError("jwks_unavailable", f"{uri} is not JSON") from None
        entry.keys = parse_jwks(doc)
        entry.jwks_uri = uri
        entry.etag = response.headers.get("etag")
        entry.expires_at = trio.current_time() + max_age
