"""Documents: wire round trips of the SDK's own output, snapshot building, mutation helpers."""

from __future__ import annotations

import copy
import json
import math

import pytest

from autoplay_storage.user_adoption_state import (
    SESSIONS_INDEX_LIMIT,
    CompletionRateDenominator,
    JourneyState,
    Mastery,
    MasteryLevel,
    SessionIndexEntry,
    SessionSnapshot,
    StepProgress,
    UserAdoptionState,
    WorkflowProgress,
    WorkflowStatus,
)
from tests.conftest import FIXTURES_DIR

FIXTURE_NAMES = sorted(p.stem for p in FIXTURES_DIR.glob("*.json"))
STATE_NAMES = [n for n in FIXTURE_NAMES if n.startswith("state__")]
SNAPSHOT_NAMES = [n for n in FIXTURE_NAMES if n.startswith("snapshot__")]
# The catalog the SDK was run with: sess_z (nothing touched) lists it in catalog order.
CATALOG = ["create_project", "invite_team", "configure_columns", "build_report"]


def read(name: str, doc: dict):
    cls = UserAdoptionState if name.startswith("state__") else SessionSnapshot
    return cls.from_dict(doc)


def test_every_fixture_kind_is_present():
    assert len(STATE_NAMES) == 4
    assert len(SNAPSHOT_NAMES) == 4


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_sdk_document_round_trips_to_equal_json(sdk_fixtures, name):
    doc = sdk_fixtures[name]
    original = copy.deepcopy(doc)
    assert read(name, doc).to_dict() == original
    assert doc == original, "reading must not modify the input"


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_sdk_document_round_trips_through_to_json(sdk_fixtures, name):
    doc = sdk_fixtures[name]
    text = read(name, doc).to_json()
    assert json.loads(text) == doc
    assert read(name, json.loads(text)).to_dict() == doc


def test_unknown_top_level_fields_survive(sdk_fixtures):
    state = copy.deepcopy(sdk_fixtures["state__prod_1__u_123"])
    state["written_by_newer_sdk"] = {"x": [1, 2]}
    snap = copy.deepcopy(sdk_fixtures["snapshot__prod_1__u_123__sess_a"])
    snap["annotation"] = "kept"
    assert UserAdoptionState.from_dict(state).to_dict() == state
    assert SessionSnapshot.from_dict(snap).to_dict() == snap


def state_behind(snapshot_doc: dict) -> UserAdoptionState:
    """The live state a snapshot fixture was captured from (workflows in detection order)."""
    state = UserAdoptionState(user_id=snapshot_doc["user_id"])
    state.journey_state = JourneyState(snapshot_doc["journey_state"])
    state.mastery = Mastery.from_dict(snapshot_doc["mastery"])
    state.discovered_features = list(snapshot_doc["discovered_features"])
    state.onboarding.proactive_support_count = snapshot_doc["proactive_support_count"]
    state.onboarding.distinct_features_seen = snapshot_doc["distinct_features_seen"]
    progress = sorted(snapshot_doc["workflow_progress"].items(), key=lambda kv: kv[1]["first_detected_at"])
    for wid, wp in progress:
        state.onboarding.workflow_progress[wid] = WorkflowProgress.from_dict(wp)
    return state


@pytest.mark.parametrize("name", SNAPSHOT_NAMES)
def test_from_adoption_state_rebuilds_the_sdk_snapshot(sdk_fixtures, name):
    doc = sdk_fixtures[name]
    snap = SessionSnapshot.from_adoption_state(
        state_behind(doc),
        session_id=doc["session_id"],
        session_number=doc["session_number"],
        started_at=doc["started_at"],
        catalog_workflow_ids=CATALOG,
        now=doc["captured_at"],
    )
    assert snap.to_dict() == doc


def progress_state(statuses: dict[str, str]) -> UserAdoptionState:
    state = UserAdoptionState(user_id="u")
    for i, (wid, status) in enumerate(statuses.items()):
        state.upsert_workflow_progress(wid, status=status, now=1000.0 + i)
    return state


def snapshot_of(state: UserAdoptionState, catalog, **kw) -> SessionSnapshot:
    kw.setdefault("started_at", 1000.0)
    kw.setdefault("now", 1600.0)
    return SessionSnapshot.from_adoption_state(
        state, session_id="s", session_number=1, catalog_workflow_ids=catalog, **kw
    )


