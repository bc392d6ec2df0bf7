"""``manage.py autoplay_reindex``: SDK-written data becomes browsable, and re-running is safe."""

from __future__ import annotations

import asyncio
import json
from io import StringIO

import pytest
import redis
from django.core.management import CommandError, call_command

from autoplay_storage.adapters.memory import InMemoryStorageAdapter
from autoplay_storage.adapters.redis import RedisStorageAdapter
from autoplay_storage.browse import UserQuery
from autoplay_storage.keys import session_key, user_state_key

QUERIES = [
    UserQuery(),
    UserQuery(order="last_activity"),
    UserQuery(journey_state="onboarded"),
    UserQuery(onboarded=False),
    UserQuery(mastery_level="proficient"),
    UserQuery(search="u_1"),
]


def load_raw(url: str, fixtures: dict[str, dict], *, cluster: bool = False) -> None:
    """Write every fixture as the SDK would: the document alone under its wire key, no index."""
    if cluster:
        from redis.cluster import RedisCluster

        client = RedisCluster.from_url(url)
    else:
        client = redis.Redis.from_url(url)
    try:
        for stem, doc in fixtures.items():
            kind, product_id, user_id, *rest = stem.split("__")
            if kind == "state":
                key = user_state_key(product_id, user_id, cluster=cluster)
            else:
                key = session_key(product_id, user_id, rest[0], cluster=cluster)
            client.set(key, json.dumps(doc))
    finally:
        client.close()


async def reference(fixtures: dict[str, dict]) -> InMemoryStorageAdapter:
    memory = InMemoryStorageAdapter()
    for stem, doc in fixtures.items():
        kind, product_id, user_id, *rest = stem.split("__")
        if kind == "state":
            await memory.save_user_state(product_id, user_id, doc)
        else:
            await memory.save_session_snapshot(product_id, user_id, rest[0], doc)
    return memory


async def assert_browsable_like(adapter: RedisStorageAdapter, memory: InMemoryStorageAdapter, fixtures) -> None:
    assert await adapter.list_products() == await memory.list_products()
    for product in await memory.list_products():
        for query in QUERIES:
            expected = await memory.list_users(product.product_id, query, limit=500)
            assert await adapter.list_users(product.product_id, query, limit=500) == expected
    users = {tuple(stem.split("__")[1:3]) for stem in fixtures}
    for product_id, user_id in users:
        for newest_first in (True, False):
            expected = await memory.list_sessions(product_id, user_id, newest_first=newest_first)
            assert await adapter.list_sessions(product_id, user_id, newest_first=newest_first) == expected


def run_reindex(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("autoplay_reindex", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


async def reindex(*args: str) -> tuple[str, str]:
    """The command runs its own event loop, as under manage.py: give it a thread."""
    return await asyncio.to_thread(run_reindex, *args)


async def test_sdk_data_becomes_browsable_and_rerunning_is_safe(redis_url, sdk_fixtures):
    load_raw(redis_url, sdk_fixtures)
    adapter = RedisStorageAdapter(redis_url)
    try:
        assert await adapter.list_products() == []  # nothing indexed yet: the SDK keeps no indexes
        out, err = await reindex("--redis-url", redis_url)
        assert "Reindexed 4 user states and 4 snapshots" in out
        assert "reindex" in err and "key" in err  # the tqdm bar
        memory = await reference(sdk_fixtures)
        await assert_browsable_like(adapter, memory, sdk_fixtures)
        products = {p.product_id: p for p in await adapter.list_products()}
        assert products["prod_1"].user_count == 3 and products["prod_2"].user_count == 1

        client = redis.Redis.from_url(redis_url)
        keys_before = sorted(client.keys("*"))
        await reindex("--redis-url", redis_url)
        assert sorted(client.keys("*")) == keys_before
        await assert_browsable_like(adapter, memory, sdk_fixtures)

        # A document edited behind our back is re-filed; one that disappeared is dropped.
        edited = {**sdk_fixtures["state__prod_1__u_456"], "journey_state": "onboarded"}
        client.set(user_state_key("prod_1", "u_456"), json.dumps(edited))
        client.delete(user_state_key("prod_2", "u_789"), session_key("prod_1", "u_456", "sess_z"))
        out, _ = await reindex("--redis-url", redis_url)
        assert "2 stale entries dropped" in out
        await memory.save_user_state("prod_1", "u_456", edited)
        memory.states.pop(("prod_2", "u_789"))
        memory.snapshots.pop(("prod_1", "u_456", "sess_z"))
        await assert_browsable_like(adapter, memory, {k: v for k, v in sdk_fixtures.items() if "u_789" not in k})
        assert [p.product_id for p in await adapter.list_products()] == ["prod_1"]
        client.close()
    finally:
        await adapter.aclose()


async def test_corrupt_documents_are_listed_as_corrupt(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.set(user_state_key("p", "broken"), "{not json")
    client.set(user_state_key("p", "newer"), json.dumps({"_v": 99, "user_id": "newer"}))
    client.close()
    out, _ = await reindex("--redis-url", redis_url)
    assert "1 corrupt" in out
    adapter = RedisStorageAdapter(redis_url)
    try:
        rows = (await adapter.list_users("p")).items
    finally:
        await adapter.aclose()
    assert sorted((r.user_id, r.corrupt) for r in rows) == [("broken", True), ("newer", True)]


async def test_uses_the_configured_redis_by_default(settings, redis_url, sdk_fixtures):
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "REDIS_URL": redis_url}
    load_raw(redis_url, sdk_fixtures)
    out, _ = await reindex()
    assert "Reindexed 4 user states" in out


def test_without_a_redis_it_says_so(settings):
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "REDIS_URL": "", "PRIMARY": "memory"}
    with pytest.raises(CommandError, match="REDIS_URL"):
        run_reindex()


@pytest.mark.django_db
def test_on_the_database_primary_only_the_insight_aggregates_are_rebuilt(settings):
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "REDIS_URL": "", "PRIMARY": "database"}
    out, _ = run_reindex()
    assert "rebuilt the insight aggregates from 0 user states and 0 snapshots" in out
    assert "No document is filed under an id made only of dots." in out


def test_unreachable_redis_is_a_command_error():
    from tests.support.redis_server import closed_port

    with pytest.raises(CommandError, match="redis"):
        run_reindex("--redis-url", f"redis://127.0.0.1:{closed_port()}/0")
