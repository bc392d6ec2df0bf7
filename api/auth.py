"""``Authorization: Bearer <key>`` for every agent route.

Every request authenticates, so the lookup must be cheap: a verified key is
remembered in-process for ``CACHE_TTL_S`` (a revoked key stops working in
every worker within that time, at once in the worker that revoked it), and
``last_used_at`` is written at most once a minute per key and worker rather
than once per request.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest
from django.utils import timezone
from ninja.security.http import HttpAuthBase

from .errors import RETRY_AFTER_S, ApiError, body_too_large, missing_key
from .models import DEFAULT_SCOPES, ApiKey, Scope, hash_key, split_key

logger = logging.getLogger("api.auth")

CACHE_TTL_S = 10.0
LAST_USED_EVERY_S = 60.0
_CACHE_MAX = 4096


@dataclass
class KeyIdentity:
    """What a route knows about the caller (``request.auth``)."""

    key_id: int
    name: str
    products: frozenset[str]
    verified_until: float
    last_used_written: float = 0.0
    scopes: frozenset[str] = frozenset(DEFAULT_SCOPES)
    prefix: str = ""

    def allows(self, product_id: str) -> bool:
        return product_id in self.products


_verified: dict[str, KeyIdentity] = {}


def forget(key_hash: str | None = None) -> None:
    """Drop cached verifications (one key after a revoke, or all)."""
    if key_hash is None:
        _verified.clear()
    else:
        _verified.pop(key_hash, None)


def _invalid() -> ApiError:
    return ApiError(401, "invalid_api_key", "the API key is unknown or revoked", headers={"WWW-Authenticate": "Bearer"})


async def verify(key: str) -> KeyIdentity:
    """The identity of a key, or ``ApiError`` 401."""
    digest = hash_key(key)
    now = time.monotonic()
    identity = _verified.get(digest)
    if identity is not None and identity.verified_until > now:
        return identity
    parts = split_key(key)
    if parts is None:
        raise _invalid()
    try:
        row = (
            await ApiKey.objects.filter(prefix=parts[0])
            .only("id", "name", "key_hash", "products", "scopes", "revoked_at")
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
        _verified.pop(digest, None)
        raise _invalid()
    if len(_verified) >= _CACHE_MAX:
        _verified.clear()
    previous = identity.last_used_written if identity else 0.0
    identity = KeyIdentity(
        row.id, row.name, frozenset(row.products), now + CACHE_TTL_S, previous, frozenset(row.scopes or ()), parts[0]
    )
    _verified[digest] = identity
    return identity


async def _touch(identity: KeyIdentity) -> None:
    now = time.monotonic()
    if now - identity.last_used_written < LAST_USED_EVERY_S:
        return
    identity.last_used_written = now
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
        await _touch(identity)
        return identity
