"""What the user and snapshot pages show of the support tooling (kept apart from ``views`` for merging)."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest

from autoplay_storage.diff import Change, Diff
from autoplay_storage.services import state_etag
from autoplay_storage.state_ops import path_label
from autoplay_storage.support import diffs, rebuild, summaries
from autoplay_storage.support.edits import staff_marks
from autoplay_storage.user_adoption_state import UserAdoptionState

from .roles import EDIT_STATE, REBUILD_STATE, RERUN_SUMMARY

AREA_TITLES = {
    "journey": "Journey",
    "mastery": "Mastery",
    "onboarding": "Onboarding",
    "workflow": "Workflows",
    "step": "Steps",
    "feature": "Features",
    "summary": "Summary",
}


def _label(change: Change) -> str:
    path = change.path
    if path[0] == "feature":
        return path[1]
    if path[0] == "summary":
        return "summary text"
    if path[0] == "onboarding":
        return {"complete": "onboarding complete", "completion_rate": "completion rate"}[path[1]]
    return path_label(path)


def diff_context(result: Diff | None) -> dict[str, Any]:
    """The template's view of a diff: grouped by area, each change labelled."""
    if result is None:
        return {"diff": None}
    groups = [
        {"title": AREA_TITLES.get(area, area), "area": area, "rows": [{"c": c, "label": _label(c)} for c in rows]}
        for area, rows in result.by_area().items()
    ]
    return {"diff": result, "groups": groups}


async def session_changes(product_id: str, user_id: str, session_id: str) -> dict[str, Any]:
    """For the snapshot page: "changes in this session", against the one before it."""
    try:
        result = await diffs.session_diff(product_id, user_id, session_id, diffs.PREVIOUS)
    except diffs.SessionMissing:
        return {"diff": None}
    return diff_context(result)


async def user_support_context(
    request: HttpRequest, product_id: str, user_id: str, state: UserAdoptionState | None, doc: dict[str, Any] | None
) -> dict[str, Any]:
    """Buttons the signed-in person may use, the values staff set, the summary history, quarantined texts."""
    granted = request.permissions  # resolved once by ``console_view``
    can_rebuild = REBUILD_STATE in granted
    marks = await staff_marks(product_id, user_id, state) if state is not None else {}
    staff = [
        {"label": path_label(tuple(json.loads(key))), "value": mark.value, "by": mark.actor_name, "at": mark.at}
        for key, mark in marks.items()
    ]
    history = await summaries.summary_history(product_id, user_id, state.onboarding.summary if state else None)
    return {
        "can_edit": EDIT_STATE in granted,
        "can_write_summary": RERUN_SUMMARY in granted,
        "can_rebuild": can_rebuild,
        "staff_edits": staff,
        "summary_history": history,
        "quarantined": await rebuild.quarantined(product_id, user_id) if can_rebuild else [],
        "etag": state_etag(doc) if state is not None and doc is not None else "",
    }
