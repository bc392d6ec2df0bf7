"""Redis listings against a real redis-server: the same answers as the reference (memory) adapter, filing, history."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoplay_storage.adapters.memory import InMemoryStorageAdapter
from autoplay_storage.adapters.redis import (
    JOURNEY_STATES,
    MASTERY_LEVELS,
    RedisStorageAdapter,
    journey_key,
    mastery_key,
    onboarded_key,
    search_key,
    users_key,
)
from autoplay_storage.browse import UserQuery
from autoplay_storage.lifecycle import on_session_end, on_session_start
from autoplay_storage.manager import StorageManager
from autoplay_storage.user_adoption_state import JourneyState, MasteryLevel, UserAdoptionState
from tests.test_redis_adapter import compact, snapshot_for


@pytest.fixture
async def adapter(redis_url: str):
    a = RedisStorageAdapter(redis_url)
    yield a
    await a.aclose()


@pytest.fixture
def raw(redis_url: str):
    """A plain synchronous client for looking at what is really stored."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()





# --- browsing: the same answers as the reference (memory) adapter --------------------------


def user_doc(user_id: str, *, at: float, journey: str, level: str, onboarded: bool, metadata: dict) -> dict:
    state = UserAdoptionState(user_id=user_id, metadata=metadata, first_seen_at=at - 100, last_updated_at=at)
    state.journey_state = JourneyState(journey)
    state.mastery.level = MasteryLevel(level)
    if onboarded:
        state.onboarding.onboarding_completed_at = at - 1
    return state.to_dict()


def random_docs(rng: random.Random, product_id: str, n: int) -> dict[str, dict]:
    roles = ["admin", "Analyst", "viewer", "ops lead"]
    docs = {}
    for i in range(n):
        uid = f"{product_id}_user_{i:03d}"
        docs[uid] = user_doc(
            uid,
            at=1_700_000_000 + rng.choice([0, 0, 5, 10]) + i * rng.choice([0, 1]),  # plenty of ties
            journey=rng.choice(JOURNEY_STATES),
            level=rng.choice(MASTERY_LEVELS),
            onboarded=rng.random() < 0.4,
            metadata={"role": rng.choice(roles), "email": f"{'alice' if i % 3 else 'bob'}{i}@example.com"},
        )
    return docs


QUERIES = [
    UserQuery(),
    UserQuery(order="last_activity"),
    UserQuery(journey_state="onboarded"),
    UserQuery(mastery_level="beginner", order="last_activity"),
    UserQuery(onboarded=True),
    UserQuery(onboarded=False, journey_state="onboarding", mastery_level="novice"),
    UserQuery(search="ALI"),
    UserQuery(search="bob1", order="last_activity"),
    UserQuery(search="ops"),
    UserQuery(search="analyst", onboarded=False),
    UserQuery(search="p1_user_01"),
    UserQuery(search="nothing-matches"),
    UserQuery(search="   "),
]


async def all_pages(adapter, product_id: str, query: UserQuery, limit: int) -> list:
    rows, cursor = [], None
    while True:
        page = await adapter.list_users(product_id, query, cursor=cursor, limit=limit)
        rows.extend(page.items)
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


async def assert_same_listings(redis_adapter, memory, products: list[str]) -> None:
    assert await redis_adapter.list_products() == await memory.list_products()
    for product_id in products:
        for query in QUERIES:
            expected = await all_pages(memory, product_id, query, 500)
            for limit in (1, 7, 500):
                assert await all_pages(redis_adapter, product_id, query, limit) == expected, (query, limit)


