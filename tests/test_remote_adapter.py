"""``ConsoleStorageAdapter`` against the live API: our lifecycle and the published SDK's over it.

The adapter must make ``StorageManager([ConsoleStorageAdapter(...)])`` behave
like a local primary: atomic (racing writers lose nothing), idempotent (a
retried end counts once), and loud when the console cannot be reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from autoplay_storage import StorageManager, StorageUnavailableError, on_session_end, on_session_start
from autoplay_storage.remote import ConsoleStorageAdapter, RetryPolicy, SyncConsoleClient
from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState
from tests.support.api_server import ApiServer
from tests.support.redis_server import free_port

pytestmark = pytest.mark.django_db(transaction=True)
CATALOG = ["create_project", "invite_team"]


@pytest.fixture
def key(make_key, primary: str) -> str:
    return make_key("p1")


@pytest.fixture
async def adapter(api_server: ApiServer, key: str) -> AsyncIterator[ConsoleStorageAdapter]:
    console = ConsoleStorageAdapter(api_server.url, key)
    yield console
    await console.aclose()


def stored(api_server: ApiServer, key: str, user_id: str) -> UserAdoptionState:
    with SyncConsoleClient(api_server.url, key) as client:
        return client.get_state("p1", user_id).state


def snapshot_of(state: UserAdoptionState, session_id: str, number: int = 1) -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        state, session_id=session_id, session_number=number, started_at=1_700_000_000.0, catalog_workflow_ids=CATALOG
    )


async def test_our_lifecycle_over_the_console(api_server: ApiServer, key: str, adapter: ConsoleStorageAdapter) -> None:
    storage = StorageManager([adapter])
    state, onboarding = await on_session_start("p1", "u1", "s1", storage, metadata={"role": "admin"})
    assert onboarding is None and state.sessions.current_session_id == "s1"
    state.upsert_workflow_progress("create_project", status="completed")
    state.record_discovered_features(["editor"])
    ended = await on_session_end("p1", "u1", snapshot_of(state, "s1"), storage, summary="made a project")
    server = stored(api_server, key, "u1")
    assert ended.to_dict() == server.to_dict(), "the lifecycle returns what the console stores"
    assert server.sessions.count == 1 and server.sessions.current_session_id is None
    assert server.onboarding.summary == "made a project" and server.discovered_features == ["editor"]
    assert server.metadata == {"role": "admin"}

    retried = await on_session_end("p1", "u1", snapshot_of(state, "s1"), storage, summary="made a project")
    assert retried.sessions.count == 1 and stored(api_server, key, "u1").sessions.count == 1

    again, onboarding = await on_session_start("p1", "u1", "s2", storage, metadata={"team": "core"})
    assert onboarding is not None and onboarding.session_id == "s1"
    server = stored(api_server, key, "u1")
    assert server.sessions.current_session_id == "s2" and server.metadata == {"role": "admin", "team": "core"}
    # The start's own state, as on any primary; the console stamps the write with its own clock.
    assert {**again.to_dict(), "last_updated_at": 0} == {**server.to_dict(), "last_updated_at": 0}


async def test_concurrent_session_ends_lose_nothing(
    api_server: ApiServer, key: str, adapter: ConsoleStorageAdapter
) -> None:
    storage = StorageManager([adapter])
    state, _ = await on_session_start("p1", "u2", "warmup", storage)
    ends = [on_session_end("p1", "u2", snapshot_of(state, f"s{i}"), storage) for i in range(12)]
    await asyncio.gather(*ends)
    server = stored(api_server, key, "u2")
    assert server.sessions.count == 12
    assert sorted(e.session_id for e in server.sessions.index) == sorted(f"s{i}" for i in range(12))
    assert sorted(e.session_number for e in server.sessions.index) == list(range(1, 13))


async def test_concurrent_updates_are_atomic(api_server: ApiServer, key: str, adapter: ConsoleStorageAdapter) -> None:
    await on_session_start("p1", "u3", "s1", StorageManager([adapter]))

    def adding(feature: str) -> Any:
        def mutate(doc: dict[str, Any] | None) -> dict[str, Any]:
            state = UserAdoptionState.from_dict(doc or {"user_id": "u3"})
            state.record_discovered_features([feature])
            return state.to_dict()

        return mutate

    await asyncio.gather(*(adapter.update_user_state("p1", "u3", adding(f"f{i}")) for i in range(8)))
    assert sorted(stored(api_server, key, "u3").discovered_features) == sorted(f"f{i}" for i in range(8))


async def test_a_failing_fold_sends_nothing(api_server: ApiServer, key: str, adapter: ConsoleStorageAdapter) -> None:
    state, _ = await on_session_start("p1", "u4", "s1", StorageManager([adapter]))

    def fold(frozen: dict[str, Any], doc: dict[str, Any] | None) -> dict[str, Any]:
        raise RuntimeError("the caller's fold refuses")

    with pytest.raises(RuntimeError):
        await adapter.record_session_end("p1", "u4", "s1", snapshot_of(state, "s1").to_dict(), fold)
    assert stored(api_server, key, "u4").sessions.count == 0
    assert await adapter.get_session_snapshot("p1", "u4", "s1") is None


async def test_an_unreachable_console_is_an_error_not_a_blank_state(key: str) -> None:
    console = ConsoleStorageAdapter(f"http://127.0.0.1:{free_port()}", key, retry=RetryPolicy(max_attempts=2))
    with pytest.raises(StorageUnavailableError):
        await on_session_start("p1", "u5", "s1", StorageManager([console]))
    await console.aclose()


async def test_the_published_sdk_lifecycle_over_the_console(
    api_server: ApiServer, key: str, adapter: ConsoleStorageAdapter
) -> None:
    from autoplay_sdk.storage import StorageManager as SdkStorageManager
    from autoplay_sdk.storage import on_session_end as sdk_end
    from autoplay_sdk.storage import on_session_start as sdk_start
    from autoplay_sdk.user_adoption_state import SessionSnapshot as SdkSnapshot
    from autoplay_sdk.user_adoption_state import WorkflowStatus

    storage = SdkStorageManager([adapter])
    state, onboarding = await sdk_start("p1", "u6", "s1", storage)
    assert onboarding is None and stored(api_server, key, "u6").sessions.current_session_id == "s1"
    state.onboarding.upsert_workflow_progress("create_project", status=WorkflowStatus.COMPLETED, confidence=1.0)
    snapshot = SdkSnapshot.from_adoption_state(
        state, session_id="s1", session_number=1, started_at=1_700_000_000.0, catalog_workflow_ids=CATALOG
    )
    await sdk_end("p1", "u6", snapshot, storage, summary="sdk summary")
    await sdk_end("p1", "u6", snapshot, storage, summary="sdk summary")  # the SDK's retry
    server = stored(api_server, key, "u6")
    assert server.sessions.count == 1 and [e.session_id for e in server.sessions.index] == ["s1"]
    assert server.onboarding.summary == "sdk summary"
    assert server.onboarding.workflow_progress["create_project"].status.value == "completed"

    again, onboarding = await sdk_start("p1", "u6", "s2", storage)
    assert onboarding is not None and onboarding.session_id == "s1"
    assert again.sessions_count == 1 and stored(api_server, key, "u6").sessions.current_session_id == "s2"
