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

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, transaction
from pyrate_limiter import GCRA, Decision, Rate, RedisStateStore, StateAlgorithm, StateStore
from pyrate_limiter.abstracts.algorithm import State

from autoplay_storage.kept_connection import KeptConnectionThread

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

    def __init__(self, key: str, using: str = DEFAULT_DB_ALIAS) -> None:
        self.key = key
        self.using = using

    def check(self, algorithm: StateAlgorithm, rates: list[Rate], now: int, weight: int) -> Decision:
        """``now`` is read again once the row is held: a request that queued for the lock behind later
        ones must not be judged at its earlier arrival time, before theirs."""
        table = RateLimitState.objects.using(self.using)
        rows = table.select_for_update()
        with transaction.atomic(using=self.using):
            row = rows.filter(key=self.key).first()
            if row is None:  # first use: create it, or wait for the worker that just did
                table.bulk_create([RateLimitState(key=self.key)], ignore_conflicts=True)
                row = rows.get(key=self.key)
            state = algorithm.decode(row.state) if len(row.state) == len(rates) else algorithm.initial(rates)
            now = max(now, _now_ms())
            new_state, decision = algorithm.step(rates, state, now, weight)
            if decision.allowed:
                table.filter(key=self.key).update(state=[str(v) for v in new_state])
            return decision

    def read(self, algorithm: StateAlgorithm, rates: list[Rate]) -> State:
        row = RateLimitState.objects.using(self.using).filter(key=self.key).first()
        return algorithm.decode(row.state) if row is not None else algorithm.initial(rates)

    def reset(self) -> None:
        RateLimitState.objects.using(self.using).filter(key=self.key).delete()


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


# A thread of the limiter's own that keeps its connection: one per lease from a request's
# thread-sensitive thread opened a connection each time (``kept_connection``).
_checker = KeptConnectionThread("autoplay-ratelimit")


async def _check_database(key: str, rates: list[Rate], now: int, weight: int) -> Decision:
    return await _checker.run(DEFAULT_DB_ALIAS, DatabaseStateStore(key).check, _ALGORITHM, rates, now, weight)

LEASE_SHARE = 0.02  # of a key's rate taken from the shared state at once (when the burst allows)
LEASE_S = 1.0  # leased requests not spent within this are dropped, never saved up


@dataclass
class _Lease:
    requests: int
    until: float  # time.monotonic()


_leases: dict[str, _Lease] = {}


def lease_size(limit: Limit) -> int:
    """Requests one worker takes from the shared state at once: 2% of a second's rate, within the burst."""
    return max(1, min(limit.burst, int(limit.rate * LEASE_SHARE)))


async def _spend(key: str, rates: list[Rate], weight: int) -> Decision:
    url = _redis_url()
    try:
        if url:
            return await _redis.store(url, key).check(_ALGORITHM, rates, _now_ms(), weight)
        return await _check_database(key, rates, _now_ms(), weight)
    except (DatabaseError, RedisError, OSError) as exc:
        raise ApiError(
            503,
            "rate_limit_unavailable",
            "the rate limit cannot be checked right now; nothing was done, retry later",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from exc


async def check(key_prefix: str, limit: Limit) -> None:
    """Spend one request of the key's limit, or raise ``ApiError`` 429 (nothing spent).

    A busy key's requests are taken from the shared state a few at a time
    (:func:`lease_size`, as one weighted GCRA step) and spent in this worker,
    so a high limit costs one shared round trip per lease rather than per
    request. Every request let through was first spent in the shared state,
    so the limit is never exceeded; a worker's unspent lease (at most 2% of
    a second's rate, dropped after ``LEASE_S``) can only make it stricter.
    A key whose 2% is under one request is checked request by request.
    """
    key = f"{settings.CACHE_KEY_PREFIX}:ratelimit:{key_prefix}"
    lease = _leases.get(key)
    if lease is not None and lease.requests > 0 and lease.until > time.monotonic():
        lease.requests -= 1
        return
    rates = limit.rates()
    size = lease_size(limit)
    decision = await _spend(key, rates, size)
    if not decision.allowed and size > 1:  # fewer left than a lease: one is enough for this request
        size = 1
        decision = await _spend(key, rates, 1)
    if not decision.allowed:
        raise _refused(decision, limit)
    if size > 1:
        if len(_leases) >= 4096:
            _leases.clear()
        left = _leases.get(key)
        kept = left.requests if left is not None and left.until > time.monotonic() else 0
        _leases[key] = _Lease(kept + size - 1, time.monotonic() + LEASE_S)
