"""Lifecycle on the in-memory store, directly and through a StorageManager (spec section 6)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from autoplay_storage import (
    CorruptDocumentError,
    InMemoryStorageAdapter,
    StorageManager,
    StorageUnavailableError,
    UnsupportedVersionError,
    build_agent_context,
    init_user_state,
    on_session_end,
    on_session_start,
)
from autoplay_storage.lifecycle import apply_session_end
from autoplay_storage.user_adoption_state import (
    SESSIONS_INDEX_LIMIT,
    JourneyState,
    MasteryLevel,
    SessionIndexEntry,
    SessionSnapshot,
    UserAdoptionState,
    WorkflowStatus,
)

P = "prod_1"
CATALOG = ["create_project", "invite_team", "configure_columns", "build_report"]


class FourMethodStore:
    """A custom adapter with only the four wire methods: no atomic update, no listings."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], str] = {}
        self.snapshots: dict[tuple[str, str, str], str] = {}

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        await asyncio.sleep(0)  # a real store yields between read and write
        self.states[(product_id, user_id)] = json.dumps(state, allow_nan=False)

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        raw = self.states.get((product_id, user_id))
        return None if raw is None else json.loads(raw)

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        self.snapshots.setdefault((product_id, user_id, session_id), json.dumps(snapshot, allow_nan=False))

    async def get_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> dict[str, Any] | None:
        raw = self.snapshots.get((product_id, user_id, session_id))
        return None if raw is None else json.loads(raw)


