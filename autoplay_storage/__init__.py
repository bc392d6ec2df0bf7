"""Autoplay storage engine: user adoption state and frozen session snapshots.

Importable without Django settings: the Django app (models, admin, commands)
lives in submodules that only Django loads. ``RedisStorageAdapter`` is
resolved lazily so the engine imports without the ``redis`` extra.
"""

from __future__ import annotations

from typing import Any

from .adapters.memory import InMemoryStorageAdapter
from .browse import Page, ProductSummary, SessionSummary, UserQuery, UserSummary
from .errors import (
    ConflictError,
    CorruptDocumentError,
    DocumentError,
    NotBrowsableError,
    StorageError,
    StorageUnavailableError,
    UnsupportedVersionError,
)
from .keys import session_key, user_state_key
from .lifecycle import build_agent_context, init_user_state, on_session_end, on_session_start
from .manager import StorageManager
from .prompts import ONBOARDING_SUMMARY_PROMPT
from .protocol import AtomicStateStore, AutoplayStorageAdapter, BrowsableStorage

__all__ = [
    "ONBOARDING_SUMMARY_PROMPT",
    "AtomicStateStore",
    "AutoplayStorageAdapter",
    "BrowsableStorage",
    "ConflictError",
    "CorruptDocumentError",
    "DocumentError",
    "InMemoryStorageAdapter",
    "NotBrowsableError",
    "Page",
    "ProductSummary",
    "RedisStorageAdapter",
    "SessionSummary",
    "StorageError",
    "StorageManager",
    "StorageUnavailableError",
    "UnsupportedVersionError",
    "UserQuery",
    "UserSummary",
    "build_agent_context",
    "init_user_state",
    "on_session_end",
    "on_session_start",
    "session_key",
    "user_state_key",
]


def __getattr__(name: str) -> Any:
    if name == "RedisStorageAdapter":
        from .adapters.redis import RedisStorageAdapter

        return RedisStorageAdapter
    raise AttributeError(f"module 'autoplay_storage' has no attribute {name!r}")
