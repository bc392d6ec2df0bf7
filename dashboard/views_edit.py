"""Editing a user's state by hand (leads and admins): the API's PATCH operations, with the page's etag.

The form carries the etag the page was read at. If the agent wrote in
between, nothing is written and the form comes back with the current values
and a table of what the editor asked for against what is stored now, to
re-apply. Every edit is recorded in the audit log with its before and after.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from autoplay_storage import selectors
from autoplay_storage.audit import Action, arecord_request
from autoplay_storage.errors import ConflictError, CorruptDocumentError, UnsupportedVersionError
from autoplay_storage.services import StateNotFoundError, VersionedState
from autoplay_storage.state_ops import path_label, value_at
from autoplay_storage.support.edits import edit_state
from autoplay_storage.user_adoption_state import JourneyState, MasteryLevel, UserAdoptionState, WorkflowStatus

from . import edit_form
from .roles import EDIT_STATE
from .views import console_view, error_page, not_found, page


def _json_kind(value: Any) -> bool:
    return not isinstance(value, str)


def _form_context(versioned: VersionedState, asked: edit_form.Asked | None = None, post: Any = None) -> dict[str, Any]:
    """The form for ``versioned``; after field errors, with what the editor typed (``post``) kept."""
    state = versioned.state
    errors = asked.errors if asked else {}
    initial = edit_form.initial_values(state)
    shown: dict[str, Any] = {**initial, **({k: post.get(k) for k in post} if post is not None else {})}

    def err(prefix: str) -> dict[str, str]:
        return {k[len(prefix) + 1 :]: v for k, v in errors.items() if k.startswith(prefix + "-")}

    def row(prefix: str) -> dict[str, Any]:
        names = ("id", "status", "confidence", "evidence", "key", "value", "remove")
        return {name: shown.get(f"{prefix}-{name}", "") for name in names}

    workflows = []
    for i, wp in enumerate(state.onboarding.workflow_progress.values()):
        steps = [
            {"i": j, "s": s, "v": row(f"st-{i}-{j}"), "err": err(f"st-{i}-{j}")}
            for j, s in enumerate(wp.steps.values())
        ]
        workflows.append(
            {"i": i, "wp": wp, "steps": steps, "v": row(f"wf-{i}"), "new": row(f"st-{i}-new"), "err": err(f"wf-{i}")}
        )
    metadata = [
        {"i": i, "key": k, "json": _json_kind(v), "v": row(f"md-{i}"), "err": err(f"md-{i}")}
        for i, (k, v) in enumerate(state.metadata.items())
    ]
    return {
        "state": state,
        "etag": versioned.etag,
        "v": {name: shown.get(name, "") for name in edit_form.TOP_FIELDS},
        "removing": post.getlist("feature_remove") if post is not None else [],
        "workflows": workflows,
        "metadata_rows": metadata,
        "new_workflow": row("wf-new"),
        "new_metadata": [{"n": n, **row(f"md-new-{n}")} for n in range(edit_form.NEW_METADATA_ROWS)],
        "journeys": [j.value for j in JourneyState],
        "levels": [m.value for m in MasteryLevel],
        "statuses": [s.value for s in WorkflowStatus],
        "errors": errors,
        "initial": json.dumps(initial, ensure_ascii=False),
        "new_errors": err("wf-new"),
    }


def _conflict_rows(asked: edit_form.Asked, current: UserAdoptionState) -> list[dict[str, Any]]:
    """What the editor asked for that differs from what is stored now."""
    wanted = UserAdoptionState.from_dict(current.to_dict(), user_id=current.user_id)
    rows = []
    for change in edit_form.changes(asked, current):
        change.edit(wanted)
        for path in filter(asked.changed_by_editor, change.paths):
            rows.append({"field": path_label(path), "yours": value_at(wanted, path), "now": value_at(current, path)})
    return rows


async def _read(request: HttpRequest, product_id: str, user_id: str) -> VersionedState | HttpResponse:
    try:
        return await selectors.get_state(product_id, user_id)
    except StateNotFoundError:
        return not_found(request, product_id, user_id)
    except (CorruptDocumentError, UnsupportedVersionError) as exc:
        return error_page(
            request,
            409,
            "This state cannot be edited",
            f"The stored state cannot be read ({exc}). An admin can rebuild it from its snapshots on the user page.",
            product_id=product_id,
            user_id=user_id,
        )


@require_http_methods(["GET", "HEAD", "POST"])
@console_view(EDIT_STATE)
async def edit_state_view(request: HttpRequest, product_id: str, user_id: str) -> HttpResponse:
    versioned = await _read(request, product_id, user_id)
    if isinstance(versioned, HttpResponse):
        return versioned
    base = {"product_id": product_id, "user_id": user_id}
    if request.method != "POST":
        return page(request, "dashboard/support/edit.html", {**base, **_form_context(versioned)})
    asked = edit_form.parse(request.POST)
    if asked.errors:
        context = {**base, **_form_context(versioned, asked, request.POST), "invalid": True}
        return page(request, "dashboard/support/edit.html", context, status=400)
    if asked.etag != versioned.etag:
        return _conflict(request, base, asked, versioned)
    changes = edit_form.changes(asked, versioned.state)
    if not changes:
        messages.info(request, "Nothing was changed: the form holds the stored values.")
        return redirect(reverse("dashboard:user", args=[product_id, user_id]))
    try:
        outcome = await edit_state(product_id, user_id, changes, if_match=asked.etag, actor=request.user)
    except ConflictError:  # the agent wrote between our read and the write: nothing was written
        return _conflict(request, base, asked, await selectors.get_state(product_id, user_id))
    await arecord_request(
        request,
        Action.STATE_EDIT,
        product_id=product_id,
        user_id=user_id,
        details={"before": outcome.before, "after": outcome.after, "etag_before": asked.etag},
    )
    fields = ", ".join(path_label(p) for c in changes for p in c.paths)
    messages.success(request, f"State updated by hand: {fields}.")
    return redirect(reverse("dashboard:user", args=[product_id, user_id]) + "#staff-edits")


def _conflict(
    request: HttpRequest, base: dict[str, Any], asked: edit_form.Asked, current: VersionedState
) -> HttpResponse:
    context = {**base, **_form_context(current), "conflict": _conflict_rows(asked, current.state)}
    return page(request, "dashboard/support/edit.html", context, status=409)
