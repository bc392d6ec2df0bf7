"""The lifecycle's summaries: explicit, from a summarizer, after the session is recorded, never over a newer one."""

from __future__ import annotations

import logging

import pytest

from autoplay_storage import InMemoryStorageAdapter, on_session_end, on_session_start
from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState
from tests.test_lifecycle import P, direct, managed, run_session, snapshot


@pytest.fixture(params=[direct, managed], ids=["adapter", "manager"])
def storage_pair(request):
    return request.param()


@pytest.mark.parametrize("make", [direct, managed], ids=["adapter", "manager"])
async def test_the_session_is_recorded_whole_before_the_summarizer_runs(make):
    """A slow summarizer holds nothing: the snapshot and the state that counts it are stored before it starts."""
    storage, store = make()
    state, _ = await on_session_start(P, "u", "s1", storage)
    seen: list[tuple[bool, int, str | None]] = []

    async def summarizer(snap: SessionSnapshot) -> str:
        stored = UserAdoptionState.from_dict(await store.get_user_state(P, "u"))
        frozen = await store.get_session_snapshot(P, "u", "s1")
        seen.append((frozen is not None, stored.sessions.count, stored.onboarding.summary))
        return "brief"

    ended = await on_session_end(
        P, "u", snapshot(state, "s1", started_at=1.0, captured_at=2.0), storage, summarizer=summarizer
    )
    assert seen == [(True, 1, None)], "frozen and counted, the summary not yet written"
    assert ended.onboarding.summary == "brief"
    assert UserAdoptionState.from_dict(await store.get_user_state(P, "u")).onboarding.summary == "brief"


async def test_a_late_summary_never_overwrites_a_newer_one():
    store = InMemoryStorageAdapter()
    state, _ = await on_session_start(P, "u", "s1", store)

    async def slow(snap: SessionSnapshot) -> str:
        # Meanwhile another writer stores a newer summary (a later session, an edit).
        await store.update_user_state(
            P, "u", lambda doc: {**doc, "onboarding": {**doc["onboarding"], "summary": "newer"}}
        )
        return "late"

    ended = await on_session_end(P, "u", snapshot(state, "s1", started_at=1.0, captured_at=2.0), store, summarizer=slow)
    assert ended.onboarding.summary == "newer"
    assert ended.sessions.count == 1



class Summarizer:
    def __init__(self, text: str = "from the summarizer", error: Exception | None = None) -> None:
        self.text, self.error, self.calls = text, error, 0

    async def __call__(self, snap: SessionSnapshot) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return f"{self.text} (session {snap.session_id})"


async def test_explicit_summary_wins_and_the_summarizer_is_not_called(storage_pair):
    storage, _ = storage_pair
    summarizer = Summarizer()
    ended = await run_session(storage, "u", "s1", 1, summary="explicit", summarizer=summarizer)
    assert ended.onboarding.summary == "explicit"
    assert summarizer.calls == 0


async def test_summarizer_output_is_stored(storage_pair):
    storage, _ = storage_pair
    summarizer = Summarizer()
    ended = await run_session(storage, "u", "s1", 1, summarizer=summarizer)
    assert ended.onboarding.summary == "from the summarizer (session s1)"
    assert summarizer.calls == 1


async def test_failing_summarizer_is_logged_and_the_session_still_recorded(storage_pair, caplog):
    storage, _ = storage_pair
    await run_session(storage, "u", "s1", 1, summary="old summary")
    summarizer = Summarizer(error=RuntimeError("model overloaded"))
    with caplog.at_level(logging.ERROR, logger="autoplay_storage.lifecycle"):
        ended = await run_session(storage, "u", "s2", 2, summarizer=summarizer)
    assert summarizer.calls == 1
    assert ended.sessions.count == 2
    assert ended.onboarding.summary == "old summary"
    failures = [r for r in caplog.records if r.name == "autoplay_storage.lifecycle" and r.exc_info]
    assert failures and failures[0].session_id == "s2"
    assert "model overloaded" in caplog.text


async def test_blank_summarizer_output_keeps_the_old_summary(storage_pair):
    storage, _ = storage_pair
    await run_session(storage, "u", "s1", 1, summary="old summary")
    ended = await run_session(storage, "u", "s2", 2, summarizer=_blank)
    assert ended.onboarding.summary == "old summary"


async def _blank(snap: SessionSnapshot) -> str:
    return "   "


async def test_neither_summary_nor_summarizer_keeps_the_old_summary(storage_pair):
    storage, _ = storage_pair
    await run_session(storage, "u", "s1", 1, summary="old summary")
    ended = await run_session(storage, "u", "s2", 2)
    assert ended.onboarding.summary == "old summary"
    assert ended.sessions.count == 2


async def test_retried_end_does_not_run_the_summarizer_again(storage_pair):
    storage, _ = storage_pair
    state, _ = await on_session_start(P, "u", "s1", storage)
    snap = snapshot(state, "s1", started_at=1.0, captured_at=2.0)
    summarizer = Summarizer()
    for _ in range(5):
        ended = await on_session_end(P, "u", snap, storage, summarizer=summarizer)
    assert summarizer.calls == 1
    assert ended.sessions.count == 1


# --- many sessions, racing sessions ------------------------------------------