def test_completion_rate_has_four_decimals():
    snap = snapshot_of(progress_state({"a": "completed"}), ["a", "b", "c"])
    assert snap.completion_rate == 0.3333
    snap = snapshot_of(progress_state({"a": "completed", "b": "completed"}), ["a", "b", "c"])
    assert snap.completion_rate == 0.6667


def test_all_catalog_denominator_counts_only_catalog_workflows():
    state = progress_state({"a": "completed", "off_catalog": "completed", "b": "in_progress"})
    snap = snapshot_of(state, ["a", "b", "c", "d"])
    assert snap.completion_rate == 0.25
    assert snap.total_catalog_workflows == 4
    assert snap.completed_workflow_ids == ["a", "off_catalog"]
    assert snap.in_progress_workflow_ids == ["b"]
    assert snap.untouched_workflow_ids == ["c", "d"]


def test_assigned_denominator_divides_by_tracked_workflows():
    state = progress_state({"a": "completed", "b": "in_progress", "x": "not_started"})
    snap = snapshot_of(state, ["a", "b", "c", "d", "e"], completion_rate_denominator="assigned_workflows")
    assert snap.completion_rate == 0.3333
    assert snap.completion_rate_denominator is CompletionRateDenominator.ASSIGNED_WORKFLOWS
    assert snap.to_dict()["completion_rate_denominator"] == "assigned_workflows"


def test_untouched_keeps_catalog_order_and_drops_duplicate_catalog_ids():
    state = progress_state({"m": "in_progress"})
    snap = snapshot_of(state, ["z", "m", "a", "z", "", "k"])
    assert snap.untouched_workflow_ids == ["z", "a", "k"]
    assert snap.total_catalog_workflows == 4


def test_empty_catalog_gives_zero_rate():
    snap = snapshot_of(progress_state({"a": "completed"}), [])
    assert snap.completion_rate == 0.0
    assert snap.total_catalog_workflows == 0
    assert snap.untouched_workflow_ids == []
    snap = snapshot_of(UserAdoptionState(user_id="u"), [], completion_rate_denominator="assigned_workflows")
    assert snap.completion_rate == 0.0


def test_duration_has_two_decimals_and_is_never_negative():
    state = UserAdoptionState(user_id="u")
    assert snapshot_of(state, [], started_at=100.0, now=100.123456).duration_s == 0.12
    late_start = snapshot_of(state, [], started_at=500.0, now=400.0)
    assert late_start.duration_s == 0.0
    assert late_start.started_at == 500.0


def test_reached_onboarding_complete_follows_completion_or_journey():
    state = UserAdoptionState(user_id="u")
    assert snapshot_of(state, []).reached_onboarding_complete is False
    state.set_journey_state("onboarded")
    assert snapshot_of(state, []).reached_onboarding_complete is True
    other = UserAdoptionState(user_id="u")
    other.onboarding.onboarding_completed_at = 5.0
    assert snapshot_of(other, []).reached_onboarding_complete is True


def test_snapshot_is_a_deep_copy_of_the_state(sdk_fixtures):
    state = UserAdoptionState.from_dict(sdk_fixtures["state__prod_1__u_mid"])
    snap = snapshot_of(state, CATALOG)
    before = snap.to_dict()
    state.onboarding.workflow_progress["create_project"].status = WorkflowStatus.COMPLETED
    state.onboarding.workflow_progress["create_project"].steps["pick_template"].confidence = 1.0
    state.onboarding.workflow_progress["new"] = WorkflowProgress(workflow_id="new")
    state.mastery.rating = 9
    state.mastery.level = MasteryLevel.POWER_USER
    state.discovered_features.append("later")
    state.onboarding.proactive_support_count = 7
    assert snap.to_dict() == before


def test_snapshot_refuses_non_finite_times():
    state = UserAdoptionState(user_id="u")
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="finite"):
            snapshot_of(state, [], started_at=bad)
        with pytest.raises(ValueError, match="finite"):
            snapshot_of(state, [], now=bad)


def test_snapshot_takes_the_users_id_and_a_positive_session_number():
    state = UserAdoptionState(user_id="u_9")
    snap = SessionSnapshot.from_adoption_state(
        state, session_id="s", session_number=0, started_at=1.0, catalog_workflow_ids=[], now=2.0
    )
    assert snap.user_id == "u_9"
    assert snap.session_number == 1
    assert snap.to_dict()["_frozen"] is True
    assert snap.to_dict()["_v"] == 1


# --- mutation helpers --------------------------------------------------------


