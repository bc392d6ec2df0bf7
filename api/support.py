"""Support routes of the agents' API: what changed between sessions, and summaries under review.

Mounted on the one ``NinjaAPI`` in ``api.api`` (same keys, scopes and
errors). ``GET .../diff`` needs ``read``, the summary routes ``write``. The
diff is the engine's (``autoplay_storage.diff``), the one the console shows.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Header, Query, Router
from pydantic import Field, model_validator

from autoplay_storage.audit import Action, arecord_request
from autoplay_storage.summary_runs import NoSnapshotError, SummaryFailed
from autoplay_storage.support import diffs, summaries

from .errors import ApiError, json_response
from .ids import (
    ID_MAX_LENGTH,
    SESSION_ID_PATTERN,
    USER,
    ProductId,
    SessionId,
    UserId,
)
from .schemas import Doc, Error, StateOut

router = Router()

_COMMON: dict[int, Any] = {401: Error, 403: Error, 404: Error, 409: Error, 422: Error, 503: Error}
_ETAG_RE = re.compile(r'^(?:W/)?"?([0-9a-f]{32})"?$')


# --- schemas -----------------------------------------------------------------------


class DiffSideOut(Doc):
    label: str
    kind: Literal["session", "state"]
    session_id: str | None
    session_number: int | None
    readable: bool
    reason: str | None = Field(description="why this side cannot be read (then there are no changes)")


class ChangeOut(Doc):
    area: Literal["journey", "mastery", "onboarding", "workflow", "step", "feature", "summary"]
    kind: str = Field(
        description="started, completed, regressed, added, removed, discovered, increased, decreased or changed"
    )
    field: str = Field(description="the field that changed (status, confidence, evidence, rating, text ...)")
    workflow_id: str | None = None
    step_id: str | None = None
    feature: str | None = None
    before: Any = Field(description="the earlier value; null: absent")
    after: Any = Field(description="the later value; null: absent")


class DiffOut(Doc):
    before: DiffSideOut = Field(description="the earlier side")
    after: DiffSideOut = Field(description="the later side")
    comparable: bool = Field(description="false when a side cannot be read: then changes is empty")
    problem: str | None = Field(description="why the two sides cannot be compared")
    changes: list[ChangeOut]


class PreviewIn(Doc):
    session_id: Annotated[str, Field(pattern=SESSION_ID_PATTERN, max_length=ID_MAX_LENGTH)] | None = Field(
        None, description="the snapshot to summarize; the latest when left out"
    )


class PreviewOut(Doc):
    run_id: int = Field(description="accept it with PUT .../summary {preview_id: run_id}")
    session_id: str
    summarizer: str
    current: str | None = Field(description="the stored summary now")
    new: str = Field(description="the summarizer's text, not stored")
    etag: str = Field(description="the state's version the preview was made at; send it as If-Match to accept")


class SummaryPutIn(Doc):
    """Exactly one of: a text, an accepted preview, or an earlier version to restore."""

    text: Annotated[str, Field(min_length=1, max_length=summaries.MAX_SUMMARY_CHARS)] | None = None
    preview_id: int | None = Field(None, ge=1, description="a run_id from POST .../summary/preview")
    restore_id: int | None = Field(None, ge=1, description="the run id of an earlier version (GET its history)")

    @model_validator(mode="after")
    def _one(self) -> SummaryPutIn:
        if sum(x is not None for x in (self.text, self.preview_id, self.restore_id)) != 1:
            raise ValueError("send exactly one of 'text', 'preview_id' or 'restore_id'")
        return self


class SummaryVersionOut(Doc):
    run_id: int
    source: str
    session_id: str
    restored_from: int | None


class SummaryPutOut(StateOut):
    version: SummaryVersionOut


# --- routes ------------------------------------------------------------------------


@router.get(
    USER + "/sessions/{session_id}/diff",
    response={200: DiffOut, **_COMMON, 400: Error},
    by_alias=True,
    operation_id="session_diff",
    tags=["history"],
    summary="What changed in a session: against the previous one, another session, or the live state",
)
async def session_diff(
    request: HttpRequest,
    product_id: ProductId,
    user_id: UserId,
    session_id: SessionId,
    against: Annotated[
        str,
        Query(
            pattern=SESSION_ID_PATTERN,
            max_length=ID_MAX_LENGTH,
            description="`previous` (default), `state`, or another session's id",
        ),
    ] = diffs.PREVIOUS,
) -> HttpResponse:
    """Workflows and steps started, completed or regressed, confidence and status changes, mastery and
    journey changes, features discovered, and the summary (when both sides' summaries are known).

    Works on snapshots the published SDK wrote. A side that cannot be read
    gives `comparable: false` and says why in `problem`. For the first
    session, `previous` answers 404 `no_previous_session`.
    """
    try:
        result = await diffs.session_diff(product_id, user_id, session_id, against)
    except diffs.SessionMissing as exc:
        raise ApiError(404, "session_not_found", str(exc)) from exc
    if result is None:
        raise ApiError(404, "no_previous_session", f"session {session_id!r} is the user's first")
    return json_response(result.as_dict())


def _actor_label(request: HttpRequest) -> str:
    key = getattr(request, "auth", None)
    return f"API key {getattr(key, 'name', '')}".strip()


@router.post(
    USER + "/summary/preview",
    response={200: PreviewOut, **_COMMON, 400: Error, 502: Error},
    by_alias=True,
    operation_id="summary_preview",
    tags=["state"],
    summary="Run the summarizer and show its text, without storing it",
)
async def summary_preview(
    request: HttpRequest, product_id: ProductId, user_id: UserId, payload: PreviewIn | None = None
) -> HttpResponse:
    """The run is recorded (who, when, on what, outcome); the stored summary does not change.
    A summarizer that fails or times out answers 502 `summarizer_failed`."""
    session_id = payload.session_id if payload is not None else None
    try:
        preview = await summaries.preview_summary(product_id, user_id, session_id, actor=_actor_label(request))
    except NoSnapshotError as exc:
        raise ApiError(404, "session_not_found", str(exc)) from exc
    except SummaryFailed as exc:
        raise ApiError(502, "summarizer_failed", str(exc), details={"run_id": exc.run.pk}) from exc
    await arecord_request(
        request,
        Action.SUMMARY_RERUN,
        product_id=product_id,
        user_id=user_id,
        session_id=preview.run.session_id,
        details={"run_id": preview.run.pk},
    )
    return json_response(
        {
            "run_id": preview.run.pk,
            "session_id": preview.run.session_id,
            "summarizer": preview.run.summarizer,
            "current": preview.current,
            "new": preview.new,
            "etag": preview.etag,
        }
    )


@router.put(
    USER + "/summary",
    response={200: SummaryPutOut, **_COMMON, 400: Error, 428: Error},
    by_alias=True,
    operation_id="summary_put",
    tags=["state"],
    summary="Store a summary: a text, an accepted preview, or an earlier version (If-Match required)",
)
async def summary_put(
    request: HttpRequest,
    product_id: ProductId,
    user_id: UserId,
    payload: SummaryPutIn,
    if_match: Annotated[str | None, Header(alias="If-Match", description="the etag you read", max_length=200)] = None,
) -> HttpResponse:
    """A stale etag gets 409 `state_conflict` and nothing is stored. The new version is recorded in
    the user's summary history with where it came from."""
    if if_match is None:
        raise ApiError(428, "precondition_required", 'send If-Match: "<etag>" (from your last read or the preview)')
    match = _ETAG_RE.match(if_match.strip())
    if not match:
        raise ApiError(400, "invalid_precondition", "If-Match must be one etag as returned by this API")
    try:
        versioned, run = await summaries.write_summary(
            product_id,
            user_id,
            if_match=match.group(1),
            actor=_actor_label(request),
            text=payload.text,
            preview_id=payload.preview_id,
            restore_id=payload.restore_id,
        )
    except summaries.SummaryReviewError as exc:
        raise ApiError(
            422, "invalid_summary", str(exc), details=[{"field": "body", "in": "body", "message": str(exc)}]
        ) from exc
    await arecord_request(
        request,
        Action.SUMMARY_WRITE,
        product_id=product_id,
        user_id=user_id,
        details={"run_id": run.pk, "source": run.source, "before": run.previous_summary, "after": run.new_summary},
    )
    version = {
        "run_id": run.pk,
        "source": run.source,
        "session_id": run.session_id,
        "restored_from": run.restored_from_id,
    }
    body = {"state": versioned.state.to_dict(), "etag": versioned.etag, "version": version}
    return json_response(body, headers={"ETag": f'"{versioned.etag}"'})
