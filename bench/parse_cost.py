"""What the plain documents cost a session on Redis: ``redis-typed-only``, side by side with ``redis``.

The store hands every mutation the whole parsed document (docs/redis.md,
"What a session parses"), even when the lifecycle then takes the typed state
that rides along and never reads the dict. ``redis-typed-only`` runs the
same lifecycles with that parse left out where a typed copy is handed over
(the current state at each write, the first session's snapshot at each
start): the dict is empty instead. Only for measuring what the protocol's
plain documents cost in place: a mutation that reads the dict would see
nothing, so this is never a way to run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from bench.variants import variant


@contextlib.contextmanager
def dicts_unparsed() -> Iterator[None]:
    """``LastSeen.current`` and ``LastSeen.snapshot`` without the parse when they hand a typed copy over."""
    from autoplay_storage.adapters.redis.seen import LastSeen, Seen
    from autoplay_storage.protocol import TypedDocument

    current, snapshot = LastSeen.current, LastSeen.snapshot

    def current_typed(self: LastSeen, key: str, seen: Seen) -> Any:
        if seen.typed is None:
            return current(self, key, seen)
        self._states[key] = Seen(seen.raw, seen.filed, None, seen.exact)
        return TypedDocument({}, seen.typed)

    def snapshot_typed(self: LastSeen, key: str, raw: bytes | str | None) -> Any:
        kept = self._frozen.get(key)
        if raw is None or kept is None or kept[0] != raw:
            return snapshot(self, key, raw)
        self._frozen.move_to_end(key)
        return TypedDocument({}, kept[1])

    LastSeen.current, LastSeen.snapshot = current_typed, snapshot_typed  # type: ignore[method-assign]
    try:
        yield
    finally:
        LastSeen.current, LastSeen.snapshot = current, snapshot  # type: ignore[method-assign]


def register(backend: Callable[[str], Callable[[Any], Any]], factories: dict[str, Any], lifecycle: Any) -> None:
    """``redis-typed-only``: the ``redis`` backend, each lifecycle inside ``dicts_unparsed``."""
    note = "measurement only: the dicts the typed copies ride with are left unparsed (empty)"
    backend("redis-typed-only")(variant(factories, "redis", "redis-typed-only", dicts_unparsed, lifecycle, note=note))
