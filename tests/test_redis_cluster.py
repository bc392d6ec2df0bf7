"""Cluster key mode on a real 3-node Redis Cluster the suite starts on loopback."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.cluster import RedisCluster

from autoplay_storage.adapters.redis import RedisStorageAdapter
from autoplay_storage.browse import UserQuery
from autoplay_storage.keys import session_key, user_state_key
from autoplay_storage.lifecycle import on_session_end, on_session_start
from autoplay_storage.manager import StorageManager
from autoplay_storage.user_adoption_state import SessionSnapshot
from tests.test_redis_browsing import user_doc
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
