"""Per-key rate limits, shared by every worker: pyrate-limiter's GCRA on Redis or on the database.

The policy is pyrate-limiter's ``GCRA`` (a token bucket kept as one
timestamp): ``rate`` requests per second sustained, ``burst`` at once after
a quiet spell, and the exact wait of a refused request. Its state lives
where every worker sees it:

* Redis (when Redis is the primary): pyrate-limiter's ``RedisStateStore``,
  one Lua script per check, so the read-modify-write is atomic; the key is
  ``autoplay-cache:ratelimit:<key prefix>``, beside Django's cache and never a
  wire key.
* the database otherwise: :class:`DatabaseStateStore`, the library's store
  interface over one row per key, read and written in one transaction that
  holds the row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's
  ``BEGIN IMMEDIATE`` write lock), so two workers never spend the same token.
  Django's database cache cannot serve here: its ``incr`` reads, then writes.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, transaction
from pyrate_limiter import GCRA, Decision, Rate, RedisStateStore, StateAlgorithm, StateStore
from pyrate_limiter.abstracts.algorithm import State

from .errors import RETRY_AFTER_S, ApiError
from .models import RateLimitState

try:
    from redis.exceptions import RedisError
except ImportError:  # the redis extra is not installed: Redis is never the primary then
    RedisError = OSError  # type: ignore[assignment,misc]

_ALGORITHM = GCRA()
_PER_MS = 1_000_000  # a rate of r/s is r*1000 requests per 1e6 ms: sub-1/s rates stay exact to 0.001/s


@dataclass(frozen=True)
class Limit:
    rate: float
    burst: int

    @classmethod
    def of(cls, rate: float | None, burst: int | None) -> Limit | None:
        if rate is None:
            return None
        return cls(rate, burst if burst is not None else max(1, math.ceil(rate)))

    def rates(self) -> list[Rate]:
        return [Rate(max(1, round(self.rate * 1000)), _PER_MS, burst=self.burst)]


def _now_ms() -> int:
    """The wall clock, which every worker shares (a monotonic clock is per process)."""
    return time.time_ns() // 1_000_000


class DatabaseStateStore(StateStore):
    """pyrate-limiter's state-store interface on a database row, atomic across processes."""

    is_async = False

    def __init__(self, key: str) -> None:
        self.key = key

    def check(self, algorithm: StateAlgorithm, rates: list[Rate], now: int, weight: int) -> Decision:
        """``now`` is read again once the row is held: a request that queued for the lock behind later
        ones must not be judged at its earlier arrival time, before theirs."""
        rows = RateLimitState.objects.select_for_update()
        with transaction.atomic():
            row = rows.filter(key=self.key).first()
            if row is None:  # first use: create it, or wait for the worker that just did
                RateLimitState.objects.bulk_create([RateLimitState(key=self.key)], ignore_conflicts=True)
                row = rows.get(key=self.key)
            state = algorithm.decode(row.state) if len(row.state) == len(rates) else algorithm.initial(rates)
            now = max(now, _now_ms())
            new_state, decision = algorithm.step(rates, state, now, weight)
            if decision.allowed:
                RateLimitState.objects.filter(key=self.key).update(state=[str(v) for v in new_state])
            return decision

    def read(self, algorithm: StateAlgorithm, rates: list[Rate]) -> State:
        row = RateLimitState.objects.filter(key=self.key).first()
        return algorithm.decode(row.state) if row is not None else algorithm.initial(rates)

    def reset(self) -> None:
        RateLimitState.objects.filter(key=self.key).delete()


class _Redis:
    """One asyncio Redis client per event loop (each worker has one; the tests start several)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stores: dict[str, RedisStateStore] = {}

    def store(self, url: str, key: str) -> RedisStateStore:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:
            import redis.asyncio as aioredis

            self.loop, self.client, self.stores = loop, aioredis.Redis.from_url(url), {}
        store = self.stores.get(key)
        if store is None:
            if len(self.stores) >= 4096:
                self.stores.clear()
            store = self.stores[key] = RedisStateStore(self.client, key)
        return store


_redis = _Redis()


def _redis_url() -> str:
    """``REDIS_URL`` when Redis is the primary (``autoplay_storage.runtime``'s rule), else empty: the database.

    A Sentinel or Cluster deployment keeps the counters in the database: the
    store talks to one server named by ``REDIS_URL``.
    """
    config = settings.AUTOPLAY_STORAGE
    if config.get("REDIS_SENTINELS") or config.get("REDIS_CLUSTER"):
        return ""
    primary = config.get("PRIMARY") or ("redis" if config.get("REDIS_URL") else "database")
    return config.get("REDIS_URL", "") if primary == "redis" else ""


def _refused(decision: Decision, limit: Limit) -> ApiError:
    wait_s = max(1, math.ceil((decision.retry_after_ms or 1000 / limit.rate) / 1000))
    return ApiError(
        429,
        "rate_limited",
        f"this API key may make {limit.rate:g} requests per second (burst {limit.burst}); retry after {wait_s} s",
        details={"rate": limit.rate, "burst": limit.burst, "retry_after_s": wait_s},
        headers={"Retry-After": str(wait_s)},
    )


_check_database = sync_to_async(
    lambda key, rates, now: DatabaseStateStore(key).check(_ALGORITHM, rates, now, 1), thread_sensitive=True
)


async def check(key_prefix: str, limit: Limit) -> None:
    """Spend one request of the key's limit, or raise ``ApiError`` 429 (nothing spent)."""
    key = f"{settings.CACHE_KEY_PREFIX}:ratelimit:{key_prefix}"
    rates = limit.rates()
    now = _now_ms()
    url = _redis_url()
    try:
        if url:
            decision = await _redis.store(url, key).check(_ALGORITHM, rates, now, 1)
        else:
            decision = await _check_database(key, rates, now)
    except (DatabaseError, RedisError, OSError) as exc:
        raise ApiError(
            503,
            "rate_limit_unavailable",
            "the rate limit cannot be checked right now; nothing was done, retry later",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from exc
    if not decision.allowed:
        raise _refused(decision, limit)
