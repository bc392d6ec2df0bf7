"""The versioned onboarding-summary prompt and its input builder (spec section 7)."""

from __future__ import annotations

import json
import string

import pytest

from autoplay_storage import ONBOARDING_SUMMARY_PROMPT
from autoplay_storage.prompts import ONBOARDING_SUMMARY_PROMPT as PROMPT_FROM_MODULE
from autoplay_storage.user_adoption_state import SessionSnapshot, build_onboarding_summary_input

SPEC_KEYS = {
    "session_number",
    "duration_minutes",
    "journey_state",
    "mastery_level",
    "mastery_rating",
    "reached_onboarding_complete",
    "completion_rate",
    "completed_workflow_ids_json",
    "in_progress_workflow_ids_json",
    "untouched_workflow_ids_json",
    "discovered_features_json",
}


def placeholders(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


def test_prompt_is_versioned_and_named():
    assert PROMPT_FROM_MODULE is ONBOARDING_SUMMARY_PROMPT
    assert set(ONBOARDING_SUMMARY_PROMPT) == {"name", "description", "version", "content"}
    assert ONBOARDING_SUMMARY_PROMPT["name"] == "onboarding_summary"
    for key in ("description", "version", "content"):
        assert isinstance(ONBOARDING_SUMMARY_PROMPT[key], str) and ONBOARDING_SUMMARY_PROMPT[key].strip()


def test_placeholders_are_exactly_the_input_keys(sdk_fixtures):
    fields = placeholders(ONBOARDING_SUMMARY_PROMPT["content"])
    assert set(fields) == SPEC_KEYS
    assert all(f.isidentifier() for f in fields), "plain names only: no attribute or index lookups"
    snap = SessionSnapshot.from_dict(sdk_fixtures["snapshot__prod_1__u_123__sess_a"])
    assert set(build_onboarding_summary_input(snap)) == SPEC_KEYS


@pytest.mark.parametrize(
    "name",
    [
        "snapshot__prod_1__u_123__sess_a",
        "snapshot__prod_1__u_123__sess_b",
        "snapshot__prod_1__u_123__sess_c",
        "snapshot__prod_1__u_456__sess_z",
    ],
)
def test_input_for_each_sdk_snapshot_formats_the_prompt(sdk_fixtures, name):
    doc = sdk_fixtures[name]
    values = build_onboarding_summary_input(SessionSnapshot.from_dict(doc))
    text = ONBOARDING_SUMMARY_PROMPT["content"].format(**values)
    assert "{" not in text.replace(values["completed_workflow_ids_json"], "")  # no placeholder left
    assert values["completed_workflow_ids_json"] == json.dumps(doc["completed_workflow_ids"])
    assert values["in_progress_workflow_ids_json"] == json.dumps(doc["in_progress_workflow_ids"])
    assert values["untouched_workflow_ids_json"] == json.dumps(doc["untouched_workflow_ids"])
    assert values["discovered_features_json"] == json.dumps(doc["discovered_features"])
    for value in (
        values["completed_workflow_ids_json"],
        values["untouched_workflow_ids_json"],
        values["discovered_features_json"],
    ):
        assert value in text


def test_input_values(sdk_fixtures):
    doc = sdk_fixtures["snapshot__prod_1__u_123__sess_a"]
    assert build_onboarding_summary_input(SessionSnapshot.from_dict(doc)) == {
        "session_number": 1,
        "duration_minutes": 20.0,
        "journey_state": "onboarding",
        "mastery_level": "beginner",
        "mastery_rating": 3,
        "reached_onboarding_complete": False,
        "completion_rate": 0.25,
        "completed_workflow_ids_json": '["create_project"]',
        "in_progress_workflow_ids_json": '["invite_team"]',
        "untouched_workflow_ids_json": '["configure_columns", "build_report"]',
        "discovered_features_json": '["projects", "invites"]',
    }


@pytest.mark.parametrize(
    ("duration_s", "minutes"), [(0.0, 0.0), (29.0, 0.5), (95.0, 1.6), (3599.99, 60.0), (61.2, 1.0)]
)
def test_duration_minutes_has_one_decimal(duration_s, minutes):
    snap = SessionSnapshot.from_dict(
        {"session_id": "s", "started_at": 0.0, "captured_at": 0.0, "duration_s": duration_s}
    )
    assert build_onboarding_summary_input(snap)["duration_minutes"] == minutes


def test_json_values_quote_awkward_feature_names():
    snap = SessionSnapshot.from_dict({"session_id": "s", "discovered_features": ['say "hi"', "{braces}", "ünï"]})
    values = build_onboarding_summary_input(snap)
    assert json.loads(values["discovered_features_json"]) == ['say "hi"', "{braces}", "ünï"]
    text = ONBOARDING_SUMMARY_PROMPT["content"].format(**values)
    assert values["discovered_features_json"] in text, "braces in values are not re-interpreted"