def test_upsert_workflow_progress_stamps_detection_and_completion_once():
    state = UserAdoptionState(user_id="u")
    wp = state.upsert_workflow_progress("w", now=10.0)
    assert wp.status is WorkflowStatus.NOT_STARTED
    assert wp.first_detected_at is None and wp.completed_at is None
    state.upsert_workflow_progress(
        "w", status="in_progress", confidence=0.4, evidence="opened", source="judge", now=20.0
    )
    assert wp.first_detected_at == 20.0
    assert (wp.status, wp.confidence, wp.evidence, wp.source) == (WorkflowStatus.IN_PROGRESS, 0.4, "opened", "judge")
    state.upsert_workflow_progress("w", status=WorkflowStatus.COMPLETED, now=30.0)
    assert wp.completed_at == 30.0
    state.upsert_workflow_progress("w", status="in_progress", now=40.0)
    state.upsert_workflow_progress("w", status="completed", now=50.0)
    assert wp.completed_at == 30.0, "completed_at is stamped once"
    assert wp.first_detected_at == 20.0
    assert wp.last_evaluated_at == 50.0
    assert state.last_updated_at == 50.0
    assert wp.evidence == "opened", "fields not passed are kept"


def test_upsert_workflow_progress_clamps_and_validates():
    state = UserAdoptionState(user_id="u")
    assert state.upsert_workflow_progress("w", confidence=7.0, now=1.0).confidence == 1.0
    assert state.upsert_workflow_progress("w", confidence=-2, now=1.0).confidence == 0.0
    assert state.upsert_workflow_progress("w", source="", now=1.0).source == "unknown"
    with pytest.raises(ValueError):
        state.upsert_workflow_progress("w", status="finished")
    with pytest.raises(ValueError, match="finite"):
        state.upsert_workflow_progress("w", now=math.nan)


def test_upsert_step_progress_creates_the_workflow_and_stamps_once():
    state = UserAdoptionState(user_id="u")
    step = state.upsert_step_progress("w", "s1", status="in_progress", confidence=0.5, now=10.0)
    wp = state.onboarding.workflow_progress["w"]
    assert wp.status is WorkflowStatus.IN_PROGRESS and wp.first_detected_at == 10.0
    assert step.completed_at is None
    state.upsert_step_progress("w", "s1", status="completed", evidence="done", now=20.0)
    state.upsert_step_progress("w", "s1", status="completed", now=30.0)
    assert step.completed_at == 20.0
    assert step.last_evaluated_at == 30.0 and wp.last_evaluated_at == 30.0
    assert step.evidence == "done"
    assert wp.steps["s1"] is step
    assert state.to_dict()["onboarding"]["workflow_progress"]["w"]["steps"]["s1"]["step_id"] == "s1"


def test_set_mastery_and_journey():
    state = UserAdoptionState(user_id="u")
    state.set_mastery(14, "intermediate", "knows reports", now=5.0)
    assert state.mastery == Mastery(10, MasteryLevel.INTERMEDIATE, "knows reports")
    state.set_mastery(-3, now=6.0)
    assert state.mastery == Mastery(0, MasteryLevel.INTERMEDIATE, "knows reports")
    assert state.last_updated_at == 6.0
    with pytest.raises(ValueError):
        state.set_mastery(3, "guru")
    state.set_journey_state("onboarded", now=7.0)
    assert state.journey_state is JourneyState.ONBOARDED
    assert state.mastery.level is MasteryLevel.INTERMEDIATE, "journey and mastery are independent"
    with pytest.raises(ValueError):
        state.set_journey_state("lost")


def test_record_discovered_features_in_order_without_duplicates_or_blanks():
    state = UserAdoptionState(user_id="u", last_updated_at=1.0)
    assert state.record_discovered_features(["b", "a", "", "  ", "b"], now=2.0) == ["b", "a"]
    assert state.record_discovered_features(["a", "c", 5], now=3.0) == ["c"]
    assert state.discovered_features == ["b", "a", "c"]
    assert state.last_updated_at == 3.0
    assert state.record_discovered_features(["a"], now=4.0) == []
    assert state.last_updated_at == 3.0, "nothing new, nothing touched"


def test_record_step_in_keeps_the_last_decision():
    state = UserAdoptionState(user_id="u")
    state.record_step_in(should_step_in=False, timing_assessment="busy", reason="typing", now=10.0)
    assert state.onboarding.proactive_support_count == 0
    decision = state.record_step_in(
        should_step_in=True, reason="stuck", suggested_workflow_ids=["w", "w", "", "v"], now=20.0
    )
    assert state.onboarding.last_step_in is decision
    assert decision.suggested_workflow_ids == ["w", "v"]
    assert (decision.decided_at, state.onboarding.last_reasoned_at) == (20.0, 20.0)
    assert state.onboarding.proactive_support_count == 1
    assert state.to_dict()["onboarding"]["last_step_in"]["reason"] == "stuck"


