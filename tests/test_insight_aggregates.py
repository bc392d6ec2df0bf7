"""The insight aggregates agree with a full recount of the documents after random sessions, retries and
racing ends, and after a rebuild, on Redis (both atomic paths) and the database (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest
from asgiref.sync import sync_to_async

from autoplay_storage.adapters.database import DatabaseStorageAdapter
from autoplay_storage.adapters.memory import InMemoryStorageAdapter
from autoplay_storage.adapters.redis import RedisStorageAdapter
from autoplay_storage.demo import load_user_lifecycle, plan_user, snapshot_of
from autoplay_storage.facts import recount
from autoplay_storage.lifecycle import load_state, on_session_end, on_session_start
from autoplay_storage.manager import StorageManager
from autoplay_storage.user_adoption_state import WorkflowStatus
from tests.support.insight_recount import DAY, check_insight, db_documents, redis_documents

PRODUCT = "prod_insight"


def orm(fn, *args):
    from django.db import connections

    def call():
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return sync_to_async(call, thread_sensitive=False)()


def _flush_cluster(url: str) -> None:
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(url)
    try:
        client.flushall(target_nodes=RedisCluster.PRIMARIES)
    finally:
        client.close()


@pytest.fixture(
    params=[
        "redis-scripts",
        "redis-watch",
        pytest.param("redis-cluster", marks=pytest.mark.cluster),
        pytest.param("sqlite", marks=pytest.mark.django_db(transaction=True)),
        pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.django_db(transaction=True)]),
    ]
)
async def store(request):
    """(adapter, documents(), rebuild()) on one primary."""
    if request.param == "redis-cluster":
        cluster = request.getfixturevalue("redis_cluster")
        await asyncio.to_thread(_flush_cluster, cluster.url)
        adapter = RedisStorageAdapter(cluster.url, cluster=True, max_connections=16)

        async def documents():
            return await asyncio.to_thread(redis_documents, cluster.url, PRODUCT, True)

        async def rebuild():
            await adapter.reindex()
    elif request.param.startswith("redis"):
        url = request.getfixturevalue("redis_url")
        adapter = RedisStorageAdapter(url, scripts=request.param == "redis-scripts")

        async def documents():
            return await asyncio.to_thread(redis_documents, url, PRODUCT)

        async def rebuild():
            await adapter.reindex()
    else:
        alias = request.getfixturevalue("postgres_alias") if request.param == "postgres" else "default"
        adapter = DatabaseStorageAdapter(alias)

        async def documents():
            return await orm(db_documents, alias, PRODUCT)

        async def rebuild():
            await adapter.rebuild_insight()

    yield adapter, documents, rebuild
    await adapter.aclose()


async def drive(storage: StorageManager, rng: random.Random, users: int = 14) -> None:
    """Random users through the lifecycle, then retried ends, racing ends and a hand edit."""
    plans = [plan_user(rng, sessions=rng.randint(1, 7)) for _ in range(users)]
    await asyncio.gather(*(load_user_lifecycle(storage, PRODUCT, p) for p in plans))
    for plan in rng.sample(plans, 4):  # a retried end: the same snapshot again, counted once
        doc = await storage.get_user_state(PRODUCT, plan.user_id)
        state = load_state(doc, plan.user_id)
        last = plan.sessions[-1]
        snap = await storage.get_session_snapshot(PRODUCT, plan.user_id, last.session_id)
        from autoplay_storage.user_adoption_state import SessionSnapshot

        frozen = SessionSnapshot.from_dict(snap, session_id=last.session_id, user_id=plan.user_id)
        for _ in range(3):
            await on_session_end(PRODUCT, plan.user_id, frozen, storage)
        assert load_state(await storage.get_user_state(PRODUCT, plan.user_id), plan.user_id).sessions.count == (
            state.sessions.count
        )
    racer = plans[0]  # racing ends of one user: distinct sessions at once, none lost
    extra = plan_user(rng, sessions=6, user_id=racer.user_id).sessions
    state = load_state(await storage.get_user_state(PRODUCT, racer.user_id), racer.user_id)
    for s in extra:
        await on_session_start(PRODUCT, racer.user_id, s.session_id, storage)
    await asyncio.gather(
        *(on_session_end(PRODUCT, racer.user_id, snapshot_of(state, s), storage) for s in extra),
        *(on_session_end(PRODUCT, racer.user_id, snapshot_of(state, s), storage) for s in extra[:2]),
    )
    edited = plans[1]  # an edit moves a workflow back to in progress, long ago: it is stuck now

    def edit(doc):
        st = load_state(doc, edited.user_id)
        st.upsert_workflow_progress(
            "invite_team", status=WorkflowStatus.IN_PROGRESS, evidence="sent one invite", now=time.time() - 30 * DAY
        )
        wp = st.onboarding.workflow_progress["invite_team"]
        wp.first_detected_at, wp.completed_at, wp.steps = time.time() - 30 * DAY, None, {}
        return st.to_dict()

    await storage.update_user_state(PRODUCT, edited.user_id, edit)


async def check(adapter, documents) -> None:
    await check_insight(adapter, PRODUCT, documents)


async def test_aggregates_agree_with_a_full_recount_and_after_a_rebuild(store, monkeypatch) -> None:
    adapter, documents, rebuild = store
    storage = StorageManager([adapter])
    await drive(storage, random.Random(17))
    await check(adapter, documents)
    if isinstance(adapter, RedisStorageAdapter):  # the lists' other paths: walking past small sets, short walks
        from autoplay_storage.adapters.redis import insight

        monkeypatch.setattr(insight, "LOOKUP_FIRST", 0)
        monkeypatch.setattr(insight, "SCAN_MAX", 5)
        monkeypatch.setattr(insight, "_BATCH", 2)
        await check(adapter, documents)
        monkeypatch.undo()
    await rebuild()
    await check(adapter, documents)
    await drive(storage, random.Random(18), users=5)  # writes after a rebuild go on from the rebuilt numbers
    await check(adapter, documents)


async def test_the_in_process_store_answers_from_a_full_scan() -> None:
    adapter = InMemoryStorageAdapter()
    await drive(StorageManager([adapter]), random.Random(3), users=6)
    states = [json.loads(raw) for raw in adapter.states.values()]
    snaps = [json.loads(raw) for raw in adapter.snapshots.values()]
    stats = await adapter.insight_stats(PRODUCT)
    assert stats == recount(states, snaps)
    assert stats.users == 6 and stats.funnel and stats.cohorts
    assert {row.workflow_id for row in stats.funnel} >= {"create_project", "invite_team"}
