"""Typed documents: a store hands the next mutation the state it last wrote, unparsed, with the whole document.

What must hold: a typed state reads exactly as parsing the stored bytes would,
it is handed out once (its reader owns it), it is never used for bytes another
writer stored, and the dict that carries it is always the whole document.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math

import pytest
import redis

from autoplay_storage import codec, lifecycle
from autoplay_storage.adapters.redis import RedisStorageAdapter
from autoplay_storage.keys import user_state_key
from autoplay_storage.lifecycle import load_state, on_session_end, on_session_start, state_document
from autoplay_storage.manager import StorageManager
from autoplay_storage.protocol import TypedDocument, WrittenDocument
from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState, WorkflowStatus

CATALOG = ["wf_a", "wf_b", "wf_c"]


def busy_state() -> UserAdoptionState:
    state = UserAdoptionState(user_id="u_1", metadata={"email": "a@example.com", "team": {"name": "Ops", "size": 3}})
    state.merge_metadata({"score": math.nan, "tags": ("x", "y"), "é": "ü"})
    state.extra["future_field"] = {"nested": [1, math.inf, "z"]}
    state.upsert_workflow_progress("wf_a", status=WorkflowStatus.COMPLETED, confidence=0.9, evidence="tour")
    state.upsert_step_progress("wf_b", "step_1", status=WorkflowStatus.IN_PROGRESS, confidence=0.4)
    state.record_step_in(should_step_in=True, reason="stuck", suggested_workflow_ids=["wf_b"])
    state.record_discovered_features(["search", "export"])
    state.set_mastery(4, "beginner", "getting there")
    state.onboarding.summary = "Knows search."
    for n in range(1, 4):
        state.mark_session_started(f"s{n}")
        lifecycle.apply_session_end(
            state,
            SessionSnapshot.from_adoption_state(
                state, session_id=f"s{n}", session_number=n, started_at=1.7e9 + n, catalog_workflow_ids=CATALOG
            ),
            None,
        )
    return state


def reread(state: UserAdoptionState) -> UserAdoptionState:
    """What a store that parses gives back after writing ``state``."""
    return UserAdoptionState.from_dict(codec.loads(codec.dumps(state.to_dict())))


def test_clone_reads_as_the_written_document(sdk_fixtures) -> None:
    states = [busy_state()]
    states += [UserAdoptionState.from_dict(doc) for name, doc in sdk_fixtures.items() if "state" in name]
    assert len(states) > 1
    for state in states:
        assert state.clone() == reread(state)
        # state_document's typed copy too, and the dict it writes is the state's own.
        written = state_document(state)
        assert written.typed == reread(state)
        assert dict(written) == state.to_dict()


def test_clone_shares_nothing_mutable() -> None:
    state = busy_state()
    before = state.to_dict()
    copy = state.clone()
    copy.metadata["team"]["name"] = "changed"
    copy.extra["future_field"]["nested"].append(9)
    copy.discovered_features.append("new")
    copy.onboarding.workflow_progress["wf_b"].steps["step_1"].confidence = 1.0
    copy.onboarding.workflow_progress["wf_a"].evidence = "changed"
    copy.onboarding.last_step_in.suggested_workflow_ids.append("wf_c")
    with pytest.raises(dataclasses.FrozenInstanceError):  # index entries are shared, so they cannot change
        copy.sessions.index[0].session_number = 99  # type: ignore[misc]
    copy.sessions.index.pop()
    copy.mastery.rating = 10
    assert state.to_dict() == before


def test_a_typed_state_is_handed_out_once() -> None:
    state = busy_state()
    stored = TypedDocument(state.to_dict(), state_document(state).typed)
    first = load_state(stored, "u_1")
    first.metadata["team"] = "edited by the first reader"
    second = load_state(stored, "u_1")  # parsed from the dict: the first reader's edits are not in it
    assert second == reread(state)
    assert second is not first


def test_a_typed_document_is_the_whole_document() -> None:
    """A mutation or wrapper that reads it as a dict sees the full state, never an empty one."""
    state = busy_state()
    stored = TypedDocument(state.to_dict(), state.clone())
    assert dict(stored) == state.to_dict()
    assert stored.get("sessions") == state.to_dict()["sessions"]
    rebuilt = dict(stored)  # a wrapper that builds its own dict loses the typed state, nothing else
    assert load_state(rebuilt, "u_1") == reread(state)


def test_a_written_document_is_never_read_from_its_typed_copy() -> None:
    """Only a store vouches for a typed state: a document a caller got back may have been edited since."""
    state = busy_state()
    written = state_document(state)
    written["journey_state"] = "onboarded"
    assert load_state(written, "u_1").journey_state.value == "onboarded"


@pytest.fixture
def checked_loads(monkeypatch):
    """Every typed state the lifecycle reads is compared with parsing the document it came with."""
    used: list[int] = []
    real = lifecycle.load_state

    def load_and_compare(doc, user_id):
        if type(doc) is TypedDocument:
            typed = doc.take()
            assert typed == UserAdoptionState.from_dict(dict(doc), user_id=user_id)
            used.append(1)
            doc = TypedDocument(doc, typed)
        return real(doc, user_id)

    monkeypatch.setattr(lifecycle, "load_state", load_and_compare)
    return used


async def one_session(storage, user_id: str, session_id: str, n: int) -> None:
    state, _ = await on_session_start(
        "p", user_id, session_id, storage, metadata={"email": f"{user_id}@example.com", "n": n}
    )
    state.upsert_workflow_progress(CATALOG[n % 3], status=WorkflowStatus.IN_PROGRESS, confidence=0.5)
    state.record_discovered_features([f"f{n % 4}"])
    snapshot = SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=state.sessions.count + 1,
        started_at=state.last_updated_at,
        catalog_workflow_ids=CATALOG,
    )
    await on_session_end("p", user_id, snapshot, storage)


@pytest.fixture
async def stores(redis_url: str):
    """(the engine's storage on a Redis adapter, another client writing behind its back)."""
    adapter = RedisStorageAdapter(redis_url)
    other = redis.Redis.from_url(redis_url)
    yield StorageManager([adapter]), other
    other.close()
    await adapter.aclose()


async def test_redis_typed_states_read_as_the_stored_bytes(stores, checked_loads) -> None:
    storage, other = stores
    for n in range(6):
        await one_session(storage, "u_memo", f"s{n}", n)
    assert checked_loads, "the typed state was never used"
    # Another writer (the SDK, a hand edit) replaces the state: its bytes come with no typed state.
    key = user_state_key("p", "u_memo")
    doc = codec.loads(other.get(key))
    doc["metadata"]["plan"] = "enterprise"
    other.set(key, codec.dumps(doc))
    await one_session(storage, "u_memo", "s_after_edit", 7)
    stored = codec.loads(other.get(key))
    assert stored["metadata"]["plan"] == "enterprise"
    assert stored["sessions"]["count"] == 7
    # Racing ends: conflicts hand back fresh bytes (no typed state); every session is still recorded.
    await asyncio.gather(*(one_session(storage, "u_race", f"r{n}", n) for n in range(20)))
    await asyncio.gather(*(one_session(storage, "u_race", f"r{n}", n) for n in range(20)))  # retried
    raced = codec.loads(other.get(user_state_key("p", "u_race")))
    assert raced["sessions"]["count"] == 20
    assert len({e["session_id"] for e in raced["sessions"]["index"]}) == 20


async def test_redis_without_a_cache_keeps_no_typed_state(redis_url: str, checked_loads) -> None:
    adapter = RedisStorageAdapter(redis_url, state_cache_size=0)
    try:
        for n in range(3):
            await one_session(StorageManager([adapter]), "u_nocache", f"s{n}", n)
        assert not checked_loads
    finally:
        await adapter.aclose()


def test_written_and_stored_documents_are_plain_json_objects() -> None:
    state = busy_state()
    doc = state_document(state)
    assert isinstance(doc, dict)
    assert isinstance(doc, WrittenDocument)
    assert codec.loads(codec.dumps(doc)) == codec.loads(codec.dumps(state.to_dict()))


# --- the first session's snapshot, read back at every session start ---------------------------


def test_snapshot_clone_is_an_independent_equal_copy() -> None:
    state = busy_state()
    snapshot = SessionSnapshot.from_adoption_state(
        state, session_id="s9", session_number=1, started_at=1.7e9, catalog_workflow_ids=CATALOG
    )
    snapshot.extra["future"] = {"x": [1, 2]}
    before = snapshot.to_dict()
    copy = snapshot.clone()
    assert copy == snapshot
    copy.workflow_progress["wf_b"].steps["step_1"].evidence = "changed"
    copy.discovered_features.append("new")
    copy.untouched_workflow_ids.clear()
    copy.extra["future"]["x"].append(3)
    copy.mastery.rating = 10
    assert snapshot.to_dict() == before


def test_only_the_first_session_snapshot_carries_a_typed_copy_and_it_reads_as_written() -> None:
    state = busy_state()
    for number in (1, 2):
        snapshot = SessionSnapshot.from_adoption_state(
            state, session_id=f"s{number}", session_number=number, started_at=1.7e9, catalog_workflow_ids=CATALOG
        )
        doc = lifecycle.snapshot_document(snapshot, "u_1")
        assert doc == snapshot.to_dict()
        if number == 1:
            assert type(doc) is WrittenDocument
            assert doc.typed == SessionSnapshot.from_dict(codec.loads(codec.dumps(doc)), session_id="s1", user_id="u_1")
        else:
            assert type(doc) is dict


@pytest.fixture
def checked_snapshot_reads(monkeypatch):
    """Every typed snapshot the lifecycle reads is compared with parsing the document it came with."""
    used: list[int] = []
    real = lifecycle.read_snapshot

    def read_and_compare(doc, session_id, user_id):
        snapshot = real(doc, session_id, user_id)
        if type(doc) is TypedDocument:
            assert snapshot == SessionSnapshot.from_dict(dict(doc), session_id=session_id, user_id=user_id)
            assert snapshot is not doc.typed  # readers get their own copy
            used.append(1)
        return snapshot

    monkeypatch.setattr(lifecycle, "read_snapshot", read_and_compare)
    return used


async def test_redis_onboarding_snapshot_from_its_typed_copy_reads_as_stored(stores, checked_snapshot_reads) -> None:
    from autoplay_storage.keys import session_key

    storage, other = stores
    for n in range(4):
        await one_session(storage, "u_snap", f"s{n}", n)
    assert len(checked_snapshot_reads) == 3  # every returning start, from the typed copy
    _state, onboarding = await on_session_start("p", "u_snap", "s_next", storage)
    assert onboarding is not None and onboarding.session_id == "s0"
    onboarding.discovered_features.append("the agent's own edit")
    _, again = await on_session_start("p", "u_snap", "s_next", storage)
    assert "the agent's own edit" not in again.discovered_features
    # A hand edit of the frozen bytes: read from what is stored now, not from the typed copy.
    key = session_key("p", "u_snap", "s0")
    doc = codec.loads(other.get(key))
    doc["discovered_features"] = ["edited by hand"]
    other.set(key, codec.dumps(doc))
    used = len(checked_snapshot_reads)
    _, edited = await on_session_start("p", "u_snap", "s_after", storage)
    assert edited.discovered_features == ["edited by hand"]
    assert len(checked_snapshot_reads) == used
