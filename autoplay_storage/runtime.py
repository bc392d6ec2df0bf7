"""The per-process StorageManager built from ``settings.AUTOPLAY_STORAGE``.

One manager per event loop: async clients (redis.asyncio pools) belong to the
loop that created them, and Django's test client and management commands run
each call in a fresh loop. Under an ASGI server there is one loop per worker,
so this is one manager per worker process.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from .lifecycle import Summarizer
from .manager import StorageManager
from .protocol import AutoplayStorageAdapter

_managers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StorageManager] = weakref.WeakKeyDictionary()
_no_loop_manager: StorageManager | None = None

# Called with the manager after it is built and before each use; the sinks
# integration registers here to keep the secondaries in line with the admin's
# configuration without a restart.
manager_hooks: list[Callable[[StorageManager], None]] = []


def storage_settings() -> dict[str, Any]:
    return settings.AUTOPLAY_STORAGE


_shared_memory: AutoplayStorageAdapter | None = None


def primary_kind() -> str:
    """``PRIMARY`` if set; else ``"redis"`` when Redis is configured, else ``"database"`` (the embedded default)."""
    cfg = storage_settings()
    if cfg.get("PRIMARY"):
        return cfg["PRIMARY"]
    return "redis" if cfg.get("REDIS_URL") or cfg.get("REDIS_SENTINELS") else "database"


def redis_options(**overrides: Any) -> dict[str, Any]:
    """``RedisStorageAdapter``'s arguments from the settings (the server and the management commands share them)."""
    cfg = storage_settings()
    options = {
        "redis_url": cfg.get("REDIS_URL", ""),
        "ttl_s": cfg.get("REDIS_TTL_S"),
        "cluster": bool(cfg.get("REDIS_CLUSTER", False)),
        "sentinels": cfg.get("REDIS_SENTINELS") or (),
        "sentinel_master": cfg.get("REDIS_SENTINEL_MASTER", ""),
        "sentinel_password": cfg.get("REDIS_SENTINEL_PASSWORD"),
        "max_connections": cfg.get("REDIS_MAX_CONNECTIONS", 64),
        "scripts": cfg.get("REDIS_SCRIPTS", True),
        "state_cache_size": cfg.get("REDIS_STATE_CACHE", 4096),
        "wait_replicas": cfg.get("REDIS_WAIT_REPLICAS", 0),
        "wait_timeout_ms": cfg.get("REDIS_WAIT_TIMEOUT_MS", 1000),
    }
    options.update(overrides)
    return options


def build_primary(kind: str | None = None) -> AutoplayStorageAdapter:
    kind = kind or primary_kind()
    if kind == "redis":
        from .adapters.redis import RedisStorageAdapter

        return RedisStorageAdapter(**redis_options())
    if kind == "memory":  # one store per process, shared by every loop (tests, throwaway demos)
        global _shared_memory
        if _shared_memory is None:
            from .adapters.memory import InMemoryStorageAdapter

            _shared_memory = InMemoryStorageAdapter()
        return _shared_memory
    if kind == "database":
        from .adapters.database import DatabaseStorageAdapter

        return DatabaseStorageAdapter(storage_settings().get("DATABASE_ALIAS") or "default")
    raise ValueError(f"unknown primary {kind!r}: use 'redis', 'database' or 'memory'")


def get_storage() -> StorageManager:
    """The manager for the running loop (built on first use)."""
    global _no_loop_manager
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    manager = _managers.get(loop) if loop is not None else _no_loop_manager
    if manager is None:
        manager = StorageManager([build_primary()], sink_timeout_s=storage_settings().get("SINK_TIMEOUT_S", 1.0))
        if loop is not None:
            _managers[loop] = manager
        else:
            _no_loop_manager = manager
    for hook in manager_hooks:
        hook(manager)
    return manager


def reset_storage() -> None:
    """Forget the built managers and the shared memory store (tests switch settings between cases)."""
    global _no_loop_manager, _shared_memory
    _managers.clear()
    _no_loop_manager = None
    _shared_memory = None


def summarizer_path() -> str:
    return storage_settings()["SUMMARIZER"]


def get_summarizer() -> Summarizer:
    """The configured ``async def (SessionSnapshot) -> str``."""
    return import_string(summarizer_path())