async def test_listings_match_the_reference_adapter_and_follow_rewrites(adapter):
    rng = random.Random(7)
    memory = InMemoryStorageAdapter()
    data = {"p1": random_docs(rng, "p1", 60), "p2": random_docs(rng, "p2", 15)}
    for product_id, docs in data.items():
        for uid, doc in docs.items():
            await adapter.save_user_state(product_id, uid, doc)
            await memory.save_user_state(product_id, uid, doc)
    await assert_same_listings(adapter, memory, ["p1", "p2", "p_none"])

    # Rewrite a third of the users: journey, level, onboarding and metadata change;
    # the old filter and search entries must go.
    for uid in list(data["p1"])[::3]:
        doc = user_doc(
            uid, at=1_700_000_100 + rng.random(), journey="onboarded", level="power_user", onboarded=True,
            metadata={"role": "zeta"},
        )
        await adapter.save_user_state("p1", uid, doc)
        await memory.save_user_state("p1", uid, doc)
    await assert_same_listings(adapter, memory, ["p1"])
    assert (await adapter.list_users("p1", UserQuery(search="zeta"), limit=500)).items
    summary = {p.product_id: p for p in await adapter.list_products()}["p1"]
    assert summary.journey_states["onboarded"] >= 20
    assert summary.mastery_levels["power_user"] >= 20


async def test_filter_sets_hold_each_user_once(adapter, raw):
    doc = user_doc("u", at=100.0, journey="onboarding", level="novice", onboarded=False, metadata={"email": "a@x"})
    await adapter.save_user_state("p", "u", doc)
    doc2 = user_doc("u", at=200.0, journey="onboarded", level="proficient", onboarded=True, metadata={"email": "b@x"})
    await adapter.save_user_state("p", "u", doc2)
    assert raw.zscore(users_key("p"), "u") == 200.0
    assert raw.zcard(journey_key("p", "onboarding")) == 0
    assert raw.zscore(journey_key("p", "onboarded"), "u") == 200.0
    assert raw.zcard(mastery_key("p", "novice")) == 0
    assert raw.zscore(mastery_key("p", "proficient"), "u") == 200.0
    assert raw.zcard(onboarded_key("p", False)) == 0
    assert raw.zcard(onboarded_key("p", True)) == 1
    assert sorted(raw.zrange(search_key("p"), 0, -1)) == [b"b@x\x00u", b"u\x00u"]


async def test_a_mutate_that_edits_in_place_still_moves_the_index(adapter, raw):
    doc = user_doc("u", at=100.0, journey="onboarding", level="novice", onboarded=False, metadata={"role": "alpha"})
    await adapter.save_user_state("p", "u", doc)

    def edit(current):
        current["metadata"]["role"] = "beta"
        current["journey_state"] = "onboarded"
        return current

    await adapter.update_user_state("p", "u", edit)
    assert sorted(raw.zrange(search_key("p"), 0, -1)) == [b"beta\x00u", b"u\x00u"]
    assert (await adapter.list_users("p", UserQuery(search="alpha"))).items == []
    assert [r.user_id for r in (await adapter.list_users("p", UserQuery(search="beta"))).items] == ["u"]
    assert (await adapter.list_users("p", UserQuery(journey_state="onboarding"))).items == []
    assert {p.product_id: p for p in await adapter.list_products()}["p"].journey_states == {"onboarded": 1}


async def test_session_history_beyond_the_inline_fifty(adapter):
    storage = StorageManager([adapter])
    memory = InMemoryStorageAdapter()
    mem_storage = StorageManager([memory])
    state, _ = await on_session_start("p", "long", "s0", storage)
    for i in range(60):
        snap = snapshot_for(state, f"s{i:02d}", started_at=1000.0 + i * 10, now=1005.0 + i * 10 - (i % 2) * 10)
        await on_session_end("p", "long", snap, storage)
        await on_session_end("p", "long", snap, mem_storage)
    doc = await adapter.get_user_state("p", "long")
    assert doc["sessions"]["count"] == 60 and len(doc["sessions"]["index"]) == 50
    for newest_first in (True, False):
        expected = (await memory.list_sessions("p", "long", limit=500, newest_first=newest_first)).items
        assert len(expected) == 60
        for limit in (1, 7, 50):
            got, cursor = [], None
            while True:
                page = await adapter.list_sessions("p", "long", cursor=cursor, limit=limit, newest_first=newest_first)
                got.extend(page.items)
                if not page.next_cursor:
                    break
                cursor = page.next_cursor
            assert got == expected
    # The lifecycle finds session 1 through the history once it left the inline index.
    _, onboarding = await on_session_start("p", "long", "s_next", storage)
    assert onboarding is not None and onboarding.session_id == "s00"


