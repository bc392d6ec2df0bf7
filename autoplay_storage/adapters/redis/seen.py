"""What this process last saw of each user: the base of its next write, and the typed objects it wrote.

The only cache of the adapter, bounded and least-recently-used out. Every
entry is a guess: a compare-and-set checks the bytes against the stored ones,
so a stale entry costs a retry, never a lost update. The typed objects
(``WrittenDocument.typed``) ride along with the very bytes they were written
as, and are handed out only with those bytes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, NamedTuple

from ... import codec
from ...codec import parse_document
from ...protocol import TypedDocument, WrittenDocument
from .index import IndexEntry

FRESH_SNAPSHOT_S = 1.0  # a snapshot fetched ahead of the read that usually follows, kept this long
FRESH_SNAPSHOT_MAX = 1024


class Seen(NamedTuple):
    """One state key as this process last saw it."""

    raw: bytes | None  # None: Redis said there is no state
    filed: IndexEntry | None = None  # the index entry this adapter filed when it wrote ``raw``
    typed: object = None  # the typed state ``raw`` was written from, until handed out
    exact: bool = False  # ``raw`` is what this adapter wrote with ``codec.dumps_exact``


NOTHING_SEEN = Seen(None)


class LastSeen:
    """Bounded per-process memory of state bytes, typed states and frozen snapshots, by key."""

    def __init__(self, size: int) -> None:
        self.size = max(0, size)  # 0: read before every write, keep nothing
        self._states: OrderedDict[str, Seen] = OrderedDict()
        # Snapshots this process froze from typed ones (first sessions): their bytes and typed form.
        self._frozen: OrderedDict[str, tuple[bytes, object]] = OrderedDict()
        self._fresh: dict[str, tuple[float, bytes]] = {}

    def __len__(self) -> int:
        return len(self._states)

    def __contains__(self, key: str) -> bool:
        return key in self._states

    # -- states --

    def get(self, key: str) -> Seen | None:
        return self._states.get(key)

    def see(
        self, key: str, raw: bytes | None, filed: IndexEntry | None = None, written: Any = None, exact: bool = False
    ) -> None:
        """Remember ``raw`` for ``key``; ``written``: the document it was written from, typed state and all."""
        if not self.size:
            return
        typed = written.take() if type(written) is WrittenDocument else None  # the store's own from now on
        states = self._states
        states[key] = Seen(raw, filed, typed, exact)
        states.move_to_end(key)
        if len(states) > self.size:
            states.popitem(last=False)

    def forget(self, key: str) -> None:
        self._states.pop(key, None)

    def current(self, key: str, seen: Seen) -> dict[str, Any] | None:
        """The document ``seen`` holds, parsed; a ``TypedDocument`` with its typed state, handed out once."""
        # Bytes this adapter wrote (``exact``) are a JSON object orjson reads as it wrote them.
        doc = codec.loads_exact(seen.raw) if seen.exact else parse_document(key, seen.raw)
        if doc is None or seen.typed is None:
            return doc
        self._states[key] = Seen(seen.raw, seen.filed, None, seen.exact)  # the reader owns the typed state now
        return TypedDocument(doc, seen.typed)

    # -- snapshots --

    def keep_frozen(self, key: str, payload: bytes, snapshot: Any) -> None:
        """After freezing ``payload`` from ``snapshot``: keep its typed form, if it has one, for later reads."""
        if type(snapshot) is not WrittenDocument or not self.size:
            return
        frozen = self._frozen
        frozen[key] = (payload, snapshot.take())
        frozen.move_to_end(key)
        if len(frozen) > self.size:
            frozen.popitem(last=False)

    def snapshot(self, key: str, raw: bytes | str | None) -> dict[str, Any] | None:
        """A stored snapshot parsed, with the typed form it was written from when these are its very bytes."""
        doc = parse_document(key, raw)
        kept = self._frozen.get(key)
        if doc is None or kept is None or kept[0] != raw:
            return doc
        self._frozen.move_to_end(key)  # the first session's snapshot is read at every start: keep it
        return TypedDocument(doc, kept[1])

    def prefetched(self, key: str, payload: bytes) -> None:
        """Keep a snapshot fetched ahead of time for the read that usually follows.

        Session start fetches a returning user's first-session snapshot in its
        final round trip; the lifecycle asks for it right after. A snapshot
        never changes once written, so that read is answered from here (once,
        within ``FRESH_SNAPSHOT_S``) instead of by another round trip.
        """
        fresh = self._fresh
        fresh.pop(key, None)
        fresh[key] = (time.monotonic() + FRESH_SNAPSHOT_S, payload)
        while len(fresh) > FRESH_SNAPSHOT_MAX:
            del fresh[next(iter(fresh))]

    def take_prefetched(self, key: str) -> bytes | None:
        fresh = self._fresh.pop(key, None)
        if fresh is not None and fresh[0] > time.monotonic():
            return fresh[1]
        return None
