"""In-process storage: tests and local development only (not shared across processes)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from typing import Any

from ..browse import Page, ProductSummary, SessionSummary, UserQuery, UserSummary
from ..codec import parse_document as _parse
from ..keys import session_key, user_state_key
from ..protocol import SessionFold, StateDoc, StateMutation
from ..tombstones import check, session_started
from .common import clamp_limit, matches, page_in_order, session_position, session_row, user_position, user_row
from .memory_insight import MemoryInsight


def _user_row(product_id: str, user_id: str, raw: str) -> UserSummary:
    return user_row(product_id, user_id, user_state_key(product_id, user_id), raw)


class InMemoryStorageAdapter(MemoryInsight):
    """Readable primary held in dicts; atomic per user via an asyncio lock.

    ``states`` (by ``(product_id, user_id)``) and ``snapshots`` (by
    ``(product_id, user_id, session_id)``) hold the stored JSON text. They are
    public on purpose: tests plant raw values there (a corrupt document, a
    snapshot another writer froze) as they would with a raw Redis SET.
    """

    name = "memory"

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], str] = {}
        self.snapshots: dict[tuple[str, str, str], str] = {}
        self.tombstones: dict[tuple[str, str], tuple[float, float]] = {}  # (erased at, kept until)
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    # -- wire --

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        # allow_nan=False: NaN is not JSON; refuse it here as any real store would.
        self.states[(product_id, user_id)] = json.dumps(state, allow_nan=False)

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        return _parse(user_state_key(product_id, user_id), self.states.get((product_id, user_id)))

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        await self.create_session_snapshot(product_id, user_id, session_id, snapshot)

    async def create_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> dict[str, Any]:
        raw = json.dumps(snapshot, allow_nan=False)
        stored = self.snapshots.setdefault((product_id, user_id, session_id), raw)
        if stored is raw:
            return snapshot
        return _parse(session_key(product_id, user_id, session_id), stored)  # type: ignore[return-value]

    async def get_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> dict[str, Any] | None:
        key = session_key(product_id, user_id, session_id)
        return _parse(key, self.snapshots.get((product_id, user_id, session_id)))

    async def update_user_state(self, product_id: str, user_id: str, mutate: StateMutation) -> StateDoc | None:
        async with self._locks[(product_id, user_id)]:
            current = await self.get_user_state(product_id, user_id)
            new = mutate(current)  # a fresh decode: mutate may scribble on it
            if new is None:  # rare (a retried end): hand back what is stored, not mutate's scratch copy
                return await self.get_user_state(product_id, user_id)
            await self.save_user_state(product_id, user_id, new)
            return new

    async def replace_state_if_raw(self, product_id: str, user_id: str, expected_raw: str, state: StateDoc) -> bool:
        async with self._locks[(product_id, user_id)]:
            if self.states.get((product_id, user_id)) != expected_raw:
                return False
            await self.save_user_state(product_id, user_id, state)
            return True

    async def record_session_end(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any], fold: SessionFold
    ) -> tuple[dict[str, Any], StateDoc | None]:
        """Freeze and fold under the user's lock: the snapshot is stored only with the state it was folded into."""
        async with self._locks[(product_id, user_id)]:
            tomb = self.tombstones.get((product_id, user_id))
            if tomb is not None and tomb[1] > time.time():
                check(product_id, user_id, tomb[0], session_started(snapshot))
            key = (product_id, user_id, session_id)
            stored = self.snapshots.get(key)
            frozen = snapshot if stored is None else _parse(session_key(*key), stored)
            assert frozen is not None
            current = await self.get_user_state(product_id, user_id)
            new = fold(frozen, current)  # raising here writes nothing, the snapshot included
            raw = json.dumps(snapshot, allow_nan=False) if stored is None else None
            if new is not None:
                await self.save_user_state(product_id, user_id, new)
            if raw is not None:
                self.snapshots[key] = raw
            return frozen, (await self.get_user_state(product_id, user_id) if new is None else new)

    async def erase_user(self, product_id: str, user_id: str, *, tombstone_s: int) -> dict[str, int]:
        """Under the user's lock: a session end sees the whole user or the tombstone, nothing in between."""
        async with self._locks[(product_id, user_id)]:
            states = int(self.states.pop((product_id, user_id), None) is not None)
            mine = [key for key in self.snapshots if key[0] == product_id and key[1] == user_id]
            for key in mine:
                del self.snapshots[key]
            now = time.time()
            self.tombstones[(product_id, user_id)] = (now, now + tombstone_s)
        return {"states": states, "snapshots": len(mine)}

    # -- raw text: the console shows a corrupt document as it is; autoplay_copy moves it faithfully --

    async def get_raw_user_state(self, product_id: str, user_id: str) -> str | None:
        return self.states.get((product_id, user_id))

    async def get_raw_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> str | None:
        return self.snapshots.get((product_id, user_id, session_id))

    async def save_raw_user_state(self, product_id: str, user_id: str, raw: str) -> None:
        """Store text as it is, valid or not (a corrupt document copied from another primary stays recoverable)."""
        self.states[(product_id, user_id)] = raw

    async def save_raw_session_snapshot(self, product_id: str, user_id: str, session_id: str, raw: str) -> None:
        """Store text as it is; write-once like ``save_session_snapshot``."""
        self.snapshots.setdefault((product_id, user_id, session_id), raw)

    # -- browsing --

    async def ping(self) -> None:
        return None

    async def list_products(self) -> list[ProductSummary]:
        by_product: dict[str, list[UserSummary]] = defaultdict(list)
        for (product_id, user_id), raw in self.states.items():
            by_product[product_id].append(_user_row(product_id, user_id, raw))
        out = []
        for product_id in sorted(by_product):
            rows = by_product[product_id]
            journeys: dict[str, int] = defaultdict(int)
            levels: dict[str, int] = defaultdict(int)
            for row in rows:
                journeys[row.journey_state] += 1
                levels[row.mastery_level] += 1
            out.append(ProductSummary(product_id, len(rows), dict(journeys), dict(levels)))
        return out

    async def list_users(
        self, product_id: str, query: UserQuery | None = None, *, cursor: str | None = None, limit: int = 50
    ) -> Page[UserSummary]:
        query = query or UserQuery()
        rows = (_user_row(pid, user_id, raw) for (pid, user_id), raw in self.states.items() if pid == product_id)
        wanted = [row for row in rows if matches(row, query)]
        return page_in_order(wanted, user_position, cursor, clamp_limit(limit), query.order == "-last_activity")

    async def list_sessions(
        self,
        product_id: str,
        user_id: str,
        *,
        cursor: str | None = None,
        limit: int = 50,
        newest_first: bool = True,
    ) -> Page[SessionSummary]:
        rows = [
            session_row(sid, session_key(pid, uid, sid), raw)
            for (pid, uid, sid), raw in self.snapshots.items()
            if pid == product_id and uid == user_id
        ]
        return page_in_order(rows, session_position, cursor, clamp_limit(limit), newest_first)
