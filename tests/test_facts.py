"""User facts and list rows read fast from canonical documents agree with the documents' defensive rules,
on documents hand-edited anywhere (hypothesis), and the filter parameters say what is wrong."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoplay_storage.adapters.database_rows import user_summary
from autoplay_storage.demo import state_archetypes
from autoplay_storage.errors import DocumentError
from autoplay_storage.facts import UserFilter, list_row, matches, user_facts
from autoplay_storage.filter_params import parse_filter
from autoplay_storage.user_adoption_state import UserAdoptionState
from tests.support.hostile import json_values, paths, replace_at

DOCS = [json.loads(json.dumps(d)) for d in asyncio.run(state_archetypes(12, seed=5))]


def reread(doc: dict) -> dict | None:
    try:
        return UserAdoptionState.from_dict(doc, user_id=str(doc.get("user_id") or "-")).to_dict()
    except (DocumentError, TypeError, ValueError):
        return None


def test_canonical_documents_read_fast_as_the_defensive_rules_read_them() -> None:
    for doc in DOCS:
        assert user_facts(doc) == user_facts(reread(doc))
        assert list_row("p", doc["user_id"], doc) == user_summary("p", doc["user_id"], doc)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_a_hand_edited_document_is_read_by_the_documents_rules(data) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(DOCS)))
    where = data.draw(st.sampled_from(paths(doc)))
    replace_at(doc, where, data.draw(json_values))
    fixed = reread(doc)
    facts = user_facts(doc)
    assert facts == user_facts(json.loads(json.dumps(doc)))  # a pure function of the document: a recount agrees
    if fixed is None:
        assert facts is None
    else:  # the reader's rules, but for "now" where a time is missing (facts say 0: see above)
        expected = user_facts(fixed)
        assert facts._replace(first_seen_at=0, last_activity_at=0, cohort_week=0) == expected._replace(
            first_seen_at=0, last_activity_at=0, cohort_week=0
        )
    row, reference = list_row("p", "u", doc), user_summary("p", "u", doc)
    if row != reference:  # only where both read a missing time as "now" (a moment apart)
        assert abs(row.first_seen_at - reference.first_seen_at) < 5
        assert abs(row.last_activity_at - reference.last_activity_at) < 5
        assert dataclasses.replace(row, first_seen_at=0, last_activity_at=0) == dataclasses.replace(
            reference, first_seen_at=0, last_activity_at=0
        )


def test_filters_from_the_query_string() -> None:
    f, problems = parse_filter({"mastery": "novice,beginner", "workflow": "w", "sessions_min": "2",
                                "active_after": "2026-11-30", "meta_key": "plan", "meta_value": "team"})  # fmt: skip
    assert not problems
    assert f.mastery_levels == ("novice", "beginner") and f.workflow_status == "in_progress"
    assert f.active_after == 1795996800.0 and f.sessions_min == 2  # 2026-11-30T00:00Z
    assert parse_filter(f.to_params())[0] == f
    for params, says in [
        ({"journey": "lost"}, "Unknown journey state"),
        ({"status": "untouched"}, "needs the workflow"),
        ({"sessions_max": "many"}, "whole number"),
        ({"first_seen_before": "nan"}, "finite"),
        ({"meta_value": "x"}, "needs the key"),
        ({"order": "name"}, "Unknown sort"),
    ]:
        assert any(says in p for p in parse_filter(params)[1]), params
    assert matches(user_facts(DOCS[0]), UserFilter())
    assert not matches(None, UserFilter())
