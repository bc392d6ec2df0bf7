"""Insight routes: a product's users by the segment filters, and its funnel and cohort numbers (``read`` scope).

Mounted on the one ``NinjaAPI`` in ``api.api``; the product in the path is
checked against the key as for every route. Numbers come from the
aggregates the primary keeps as sessions end (docs/insight.md).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from django.http import HttpRequest, HttpResponse
from ninja import Field, Query, Router

from autoplay_storage import selectors
from autoplay_storage.browse import MAX_PAGE_SIZE

from .errors import ApiError, json_response
from .ids import ProductId
from .schemas import Doc, Error

router = Router(tags=["insight"])

_ERRORS: dict[int, Any] = {400: Error, 401: Error, 403: Error, 422: Error, 501: Error, 503: Error}


class UserRow(Doc):
    user_id: str
    journey_state: str
    mastery_level: str
    mastery_rating: int
    completion_rate: float
    onboarded: bool
    sessions_count: int
    first_seen_at: float | None
    last_activity_at: float | None
    metadata: dict[str, Any]
    corrupt: bool = Field(description="the stored state could not be read")


class UserPage(Doc):
    items: list[UserRow]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class FunnelOut(Doc):
    workflow_id: str
    completed: int
    in_progress: int
    untouched: int = Field(description="users with no progress on it (never touched, or only not_started)")


class CohortOut(Doc):
    week_start: str = Field(description="the Monday (UTC) of the week the cohort was first seen")
    users: int
    onboarded: int
    onboarded_after: list[int] = Field(description="users onboarded within 1, 2, … 10 sessions (cumulative)")
    median_sessions_to_onboard: float | None


class StatsOut(Doc):
    users: int
    funnel: list[FunnelOut]
    cohorts: list[CohortOut]
    sessions_per_day: dict[str, int] = Field(description="date (UTC) → sessions ended that day")
    mastery_per_week: dict[str, dict[str, int]] = Field(description="week start → mastery level → sessions ended")


def _day(day: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


@router.get(
    "/v1/products/{product_id}/users",
    response={200: UserPage, **_ERRORS},
    operation_id="users_list",
    summary="A product's users by filter or saved segment",
)
async def users_list(
    request: HttpRequest,
    product_id: ProductId,
    segment: Annotated[
        str | None, Query(max_length=32, description="a saved segment's id (its link's last part)")
    ] = None,
    journey: Annotated[str | None, Query(max_length=32, description="onboarding or onboarded")] = None,
    mastery: Annotated[str | None, Query(max_length=200, description="levels, comma-separated")] = None,
    onboarded: Annotated[str | None, Query(max_length=5, description="yes or no")] = None,
    workflow: Annotated[str | None, Query(max_length=128, description="a workflow id")] = None,
    status: Annotated[
        str | None, Query(max_length=16, description="in_progress (default), completed, untouched")
    ] = None,
    active_after: Annotated[str | None, Query(max_length=32, description="unix seconds or a date")] = None,
    active_before: Annotated[str | None, Query(max_length=32)] = None,
    first_seen_after: Annotated[str | None, Query(max_length=32)] = None,
    first_seen_before: Annotated[str | None, Query(max_length=32)] = None,
    sessions_min: Annotated[str | None, Query(max_length=10)] = None,
    sessions_max: Annotated[str | None, Query(max_length=10)] = None,
    meta_key: Annotated[str | None, Query(max_length=64, description="a metadata key ...")] = None,
    meta_value: Annotated[str | None, Query(max_length=100, description="... equal to this value")] = None,
    order: Annotated[str | None, Query(max_length=16, description="-last_activity (default) or last_activity")] = None,
    cursor: Annotated[str | None, Query(max_length=1024, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> HttpResponse:
    """The same filters and segments as the console's lists, newest activity first, in cursor pages."""
    params = {k: v for k, v in locals().items() if k in selectors.FILTER_PARAMS and isinstance(v, str) and v}
    if segment:
        saved = await selectors.segment(product_id, segment)
        if saved is None:
            raise ApiError(404, "segment_not_found", f"product {product_id!r} has no segment {segment!r}")
        params = {**saved.params, **({"order": order} if order else {})}
    f, problems = selectors.parse_filter(params)
    if problems:
        raise ApiError(400, "invalid_filter", " ".join(problems), details={"problems": problems})
    try:
        page = await selectors.list_filtered_users(product_id, f, cursor=cursor or None, limit=limit)
    except ValueError as exc:
        raise ApiError(400, "invalid_cursor", "cursor is not a next_cursor this API returned") from exc
    items = [
        {
            "user_id": u.user_id,
            "journey_state": u.journey_state,
            "mastery_level": u.mastery_level,
            "mastery_rating": u.mastery_rating,
            "completion_rate": u.completion_rate,
            "onboarded": u.onboarded,
            "sessions_count": u.sessions_count,
            "first_seen_at": u.first_seen_at,
            "last_activity_at": u.last_activity_at,
            "metadata": u.metadata,
            "corrupt": u.corrupt,
        }
        for u in page.items
    ]
    return json_response({"items": items, "next_cursor": page.next_cursor})


@router.get(
    "/v1/products/{product_id}/stats",
    response={200: StatsOut, **_ERRORS},
    operation_id="product_stats",
    summary="The workflow funnel, onboarding cohorts and session charts of a product",
)
async def product_stats(request: HttpRequest, product_id: ProductId) -> HttpResponse:
    """From the aggregates kept as sessions end: no scan of the users per call."""
    stats = await selectors.product_stats(product_id)
    return json_response(
        {
            "users": stats.users,
            "funnel": [
                {
                    "workflow_id": r.workflow_id,
                    "completed": r.completed,
                    "in_progress": r.in_progress,
                    "untouched": r.untouched,
                }
                for r in stats.funnel
            ],
            "cohorts": [
                {
                    "week_start": _day(c.week * 7 - 3),
                    "users": c.users,
                    "onboarded": c.onboarded,
                    "onboarded_after": list(c.onboarded_after),
                    "median_sessions_to_onboard": c.median_sessions,
                }
                for c in stats.cohorts
            ],
            "sessions_per_day": {_day(d): n for d, n in stats.sessions_per_day.items()},
            "mastery_per_week": {_day(w * 7 - 3): levels for w, levels in stats.mastery_per_week.items()},
        }
    )
