"""``Authorization: Bearer <key>`` for every agent route, and the key's rate limit.

Every request authenticates, so the lookup must be cheap: a verified key is
kept in Django's cache, which every worker shares (Redis, or a table of the
database), for ``CACHE_TTL_S``. Revoking a key replaces its entry with a
tombstone, so every worker refuses it from the next request on; an entry is
only ever added (``add``), never overwritten, so a request that read the key
just before the revoke cannot put it back. ``last_used_at`` is written at
most once a minute per key and worker rather than once per request.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError
from django.http import HttpRequest
from django.utils import timezone
from ninja.security.http import HttpAuthBase

from . import ratelimit
from .errors import RETRY_AFTER_S, ApiError, body_too_large, missing_key
from .models import DEFAULT_SCOPES, ApiKey, Scope, hash_key, split_key

logger = logging.getLogger("api.auth")

CACHE_TTL_S = 300
LAST_USED_EVERY_S = 60.0
_REVOKED = "revoked"


@dataclass(frozen=True)
class KeyIdentity:
    """What a route knows about the caller (``request.auth``)."""

    key_id: int
    name: str
    products: frozenset[str]
    scopes: frozenset[str] = frozenset(DEFAULT_SCOPES)
    prefix: str = ""
    limit: ratelimit.Limit | None = None

    def allows(self, product_id: str) -> bool:
        return product_id in self.products


_last_used: dict[int, float] = {}  # key id -> when this worker last wrote last_used_at (monotonic)


def _cache_key(key_hash: str) -> str:
    """Versioned: a deployment that changes ``KeyIdentity`` bumps it rather than unpickle an older shape."""
    return f"apikey:v1:{key_hash}"


def forget(key_hash: str | None = None) -> None:
    """Refuse a key in every worker from now on (its revoke calls this); ``None``: this worker's bookkeeping only.

    Never ``cache.clear()``: on Redis that would be ``FLUSHDB``, the primary's data included.
    """
    if key_hash is None:
        _last_used.clear()
        return
    cache.set(_cache_key(key_hash), _REVOKED, CACHE_TTL_S)


def _invalid() -> ApiError:
    return ApiError(401, "invalid_api_key", "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"})


def _unavailable(exc: Exception) -> ApiError:
    logger.warning("API key lookup failed: %s", exc)
    return ApiError(
        503,
        "auth_unavailable",
        "API keys cannot be checked right now; retry later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def verify(key: str) -> KeyIdentity:
    """The identity of a key, or ``ApiError`` 401."""
    digest = hash_key(key)
    try:
        cached = await cache.aget(_cache_key(digest))
    except Exception as exc:  # the cache server is down: the database still answers
        logger.warning("API key cache unavailable: %s", exc)
        cached = None
    if cached == _REVOKED:
        raise _invalid()
    if isinstance(cached, KeyIdentity):
        return cached
    parts = split_key(key)
    if parts is None:
        raise _invalid()
    try:
        row = (
            await ApiKey.objects.filter(prefix=parts[0])
            .only("id", "name", "prefix", "key_hash", "products", "scopes", "rate", "burst", "revoked_at")
            .afirst()
        )
    except DatabaseError as exc:
        raise _unavailable(exc) from exc
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
        raise _invalid()
    identity = KeyIdentity(
        row.id,
        row.name,
        frozenset(row.products),
        frozenset(row.scopes or ()),
        row.prefix,
        ratelimit.Limit.of(row.rate, row.burst),
    )
    try:
        await cache.aadd(_cache_key(digest), identity, CACHE_TTL_S)
    except Exception as exc:
        logger.warning("API key cache unavailable: %s", exc)
    return identity


async def _touch(identity: KeyIdentity) -> None:
    now = time.monotonic()
    if now - _last_used.get(identity.key_id, -LAST_USED_EVERY_S) < LAST_USED_EVERY_S:
        return
    if len(_last_used) >= 4096:
        _last_used.clear()
    _last_used[identity.key_id] = now
    try:
        await ApiKey.objects.filter(pk=identity.key_id).aupdate(last_used_at=timezone.now())
    except DatabaseError as exc:  # bookkeeping: never fail the agent's request over it
        logger.warning("could not record the key's last use: %s", exc)


_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class ApiKeyAuth(HttpAuthBase):
    """Bearer API key, scoped to the ``product_id`` in the path (403 for another product) and to what it may do.

    A route needs the ``read`` scope for GET and ``write`` for the rest, unless
    it names its own (``ApiKeyAuth(scope="admin")`` for sensitive actions).
    """

    openapi_scheme = "bearer"

    def __init__(self, scope: str | None = None) -> None:
        super().__init__()
        self.scope = scope

    async def __call__(self, request: HttpRequest) -> KeyIdentity:
        # Before the body is parsed. The lean ASGI path (api/asgi.py) refuses even earlier; this
        # covers the API mounted on Django's plain handler.
        length = request.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            raise body_too_large()
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if not header:
            raise missing_key()
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(
                401,
                "invalid_authorization",
                "use the Bearer scheme: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        identity = await verify(key.strip())
        match = request.resolver_match
        product_id = match.kwargs.get("product_id") if match else None
        if product_id is not None and not identity.allows(product_id):
            raise ApiError(403, "product_forbidden", f"this API key is not allowed to use product {product_id!r}")
        needed = self.scope or (Scope.READ if request.method in _READ_METHODS else Scope.WRITE)
        if needed not in identity.scopes:
            raise ApiError(403, "scope_forbidden", f"this API key lacks the {needed!s} scope this route needs")
        if identity.limit is not None:  # before the body is parsed: a refused request does nothing
            await ratelimit.check(identity.prefix, identity.limit)
        await _touch(identity)
        return identity