# --- runtime: REDIS_URL set -> Redis is the console's primary ---------------------------------


async def test_runtime_uses_redis_when_redis_url_is_set(settings, redis_url, raw):
    from autoplay_storage.runtime import get_storage

    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "PRIMARY": "", "REDIS_URL": redis_url}
    storage = get_storage()
    try:
        assert isinstance(storage.primary, RedisStorageAdapter)
        await on_session_start("prod_rt", "u1", "s1", storage)
    finally:
        await storage.aclose()
    assert raw.exists("autoplay:user:prod_rt:u1:state")


# --- property: any sequence of writes lists like the reference ----------------------------------

_user_ids = st.sampled_from(["ann", "bob", "Bea", "carl", "dave", "eve", "al"])
_writes = st.lists(
    st.tuples(
        _user_ids,
        st.sampled_from(JOURNEY_STATES),
        st.sampled_from(MASTERY_LEVELS),
        st.booleans(),
        st.sampled_from([100.0, 100.0, 200.0, 300.5]),  # ties on purpose
        st.dictionaries(st.sampled_from(["role", "email", "team"]), st.sampled_from(["Admin", "ann@x", "ops", " "])),
    ),
    min_size=1,
    max_size=25,
)
_queries = st.builds(
    UserQuery,
    search=st.sampled_from([None, "a", "b", "ADM", "ops", "zz"]),
    journey_state=st.sampled_from([None, *JOURNEY_STATES]),
    mastery_level=st.sampled_from([None, "novice", "power_user"]),
    onboarded=st.sampled_from([None, True, False]),
    order=st.sampled_from(["-last_activity", "last_activity"]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=_writes, queries=st.lists(_queries, min_size=1, max_size=4), limit=st.integers(1, 4))
def test_any_write_sequence_lists_like_the_reference(redis_server, writes, queries, limit):
    async def check() -> None:
        a = RedisStorageAdapter(redis_server.url)
        memory = InMemoryStorageAdapter()
        try:
            await a.transport.client.flushall()
            for uid, journey, level, onboarded, at, metadata in writes:
                doc = user_doc(uid, at=at, journey=journey, level=level, onboarded=onboarded, metadata=metadata)
                await a.save_user_state("p", uid, doc)
                await memory.save_user_state("p", uid, doc)
            assert await a.list_products() == await memory.list_products()
            for query in queries:
                assert await all_pages(a, "p", query, limit) == await all_pages(memory, "p", query, 500)
        finally:
            await a.aclose()

    asyncio.run(check())


async def test_a_user_another_writer_wrote_is_fully_filed_on_our_first_write(adapter, raw):
    """A state the SDK wrote has no index entries: the first write files the product and search terms too."""
    raw.set("autoplay:user:sdkprod:u1:state", compact({"_v": 1, "user_id": "u1", "metadata": {"email": "a@b.c"}}))
    await adapter.update_user_state("sdkprod", "u1", lambda doc: {**doc, "journey_state": "onboarded"})
    assert b"sdkprod" in raw.smembers("autoplay:idx:products")
    page = await adapter.list_users("sdkprod", UserQuery(search="a@b"))
    assert [row.user_id for row in page.items] == ["u1"]
    # Our own later writes skip what is filed already, and the listing stays right.
    await adapter.update_user_state("sdkprod", "u1", lambda doc: {**doc, "journey_state": "onboarding"})
    page = await adapter.list_users("sdkprod", UserQuery(search="a@b", journey_state="onboarding"))
    assert [row.user_id for row in page.items] == ["u1"]

