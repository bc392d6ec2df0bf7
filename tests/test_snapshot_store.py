"""``create_session_snapshot`` on every readable primary: write-once, and say what is frozen."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from autoplay_storage.adapters.memory import InMemoryStorageAdapter
from autoplay_storage.errors import CorruptDocumentError

pytestmark = pytest.mark.django_db(transaction=True)

P, U, S = "prod_1", "u_123", "sess_a"
RawWriter = Callable[[str], Awaitable[None]]


@pytest.fixture(params=["memory", "redis", "database"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, RawWriter]]:
    """An adapter, and a way to put raw text under the snapshot key as another writer would."""
    if request.param == "memory":
        memory = InMemoryStorageAdapter()

        async def put(raw: str) -> None:
            memory._snapshots[(P, U, S)] = raw

        yield memory, put
    elif request.param == "redis":
        import redis.asyncio as redis_client

        from autoplay_storage.adapters.redis import RedisStorageAdapter
        from autoplay_storage.keys import session_key

        url = request.getfixturevalue("redis_url")
        adapter = RedisStorageAdapter(redis_url=url)
        raw_client = redis_client.Redis.from_url(url)

        async def put(raw: str) -> None:
            await raw_client.set(session_key(P, U, S), raw)

        yield adapter, put
        await adapter.aclose()
        await raw_client.aclose()
    else:
        from autoplay_storage.adapters.database import DatabaseStorageAdapter

        adapter = DatabaseStorageAdapter()

        async def put(raw: str) -> None:
            await adapter.save_raw_session_snapshot(P, U, S, raw)

        yield adapter, put
        await adapter.aclose()


async def test_the_first_write_returns_what_was_sent_and_a_retry_gets_the_frozen_one(store, sdk_fixtures):
    adapter, _put = store
    first = sdk_fixtures["snapshot__prod_1__u_123__sess_a"]
    assert await adapter.create_session_snapshot(P, U, S, first) is first  # written by this call

    rebuilt = {**first, "captured_at": first["captured_at"] + 60, "duration_s": first["duration_s"] + 60}
    again = await adapter.create_session_snapshot(P, U, S, rebuilt)
    assert again == first and again is not rebuilt  # the frozen one, not the retry's copy
    assert await adapter.get_session_snapshot(P, U, S) == first


async def test_an_unreadable_frozen_snapshot_is_reported_not_replaced(store, sdk_fixtures):
    adapter, put = store
    await put("{truncated")
    with pytest.raises(CorruptDocumentError):
        await adapter.create_session_snapshot(P, U, S, sdk_fixtures["snapshot__prod_1__u_123__sess_a"])
    with pytest.raises(CorruptDocumentError):  # still there, untouched
        await adapter.get_session_snapshot(P, U, S)


async def test_the_reference_store_lists_unreadable_documents_as_corrupt_rows(sdk_fixtures):
    memory = InMemoryStorageAdapter()
    memory._states[(P, U)] = "[1, 2"
    memory._snapshots[(P, U, S)] = "not json"
    users = await memory.list_users(P)
    assert [(row.user_id, row.corrupt) for row in users.items] == [(U, True)]
    sessions = await memory.list_sessions(P, U)
    assert [(row.session_id, row.corrupt) for row in sessions.items] == [(S, True)]
    assert (await memory.list_products())[0].user_count == 1
    with pytest.raises(CorruptDocumentError):
        await memory.get_user_state(P, U)
