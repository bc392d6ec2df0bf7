"""What the insight aggregates add to a session end: the same backend with them switched off, side by side.

``<backend>-no-insight`` (redis, database-sqlite, database-postgres) runs
a backend's lifecycles that way, beside the backend itself in one run.
``aggregates_off()`` swaps the facts step of the write paths for a no-op
(Redis: the facts of the old and new state and of the snapshot are never
computed, so no command is added; database: no facts rows or counters are
written). Only for measuring: the stores are then not kept for insight.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from bench.variants import variant

_depth = [0]
_saved: list[tuple[Any, str, Any]] = []


def _targets() -> list[tuple[Any, str, Any]]:
    from autoplay_storage.adapters import database_facts
    from autoplay_storage.adapters.redis import facts, watch, writes

    def none(*_args: Any) -> None:
        return None

    return [
        (facts.FactsMemo, "old", none),
        (writes, "user_facts", none),
        (writes, "snapshot_facts", none),
        (watch, "snapshot_facts", none),
        (database_facts, "write_user", none),
        (database_facts, "write_snapshot", none),
    ]


@contextlib.contextmanager
def aggregates_off() -> Iterator[None]:
    """Nested and concurrent uses share one swap: it holds while any is inside."""
    if _depth[0] == 0:
        for module, name, replacement in _targets():
            _saved.append((module, name, getattr(module, name)))
            setattr(module, name, replacement)
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        if _depth[0] == 0:
            while _saved:
                module, name, original = _saved.pop()
                setattr(module, name, original)


def register(backend: Callable[[str], Callable[[Any], Any]], factories: dict[str, Any], lifecycle: Any) -> None:
    """``<name>-no-insight`` for the Redis and database backends: their lifecycles run with the aggregates off.

    A database one runs on its own copy of the database (``database_copy``),
    so it never shares rows with the backend it is compared with.
    """
    for base in ("redis", "database-sqlite", "database-postgres"):
        copy = {"database_copy": "_no_insight"} if base.startswith("database-") else None
        name = f"{base}-no-insight"
        backend(name)(variant(factories, base, name, aggregates_off, lifecycle, args_update=copy))
