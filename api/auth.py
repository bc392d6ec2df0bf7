"""``Authorization: Bearer <key>`` for every agent route, and the key's rate limit.

Every request authenticates, so the lookup must cost nothing: a verified key
is remembered in the worker, for ``CACHE_TTL_S``. Revocation reaches every
worker through Django's cache, which they all share (Redis, or a table of
the database): revoking a key writes a new *revocation generation* there,
and a worker reads the generation at most every ``GENERATION_CHECK_S``
(inline, on a request) and forgets every key it verified when it changed.
A worker trusts what it remembers only while its last read of the
generation began less than ``GENERATION_CHECK_S`` ago, and a revoke returns
only ``2 * GENERATION_CHECK_S`` after writing the generation: so once it has
returned, every worker's next request re-reads and refuses the key. A
lookup that began before a generation change is not remembered.
``last_used_at`` is written at most once a minute per key and worker.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError
from django.http import HttpRequest
from django.utils import timezone
from ninja.security.http import HttpAuthBase

from autoplay_storage.audit import Action, arecord_request

from . import ratelimit
from .errors import RETRY_AFTER_S, ApiError, body_too_large, missing_key
from .models import DEFAULT_SCOPES, ApiKey, Scope, hash_key, split_key

logger = logging.getLogger("api.auth")

CACHE_TTL_S = 300.0
GENERATION_CHECK_S = 0.25
GENERATION_KEY = "apikey:revocation-generation"
LAST_USED_EVERY_S = 60.0
_CACHE_MAX = 4096


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


@dataclass
class _Worker:
    """This worker's verified keys and what it last read of the revocation generation."""

    verified: dict[str, tuple[KeyIdentity, float]]  # key hash -> identity, valid until (monotonic)
    generation: object = None
    checked_at: float = float("-inf")  # when the last successful read of the generation began (monotonic)


_worker = _Worker({})
_last_used: dict[int, float] = {}  # key id -> when this worker last wrote last_used_at (monotonic)


def forget(key_hash: str | None = None) -> None:
    """Refuse a key in every worker (``ApiKey.revoke`` calls this after marking the row); ``None``: this one only.

    Blocks for ``2 * GENERATION_CHECK_S``: when it returns, no worker still
    trusts what it verified before. Never ``cache.clear()``: on Redis that
    would be ``FLUSHDB``, the primary's data included.
    """
    _worker.verified.clear()
    _worker.checked_at = float("-inf")
    _last_used.clear()
    if key_hash is not None:
        cache.set(GENERATION_KEY, secrets.token_hex(8), None)
        time.sleep(2 * GENERATION_CHECK_S)


async def _check_generation() -> None:
    """Forget this worker's verified keys if a key was revoked since it last looked (at most every 0.25 s)."""
    started = time.monotonic()
    if started - _worker.checked_at < GENERATION_CHECK_S:
        return
    try:
        generation = await cache.aget(GENERATION_KEY)
    except Exception as exc:  # the cache is down: trust nothing remembered, ask the database each time
        logger.warning("API key revocations cannot be read from the cache: %s", exc)
        _worker.verified.clear()
        return
    if generation != _worker.generation:
        _worker.verified.clear()
        _worker.generation = generation
    _worker.checked_at = max(_worker.checked_at, started)


def _invalid() -> ApiError:
    return ApiError(401, "invalid_api_key", "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"})


async def verify(key: str) -> KeyIdentity:
    """The identity of a key, or ``ApiError`` 401."""
    digest = hash_key(key)
    await _check_generation()
    now = time.monotonic()
    remembered = _worker.verified.get(digest)
    fresh = now - _worker.checked_at < GENERATION_CHECK_S
    if remembered is not None and remembered[1] > now and fresh:
        return remembered[0]
    generation = _worker.generation
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
        logger.warning("API key lookup failed: %s", exc)
        raise ApiError(
            503,
            "auth_unavailable",
            "API keys cannot be checked right now; retry later",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from exc
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
        _worker.verified.pop(digest, None)
        raise _invalid()
    identity = KeyIdentity(
        row.id,
        row.name,
        frozenset(row.products),
        frozenset(row.scopes or ()),
        row.prefix,
        ratelimit.Limit.of(row.rate, row.burst),
    )
    if generation == _worker.generation:  # no revocation seen while the row was read
        if len(_worker.verified) >= _CACHE_MAX:
            _worker.verified.clear()
        _worker.verified[digest] = (identity, now + CACHE_TTL_S)
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


async def _denied(request: HttpRequest, identity: KeyIdentity, code: str, product_id: str, **details: str) -> None:
    """Record a refused call; ``request.auth`` is not set yet, so the key is named here."""
    request.auth = identity  # type: ignore[attr-defined]  # the actor of the entry
    match = request.resolver_match
    await arecord_request(
        request, Action.PERMISSION_DENIED, product_id=product_id,
        user_id=match.kwargs.get("user_id", "") if match else "",
        session_id=match.kwargs.get("session_id", "") if match else "",
        details={"code": code, "method": request.method, "path": request.path, **details},
    )


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
            await _denied(request, identity, "product_forbidden", product_id)
            raise ApiError(403, "product_forbidden", f"this API key is not allowed to use product {product_id!r}")
        needed = self.scope or (Scope.READ if request.method in _READ_METHODS else Scope.WRITE)
        if needed not in identity.scopes:
            await _denied(request, identity, "scope_forbidden", product_id or "", needs=str(needed))
            raise ApiError(403, "scope_forbidden", f"this API key lacks the {needed!s} scope this route needs")
        if identity.limit is not None:  # before the body is parsed: a refused request does nothing
            await ratelimit.check(identity.prefix, identity.limit)
        await _touch(identity)
        return identity
