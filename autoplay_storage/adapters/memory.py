"""In-process storage: tests and local development only (not shared across processes)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import defaultdict
from typing import Any

from ..browse import (
    MAX_PAGE_SIZE,
    Page,
    ProductSummary,
    SessionSummary,
    UserQuery,
    UserSummary,
    search_terms,
    session_summary_from_doc,
    user_summary_from_doc,
)
from ..codec import parse_document as _parse
from ..errors import CorruptDocumentError
from ..keys import session_key, user_state_key
from ..protocol import StateDoc, StateMutation


def _user_row(product_id: str, user_id: str, raw: str) -> UserSummary:
    try:
        doc = _parse(user_state_key(product_id, user_id), raw)
    except CorruptDocumentError:
        return UserSummary(product_id=product_id, user_id=user_id, corrupt=True)
    return user_summary_from_doc(product_id, user_id, doc or {})


def _session_row(product_id: str, user_id: str, session_id: str, raw: str) -> SessionSummary:
    try:
        doc = _parse(session_key(product_id, user_id, session_id), raw)
    except CorruptDocumentError:
        return SessionSummary(session_id=session_id, session_number=0, started_at=0.0, captured_at=0.0, corrupt=True)
    return session_summary_from_doc(session_id, doc or {})


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        return max(0, int(base64.urlsafe_b64decode(cursor.encode()).decode()))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("invalid cursor") from exc


class InMemoryStorageAdapter:
    """Readable primary held in dicts; atomic per user via an asyncio lock."""

    name = "memory"

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], str] = {}
        self._snapshots: dict[tuple[str, str, str], str] = {}
        self._locks: defaultdict[tuple[str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    # -- wire --

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        # allow_nan=False: NaN is not JSON; refuse it here as any real store would.
        self._states[(product_id, user_id)] = json.dumps(state, allow_nan=False)

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        return _parse(user_state_key(product_id, user_id), self._states.get((product_id, user_id)))

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        await self.create_session_snapshot(product_id, user_id, session_id, snapshot)

    async def create_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> dict[str, Any]:
        raw = json.dumps(snapshot, allow_nan=False)
        stored = self._snapshots.setdefault((product_id, user_id, session_id), raw)
        if stored is raw:
            return snapshot
        return _parse(session_key(product_id, user_id, session_id), stored)  # type: ignore[return-value]

    async def get_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> dict[str, Any] | None:
        key = session_key(product_id, user_id, session_id)
        return _parse(key, self._snapshots.get((product_id, user_id, session_id)))

    async def update_user_state(self, product_id: str, user_id: str, mutate: StateMutation) -> StateDoc | None:
        async with self._locks[(product_id, user_id)]:
            current = await self.get_user_state(product_id, user_id)
            new = mutate(current)  # a fresh decode: mutate may scribble on it
            if new is None:  # rare (a retried end): hand back what is stored, not mutate's scratch copy
                return await self.get_user_state(product_id, user_id)
            await self.save_user_state(product_id, user_id, new)
            return new

    # -- browsing --

    async def ping(self) -> None:
        return None

    async def list_products(self) -> list[ProductSummary]:
        by_product: dict[str, list[UserSummary]] = defaultdict(list)
        for (product_id, user_id), raw in self._states.items():
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
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        rows = []
        for (pid, user_id), raw in self._states.items():
            if pid != product_id:
                continue
            row = _user_row(pid, user_id, raw)
            if query.journey_state and row.journey_state != query.journey_state:
                continue
            if query.mastery_level and row.mastery_level != query.mastery_level:
                continue
            if query.onboarded is not None and row.onboarded != query.onboarded:
                continue
            if query.search:
                needle = query.search.strip().lower()
                if not any(t.startswith(needle) for t in search_terms(user_id, row.metadata)):
                    continue
            rows.append(row)
        descending = query.order == "-last_activity"
        rows.sort(key=lambda r: (r.last_activity_at or 0.0, r.user_id), reverse=descending)
        start = _decode_cursor(cursor)
        page = rows[start : start + limit]
        more = start + limit < len(rows)
        return Page(page, _encode_cursor(start + limit) if more else None)

    async def list_sessions(
        self,
        product_id: str,
        user_id: str,
        *,
        cursor: str | None = None,
        limit: int = 50,
        newest_first: bool = True,
    ) -> Page[SessionSummary]:
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        rows = [
            _session_row(pid, uid, sid, raw)
            for (pid, uid, sid), raw in self._snapshots.items()
            if pid == product_id and uid == user_id
        ]
        rows.sort(key=lambda r: (r.captured_at, r.session_id), reverse=newest_first)
        start = _decode_cursor(cursor)
        more = start + limit < len(rows)
        return Page(rows[start : start + limit], _encode_cursor(start + limit) if more else None)

    async def get_raw_user_state(self, product_id: str, user_id: str) -> str | None:
        return self._states.get((product_id, user_id))

    async def save_raw_user_state(self, product_id: str, user_id: str, raw: str) -> None:
        """Store text as it is, as the database adapter does (``autoplay_copy`` keeps corrupt documents)."""
        self._states[(product_id, user_id)] = raw

    async def save_raw_session_snapshot(self, product_id: str, user_id: str, session_id: str, raw: str) -> None:
        """Store text as it is; write-once like ``save_session_snapshot``."""
        self._snapshots.setdefault((product_id, user_id, session_id), raw)

    async def get_raw_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> str | None:
        return self._snapshots.get((product_id, user_id, session_id))