class CallLog(InMemoryStorageAdapter):
    """The in-memory store, recording the order of the wire calls made on it."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    async def save_user_state(self, product_id, user_id, state):
        self.log.append("save_user_state")
        await super().save_user_state(product_id, user_id, state)

    async def get_user_state(self, product_id, user_id):
        self.log.append("get_user_state")
        return await super().get_user_state(product_id, user_id)

    async def create_session_snapshot(self, product_id, user_id, session_id, snapshot):
        # The one write-once entry point (save_session_snapshot delegates here).
        self.log.append("save_session_snapshot")
        return await super().create_session_snapshot(product_id, user_id, session_id, snapshot)

    async def get_session_snapshot(self, product_id, user_id, session_id):
        self.log.append("get_session_snapshot")
        return await super().get_session_snapshot(product_id, user_id, session_id)


def direct() -> tuple[InMemoryStorageAdapter, InMemoryStorageAdapter]:
    store = InMemoryStorageAdapter()
    return store, store


def managed() -> tuple[StorageManager, InMemoryStorageAdapter]:
    store = InMemoryStorageAdapter()
    return StorageManager([store]), store


@pytest.fixture(params=[direct, managed], ids=["adapter", "manager"])
def storage_pair(request) -> tuple[Any, InMemoryStorageAdapter]:
    """(what the lifecycle is given, the in-memory store underneath)."""
    factory: Callable[[], tuple[Any, InMemoryStorageAdapter]] = request.param
    return factory()


def snapshot(
    state: UserAdoptionState, session_id: str, *, started_at: float, captured_at: float, catalog=CATALOG
) -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=state.sessions.count + 1,
        started_at=started_at,
        catalog_workflow_ids=catalog,
        now=captured_at,
    )


async def run_session(storage, user_id: str, session_id: str, n: int, **end_kw) -> UserAdoptionState:
    """Start, do a little, end: session ``n`` runs from 1000*n to 1000*n + 600."""
    state, _ = await on_session_start(P, user_id, session_id, storage)
    snap = snapshot(state, session_id, started_at=1000.0 * n, captured_at=1000.0 * n + 600)
    return await on_session_end(P, user_id, snap, storage, **end_kw)


async def stored_state(store, user_id: str) -> UserAdoptionState:
    doc = await store.get_user_state(P, user_id)
    assert doc is not None
    return UserAdoptionState.from_dict(doc)


# --- session start -----------------------------------------------------------


async def test_first_session_creates_marks_and_persists(storage_pair):
    storage, store = storage_pair
    state, onboarding = await on_session_start(P, "u_new", "sess_1", storage, metadata={"role": "admin"})
    assert onboarding is None
    assert state.user_id == "u_new"
    assert state.sessions.count == 0
    assert state.sessions.current_session_id == "sess_1"
    assert state.metadata == {"role": "admin"}
    persisted = await stored_state(store, "u_new")
    assert persisted.to_dict() == state.to_dict()


async def test_returning_user_gets_session_one_as_onboarding(storage_pair):
    storage, _ = storage_pair
    await run_session(storage, "u", "s1", 1)
    state, onboarding = await on_session_start(P, "u", "s2", storage)
    assert state.sessions.count == 1
    assert onboarding is not None
    assert (onboarding.session_id, onboarding.session_number) == ("s1", 1)
    await run_session(storage, "u", "s2", 2)
    _, onboarding = await on_session_start(P, "u", "s3", storage)
    assert onboarding is not None and onboarding.session_id == "s1"


async def test_onboarding_snapshot_found_after_session_one_left_the_index(storage_pair):
    storage, store = storage_pair
    for n in range(1, SESSIONS_INDEX_LIMIT + 4):
        await run_session(storage, "u", f"s{n}", n)
    state = await stored_state(store, "u")
    assert "s1" not in [e.session_id for e in state.sessions.index]
    _, onboarding = await on_session_start(P, "u", "next", storage)
    assert onboarding is not None
    assert onboarding.session_id == "s1"
    assert onboarding.started_at == 1000.0


async def test_onboarding_without_listings_degrades_to_none_once_session_one_left_the_index():
    storage = StorageManager([FourMethodStore()])  # its primary cannot list history
    for n in range(1, SESSIONS_INDEX_LIMIT + 2):
        await run_session(storage, "u", f"s{n}", n)
    _, onboarding = await on_session_start(P, "u", "s1_again", storage)
    assert onboarding is None
    # While session 1 is still in the index it is found through the index alone.
    other = StorageManager([FourMethodStore()])
    await run_session(other, "v", "first", 1)
    _, onboarding = await on_session_start(P, "v", "second", other)
    assert onboarding is not None and onboarding.session_id == "first"


async def test_sdk_written_user_continues_with_its_history(sdk_fixtures):
    store = InMemoryStorageAdapter()
    for name, doc in sdk_fixtures.items():
        kind, product, user, *session = name.split("__")
        if kind == "state":
            await store.save_user_state(product, user, doc)
        else:
            await store.save_session_snapshot(product, user, session[0], doc)
    state, onboarding = await on_session_start("prod_1", "u_123", "sess_d", store)
    assert onboarding is not None and onboarding.to_dict() == sdk_fixtures["snapshot__prod_1__u_123__sess_a"]
    assert state.onboarding.summary == "Session 3 summary for u_123."
    snap = snapshot(state, "sess_d", started_at=1764200000.0, captured_at=1764200600.0)
    ended = await on_session_end("prod_1", "u_123", snap, store)
    assert ended.sessions.count == 4
    assert [(e.session_id, e.session_number) for e in ended.sessions.index][-1] == ("sess_d", 4)
    assert ended.onboarding.onboarding_completed_at == 1764160400.0, "the SDK's stamp is never replaced"


async def test_unknown_version_in_storage_raises_and_leaves_the_document(storage_pair):
    storage, store = storage_pair
    doc = {"_v": 2, "user_id": "u", "sessions": {"count": 9}, "new_shape": True}
    await store.save_user_state(P, "u", doc)
    raw_before = await store.get_raw_user_state(P, "u")
    with pytest.raises(UnsupportedVersionError) as excinfo:
        await on_session_start(P, "u", "s", storage)
    assert excinfo.value.version == 2
    snap = snapshot(UserAdoptionState(user_id="u"), "s", started_at=1.0, captured_at=2.0)
    with pytest.raises(UnsupportedVersionError):
        await on_session_end(P, "u", snap, storage)
    assert await store.get_raw_user_state(P, "u") == raw_before


class Unreachable(InMemoryStorageAdapter):
    """A primary whose reads fail the way a dropped connection does."""

    async def get_user_state(self, product_id, user_id):
        raise ConnectionError("connection refused")


async def test_failed_read_at_start_raises_and_saves_nothing():
    store = Unreachable()
    with pytest.raises(StorageUnavailableError):
        await on_session_start(P, "u", "s", StorageManager([store]))
    assert await store.get_raw_user_state(P, "u") is None


# --- session end -------------------------------------------------------------


async def test_session_end_copies_the_snapshot_into_the_state(storage_pair):
    storage, store = storage_pair
    state, _ = await on_session_start(P, "u", "s1", storage)
    state.record_discovered_features(["projects"])
    await store.save_user_state(P, "u", state.to_dict())  # the agent saved mid-session

    live, _ = await on_session_start(P, "u", "s1", storage)
    live.set_mastery(6, "intermediate", "knows projects")
    live.set_journey_state("onboarded")
    live.record_discovered_features(["reports", "projects", "invites"])
    live.upsert_workflow_progress("create_project", status="completed", now=1100.0)
    live.upsert_workflow_progress("invite_team", status="in_progress", now=1200.0)
    snap = snapshot(live, "s1", started_at=1000.0, captured_at=1600.0)
    assert snap.reached_onboarding_complete

    ended = await on_session_end(P, "u", snap, storage, summary="Knows projects.")
    persisted = await stored_state(store, "u")
    assert persisted.to_dict() == ended.to_dict()
    assert ended.journey_state is JourneyState.ONBOARDED
    assert (ended.mastery.rating, ended.mastery.level) == (6, MasteryLevel.INTERMEDIATE)
    assert ended.onboarding.completion_rate == 0.25
    assert ended.onboarding.summary == "Knows projects."
    assert ended.onboarding.onboarding_completed_at == 1600.0, "stamped with the snapshot's captured_at"
    assert ended.discovered_features == ["projects", "reports", "invites"]
    progress = ended.onboarding.workflow_progress
    assert progress["create_project"].status is WorkflowStatus.COMPLETED
    assert progress["create_project"].completed_at == 1100.0
    assert progress["invite_team"].first_detected_at == 1200.0
    assert ended.sessions.current_session_id is None
    assert ended.sessions.count == 1
    entry = ended.sessions.index[0]
    assert (entry.session_id, entry.session_number, entry.started_at, entry.captured_at) == ("s1", 1, 1000.0, 1600.0)


async def test_onboarding_completed_at_is_stamped_once_and_never_cleared(storage_pair):
    storage, store = storage_pair
    state, _ = await on_session_start(P, "u", "s1", storage)
    state.set_journey_state("onboarded")
    await on_session_end(P, "u", snapshot(state, "s1", started_at=10.0, captured_at=20.0), storage)
    state, _ = await on_session_start(P, "u", "s2", storage)
    await on_session_end(P, "u", snapshot(state, "s2", started_at=30.0, captured_at=40.0), storage)
    assert (await stored_state(store, "u")).onboarding.onboarding_completed_at == 20.0
    state, _ = await on_session_start(P, "u", "s3", storage)
    state.set_journey_state("onboarding")
    late = snapshot(state, "s3", started_at=50.0, captured_at=60.0)
    late.reached_onboarding_complete = False  # e.g. written by an older agent that never saw completion
    ended = await on_session_end(P, "u", late, storage)
    assert ended.onboarding.onboarding_completed_at == 20.0
    assert ended.journey_state is JourneyState.ONBOARDING, "journey is copied; the stamp is not cleared"


async def test_workflow_progress_in_the_snapshot_is_merged(storage_pair):
    storage, store = storage_pair
    state, _ = await on_session_start(P, "u", "s1", storage)
    state.upsert_workflow_progress("kept", status="completed", now=5.0)
    state.upsert_workflow_progress("shared", status="in_progress", evidence="old", now=6.0)
    await store.save_user_state(P, "u", state.to_dict())
    live = UserAdoptionState.from_dict(state.to_dict())
    live.upsert_workflow_progress("shared", status="completed", evidence="new", now=50.0)
    live.upsert_workflow_progress("fresh", status="in_progress", now=51.0)
    ended = await on_session_end(P, "u", snapshot(live, "s1", started_at=1.0, captured_at=60.0), storage)
    progress = ended.onboarding.workflow_progress
    assert set(progress) == {"kept", "shared", "fresh"}
    assert progress["shared"].evidence == "new"
    assert progress["shared"].first_detected_at == 6.0
    assert progress["shared"].completed_at == 50.0


async def test_current_session_id_is_cleared_only_for_that_session(storage_pair):
    storage, _ = storage_pair
    first, _ = await on_session_start(P, "u", "s1", storage)
    await on_session_start(P, "u", "s2", storage)  # a second tab started before s1 ended
    ended = await on_session_end(P, "u", snapshot(first, "s1", started_at=1.0, captured_at=2.0), storage)
    assert ended.sessions.current_session_id == "s2"


async def test_retried_end_counts_once_and_the_snapshot_is_write_once(storage_pair):
    storage, store = storage_pair
    state, _ = await on_session_start(P, "u", "s1", storage)
    first = snapshot(state, "s1", started_at=100.0, captured_at=700.0)
    after_first = await on_session_end(P, "u", first, storage)
    state.set_mastery(9, "power_user")
    rebuilt = snapshot(state, "s1", started_at=100.0, captured_at=900.0)  # a retry that rebuilt its snapshot
    for _ in range(4):
        again = await on_session_end(P, "u", rebuilt, storage)
        assert again.to_dict() == after_first.to_dict()
    assert after_first.sessions.count == 1
    assert [e.session_id for e in after_first.sessions.index] == ["s1"]
    assert await store.get_session_snapshot(P, "u", "s1") == first.to_dict()


async def test_concurrent_retries_of_one_end_count_once(storage_pair):
    storage, store = storage_pair
    state, _ = await on_session_start(P, "u", "s1", storage)
    snap = snapshot(state, "s1", started_at=1.0, captured_at=2.0)
    await asyncio.gather(*(on_session_end(P, "u", snap, storage) for _ in range(5)))
    persisted = await stored_state(store, "u")
    assert persisted.sessions.count == 1
    assert [e.session_id for e in persisted.sessions.index] == ["s1"]


class FailsOnceOnUpdate(InMemoryStorageAdapter):
    """A store without an atomic session end: the snapshot lands, then the state write fails once."""

    armed = False
    record_session_end = None  # the two-step path: write-once snapshot, then an atomic update

    async def update_user_state(self, product_id, user_id, mutate):
        if self.armed:
            self.armed = False
            raise ConnectionError("connection reset")
        return await super().update_user_state(product_id, user_id, mutate)


async def test_retry_after_a_failed_state_write_follows_the_frozen_snapshot():
    store = FailsOnceOnUpdate()
    storage = StorageManager([store])
    state, _ = await on_session_start(P, "u", "s1", storage)
    state.set_mastery(3, "beginner")
    first = snapshot(state, "s1", started_at=100.0, captured_at=700.0)
    store.armed = True
    with pytest.raises(StorageUnavailableError):
        await on_session_end(P, "u", first, storage)
    state.set_mastery(8, "proficient")
    rebuilt = snapshot(state, "s1", started_at=100.0, captured_at=950.0)
    ended = await on_session_end(P, "u", rebuilt, storage)
    entry = ended.sessions.index[0]
    assert (entry.captured_at, ended.mastery.rating) == (700.0, 3), "the state agrees with the stored snapshot"
    assert (await store.get_session_snapshot(P, "u", "s1"))["captured_at"] == 700.0


class FailsOnceOnStateWrite(InMemoryStorageAdapter):
    """The state write of a session end fails once (a full server, a dropped connection)."""

    armed = False

    async def save_user_state(self, product_id, user_id, state):
        if self.armed:
            self.armed = False
            raise ConnectionError("connection reset")
        await super().save_user_state(product_id, user_id, state)


async def test_a_failed_session_end_stores_no_snapshot_its_state_does_not_count():
    store = FailsOnceOnStateWrite()
    storage = StorageManager([store])
    state, _ = await on_session_start(P, "u", "s1", storage)
    store.armed = True
    with pytest.raises(StorageUnavailableError):
        await on_session_end(P, "u", snapshot(state, "s1", started_at=1.0, captured_at=2.0), storage)
    assert await store.get_session_snapshot(P, "u", "s1") is None, "all or nothing"
    ended = await on_session_end(P, "u", snapshot(state, "s1", started_at=1.0, captured_at=2.0), storage)
    assert ended.sessions.count == 1
    assert await store.get_session_snapshot(P, "u", "s1") is not None


async def test_end_without_a_session_id_is_refused(storage_pair):
    storage, store = storage_pair
    snap = snapshot(UserAdoptionState(user_id="u"), "", started_at=1.0, captured_at=2.0)
    with pytest.raises(ValueError, match="session_id"):
        await on_session_end(P, "u", snap, storage)
    assert await store.get_raw_session_snapshot(P, "u", "") is None


async def test_end_without_a_stored_state_creates_one(storage_pair):
    storage, _ = storage_pair
    snap = snapshot(UserAdoptionState(user_id="u"), "s1", started_at=1.0, captured_at=2.0)
    ended = await on_session_end(P, "u", snap, storage)
    assert ended.user_id == "u" and ended.sessions.count == 1


# --- summaries ---------------------------------------------------------------


async def test_more_than_fifty_sessions_keep_the_newest_fifty_and_an_exact_count(storage_pair):
    storage, store = storage_pair
    total = SESSIONS_INDEX_LIMIT + 3
    for n in range(1, total + 1):
        await run_session(storage, "u", f"s{n}", n)
    state = await stored_state(store, "u")
    assert state.sessions.count == total
    assert len(state.sessions.index) == SESSIONS_INDEX_LIMIT
    assert [e.session_id for e in state.sessions.index] == [f"s{n}" for n in range(4, total + 1)]
    assert [e.session_number for e in state.sessions.index] == list(range(4, total + 1))
    assert await store.get_session_snapshot(P, "u", "s1") is not None, "older sessions stay readable"


@pytest.mark.parametrize("kind", ["adapter", "manager", "four-method store"])
async def test_fifty_concurrent_ends_for_one_user_lose_nothing(kind):
    if kind == "adapter":
        storage = store = InMemoryStorageAdapter()
    elif kind == "manager":
        store = InMemoryStorageAdapter()
        storage = StorageManager([store])
    else:  # no atomic update of its own: the manager's per-user lock keeps it whole
        store = FourMethodStore()
        storage = StorageManager([store])
    base = UserAdoptionState(user_id="u")
    snaps = [snapshot(base, f"s{n}", started_at=float(n), captured_at=n + 0.5) for n in range(50)]
    await asyncio.gather(*(on_session_end(P, "u", s, storage) for s in snaps))
    state = UserAdoptionState.from_dict(await store.get_user_state(P, "u"))
    assert state.sessions.count == 50
    assert sorted(e.session_id for e in state.sessions.index) == sorted(f"s{n}" for n in range(50))
    assert sorted(e.session_number for e in state.sessions.index) == list(range(1, 51))


# --- agent context, fresh state ----------------------------------------------


def test_agent_context_for_the_sdk_user(sdk_fixtures):
    state = UserAdoptionState.from_dict(sdk_fixtures["state__prod_1__u_123"])
    onboarding = SessionSnapshot.from_dict(sdk_fixtures["snapshot__prod_1__u_123__sess_a"])
    assert build_agent_context(state, onboarding) == {
        "user_journey_state": "onboarded",
        "user_mastery_level": "proficient",
        "user_mastery_rating": 8,
        "session_count": 3,
        "is_returning_user": True,
        "onboarding_summary": "Session 3 summary for u_123.",
        "onboarding_session_in_progress_workflows": ["invite_team"],
        "onboarding_session_untouched_workflows": ["configure_columns", "build_report"],
    }


def test_agent_context_keys_follow_what_exists(sdk_fixtures):
    fresh = init_user_state("u")
    assert build_agent_context(fresh) == {
        "user_journey_state": "onboarding",
        "user_mastery_level": "novice",
        "user_mastery_rating": 0,
        "session_count": 0,
        "is_returning_user": False,
    }
    one = UserAdoptionState.from_dict(sdk_fixtures["state__prod_1__u_456"])
    assert one.sessions.count == 1
    context = build_agent_context(one)
    assert context["is_returning_user"] is False, "is_returning_user is session_count > 1"
    assert "onboarding_summary" not in context
    two = UserAdoptionState.from_dict(sdk_fixtures["state__prod_1__u_456"])
    two.sessions.count = 2
    two.onboarding.summary = ""
    context = build_agent_context(two)
    assert context["is_returning_user"] is True
    assert "onboarding_summary" not in context
    assert not any(k.startswith("onboarding_session_") for k in context)


def test_init_user_state():
    metadata = {"role": "analyst"}
    state = init_user_state("u_1", metadata=metadata)
    metadata["role"] = "changed"
    assert state.user_id == "u_1"
    assert state.metadata == {"role": "analyst"}
    assert state.sessions.count == 0 and state.sessions.index == [] and state.sessions.current_session_id is None
    assert state.journey_state is JourneyState.ONBOARDING
    assert state.onboarding.summary is None
    assert UserAdoptionState.from_dict(json.loads(state.to_json())).to_dict() == state.to_dict()
    for bad in ("", None, 5):
        with pytest.raises(ValueError):
            init_user_state(bad)


def test_apply_session_end_does_not_share_objects_with_the_snapshot():
    state = init_user_state("u")
    live = init_user_state("u")
    live.set_mastery(4, "beginner")
    live.upsert_workflow_progress("w", status="in_progress", now=3.0)
    snap = snapshot(live, "s1", started_at=1.0, captured_at=2.0)
    assert apply_session_end(state, snap, None, now=5.0) is True
    snap.mastery.rating = 10
    snap.workflow_progress["w"].status = WorkflowStatus.COMPLETED
    snap.discovered_features.append("later")
    assert state.mastery.rating == 4
    assert state.onboarding.workflow_progress["w"].status is WorkflowStatus.IN_PROGRESS
    assert state.discovered_features == []
    assert apply_session_end(state, snap, "ignored", now=6.0) is False, "a recorded session is a no-op"
    assert state.onboarding.summary is None


class CorruptHistory(FourMethodStore):
    """A store whose stored snapshots were truncated by a hand edit."""

    async def get_session_snapshot(self, product_id, user_id, session_id):
        raise CorruptDocumentError(f"autoplay:user:{product_id}:{user_id}:session:{session_id}", '{"_v": 1, "sess')


async def test_unreadable_onboarding_snapshot_starts_the_session_without_it(caplog):
    store = CorruptHistory()
    state = init_user_state("u")
    state.record_session(SessionIndexEntry("s1", 1, 1.0, 2.0))
    await store.save_user_state(P, "u", state.to_dict())
    with caplog.at_level(logging.WARNING, logger="autoplay_storage.lifecycle"):
        started, onboarding = await on_session_start(P, "u", "s2", store)
    assert onboarding is None
    assert started.sessions.current_session_id == "s2"
    assert any(getattr(r, "user_id", None) == "u" and "unreadable" in r.getMessage() for r in caplog.records)
    with pytest.raises(CorruptDocumentError):  # at session end it is the record itself: reported, not bypassed
        await on_session_end(P, "u", snapshot(started, "s2", started_at=3.0, captured_at=4.0), store)
    assert UserAdoptionState.from_dict(await store.get_user_state(P, "u")).sessions.count == 1
