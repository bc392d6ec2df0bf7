"""The benchmark's direct loaders (bench/insight_load.py) write exactly what the write paths write.

The same cloned users go once through the adapter (``save_user_state``,
one compare-and-set or transaction each) and once through the bulk loader
(forked workers, merged Redis commands, PostgreSQL COPY); every key or row
must be the same, and the loaded product's insight answers must equal a
recount of its documents (every list on Redis; the numbers and counts on PostgreSQL).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from autoplay_storage.adapters.database import DatabaseStorageAdapter
from autoplay_storage.adapters.redis import RedisStorageAdapter
from autoplay_storage.demo import clone_states, state_archetypes
from autoplay_storage.facts import matches, recount, user_facts
from autoplay_storage.manager import StorageManager
from bench.insight_load import load_database, load_redis, merge_commands
from tests.support.insight_recount import FILTERS, check_insight, db_documents, redis_documents

USERS = 300
PRODUCT = "prod_load"


async def templates() -> list[dict[str, Any]]:
    return await state_archetypes(40, seed=5)


async def write_through(storage: StorageManager, product: str, tpl: list[dict[str, Any]]) -> None:
    for uid, doc in clone_states(tpl, USERS, seed=1):
        await storage.save_user_state(product, uid, doc)


def dump_redis(url: str) -> dict[bytes, Any]:
    """Every key of one database with its type and whole value."""
    import redis

    client = redis.Redis.from_url(url)
    out: dict[bytes, Any] = {}
    try:
        for key in client.scan_iter(count=1000):
            kind = client.type(key)
            if kind == b"string":
                out[key] = client.get(key)
            elif kind == b"zset":
                out[key] = client.zrange(key, 0, -1, withscores=True)
            elif kind == b"set":
                out[key] = client.smembers(key)
            elif kind == b"hash":
                out[key] = client.hgetall(key)
            else:
                out[key] = (kind, client.dump(key))
    finally:
        client.close()
    return out


async def test_the_redis_loader_writes_the_write_paths_keys(redis_url) -> None:
    tpl = await templates()
    written, loaded = redis_url.rsplit("/", 1)[0] + "/1", redis_url.rsplit("/", 1)[0] + "/2"
    adapter = RedisStorageAdapter(written)
    await write_through(StorageManager([adapter]), PRODUCT, tpl)
    await adapter.aclose()
    done: list[int] = []
    await asyncio.to_thread(load_redis, loaded, PRODUCT, USERS, done.append, batch=64, workers=2, templates=tpl)
    assert sum(done) == USERS
    expected, got = await asyncio.to_thread(dump_redis, written), await asyncio.to_thread(dump_redis, loaded)
    assert len(got) > USERS * 2  # states, their search and insight sets
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key] == value, key
    adapter = RedisStorageAdapter(loaded)
    try:
        listed = await check_insight(adapter, PRODUCT, lambda: asyncio.to_thread(redis_documents, loaded, PRODUCT))
        assert listed
    finally:
        await adapter.aclose()


def test_merging_refuses_what_a_new_user_never_sends() -> None:
    assert merge_commands([("ZADD", "k", 1, "a"), ("SADD", "s", "x"), ("ZADD", "k", 2, "b"), ("SADD", "s", "x")]) == [
        ("ZADD", "k", 1, "a", 2, "b"),
        ("SADD", "s", "x"),
    ]
    for cmd in [("ZREM", "k", "a"), ("ZADD", "k", "NX", 1, "a"), ("HINCRBY", "h", "f", 1)]:
        with pytest.raises(ValueError):
            merge_commands([cmd])


def orm(fn: Any, *args: Any) -> Any:
    """``fn`` on a thread of its own, its connections closed after."""
    from django.db import connections

    def call() -> Any:
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return sync_to_async(call, thread_sensitive=False)()


def db_rows(alias: str, product: str) -> dict[str, list[tuple[Any, ...]]]:
    """A product's state, search term, workflow, metadata and counter rows, without their ids."""
    from autoplay_storage.models import ProductCounter, UserMetadataFact, UserStateRecord, UserWorkflowFact
    from autoplay_storage.models.records import UserSearchTerm

    mine = {"product_id": product}
    state_fields = [f.name for f in UserStateRecord._meta.concrete_fields if f.name not in ("id", "product_id")]
    return {
        "states": sorted(UserStateRecord.objects.using(alias).filter(**mine).values_list(*state_fields)),
        "terms": sorted(UserSearchTerm.objects.using(alias).filter(**mine).values_list("state__user_id", "term")),
        "workflows": sorted(
            UserWorkflowFact.objects.using(alias)
            .filter(**mine)
            .values_list("state__user_id", "user_id", "workflow_id", "status", "last_progress_at", "evidence")
        ),
        "metadata": sorted(
            UserMetadataFact.objects.using(alias).filter(**mine).values_list("state__user_id", "key", "value")
        ),
        "counters": sorted(
            ProductCounter.objects.using(alias).filter(**mine).values_list("name", "shard", "value")
        ),
    }


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
async def test_the_copy_loader_writes_the_write_paths_rows(postgres_alias) -> None:
    tpl = await templates()
    adapter = DatabaseStorageAdapter(postgres_alias)
    await write_through(StorageManager([adapter]), "prod_written", tpl)
    done: list[int] = []
    await orm(lambda: load_database(postgres_alias, PRODUCT, USERS, done.append, batch=64, workers=2, templates=tpl))
    assert sum(done) == USERS
    expected, got = await orm(db_rows, postgres_alias, "prod_written"), await orm(db_rows, postgres_alias, PRODUCT)
    assert len(got["states"]) == USERS and got["workflows"] and got["metadata"] and got["counters"]
    for table, rows in expected.items():
        assert got[table] == rows, table
    states, _ = await orm(db_documents, postgres_alias, PRODUCT)
    stats = await adapter.insight_stats(PRODUCT)
    assert stats == recount(states, []) == await adapter.insight_stats("prod_written")
    assert stats.users == USERS and stats.funnel and stats.cohorts
    facts = [user_facts(doc) for doc in states]
    for f in FILTERS:
        assert await adapter.count_users(PRODUCT, f) == sum(matches(fa, f) for fa in facts), f
    await adapter.save_user_state(PRODUCT, "u_after", tpl[0])  # the sequence moved past the loaded ids
    assert await adapter.get_user_state(PRODUCT, "u_after") == tpl[0]
    await adapter.aclose()
