"""Redis primary: the SDK's two wire keys, atomic per user, browsable through our own indexes.

A package, one concern per module (docs/redis.md):
``adapter`` the protocol methods; ``transport`` redis-py for standalone,
Sentinel and Cluster, errors converted once; ``writes`` the compare-and-set
loop and the session end; ``watch`` the WATCH/MULTI path; ``scripts`` the Lua;
``seen`` the bounded last-seen cache; ``keys``; ``index`` the pure index diff;
``browse`` the listings; ``insight`` and ``facts`` the insight reads and keys;
``rows`` list rows from the fields they show; ``reindex``.
"""

from .adapter import RedisStorageAdapter
from .keys import (
    JOURNEY_STATES,
    MASTERY_LEVELS,
    PRODUCTS_KEY,
    journey_key,
    mastery_key,
    onboarded_key,
    search_key,
    sessions_key,
    users_key,
)

__all__ = [
    "JOURNEY_STATES",
    "MASTERY_LEVELS",
    "PRODUCTS_KEY",
    "RedisStorageAdapter",
    "journey_key",
    "mastery_key",
    "onboarded_key",
    "search_key",
    "sessions_key",
    "users_key",
]
