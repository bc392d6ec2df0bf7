"""``ConsoleClient`` and ``SyncConsoleClient`` against the live API (uvicorn on loopback).

Every route through both clients, the typed errors of the API's codes, and
the retries of 503 / 429 / lost connections, made to happen for real by a
loopback proxy that answers the first requests with errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from autoplay_storage.errors import ConflictError, StorageUnavailableError
from autoplay_storage.remote import (
    AuthenticationError,
    ConsoleClient,
    ConsoleUnavailableError,
    IdMismatchError,
    InvalidCursorError,
    PreconditionRequiredError,
    ProductForbiddenError,
    RateLimitedError,
    RequestValidationError,
    RetryPolicy,
    SessionNotFoundError,
    StateConflictError,
    StateExistsError,
    SyncConsoleClient,
    UserNotFoundError,
    calls,
)
from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState, WorkflowStatus
from tests.support.api_server import ApiServer
from tests.support.flaky_proxy import FlakyProxy
from tests.support.redis_server import free_port

pytestmark = pytest.mark.django_db(transaction=True)
CATALOG = ["create_project", "invite_team"]


@pytest.fixture
def key(make_key, primary: str) -> str:
    return make_key("p1")


def snapshot_for(state: UserAdoptionState, session_id: str) -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        state, session_id=session_id, session_number=1, started_at=1_700_000_000.0, catalog_workflow_ids=CATALOG
    )


async def test_every_route_through_the_async_client(api_server: ApiServer, key: str) -> None:
    async with ConsoleClient(api_server.url, key) as client:
        started = await client.start_session("p1", "u1", "s:1", metadata={"role": "admin"})
        assert started.state.sessions.current_session_id == "s:1"
        assert started.state.metadata == {"role": "admin"} and started.onboarding_session is None
        assert started.context["session_count"] == 0

        patched = await client.patch_state(
            "p1",
            "u1",
            [{"op": "workflow_progress", "workflow_id": "create_project", "status": "completed"}],
            if_match=started.etag,
        )
        assert patched.state.onboarding.workflow_progress["create_project"].status is WorkflowStatus.COMPLETED
        read = await client.get_state("p1", "u1")
        assert read.etag == patched.etag and read.document == patched.document

        edited = read.state.clone()
        edited.set_mastery(4)
        replaced = await client.replace_state("p1", "u1", edited, if_match=read.etag)
        assert replaced.state.mastery.rating == 4 and replaced.etag != read.etag
        with pytest.raises(StateExistsError) as exists:
            await client.replace_state("p1", "u1", UserAdoptionState(user_id="u1"), create_only=True)
        assert exists.value.current_etag == replaced.etag

        ended = await client.end_session("p1", "u1", snapshot_for(replaced.state, "s:1"), summary="first")
        assert ended.state.sessions.count == 1 and ended.state.onboarding.summary == "first"
        again = await client.end_session("p1", "u1", snapshot_for(replaced.state, "s:1"))
        assert again.state.sessions.count == 1, "a repeated end changes nothing"

        await client.start_session("p1", "u1", "s2")
        by_state = await client.end_session_from_state(
            "p1", "u1", "s2", ended.state, catalog_workflow_ids=CATALOG, started_at=1_700_000_100.0
        )
        assert by_state.state.sessions.count == 2
        for n in range(3, 6):
            await client.end_session("p1", "u1", snapshot_for(by_state.state, f"s{n}"))

        page = await client.list_sessions("p1", "u1", limit=2)
        assert [row.session_id for row in page.items] == ["s5", "s4"] and page.next_cursor
        every = [row.session_id async for row in client.iter_sessions("p1", "u1", page_size=2)]
        assert every == ["s5", "s4", "s3", "s2", "s:1"]

        frozen = await client.get_session("p1", "u1", "s:1")
        assert frozen.session_id == "s:1" and frozen.completed_workflow_ids == ["create_project"]
        context = await client.get_context("p1", "u1")
        assert context["session_count"] == 5 and context["onboarding_summary"] == "first"
        restarted = await client.start_session("p1", "u1", "s6")
        assert restarted.onboarding_session is not None and restarted.onboarding_session.session_id == "s:1"


def test_every_route_through_the_sync_client(api_server: ApiServer, key: str) -> None:
    with SyncConsoleClient(api_server.url, key) as client:
        started = client.start_session("p1", "u2", "a")
        patched = client.patch_state("p1", "u2", [{"op": "mastery", "rating": 3}])
        assert patched.state.mastery.rating == 3
        read = client.get_state("p1", "u2")
        replaced = client.replace_state("p1", "u2", {**read.document, "journey_state": "onboarded"}, if_match="*")
        assert replaced.state.journey_state.value == "onboarded"
        ended = client.end_session("p1", "u2", snapshot_for(started.state, "a"))
        assert ended.state.sessions.count == 1 and ended.state.sessions.current_session_id is None
        client.end_session_from_state("p1", "u2", "b", read.state, catalog_workflow_ids=CATALOG, started_at=1.0)
        assert [row.session_id for row in client.iter_sessions("p1", "u2", page_size=1)] == ["b", "a"]
        assert client.list_sessions("p1", "u2").next_cursor is None
        assert client.get_session("p1", "u2", "b").session_id == "b"
        assert client.get_context("p1", "u2")["session_count"] == 2


def test_typed_errors_for_the_api_codes(api_server: ApiServer, key: str, make_key) -> None:
    with SyncConsoleClient(api_server.url, key) as client:
        with pytest.raises(UserNotFoundError) as missing:
            client.get_state("p1", "nobody")
        assert (missing.value.status, missing.value.code) == (404, "user_not_found") and missing.value.message
        started = client.start_session("p1", "u3", "s1")
        with pytest.raises(SessionNotFoundError):
            client.get_session("p1", "u3", "nope")
        client.patch_state("p1", "u3", [{"op": "mastery", "rating": 2}])
        with pytest.raises(StateConflictError) as stale:
            client.replace_state("p1", "u3", started.document, if_match=started.etag)
        assert isinstance(stale.value, ConflictError), "the engine's conflict, so engine code catches it"
        assert stale.value.expected == started.etag and stale.value.current_etag
        with pytest.raises(RequestValidationError) as invalid:
            client.patch_state("p1", "u3", [{"op": "mastery", "rating": 11}])
        assert invalid.value.status == 422 and invalid.value.details[0]["field"].endswith("rating")
        with pytest.raises(IdMismatchError):
            client.replace_state("p1", "u3", {**started.document, "user_id": "other"}, if_match="*")
        with pytest.raises(InvalidCursorError):
            client.list_sessions("p1", "u3", cursor="garbage")
        blind = calls.Call("PUT", "/api/v1/products/p1/users/u3/state", False, json=started.document)
        with pytest.raises(PreconditionRequiredError) as required:
            client._run(blind, calls.versioned)
        assert required.value.status == 428
        with pytest.raises(ProductForbiddenError) as forbidden:
            client.get_state("other-product", "u3")
        assert forbidden.value.status == 403
    with SyncConsoleClient(api_server.url, "apk_not_a_key") as bad, pytest.raises(AuthenticationError) as denied:
        bad.get_state("p1", "u3")
    assert denied.value.status == 401 and denied.value.code == "invalid_api_key"


@pytest.fixture
def proxy(api_server: ApiServer) -> Iterator[FlakyProxy]:
    server = FlakyProxy(api_server.url)
    yield server
    server.close()


def recording(max_attempts: int = 4, **kwargs: Any) -> tuple[RetryPolicy, list[tuple[int, float, str]]]:
    seen: list[tuple[int, float, str]] = []
    policy = RetryPolicy(max_attempts=max_attempts, on_retry=lambda *a: seen.append(a), **kwargs)
    return policy, seen


async def test_503_and_429_are_retried_after_retry_after(proxy: FlakyProxy, key: str) -> None:
    policy, seen = recording()
    proxy.failures = [(503, {"Retry-After": "1"}), (429, {"Retry-After": "0"})]
    async with ConsoleClient(proxy.url, key, retry=policy) as client:
        started = await client.start_session("p1", "u4", "s1")
    assert started.state.sessions.current_session_id == "s1"
    assert seen == [(1, 1.0, "503"), (2, 0.0, "429")]
    assert len(proxy.requests) == 3


def test_retries_stop_at_the_bound_with_the_typed_error(proxy: FlakyProxy, key: str) -> None:
    policy, seen = recording(max_attempts=3, backoff_s=0.01)
    proxy.failures = [(503, {})] * 5
    with SyncConsoleClient(proxy.url, key, retry=policy) as client, pytest.raises(ConsoleUnavailableError) as gave_up:
        client.get_state("p1", "u5")
    assert isinstance(gave_up.value, StorageUnavailableError) and gave_up.value.code == "storage_unavailable"
    assert len(proxy.requests) == 3 and [s[0] for s in seen] == [1, 2]

    # A Retry-After longer than the wait budget ends the retries at once.
    policy, seen = recording(max_wait_s=5.0)
    proxy.failures = [(429, {"Retry-After": "60"})]
    with SyncConsoleClient(proxy.url, key, retry=policy) as client, pytest.raises(RateLimitedError) as limited:
        client.get_state("p1", "u5")
    assert limited.value.retry_after == 60.0 and seen == []


def test_a_patch_without_an_etag_is_not_repeated_after_an_unclear_503(proxy: FlakyProxy, key: str) -> None:
    with SyncConsoleClient(proxy.url, key) as client:
        client.start_session("p1", "u6", "s1")
        policy, seen = recording(backoff_s=0.01)
        client.retry = policy
        proxy.failures = [(503, {}, "bad_gateway")]  # not the API's "nothing was changed"
        proxy.requests.clear()
        with pytest.raises(ConsoleUnavailableError):
            client.patch_state("p1", "u6", [{"op": "mastery", "rating": 1}])
        assert len(proxy.requests) == 1 and seen == []
        etag = client.get_state("p1", "u6").etag
        proxy.failures = [(503, {}, "bad_gateway")]
        client.patch_state("p1", "u6", [{"op": "mastery", "rating": 1}], if_match=etag)
        assert [s[2] for s in seen] == ["503"], "with If-Match the patch is safe to repeat"
        proxy.failures = [(503, {})]  # the API's storage_unavailable: safe for any call
        client.patch_state("p1", "u6", [{"op": "mastery", "rating": 2}])
        assert [s[2] for s in seen] == ["503", "503"]


async def test_a_refused_connection_is_retried_then_reported(key: str) -> None:
    policy, seen = recording(max_attempts=3, backoff_s=0.01)
    async with ConsoleClient(f"http://127.0.0.1:{free_port()}", key, retry=policy) as client:
        with pytest.raises(ConsoleUnavailableError) as unreachable:
            await client.get_state("p1", "u7")
    assert unreachable.value.status is None and unreachable.value.code == "connection_error"
    assert [s[2] for s in seen] == ["connect", "connect"]
