"""Insight for the in-process store by a full scan of its dicts (tests and local development only)."""

from __future__ import annotations

import json
from typing import Any

from ..browse import Page, UserSummary
from ..facts import ProductStats, StuckUser, UserFilter, matches, recount, user_facts
from ..keys import user_state_key
from .common import clamp_limit, page_in_order, user_position, user_row


def _doc(raw: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class MemoryInsight:
    """``InsightStore`` over ``states`` and ``snapshots`` (the stored JSON text by key)."""

    states: dict[tuple[str, str], str]
    snapshots: dict[tuple[str, str, str], str]

    def _users(self, product_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        found = []
        for (pid, uid), raw in self.states.items():
            if pid == product_id and (doc := _doc(raw)) is not None:
                found.append((uid, raw, doc))
        return found

    async def insight_stats(self, product_id: str) -> ProductStats:
        snaps = [d for (pid, _, _), raw in self.snapshots.items() if pid == product_id and (d := _doc(raw))]
        return recount((doc for _, _, doc in self._users(product_id)), snaps)

    async def count_users(self, product_id: str, f: UserFilter) -> int:
        return sum(1 for _, _, doc in self._users(product_id) if matches(user_facts(doc), f))

    async def list_filtered_users(
        self, product_id: str, f: UserFilter, *, cursor: str | None = None, limit: int = 50
    ) -> Page[UserSummary]:
        rows = [
            user_row(product_id, uid, user_state_key(product_id, uid), raw)
            for uid, raw, doc in self._users(product_id)
            if matches(user_facts(doc), f)
        ]
        return page_in_order(rows, user_position, cursor, clamp_limit(limit), f.order == "-last_activity")

    async def export_users(
        self, product_id: str, f: UserFilter, *, cursor: str | None = None, limit: int = 50
    ) -> Page[UserSummary]:
        return await self.list_filtered_users(product_id, f, cursor=cursor, limit=limit)

    async def list_stuck(
        self, product_id: str, older_than: float, *, cursor: str | None = None, limit: int = 50
    ) -> Page[StuckUser]:
        rows = []
        for uid, raw, doc in self._users(product_id):
            facts = user_facts(doc)
            for wf in facts.workflows if facts else ():
                if wf.status == "in_progress" and wf.last_progress_at < older_than:
                    row = user_row(product_id, uid, user_state_key(product_id, uid), raw)
                    rows.append(StuckUser(row, wf.workflow_id, wf.last_progress_at, wf.evidence))
        return page_in_order(
            rows,
            lambda r: (r.last_progress_at, f"{r.workflow_id}\x00{r.user.user_id}"),
            cursor,
            clamp_limit(limit),
            True,
        )
