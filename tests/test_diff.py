"""The session diff (engine, no Django): over SDK-written snapshots and over generated pairs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoplay_storage.diff import apply_changes, compared_fields, diff, read_snapshot, read_state
from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState

ROOT = Path(__file__).resolve().parent.parent


def snap_side(doc, label="b", **kw):
    return read_snapshot(doc, label=label, session_id=doc.get("session_id", "s"), user_id=doc.get("user_id", "u"), **kw)


def kinds(d):
    return {(c.path, c.kind) for c in d.changes}


def test_sdk_sessions_in_order_say_what_changed(sdk_fixtures) -> None:
    a, b = sdk_fixtures["snapshot__prod_1__u_123__sess_a"], sdk_fixtures["snapshot__prod_1__u_123__sess_b"]
    d = diff(snap_side(a, "a"), snap_side(b, "b"))
    assert d.comparable and d.changes
    after = compared_fields(SessionSnapshot.from_dict(b))
    assert apply_changes(compared_fields(SessionSnapshot.from_dict(a)), d.changes) == after
    found = kinds(d)
    for workflow_id in b["completed_workflow_ids"]:
        if workflow_id not in a["completed_workflow_ids"]:
            assert (("workflow", workflow_id, "status"), "completed") in found
    for feature in set(b["discovered_features"]) - set(a["discovered_features"]):
        assert (("feature", feature), "discovered") in found
    if a["mastery"]["rating"] != b["mastery"]["rating"]:
        assert any(c.path == ("mastery", "rating") for c in d.changes)
    json.dumps(d.as_dict())  # structured and JSON-ready


def test_every_sdk_document_against_itself_is_empty(sdk_fixtures) -> None:
    for name, doc in sdk_fixtures.items():
        user_id = name.split("__")[2]
        side = read_state(doc, label="state", user_id=user_id) if name.startswith("state") else snap_side(doc)
        assert side.readable, name
        assert diff(side, side).changes == [], name


def test_a_session_against_the_live_state_compares_the_summary_only_when_both_know_it(sdk_fixtures) -> None:
    snap = sdk_fixtures["snapshot__prod_1__u_123__sess_c"]
    state = sdk_fixtures["state__prod_1__u_123"]
    live = read_state(state, label="live state", user_id="u_123")
    plain = diff(snap_side(snap), live)
    assert plain.comparable and not any(c.area == "summary" for c in plain.changes)
    known = diff(snap_side(snap, summary="old brief", known_summary=True), live)
    summary = [c for c in known.changes if c.area == "summary"]
    assert summary and summary[0].before == "old brief"


def test_an_unreadable_side_is_said_plainly_and_nothing_is_guessed() -> None:
    good = snap_side({"session_id": "s1", "user_id": "u", "session_number": 1, "captured_at": 10.0})
    broken = read_snapshot("not JSON: Expecting value", label="session s0", session_id="s0", user_id="u")
    d = diff(broken, good)
    assert not d.comparable and d.changes == []
    assert d.problem == "session s0 cannot be read: not JSON: Expecting value"
    newer = read_state({"_v": 7, "user_id": "u"}, label="live state", user_id="u")
    d = diff(good, newer)
    assert not d.comparable and "_v=7" in d.problem
    assert d.as_dict()["after"]["readable"] is False


def test_status_kinds_started_completed_regressed() -> None:
    def snap(statuses):
        wp = {w: {"workflow_id": w, "status": s} for w, s in statuses.items()}
        return snap_side({"session_id": "s", "user_id": "u", "session_number": 1, "workflow_progress": wp})

    d = diff(
        snap({"a": "not_started", "b": "in_progress", "c": "completed"}),
        snap({"a": "in_progress", "b": "completed", "c": "in_progress", "d": "not_started"}),
    )
    status = {c.path[1]: c.kind for c in d.changes if c.path[-1] == "status"}
    assert status == {"a": "started", "b": "completed", "c": "regressed", "d": "added"}


def test_the_diff_module_imports_no_django() -> None:
    code = "import sys, autoplay_storage.diff; print(any(m.startswith('django') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- generated pairs ----------------------------------------------------------------

ids = st.sampled_from(["create_project", "invite_team", "build_report", "a.b", "x y"])
statuses = st.sampled_from(["not_started", "in_progress", "completed", "bogus"])
units = st.floats(min_value=-1, max_value=2, allow_nan=False)
steps = st.dictionaries(
    ids, st.fixed_dictionaries({"status": statuses, "confidence": units, "evidence": st.text(max_size=5)}), max_size=3
)
workflows = st.dictionaries(
    ids,
    st.fixed_dictionaries({"status": statuses, "confidence": units, "evidence": st.text(max_size=5), "steps": steps}),
    max_size=4,
)
mastery = st.fixed_dictionaries(
    {
        "rating": st.integers(-3, 14),
        "level": st.sampled_from(["novice", "beginner", "power_user", "??"]),
        "description": st.text(max_size=5),
    }
)
features = st.lists(st.sampled_from(["projects", "invites", "boards", " ", "reports"]), max_size=5)


@st.composite
def snapshots(draw) -> dict:
    return {
        "session_id": "s",
        "user_id": "u",
        "session_number": draw(st.integers(1, 9)),
        "captured_at": 100.0,
        "journey_state": draw(st.sampled_from(["onboarding", "onboarded", "lost"])),
        "mastery": draw(mastery),
        "discovered_features": draw(features),
        "reached_onboarding_complete": draw(st.booleans()),
        "completion_rate": draw(units),
        "workflow_progress": draw(workflows),
    }


@st.composite
def states(draw) -> dict:
    return {
        "_v": 1,
        "user_id": "u",
        "journey_state": draw(st.sampled_from(["onboarding", "onboarded"])),
        "mastery": draw(mastery),
        "discovered_features": draw(features),
        "onboarding": {
            "workflow_progress": draw(workflows),
            "summary": draw(st.none() | st.text(max_size=8)),
            "completion_rate": draw(units),
            "onboarding_completed_at": draw(st.none() | st.just(5.0)),
        },
    }


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_a_snapshot_against_itself_is_empty(doc) -> None:
    side = snap_side(doc)
    assert diff(side, side).changes == []


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), snapshots(), st.none() | st.text(max_size=6), st.none() | st.text(max_size=6))
def test_applying_the_after_values_reproduces_the_later_snapshot(a, b, sa, sb) -> None:
    before = snap_side(a, summary=sa, known_summary=True)
    after = snap_side(b, summary=sb, known_summary=True)
    d = diff(before, after)
    assert apply_changes(before.values, d.changes) == after.values
    assert all(c.before != c.after for c in d.changes)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), states())
def test_applying_the_after_values_reproduces_the_live_state(a, state) -> None:
    before = snap_side(a, summary="kept", known_summary=True)
    after = read_state(state, label="live", user_id="u")
    d = diff(before, after)
    expected = compared_fields(
        UserAdoptionState.from_dict(state), summary=state["onboarding"]["summary"], known_summary=True
    )
    assert apply_changes(before.values, d.changes) == expected
    assert diff(after, after).changes == []
