"""Selectors: the interfaces' reads, on a real primary (the database adapter on SQLite)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from autoplay_storage import selectors, services
from autoplay_storage.browse import MAX_PAGE_SIZE, UserQuery
from autoplay_storage.errors import StorageUnavailableError
from autoplay_storage.models import SummaryRun
from autoplay_storage.runtime import get_storage, reset_storage
from autoplay_storage.services import StateNotFoundError
from autoplay_storage.user_adoption_state import SessionSnapshot
from tests.support.dashboard import configure_primary
from tests.support.redis_server import closed_port

pytestmark = pytest.mark.django_db(transaction=True)

P = "prod_s"


@pytest.fixture(autouse=True)
def _database_primary(settings):
    configure_primary("database", settings)


async def _end(user_id: str, session_id: str, started_at: float) -> None:
    await services.start_session(P, user_id, session_id)
    snapshot = SessionSnapshot(session_id, user_id, 1, started_at, started_at + 60.0)
    await services.end_session(P, user_id, snapshot)


async def test_state_and_context_of_a_stored_user_and_not_found_for_another():
    await _end("u1", "s1", 1_700_000_000.0)
    versioned = await selectors.get_state(P, "u1")
    assert versioned.state.sessions.count == 1
    assert versioned.etag == services.state_etag(await get_storage().get_user_state(P, "u1"))
    context = await selectors.get_context(P, "u1")
    assert context["session_count"] == 1 and context["onboarding_session_untouched_workflows"] == []
    for read in (selectors.get_state, selectors.get_context):
        with pytest.raises(StateNotFoundError):
            await read(P, "nobody")
    assert (await selectors.get_snapshot(P, "u1", "s1")).session_id == "s1"
    assert await selectors.get_snapshot(P, "u1", "nope") is None


async def test_page_sizes_are_clamped_to_what_a_primary_serves():
    for n in range(3):
        await _end("u2", f"s{n}", 1_700_000_000.0 + n * 100)
    assert len((await selectors.list_sessions(P, "u2", limit=0)).items) == 1
    assert len((await selectors.list_sessions(P, "u2", limit=MAX_PAGE_SIZE * 10)).items) == 3
    page = await selectors.list_sessions(P, "u2", limit=2)
    assert [s.session_id for s in page.items] == ["s2", "s1"] and page.next_cursor
    with pytest.raises(ValueError):
        await selectors.list_sessions(P, "u2", cursor="not-ours")


async def test_readings_say_none_stored_parsed_or_why_not_with_the_raw_text():
    assert not (await selectors.read_state(P, "ghost")).found
    assert not (await selectors.read_snapshot(P, "ghost", "s")).found
    await _end("u3", "s1", 1_700_000_000.0)
    reading = await selectors.read_state(P, "u3")
    assert reading.found and reading.value.user_id == "u3" and reading.doc["user_id"] == "u3"
    assert reading.unreadable == {}

    primary = get_storage().primary
    await primary.save_raw_user_state(P, "u3", '{"user_id": <<truncated')
    await primary.save_raw_session_snapshot(P, "u3", "s_broken", "not json")
    corrupt = await selectors.read_state(P, "u3")
    assert corrupt.found and corrupt.value is None and corrupt.unreadable["raw"] == '{"user_id": <<truncated'
    assert "invalid JSON" in corrupt.unreadable["reason"]
    snapshot = await selectors.read_snapshot(P, "u3", "s_broken")
    assert snapshot.found and snapshot.value is None and snapshot.unreadable["raw"] == "not json"
    assert await selectors.raw_session_snapshot(P, "u3", "s_broken") == "not json"

    future = json.dumps({"_v": 2, "user_id": "u3", "later": 1})
    await primary.save_raw_user_state(P, "u3", future)
    newer = await selectors.read_state(P, "u3")
    assert newer.value is None and newer.doc == json.loads(future)
    assert "_v=2" in newer.unreadable["reason"] and json.loads(newer.unreadable["raw"]) == json.loads(future)


async def test_products_and_users_are_listed():
    await _end("u4", "s1", 1_700_000_000.0)
    products = await selectors.list_products()
    assert [(p.product_id, p.user_count) for p in products] == [(P, 1)]
    users = await selectors.list_users(P, UserQuery(), limit=10)
    assert [u.user_id for u in users.items] == ["u4"]


async def test_summary_runs_newest_first_and_limited():
    now = timezone.now()
    for minutes in (3, 1, 2):
        await SummaryRun.objects.acreate(
            product_id=P,
            user_id="u5",
            session_id=f"s{minutes}",
            source=SummaryRun.Source.SESSION_END,
            summarizer="x",
            started_at=now + timedelta(minutes=minutes),
            outcome=SummaryRun.Outcome.SUCCEEDED,
        )
    runs = await selectors.summary_runs(P, "u5", limit=2)
    assert [r.session_id for r in runs] == ["s3", "s2"]


async def test_ping_raises_when_the_primary_cannot_be_reached(settings):
    await selectors.ping()
    configure_primary("redis", settings, f"redis://127.0.0.1:{closed_port()}/0")
    reset_storage()
    with pytest.raises(StorageUnavailableError):
        await selectors.ping()
