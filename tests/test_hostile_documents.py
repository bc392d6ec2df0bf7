"""Reading hostile documents (spec section 4): never crash, never invent history."""

from __future__ import annotations

import copy
import json
import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoplay_storage import UnsupportedVersionError
from autoplay_storage.user_adoption_state import (
    SESSIONS_INDEX_LIMIT,
    SessionSnapshot,
    UserAdoptionState,
)
from tests.support.hostile import check_snapshot, check_state, documents, json_values, paths, replace_at

BAD_TIMES = [math.nan, math.inf, -math.inf, "1763900000", "yesterday", None, True, [], {}]
# The same bad values as JSON text, the way a hand edit or another writer leaves them.
BAD_TIME_LITERALS = ["NaN", "Infinity", "-Infinity", '"1763900000"', "null", "true", "[]", "{}"]

def state_doc(sdk_fixtures, **changes: Any) -> dict:
    doc = copy.deepcopy(sdk_fixtures["state__prod_1__u_mid"])
    doc.update(changes)
    return doc


def read_state(doc: Any) -> dict:
    return UserAdoptionState.from_dict(doc).to_dict()


def read_snapshot(doc: Any) -> dict:
    return SessionSnapshot.from_dict(doc).to_dict()


# --- timestamps --------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_TIMES, ids=repr)
def test_bad_required_timestamps_fall_back_to_now(sdk_fixtures, bad):
    doc = state_doc(sdk_fixtures, first_seen_at=bad, last_updated_at=bad)
    doc["onboarding"]["exploration_started_at"] = bad
    wp = doc["onboarding"]["workflow_progress"]["create_project"]
    wp["last_evaluated_at"] = bad
    wp["steps"]["name_project"]["last_evaluated_at"] = bad
    doc["onboarding"]["last_step_in"]["decided_at"] = bad
    before = time.time()
    out = read_state(doc)
    after = time.time()
    wp_out = out["onboarding"]["workflow_progress"]["create_project"]
    for value in (
        out["first_seen_at"],
        out["last_updated_at"],
        out["onboarding"]["exploration_started_at"],
        wp_out["last_evaluated_at"],
        wp_out["steps"]["name_project"]["last_evaluated_at"],
        out["onboarding"]["last_step_in"]["decided_at"],
    ):
        assert isinstance(value, float) and before <= value <= after


@pytest.mark.parametrize("bad", BAD_TIMES, ids=repr)
def test_bad_optional_timestamps_become_null(sdk_fixtures, bad):
    doc = state_doc(sdk_fixtures, last_judged_at=bad)
    ob = doc["onboarding"]
    ob["last_reasoned_at"] = ob["last_welcome_at"] = ob["onboarding_completed_at"] = bad
    wp = ob["workflow_progress"]["create_project"]
    wp["first_detected_at"] = wp["completed_at"] = bad
    wp["steps"]["name_project"]["completed_at"] = bad
    out = read_state(doc)
    ob_out = out["onboarding"]
    wp_out = ob_out["workflow_progress"]["create_project"]
    assert out["last_judged_at"] is None
    assert ob_out["last_reasoned_at"] is None and ob_out["last_welcome_at"] is None
    assert ob_out["onboarding_completed_at"] is None, "a bad stamp never invents a completion"
    assert wp_out["first_detected_at"] is None and wp_out["completed_at"] is None
    assert wp_out["steps"]["name_project"]["completed_at"] is None


@pytest.mark.parametrize("literal", BAD_TIME_LITERALS)
def test_bad_timestamps_in_json_text(sdk_fixtures, literal):
    text = json.dumps(state_doc(sdk_fixtures, last_judged_at="@@", first_seen_at="##"))
    text = text.replace('"@@"', literal).replace('"##"', literal)
    doc = json.loads(text)  # Python's json accepts NaN and Infinity
    before = time.time()
    state = UserAdoptionState.from_dict(doc)
    assert state.last_judged_at is None
    assert before <= state.first_seen_at <= time.time()
    assert json.loads(state.to_json())["last_judged_at"] is None


@pytest.mark.parametrize("literal", BAD_TIME_LITERALS)
def test_snapshot_timestamps_in_json_text(sdk_fixtures, literal):
    doc = copy.deepcopy(sdk_fixtures["snapshot__prod_1__u_123__sess_a"])
    doc["started_at"] = "@@"
    doc["duration_s"] = "@@"
    text = json.dumps(doc).replace('"@@"', literal)
    snap = SessionSnapshot.from_dict(json.loads(text))
    assert snap.captured_at == doc["captured_at"]
    assert snap.started_at == snap.captured_at, "a lost start does not invent a duration"
    assert snap.duration_s == 0.0
    assert snap.completed_workflow_ids == ["create_project"], "the rest of the history stays"
    json.loads(snap.to_json())


def test_snapshot_without_any_time_uses_now_and_zero_duration():
    before = time.time()
    snap = SessionSnapshot.from_dict({"session_id": "s", "captured_at": math.nan, "started_at": math.inf})
    assert before <= snap.captured_at <= time.time()
    assert snap.started_at == snap.captured_at and snap.duration_s == 0.0


def test_negative_duration_is_clamped(sdk_fixtures):
    doc = copy.deepcopy(sdk_fixtures["snapshot__prod_1__u_123__sess_a"])
    doc["duration_s"] = -5
    assert SessionSnapshot.from_dict(doc).duration_s == 0.0
    del doc["duration_s"]
    doc["started_at"] = doc["captured_at"] + 100
    assert SessionSnapshot.from_dict(doc).duration_s == 0.0


# --- containers, enums, ranges ----------------------------------------------


def test_wrong_container_types_become_empty(sdk_fixtures):
    doc = state_doc(
        sdk_fixtures,
        metadata=["role", "admin"],
        discovered_features="projects",
        mastery="expert",
        sessions=[1, 2],
        onboarding={"workflow_progress": ["create_project"], "last_step_in": "yes"},
    )
    out = read_state(doc)
    assert out["metadata"] == {}
    assert out["discovered_features"] == []
    assert out["mastery"] == {"rating": 0, "level": "novice", "description": ""}
    assert out["sessions"] == {"count": 0, "current_session_id": None, "index": []}
    assert out["onboarding"]["workflow_progress"] == {}
    assert out["onboarding"]["last_step_in"] is None
    whole = read_state(state_doc(sdk_fixtures, onboarding="broken"))["onboarding"]
    assert whole["workflow_progress"] == {} and whole["summary"] is None and whole["proactive_support_count"] == 0

    snap = copy.deepcopy(sdk_fixtures["snapshot__prod_1__u_123__sess_a"])
    snap.update(completed_workflow_ids={"a": 1}, workflow_progress=[], mastery=None, discovered_features=7)
    out = read_snapshot(snap)
    assert out["completed_workflow_ids"] == [] and out["workflow_progress"] == {}
    assert out["mastery"]["level"] == "novice" and out["discovered_features"] == []
    assert out["in_progress_workflow_ids"] == ["invite_team"]


def test_wrong_item_types_inside_lists_are_dropped(sdk_fixtures):
    doc = state_doc(sdk_fixtures, discovered_features=["a", 1, None, "", "a", ["b"], "c"])
    doc["onboarding"]["last_step_in"]["suggested_workflow_ids"] = [1, "w", {"x": 1}]
    doc["onboarding"]["workflow_progress"]["bad"] = "not an object"
    out = read_state(doc)
    assert out["discovered_features"] == ["a", "c"]
    assert out["onboarding"]["last_step_in"]["suggested_workflow_ids"] == ["w"]
    assert out["onboarding"]["workflow_progress"]["bad"]["status"] == "not_started"
    assert out["onboarding"]["workflow_progress"]["bad"]["workflow_id"] == "bad"


def test_unknown_enums_fall_back_to_defaults(sdk_fixtures):
    doc = state_doc(sdk_fixtures, journey_state="graduated")
    doc["mastery"]["level"] = "wizard"
    doc["onboarding"]["workflow_progress"]["create_project"]["status"] = "done"
    doc["onboarding"]["workflow_progress"]["create_project"]["steps"]["name_project"]["status"] = 3
    out = read_state(doc)
    assert out["journey_state"] == "onboarding"
    assert out["mastery"]["level"] == "novice"
    assert out["mastery"]["rating"] == 2, "the rest of the object stays"
    wp = out["onboarding"]["workflow_progress"]["create_project"]
    assert wp["status"] == "not_started"
    assert wp["steps"]["name_project"]["status"] == "not_started"
    snap = copy.deepcopy(sdk_fixtures["snapshot__prod_1__u_123__sess_a"])
    snap.update(journey_state=None, completion_rate_denominator="per_team")
    out = read_snapshot(snap)
    assert out["journey_state"] == "onboarding"
    assert out["completion_rate_denominator"] == "all_catalog_workflows"


def test_out_of_range_numbers_are_clamped(sdk_fixtures):
    doc = state_doc(sdk_fixtures)
    doc["mastery"]["rating"] = 42
    ob = doc["onboarding"]
    ob["completion_rate"] = 3.5
    ob["proactive_support_count"] = -4
    ob["distinct_features_seen"] = -1
    ob["workflow_progress"]["create_project"]["confidence"] = -0.5
    ob["workflow_progress"]["create_project"]["steps"]["name_project"]["confidence"] = 9
    doc["sessions"]["count"] = -10
    out = read_state(doc)
    assert out["mastery"]["rating"] == 10
    assert out["onboarding"]["completion_rate"] == 1.0
    assert out["onboarding"]["proactive_support_count"] == 0
    assert out["onboarding"]["distinct_features_seen"] == 0
    wp = out["onboarding"]["workflow_progress"]["create_project"]
    assert wp["confidence"] == 0.0 and wp["steps"]["name_project"]["confidence"] == 1.0
    assert out["sessions"]["count"] == 0
    doc["mastery"]["rating"] = -3
    assert read_state(doc)["mastery"]["rating"] == 0

    snap = copy.deepcopy(sdk_fixtures["snapshot__prod_1__u_123__sess_a"])
    snap.update(completion_rate=-1, total_catalog_workflows=-4, session_number=-2, proactive_support_count=-1)
    out = read_snapshot(snap)
    assert out["completion_rate"] == 0.0 and out["total_catalog_workflows"] == 0
    assert out["session_number"] == 1 and out["proactive_support_count"] == 0


def test_booleans_where_numbers_belong_and_numbers_where_booleans_belong(sdk_fixtures):
    doc = state_doc(sdk_fixtures, first_seen_at=True, welcomed=1)
    doc["mastery"]["rating"] = True
    doc["onboarding"]["completion_rate"] = True
    doc["onboarding"]["proactive_support_count"] = True
    doc["onboarding"]["welcomed"] = 1
    doc["sessions"]["count"] = False
    out = read_state(doc)
    assert out["mastery"]["rating"] == 0
    assert out["onboarding"]["completion_rate"] == 0.0
    assert out["onboarding"]["proactive_support_count"] == 0
    assert out["onboarding"]["welcomed"] is False
    assert out["sessions"]["count"] == 0
    assert isinstance(out["first_seen_at"], float) and out["first_seen_at"] is not True


def test_huge_integers_do_not_crash_the_reader(sdk_fixtures):
    huge = 10**400  # valid JSON, too large for a float
    doc = state_doc(sdk_fixtures, first_seen_at=huge, last_judged_at=-huge)
    doc["mastery"]["rating"] = huge
    doc["onboarding"]["completion_rate"] = huge
    doc["onboarding"]["proactive_support_count"] = huge
    state = UserAdoptionState.from_dict(json.loads(json.dumps(doc)))
    assert state.last_judged_at is None
    assert state.mastery.rating == 0 and state.onboarding.completion_rate == 0.0
    json.loads(state.to_json())


def test_non_finite_values_in_free_form_bags_are_written_as_null(sdk_fixtures):
    text = json.dumps(state_doc(sdk_fixtures, future_field="@@", metadata={"score": "@@", "list": [1, "@@"]}))
    state = UserAdoptionState.from_dict(json.loads(text.replace('"@@"', "NaN")))
    out = json.loads(state.to_json())
    assert out["future_field"] is None
    assert out["metadata"] == {"score": None, "list": [1, None]}
    snap = SessionSnapshot.from_dict(json.loads('{"session_id": "s", "note": Infinity}'))
    assert json.loads(snap.to_json())["note"] is None


@pytest.mark.parametrize("version", [2, 0, "1", None, 1.5, True, [1]])
def test_unknown_state_version_is_unreadable(sdk_fixtures, version):
    with pytest.raises(UnsupportedVersionError) as excinfo:
        UserAdoptionState.from_dict(state_doc(sdk_fixtures, _v=version))
    assert excinfo.value.version == version


def test_missing_state_version_reads_as_version_one(sdk_fixtures):
    doc = state_doc(sdk_fixtures)
    del doc["_v"]
    assert read_state(doc)["_v"] == 1


def test_snapshot_with_another_version_is_read_leniently(sdk_fixtures):
    doc = copy.deepcopy(sdk_fixtures["snapshot__prod_1__u_123__sess_b"])
    doc["_v"] = 7
    out = read_snapshot(doc)
    assert out == doc, "history is kept as it is, its version included"
    doc["_v"] = "seven"
    assert read_snapshot(doc)["_v"] == 1


def test_duplicate_index_entries_are_listed_once(sdk_fixtures):
    doc = copy.deepcopy(sdk_fixtures["state__prod_1__u_123"])
    index = doc["sessions"]["index"]
    # The SDK, on a retried end, listed one session several times.
    doc["sessions"]["index"] = [index[0], index[1], index[1], index[1], index[2], index[2]]
    doc["sessions"]["count"] = 6
    out = read_state(doc)
    assert [e["session_id"] for e in out["sessions"]["index"]] == ["sess_a", "sess_b", "sess_c"]
    assert out["sessions"]["count"] == 6, "the lifetime count is never shrunk on read"


