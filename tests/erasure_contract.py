"""The erasure part of the adapter contract (tests/adapter_contract.py mixes it in, so it runs over every primary).

``Backend.leftovers`` reads the store around the adapter; an erasure must leave it empty.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import TYPE_CHECKING, Any

import pytest

from autoplay_storage.browse import UserQuery
from autoplay_storage.demo import load_user_lifecycle, plan_user
from autoplay_storage.errors import UserErasedError
from autoplay_storage.lifecycle import on_session_end, on_session_start
from autoplay_storage.manager import StorageManager
from autoplay_storage.protocol import ErasableStorage
from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState, WorkflowStatus
from tests.support.insight_recount import DAY, check_insight

if TYPE_CHECKING:
    from tests.adapter_contract import Backend

P, U = "prod_c", "u_1"


# Ids that share prefixes with "u_1" (a user id cannot hold ":"; the API refuses it).
NEIGHBOURS = ["u_10", "u_1x", "u_1.x", "xu_1", "u_"]
TOMBSTONE_S = 600


class ErasureContract:
    """``erase_user``: everything of one user gone, nobody else touched, late session ends refused."""

    async def _user_with_history(self, storage: StorageManager, user_id: str, sessions: int) -> None:
        await on_session_start(P, user_id, "s0", storage, metadata={"email": f"{user_id}@example.com"})
        for i in range(sessions):
            await on_session_end(P, user_id, snapshot_of(f"s{i}", user_id, captured=3000.0 + i), storage)

    async def test_erase_removes_one_user_and_only_that_user(self, backend: Backend) -> None:
        adapter = backend.adapter
        assert isinstance(adapter, ErasableStorage)
        storage = StorageManager([adapter])
        for user_id in [U, *NEIGHBOURS]:
            await self._user_with_history(storage, user_id, 3)
        await backend.put_snapshot(P, U, "sdk:only", json.dumps(snapshot_of("sdk:only", captured=3100.0).to_dict()))
        before = {uid: await adapter.get_raw_user_state(P, uid) for uid in NEIGHBOURS}
        assert await backend.leftovers(P, U)
        removed = await adapter.erase_user(P, U, tombstone_s=TOMBSTONE_S)
        assert sum(removed.values()) >= 5, removed  # the state, four snapshots and more
        assert await backend.leftovers(P, U) == []
        assert await adapter.get_user_state(P, U) is None
        assert (await adapter.list_sessions(P, U)).items == []
        for uid in NEIGHBOURS:
            assert await adapter.get_raw_user_state(P, uid) == before[uid]
            assert len((await adapter.list_sessions(P, uid)).items) == 3
        listed = [row.user_id for row in await all_pages(lambda **kw: adapter.list_users(P, **kw), 50)]
        assert sorted(listed) == sorted(NEIGHBOURS)
        found = await adapter.list_users(P, UserQuery(search=U))
        assert sorted(row.user_id for row in found.items) == sorted(["u_10", "u_1x", "u_1.x"])
        again = await adapter.erase_user(P, U, tombstone_s=TOMBSTONE_S)
        assert sum(again.values()) == 0, again

    async def test_a_session_that_started_before_the_erasure_is_refused_and_a_later_one_is_a_new_user(
        self, backend: Backend
    ) -> None:
        adapter = backend.adapter
        storage = StorageManager([adapter])
        await self._user_with_history(storage, U, 2)
        await on_session_start(P, U, "late", storage)
        await adapter.erase_user(P, U, tombstone_s=TOMBSTONE_S)
        late = snapshot_of("late", captured=time.time() - 1)
        with pytest.raises(UserErasedError) as refused:
            await on_session_end(P, U, late, storage)
        assert refused.value.erased_at is not None and refused.value.erased_at > late.started_at
        assert await backend.leftovers(P, U) == []
        after = snapshot_of("new", captured=time.time() + 61)  # started after the erasure
        state = await on_session_end(P, U, after, storage)
        assert state.sessions.count == 1 and [e.session_id for e in state.sessions.index] == ["new"]

    async def test_session_ends_racing_an_erasure_leave_no_half_user(self, backend: Backend) -> None:
        """Ends of sessions that started before the erasure are deleted or refused; later ones make a whole user."""
        adapter = backend.adapter
        storage = StorageManager([adapter])
        await self._user_with_history(storage, U, 5)
        now = time.time()
        old = [snapshot_of(f"old{i}", captured=now - 30) for i in range(20)]
        new = [snapshot_of(f"new{i}", captured=now + 120) for i in range(10)]  # started after any erasure here

        async def end(i: int, snapshot: SessionSnapshot) -> str:
            await asyncio.sleep(0.001 * (i % 7))  # spread over the erasure's run
            try:
                await on_session_end(P, U, snapshot, storage)
            except UserErasedError:
                return "refused"
            return "recorded"

        ends = [end(i, s) for i, s in enumerate(s for pair in zip(old, new + new, strict=False) for s in pair)]
        outcomes = await asyncio.gather(adapter.erase_user(P, U, tombstone_s=TOMBSTONE_S), *ends)
        assert set(outcomes[1:]) <= {"refused", "recorded"}
        assert await adapter.get_raw_session_snapshot(P, U, "s0") is None  # the history before it is gone
        history = {row.session_id for row in await all_pages(lambda **kw: adapter.list_sessions(P, U, **kw), 200)}
        assert history <= {s.session_id for s in new}, history  # nothing that started before the erasure is left
        doc = await adapter.get_user_state(P, U)
        if doc is None:
            assert history == set()
        else:  # a whole new user: the state counts exactly the snapshots stored
            state = UserAdoptionState.from_dict(doc)
            assert {e.session_id for e in state.sessions.index} == history
            assert state.sessions.count == len(history)
        await check_insight(adapter, P, lambda: backend.documents(P))  # the aggregates hold the new user only

    async def test_erase_takes_the_user_out_of_every_insight_aggregate(self, backend: Backend) -> None:
        """Stats, segment counts, lists and the stuck queue equal a recount of the users left, rebuilt or not.

        Two erasures race: neither takes the user's share back twice."""
        adapter = backend.adapter
        storage = StorageManager([adapter])
        rng = random.Random(15)
        plans = [plan_user(rng, sessions=rng.randint(2, 6), user_id=uid) for uid in [U, *NEIGHBOURS]]
        await asyncio.gather(*(load_user_lifecycle(storage, P, plan) for plan in plans))
        long_ago = time.time() - 30 * DAY

        def stuck(doc: dict) -> dict:  # in progress on a workflow with no progress for a month: in the stuck queue
            st = UserAdoptionState.from_dict(doc)
            st.upsert_workflow_progress("invite_team", status=WorkflowStatus.IN_PROGRESS, evidence="one", now=long_ago)
            wp = st.onboarding.workflow_progress["invite_team"]
            wp.first_detected_at, wp.completed_at, wp.steps = long_ago, None, {}
            st.metadata["plan"] = "team"
            return st.to_dict()

        for uid in (U, "u_10"):
            await storage.update_user_state(P, uid, stuck)

        def recounted() -> Any:
            return check_insight(adapter, P, lambda: backend.documents(P))

        assert U in await recounted()
        await asyncio.gather(*(adapter.erase_user(P, U, tombstone_s=TOMBSTONE_S) for _ in range(2)))  # racing
        assert U not in await recounted()
        assert await backend.leftovers(P, U) == []
        with pytest.raises(UserErasedError):  # refused: counts nothing
            await on_session_end(P, U, snapshot_of("late", captured=time.time() - 1), storage)
        await adapter.erase_user(P, U, tombstone_s=TOMBSTONE_S)  # a repeat takes nothing twice
        assert U not in await recounted()
        if backend.rebuild is not None:  # autoplay_reindex counts the documents left: the same numbers
            await backend.rebuild()
            assert U not in await recounted()
            assert await backend.leftovers(P, U) == []


def snapshot_of(session_id: str, user_id: str = U, *, captured: float) -> SessionSnapshot:
    return SessionSnapshot(
        session_id=session_id, user_id=user_id, session_number=1, started_at=captured - 60, captured_at=captured
    )


async def all_pages(list_page, limit: int) -> list:
    rows, cursor = [], None
    while True:
        page = await list_page(cursor=cursor, limit=limit)
        rows.extend(page.items)
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor
