"""Cluster key mode on a real 3-node Redis Cluster the suite starts on loopback."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.cluster import RedisCluster

from autoplay_storage.adapters.memory import InMemoryStorageAdapter
from autoplay_storage.adapters.redis import RedisStorageAdapter
from autoplay_storage.browse import UserQuery
from autoplay_storage.keys import session_key, user_state_key
from autoplay_storage.lifecycle import on_session_end, on_session_start
from autoplay_storage.manager import StorageManager
from autoplay_storage.user_adoption_state import SessionSnapshot
from tests.test_redis_adapter import user_doc
from tests.test_redis_reindex import assert_browsable_like, load_raw, reference

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster_client(redis_cluster):
    host, port = redis_cluster.nodes[0]
    client = RedisCluster(host=host, port=port)
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.close()


@pytest.fixture
async def adapter(redis_cluster, cluster_client):
    a = RedisStorageAdapter(redis_cluster.url, cluster=True, max_connections=16)
    yield a
    await a.aclose()


def snap(state, session_id: str, i: int) -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        state, session_id=session_id, session_number=1, started_at=1000.0 + i, catalog_workflow_ids=["w"],
        now=2000.0 + i,
    )


async def test_one_users_keys_share_a_slot(adapter, cluster_client):
    storage = StorageManager([adapter])
    state, _ = await on_session_start("prod_1", "u_123", "sess_abc", storage)
    await on_session_end("prod_1", "u_123", snap(state, "sess_abc", 0), storage)
    keys = ["autoplay:user:{prod_1:u_123}:state", "autoplay:user:{prod_1:u_123}:session:sess_abc",
            "autoplay:user:{prod_1:u_123}:sessions"]
    assert [cluster_client.exists(k) for k in keys] == [1, 1, 1]
    assert len({cluster_client.keyslot(k) for k in keys}) == 1
    assert not cluster_client.exists("autoplay:user:prod_1:u_123:state")  # wire mode keys untouched
    doc = json.loads(cluster_client.get(keys[0]))
    assert doc["sessions"]["count"] == 1


async def test_users_spread_over_every_node(adapter, cluster_client, redis_cluster):
    storage = StorageManager([adapter])
    await asyncio.gather(*(on_session_start("spread", f"u{i}", "s", storage) for i in range(60)))
    per_node = [int(server.cli("DBSIZE")) for server in redis_cluster.servers]
    assert len(per_node) == 3 and all(n > 0 for n in per_node)


async def test_fifty_racing_ends_and_idempotent_retries(adapter):
    storage = StorageManager([adapter])
    state, _ = await on_session_start("p", "racer", "s_first", storage)
    await asyncio.gather(*(on_session_end("p", "racer", snap(state, f"s_{i:02d}", i), storage) for i in range(50)))
    doc = await adapter.get_user_state("p", "racer")
    assert doc["sessions"]["count"] == 50
    assert len({e["session_id"] for e in doc["sessions"]["index"]}) == 50

    again = snap(state, "s_retry", 99)
    for _ in range(5):
        await on_session_end("p", "racer", again, storage)
    doc = await adapter.get_user_state("p", "racer")
    assert doc["sessions"]["count"] == 51
    assert [e["session_id"] for e in doc["sessions"]["index"]].count("s_retry") == 1
    history = await adapter.list_sessions("p", "racer", limit=500)
    assert len(history.items) == 51


async def test_browsing_matches_the_reference(adapter):
    memory = InMemoryStorageAdapter()
    for i in range(25):
        doc = user_doc(
            f"user{i:02d}", at=100.0 + i // 2, journey="onboarded" if i % 3 == 0 else "onboarding",
            level=["novice", "beginner"][i % 2], onboarded=i % 4 == 0, metadata={"role": ["a", "b"][i % 2]},
        )
        await adapter.save_user_state("p", f"user{i:02d}", doc)
        await memory.save_user_state("p", f"user{i:02d}", doc)
    assert await adapter.list_products() == await memory.list_products()
    for query in (UserQuery(), UserQuery(journey_state="onboarded"), UserQuery(search="b"),
                  UserQuery(search="user1", order="last_activity")):
        expected = (await memory.list_users("p", query, limit=500)).items
        got, cursor = [], None
        while True:
            page = await adapter.list_users("p", query, cursor=cursor, limit=4)
            got.extend(page.items)
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        assert got == expected


async def test_reindex_on_the_cluster(adapter, redis_cluster, sdk_fixtures):
    load_raw(redis_cluster.url, sdk_fixtures, cluster=True)
    assert await adapter.list_products() == []
    counts = await adapter.reindex()
    assert counts["states"] == 4 and counts["snapshots"] == 4
    await assert_browsable_like(adapter, await reference(sdk_fixtures), sdk_fixtures)
    for stem, doc in sdk_fixtures.items():
        kind, product_id, user_id, *rest = stem.split("__")
        if kind == "state":
            assert await adapter.get_user_state(product_id, user_id) == doc
        else:
            assert await adapter.get_session_snapshot(product_id, user_id, rest[0]) == doc


def test_key_helpers_tag_the_user():
    assert user_state_key("prod_1", "u_123", cluster=True) == "autoplay:user:{prod_1:u_123}:state"
    assert session_key("prod_1", "u_123", "s", cluster=True) == "autoplay:user:{prod_1:u_123}:session:s"


async def test_unreachable_cluster_raises_storage_unavailable():
    from autoplay_storage.errors import StorageUnavailableError
    from tests.support.redis_server import closed_port

    a = RedisStorageAdapter(f"redis://127.0.0.1:{closed_port()}/0", cluster=True, connect_timeout_s=1.0)
    try:
        with pytest.raises(StorageUnavailableError):
            await a.get_user_state("p", "u")
        with pytest.raises(StorageUnavailableError):
            await on_session_start("p", "u", "s1", StorageManager([a]))
    finally:
        await a.aclose()


async def test_burst_waits_for_connections_instead_of_failing(redis_cluster, cluster_client):
    """The cluster client would raise "too many connections"; the adapter queues the burst instead."""
    a = RedisStorageAdapter(redis_cluster.url, cluster=True, max_connections=4)
    storage = StorageManager([a])

    async def lifecycle(i: int) -> None:
        state, _ = await on_session_start("burst", f"u{i}", f"s{i}", storage)
        await on_session_end("burst", f"u{i}", snap(state, f"s{i}", i), storage)

    try:
        await asyncio.gather(*(lifecycle(i) for i in range(500)))
        summary = {p.product_id: p for p in await a.list_products()}["burst"]
    finally:
        await a.aclose()
    assert summary.user_count == 500
    assert all(
        json.loads(cluster_client.get(f"autoplay:user:{{burst:u{i}}}:state"))["sessions"]["count"] == 1
        for i in range(500)
    )


async def test_a_retried_no_op_update_heals_the_product_indexes(adapter, cluster_client):
    """A state committed without its (other-slot) index entries is re-filed by the retry."""
    doc = user_doc("orphan", at=500.0, journey="onboarded", level="beginner", onboarded=True, metadata={})
    cluster_client.set("autoplay:user:{p:orphan}:state", json.dumps(doc))
    assert await adapter.list_products() == []
    assert await adapter.update_user_state("p", "orphan", lambda current: None) == doc
    rows = (await adapter.list_users("p", UserQuery(journey_state="onboarded"))).items
    assert [r.user_id for r in rows] == ["orphan"]