def test_index_entries_without_a_session_id_are_dropped(sdk_fixtures):
    doc = copy.deepcopy(sdk_fixtures["state__prod_1__u_123"])
    doc["sessions"]["index"] += [{"session_id": ""}, {"session_number": 4}, "sess_x", None]
    out = read_state(doc)
    assert [e["session_id"] for e in out["sessions"]["index"]] == ["sess_a", "sess_b", "sess_c"]


def test_an_index_longer_than_fifty_keeps_the_newest(sdk_fixtures):
    doc = copy.deepcopy(sdk_fixtures["state__prod_1__u_123"])
    doc["sessions"]["index"] = [
        {"session_id": f"s{n}", "session_number": n, "started_at": float(n), "captured_at": n + 1.0}
        for n in range(1, 81)
    ]
    doc["sessions"]["count"] = 3
    out = read_state(doc)
    assert [e["session_id"] for e in out["sessions"]["index"]] == [f"s{n}" for n in range(31, 81)]
    assert len(out["sessions"]["index"]) == SESSIONS_INDEX_LIMIT
    assert out["sessions"]["count"] == SESSIONS_INDEX_LIMIT, "never below what the index proves"


@pytest.mark.parametrize("doc", [None, [], "state", 5, 1.5, True])
def test_a_document_that_is_not_an_object_is_a_type_error(doc):
    with pytest.raises(TypeError):
        UserAdoptionState.from_dict(doc)
    with pytest.raises(TypeError):
        SessionSnapshot.from_dict(doc)


def test_a_missing_user_id_is_taken_from_the_key():
    assert UserAdoptionState.from_dict({}, user_id="u_key").user_id == "u_key"
    assert UserAdoptionState.from_dict({"user_id": 5}, user_id="u_key").user_id == "u_key"
    assert SessionSnapshot.from_dict({}, session_id="s", user_id="u").session_id == "s"


# --- property-based ----------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read_state_or_refuse(doc: Any) -> dict | None:
    """The state reader: a document, or ``None`` where it must refuse (unknown ``_v``, not an object)."""
    try:
        return UserAdoptionState.from_dict(doc).to_dict()
    except UnsupportedVersionError:
        version = doc["_v"]
        assert version != 1 or isinstance(version, bool)
        return None
    except TypeError:
        assert not isinstance(doc, dict)
        return None


def assert_state_fixed_point(doc: Any) -> None:
    out = read_state_or_refuse(doc)
    if out is None:
        return
    check_state(out)
    assert UserAdoptionState.from_dict(out).to_dict() == out
    assert UserAdoptionState.from_dict(json.loads(json.dumps(out, allow_nan=False))).to_dict() == out


def assert_snapshot_fixed_point(doc: Any) -> None:
    try:
        out = SessionSnapshot.from_dict(doc).to_dict()
    except TypeError:
        assert not isinstance(doc, dict)
        return
    check_snapshot(out)
    assert SessionSnapshot.from_dict(out).to_dict() == out


@PROPERTY_SETTINGS
@given(documents)
def test_generated_documents_never_crash_and_reach_a_fixed_point(doc):
    assert_state_fixed_point(doc)
    assert_state_fixed_point({k: v for k, v in doc.items() if k != "_v"})
    assert_snapshot_fixed_point(doc)


@PROPERTY_SETTINGS
@given(json_values)
def test_any_json_value_is_read_or_refused_with_a_type_error(value):
    assert_state_fixed_point(value)
    assert_snapshot_fixed_point(value)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_mutated_sdk_documents_never_crash_and_reach_a_fixed_point(sdk_fixtures, data):
    name = data.draw(st.sampled_from(sorted(sdk_fixtures)))
    doc = copy.deepcopy(sdk_fixtures[name])
    for _ in range(data.draw(st.integers(1, 4))):
        places = paths(doc)
        if not places:
            break
        replace_at(doc, data.draw(st.sampled_from(places)), data.draw(json_values))
    if name.startswith("state__"):
        assert_state_fixed_point(doc)
    else:
        assert_snapshot_fixed_point(doc)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_mutated_documents_through_json_text_with_non_finite_literals(sdk_fixtures, data):
    name = data.draw(st.sampled_from(sorted(sdk_fixtures)))
    doc = copy.deepcopy(sdk_fixtures[name])
    path = data.draw(st.sampled_from(paths(doc)))
    replace_at(doc, path, "@@")
    literal = data.draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
    parsed = json.loads(json.dumps(doc).replace('"@@"', literal))
    if name.startswith("state__"):
        assert_state_fixed_point(parsed)
    else:
        assert_snapshot_fixed_point(parsed)
