"""Hostile documents for property tests: generated JSON values, mutations of SDK documents, and checks.

Spec section 4: stored documents may be hand-edited, truncated, or written by
another writer. The generators here make such documents (as parsed values and
as the raw text a store holds); the checks say what reading them must give.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import strategies as st

from autoplay_storage.user_adoption_state import (
    SESSIONS_INDEX_LIMIT,
    CompletionRateDenominator,
    JourneyState,
    MasteryLevel,
    WorkflowStatus,
)

JOURNEYS = {e.value for e in JourneyState}
LEVELS = {e.value for e in MasteryLevel}
STATUSES = {e.value for e in WorkflowStatus}
DENOMINATORS = {e.value for e in CompletionRateDenominator}

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)

STATE_FIELDS = [
    "_v", "user_id", "metadata", "journey_state", "mastery", "discovered_features", "onboarding",
    "first_seen_at", "last_updated_at", "last_judged_at", "sessions",
]  # fmt: skip
SNAPSHOT_FIELDS = [
    "_v", "session_id", "user_id", "session_number", "started_at", "captured_at", "duration_s",
    "journey_state", "mastery", "discovered_features", "completion_rate", "completion_rate_denominator",
    "total_catalog_workflows", "completed_workflow_ids", "untouched_workflow_ids", "workflow_progress",
]  # fmt: skip
keys = st.sampled_from(STATE_FIELDS + SNAPSHOT_FIELDS) | st.text(max_size=8)
documents = st.dictionaries(keys, json_values, max_size=12)



def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place inside a document a value can be replaced."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*prefix, k))
            out.extend(paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((*prefix, i))
            out.extend(paths(v, (*prefix, i)))
    return out


def replace_at(doc: Any, path: tuple, new: Any) -> None:
    for step in path[:-1]:
        doc = doc[step]
    doc[path[-1]] = new


def _is_finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_progress(progress: dict) -> None:
    for wp in progress.values():
        assert wp["status"] in STATUSES and 0.0 <= wp["confidence"] <= 1.0
        assert _is_finite(wp["last_evaluated_at"])
        for stamp in (wp["first_detected_at"], wp["completed_at"]):
            assert stamp is None or _is_finite(stamp)
        assert isinstance(wp["source"], str) and wp["source"]
        for step in wp["steps"].values():
            assert step["status"] in STATUSES and 0.0 <= step["confidence"] <= 1.0
            assert step["completed_at"] is None or _is_finite(step["completed_at"])
            assert _is_finite(step["last_evaluated_at"])


def _check_str_list(values: list) -> None:
    assert all(isinstance(v, str) and v.strip() for v in values)
    assert len(values) == len(set(values))


def check_state(out: dict) -> None:
    json.dumps(out, allow_nan=False)
    assert out["_v"] == 1 and isinstance(out["user_id"], str)
    assert out["journey_state"] in JOURNEYS
    assert out["mastery"]["level"] in LEVELS and 0 <= out["mastery"]["rating"] <= 10
    assert isinstance(out["mastery"]["rating"], int)
    _check_str_list(out["discovered_features"])
    assert _is_finite(out["first_seen_at"]) and _is_finite(out["last_updated_at"])
    assert out["last_judged_at"] is None or _is_finite(out["last_judged_at"])
    ob = out["onboarding"]
    assert 0.0 <= ob["completion_rate"] <= 1.0
    assert ob["proactive_support_count"] >= 0 and ob["distinct_features_seen"] >= 0
    assert _is_finite(ob["exploration_started_at"])
    for key in ("last_reasoned_at", "last_welcome_at", "onboarding_completed_at"):
        assert ob[key] is None or _is_finite(ob[key])
    assert ob["summary"] is None or isinstance(ob["summary"], str)
    assert isinstance(ob["welcomed"], bool) and isinstance(ob["explore_gate_passed"], bool)
    if ob["last_step_in"] is not None:
        assert _is_finite(ob["last_step_in"]["decided_at"])
        _check_str_list(ob["last_step_in"]["suggested_workflow_ids"])
    _check_progress(ob["workflow_progress"])
    sessions = out["sessions"]
    ids = [e["session_id"] for e in sessions["index"]]
    assert len(ids) <= SESSIONS_INDEX_LIMIT and len(ids) == len(set(ids)) and all(ids)
    assert sessions["count"] >= len(ids)
    for e in sessions["index"]:
        assert e["session_number"] >= 1 and _is_finite(e["started_at"]) and _is_finite(e["captured_at"])


def check_snapshot(out: dict) -> None:
    json.dumps(out, allow_nan=False)
    assert out["_frozen"] is True and isinstance(out["_v"], int)
    assert out["session_number"] >= 1
    assert _is_finite(out["started_at"]) and _is_finite(out["captured_at"])
    assert _is_finite(out["duration_s"]) and out["duration_s"] >= 0 and round(out["duration_s"], 2) == out["duration_s"]
    assert out["journey_state"] in JOURNEYS and out["completion_rate_denominator"] in DENOMINATORS
    assert out["mastery"]["level"] in LEVELS and 0 <= out["mastery"]["rating"] <= 10
    assert 0.0 <= out["completion_rate"] <= 1.0
    for key in ("proactive_support_count", "distinct_features_seen", "total_catalog_workflows"):
        assert out[key] >= 0
    for key in ("discovered_features", "completed_workflow_ids", "in_progress_workflow_ids", "untouched_workflow_ids"):
        _check_str_list(out[key])
    _check_progress(out["workflow_progress"])




# --- stored text: what a store may hold, written by anyone -------------------

HUGE_DIGITS = 5000  # beyond Python's 4300-digit int limit: the SDK's json.loads refuses it
lone_surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3)
hostile_values = (
    json_values
    | lone_surrogates
    | st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(10**300), "\x00", "graduated", "wizard", 2**64])
    | st.builds(lambda s: {"a": s}, lone_surrogates)
)
_HUGE = "@@huge@@"


def _text_of(doc: Any) -> str:
    """JSON text as Python's json writes it (NaN literals, ``\\ud800`` escapes), placeholders filled."""
    return json.dumps(doc).replace(f'"{_HUGE}"', "9" * HUGE_DIGITS)


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@st.composite
def stored_texts(draw: st.DrawFn, fixtures: list[dict[str, Any]]) -> str:
    """The text of a document a store might hold: a mutated SDK document, or something worse."""
    kinds = ["mutated", "mutated", "mutated", "generated", "any", "deep", "huge", "cut", "version"]
    kind = draw(st.sampled_from(kinds))
    doc = json.loads(json.dumps(draw(st.sampled_from(fixtures))))
    if kind == "generated":
        return _text_of(draw(documents))
    if kind == "any":  # not an object, most of the time
        return _text_of(draw(json_values))
    if kind == "deep":  # parseable, or deeper than any parser goes
        doc["metadata"] = _nested(draw(st.sampled_from([50, 400])))
        return draw(st.sampled_from([_text_of(doc), "[" * 100_000 + "]" * 100_000]))
    if kind == "version":
        doc["_v"] = draw(st.sampled_from([2, 0, "1", None, 1.5, True, 99]))
        return _text_of(doc)
    for _ in range(draw(st.integers(1, 4))):
        places = paths(doc)
        if not places:
            break
        replace_at(doc, draw(st.sampled_from(places)), draw(hostile_values))
    if kind == "huge":
        replace_at(doc, draw(st.sampled_from(paths(doc) or [("x",)])), _HUGE)
    text = _text_of(doc)
    if kind == "cut":
        return text[: draw(st.integers(0, max(0, len(text) - 1)))]
    return text
