"""A session end on every primary: all or nothing, a late retry is a no-op, numbers are positions.

These run the engine's lifecycle over each readable primary (memory, Redis with
scripts and with WATCH/MULTI, the database on SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from autoplay_storage.adapters.memory import InMemoryStorageAdapter
from autoplay_storage.lifecycle import end_session, on_session_end, on_session_start
from autoplay_storage.manager import StorageManager
from autoplay_storage.user_adoption_state import SESSIONS_INDEX_LIMIT, SessionSnapshot, UserAdoptionState

pytestmark = pytest.mark.django_db(transaction=True)

P = "prod_1"


@pytest.fixture(
    params=[
        "memory",
        "redis-scripts",
        "redis-watch",
        pytest.param("redis-cluster", marks=pytest.mark.cluster),
        "database-sqlite",
        pytest.param("database-postgres", marks=pytest.mark.postgres),
    ]
)
async def primary(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield InMemoryStorageAdapter()
    elif request.param == "redis-cluster":
        from redis.cluster import RedisCluster

        from autoplay_storage.adapters.redis import RedisStorageAdapter

        cluster = request.getfixturevalue("redis_cluster")
        host, port = cluster.nodes[0]
        with RedisCluster(host=host, port=port) as client:
            client.flushall(target_nodes=RedisCluster.PRIMARIES)
        adapter = RedisStorageAdapter(cluster.url, cluster=True, max_connections=16)
        yield adapter
        await adapter.aclose()
    elif request.param.startswith("redis"):
        from autoplay_storage.adapters.redis import RedisStorageAdapter

        adapter = RedisStorageAdapter(
            redis_url=request.getfixturevalue("redis_url"), scripts=request.param == "redis-scripts"
        )
        yield adapter
        await adapter.aclose()
    else:
        from autoplay_storage.adapters.database import DatabaseStorageAdapter

        alias = request.getfixturevalue("postgres_alias") if request.param.endswith("postgres") else "default"
        adapter = DatabaseStorageAdapter(alias)
        yield adapter
        await adapter.aclose()


def _snapshot(user_id: str, session_id: str, number: int, at: float) -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        UserAdoptionState(user_id=user_id),
        session_id=session_id,
        session_number=number,
        started_at=at,
        catalog_workflow_ids=["w1"],
        now=at + 1,
    )


async def _stored(primary: Any, user_id: str) -> UserAdoptionState:
    return UserAdoptionState.from_dict(await primary.get_user_state(P, user_id))


async def test_a_late_retry_of_a_session_that_left_the_inline_index_changes_nothing(primary):
    storage = StorageManager([primary])
    total = SESSIONS_INDEX_LIMIT + 5
    for n in range(1, total + 1):
        await on_session_end(P, "u", _snapshot("u", f"s{n}", n, float(n * 10)), storage)
    before = (await primary.get_user_state(P, "u"))["sessions"]
    assert before["count"] == total and len(before["index"]) == SESSIONS_INDEX_LIMIT
    # s2 left the index long ago; its end is retried (an agent's queue replayed).
    again = await end_session(P, "u", _snapshot("u", "s2", 2, 20.0), storage)
    assert not again.recorded
    after = (await primary.get_user_state(P, "u"))["sessions"]
    assert after == before, "the count, the index and the history are unchanged"


async def test_a_frozen_snapshot_the_state_never_counted_is_folded_in_by_the_retry(primary):
    """A writer that froze the snapshot and died before its state write (the SDK's two steps): the retry heals it."""
    storage = StorageManager([primary])
    await on_session_end(P, "u", _snapshot("u", "s1", 1, 10.0), storage)
    await primary.save_session_snapshot(P, "u", "s2", _snapshot("u", "s2", 2, 20.0).to_dict())
    healed = await end_session(P, "u", _snapshot("u", "s2", 2, 20.0), storage)
    assert healed.recorded
    state = await _stored(primary, "u")
    assert state.sessions.count == 2
    assert [e.session_id for e in state.sessions.index] == ["s1", "s2"]


async def test_numbers_assigned_at_commit_are_the_positions_of_fifty_racing_ends(primary):
    storage = StorageManager([primary])
    await on_session_start(P, "u", "s0", storage)
    # Every end believed it was session 1 (each read the count before the others committed).
    ends = [
        end_session(P, "u", _snapshot("u", f"e{n}", 1, 100.0 + n), storage, number_at_commit=True) for n in range(50)
    ]
    results = await asyncio.gather(*ends)
    assert all(r.recorded for r in results)
    state = await _stored(primary, "u")
    assert state.sessions.count == 50
    by_id = {e.session_id: e.session_number for e in state.sessions.index}
    assert sorted(by_id.values()) == list(range(1, 51))
    for n in range(50):
        frozen = await primary.get_session_snapshot(P, "u", f"e{n}")
        assert frozen["session_number"] == by_id[f"e{n}"], "the snapshot holds the position it was recorded at"
    history = await primary.list_sessions(P, "u", limit=100)
    assert sorted(row.session_number for row in history.items) == list(range(1, 51))


async def test_a_number_the_client_sent_is_kept_as_sent(primary):
    storage = StorageManager([primary])
    await on_session_end(P, "u", _snapshot("u", "s1", 7, 10.0), storage)
    assert (await primary.get_session_snapshot(P, "u", "s1"))["session_number"] == 7


async def test_a_retried_end_with_number_at_commit_keeps_the_frozen_number(primary):
    storage = StorageManager([primary])
    first = await end_session(P, "u", _snapshot("u", "s1", 1, 10.0), storage, number_at_commit=True)
    await end_session(P, "u", _snapshot("u", "s2", 2, 20.0), storage, number_at_commit=True)
    retry = await end_session(P, "u", _snapshot("u", "s1", 3, 10.0), storage, number_at_commit=True)
    assert first.recorded and not retry.recorded
    assert (await primary.get_session_snapshot(P, "u", "s1"))["session_number"] == 1
    assert (await _stored(primary, "u")).sessions.count == 2


async def test_a_summarizer_runs_after_the_session_is_recorded_and_holds_nothing(primary):
    storage = StorageManager([primary])
    await on_session_start(P, "u", "s1", storage)
    release = asyncio.Event()
    started = asyncio.Event()

    async def slow(snapshot: SessionSnapshot) -> str:
        started.set()
        await release.wait()
        return "a brief"

    ending = asyncio.create_task(end_session(P, "u", _snapshot("u", "s1", 1, 10.0), storage, summarizer=slow))
    await started.wait()
    # While it runs: the session is counted and its snapshot stored, and other writes for the user go through.
    assert (await _stored(primary, "u")).sessions.count == 1
    assert await primary.get_session_snapshot(P, "u", "s1") is not None
    other = await end_session(P, "u", _snapshot("u", "s2", 2, 20.0), storage)
    assert other.recorded
    release.set()
    ended = await ending
    assert ended.state.onboarding.summary == "a brief"
    assert (await _stored(primary, "u")).sessions.count == 2