def test_mark_onboarding_complete_stamps_once():
    state = UserAdoptionState(user_id="u")
    assert state.mark_onboarding_complete(100.0) is True
    assert state.mark_onboarding_complete(200.0) is False
    assert state.onboarding.onboarding_completed_at == 100.0
    assert state.journey_state is JourneyState.ONBOARDED
    assert state.is_onboarded
    with pytest.raises(ValueError, match="finite"):
        UserAdoptionState(user_id="u").mark_onboarding_complete(math.inf)


def test_merge_metadata_and_non_finite_values():
    state = UserAdoptionState(user_id="u", metadata={"role": "admin", "team": "x"})
    state.merge_metadata({"team": None, "plan": "pro", "score": math.nan, "nested": [math.inf, 1]}, now=3.0)
    assert state.metadata == {"role": "admin", "plan": "pro", "score": None, "nested": [None, 1]}
    state.metadata["late"] = -math.inf  # written straight into the bag, not through a helper
    assert json.loads(state.to_json())["metadata"]["late"] is None


def test_record_session_bounds_the_index_and_ignores_known_ids():
    state = UserAdoptionState(user_id="u")
    for n in range(1, SESSIONS_INDEX_LIMIT + 6):
        assert state.record_session(SessionIndexEntry(f"s{n}", n, float(n), float(n) + 1))
    assert state.record_session(SessionIndexEntry("s55", 99, 1.0, 2.0)) is False
    assert state.sessions.count == SESSIONS_INDEX_LIMIT + 5
    assert [e.session_id for e in state.sessions.index] == [f"s{n}" for n in range(6, 56)]


def test_merge_workflow_progress_later_evaluation_wins_and_stamps_keep_first():
    state = UserAdoptionState(user_id="u")
    state.upsert_workflow_progress("w", status="completed", evidence="old", now=10.0)
    state.upsert_step_progress("w", "s_old", status="completed", now=11.0)
    incoming = WorkflowProgress(
        workflow_id="w",
        status=WorkflowStatus.COMPLETED,
        evidence="new",
        first_detected_at=5.0,
        completed_at=30.0,
        last_evaluated_at=30.0,
    )
    state.merge_workflow_progress({"w": incoming, "v": WorkflowProgress("v", last_evaluated_at=1.0)})
    merged = state.onboarding.workflow_progress["w"]
    assert merged.evidence == "new"
    assert merged.first_detected_at == 5.0
    assert merged.completed_at == 10.0
    assert "s_old" in merged.steps
    assert "v" in state.onboarding.workflow_progress
    stale = WorkflowProgress("w", status=WorkflowStatus.IN_PROGRESS, evidence="stale", last_evaluated_at=1.0)
    state.merge_workflow_progress({"w": stale})
    assert state.onboarding.workflow_progress["w"].evidence == "new"
    assert state.onboarding.workflow_progress["w"].status is WorkflowStatus.COMPLETED


def test_merge_keeps_completion_stamps_when_a_later_evaluation_moved_back():
    state = UserAdoptionState(user_id="u")
    state.upsert_workflow_progress("w", status="completed", now=10.0)
    state.upsert_step_progress("w", "s", status="completed", now=10.0)
    later = WorkflowProgress("w", status=WorkflowStatus.IN_PROGRESS, first_detected_at=20.0, last_evaluated_at=20.0)
    later.steps["s"] = StepProgress("s", status=WorkflowStatus.IN_PROGRESS, last_evaluated_at=20.0)
    state.merge_workflow_progress({"w": later})
    merged = state.onboarding.workflow_progress["w"]
    assert merged.status is WorkflowStatus.IN_PROGRESS, "the later evaluation wins"
    assert merged.completed_at == 10.0 and merged.first_detected_at == 10.0
    assert merged.steps["s"].status is WorkflowStatus.IN_PROGRESS
    assert merged.steps["s"].completed_at == 10.0
    # The same as the helper does when the status moves back.
    state.upsert_workflow_progress("v", status="completed", now=1.0)
    assert state.upsert_workflow_progress("v", status="in_progress", now=2.0).completed_at == 1.0
