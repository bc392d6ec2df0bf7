"""Console insight views: the product page, segments, the stuck queue, and CSV downloads of any users list.

Numbers come from the aggregates the primary keeps as sessions end
(``selectors.product_stats``), never from a scan per page view. Every view
takes a product and answers 404 for a product the signed-in person may not
see. A list's CSV is the list's own URL with ``format=csv``: streamed a page
at a time (flat memory), recorded in the audit log.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_POST, require_safe

from autoplay_storage import selectors, services
from autoplay_storage.audit import Action, arecord_request
from autoplay_storage.browse import Page, UserSummary
from autoplay_storage.selectors import DAY_S, StuckUser, parse_filter
from autoplay_storage.user_adoption_state import JourneyState, MasteryLevel

from .charts_insight import mastery_per_week_chart, sessions_per_day_chart
from .views import console_view, error_page, page

PAGE_SIZE = 50
COHORT_WEEKS = 26
CHART_WEEKS = 26
STUCK_DAYS_MAX = 3650
USER_COLUMNS = [
    "user_id", "email", "role", "journey_state", "mastery_level", "mastery_rating", "onboarded",
    "sessions_count", "completion_rate", "first_seen_at", "last_activity_at",
]  # fmt: skip
STUCK_COLUMNS = ["workflow_id", "last_progress_at", "stuck_days", "evidence"]


def filter_params(request: HttpRequest) -> dict[str, str]:
    """The query string as ``parse_filter`` reads it (several ``mastery`` boxes become one comma list)."""
    params = {k: v for k, v in request.GET.items() if k not in ("mastery", "cursor", "format", "segment")}
    levels = [m for value in request.GET.getlist("mastery") for m in value.split(",") if m]
    if levels:
        params["mastery"] = ",".join(levels)
    return params


# -- the product page ---------------------------------------------------------------


@require_safe
@console_view()
async def product_insight(request: HttpRequest, product_id: str) -> HttpResponseBase:
    stats = await selectors.product_stats(product_id)
    saved = await selectors.segments(product_id)
    counts = [await selectors.count_users(product_id, parse_filter(s.params)[0]) for s in saved]
    today = int(time.time() // DAY_S)
    this_week = (today + 3) // 7
    weeks = list(range(this_week - CHART_WEEKS + 1, this_week + 1))
    users_url = reverse("dashboard:insight_users", args=[product_id])
    funnel = []
    for row in stats.funnel:
        links = {s: f"{users_url}?{urlencode({'workflow': row.workflow_id, 'status': s})}"
                 for s in ("completed", "in_progress", "untouched")}  # fmt: skip
        funnel.append({"row": row, "links": links})
    return page(
        request,
        "dashboard/insight.html",
        {
            "product_id": product_id,
            "stats": stats,
            "funnel": funnel,
            "cohorts": [
                {"row": c, "start": _week_start(c.week), "shares": [n / c.users for n in c.onboarded_after]}
                for c in stats.cohorts[-COHORT_WEEKS:]
            ],
            "sessions_chart": sessions_per_day_chart(stats.sessions_per_day, today),
            "mastery_chart": mastery_per_week_chart(stats.mastery_per_week, weeks),
            "segments": [
                {"segment": s, "count": n, "url": reverse("dashboard:segment", args=[product_id, s.slug])}
                for s, n in zip(saved, counts, strict=True)
            ],
            "stuck_days": await selectors.stuck_after_days(product_id),
        },
    )


def _week_start(week: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=week * 7 - 3)


# -- users lists: a filter, a segment --------------------------------------------------


async def _users_list(
    request: HttpRequest, product_id: str, params: dict[str, str], *, segment: Any = None
) -> HttpResponseBase:
    f, problems = parse_filter(params)
    if request.GET.get("format") == "csv":
        if problems:
            return HttpResponse("\n".join(problems), status=400, content_type="text/plain; charset=utf-8")

        def fetch(cursor: str | None) -> Awaitable[Page[UserSummary]]:
            return selectors.export_filtered_users(product_id, f, cursor=cursor)

        details = {"list": "segment" if segment else "users", "filter": f.to_params()}
        if segment is not None:
            details["segment"] = segment.slug
        return await csv_download(request, product_id, "users", fetch, user_cells, USER_COLUMNS, details)
    cursor = request.GET.get("cursor") or None
    items: list[UserSummary] = []
    next_cursor, total = None, None
    if not problems:
        try:
            result = await selectors.list_filtered_users(product_id, f, cursor=cursor, limit=PAGE_SIZE)
        except ValueError as exc:
            problems.append(f"This page link is not valid ({exc}); start again from the first page.")
        else:
            items, next_cursor = result.items, result.next_cursor
            total = await selectors.count_users(product_id, f)
    query = f.to_params()
    return page(
        request,
        "dashboard/insight_users.html",
        {
            "product_id": product_id,
            "users": items,
            "total": total,
            "next_cursor": next_cursor,
            "cursor": cursor,
            "problems": problems,
            "params": {**params, "mastery": list(f.mastery_levels)},
            "query_pairs": sorted(query.items()),
            "csv_url": "?" + urlencode({**query, "format": "csv"}),
            "segment": segment,
            "filtered": not f.empty,
            "journeys": [j.value for j in JourneyState],
            "levels": [m.value for m in MasteryLevel],
        },
        status=400 if problems else 200,
    )


@require_safe
@console_view()
async def insight_users(request: HttpRequest, product_id: str) -> HttpResponseBase:
    return await _users_list(request, product_id, filter_params(request))


@require_safe
@console_view()
async def segment_view(request: HttpRequest, product_id: str, slug: str) -> HttpResponseBase:
    """A saved segment as a users list: its shareable link."""
    segment = await selectors.segment(product_id, slug)
    if segment is None:
        return error_page(request, 404, "No such segment", f"There is no segment {slug!r} in {product_id!r}.")
    params = dict(segment.params)
    if request.GET.get("order"):
        params["order"] = request.GET["order"]
    return await _users_list(request, product_id, params, segment=segment)


@require_POST
@console_view()
async def segment_create(request: HttpRequest, product_id: str) -> HttpResponseBase:
    params = {k: v for k, v in request.POST.items() if k in selectors.FILTER_PARAMS and v}
    levels = [m for value in request.POST.getlist("mastery") for m in value.split(",") if m]
    if levels:
        params["mastery"] = ",".join(levels)
    f, problems = parse_filter(params)
    back = reverse("dashboard:insight_users", args=[product_id]) + "?" + urlencode(f.to_params())
    if problems:
        for problem in problems:
            messages.error(request, problem)
        return redirect(back)
    try:
        segment = await services.create_segment(
            product_id, request.POST.get("name", ""), f.to_params(), actor=request.user
        )
    except ValueError as exc:
        messages.error(request, str(exc))
        return redirect(back)
    messages.success(request, f"Segment “{segment.name}” saved; share this page's link.")
    return redirect(reverse("dashboard:segment", args=[product_id, segment.slug]))


# -- the stuck queue ----------------------------------------------------------------------


@require_safe
@console_view()
async def stuck_queue(request: HttpRequest, product_id: str) -> HttpResponseBase:
    days = await selectors.stuck_after_days(product_id)
    problems = []
    raw_days = request.GET.get("days", "")
    if raw_days:
        if raw_days.isdigit() and 0 < int(raw_days) <= STUCK_DAYS_MAX:
            days = int(raw_days)
        else:
            problems.append(f"days must be a whole number from 1 to {STUCK_DAYS_MAX}, not {raw_days!r}.")
    now = time.time()
    if request.GET.get("format") == "csv":
        if problems:
            return HttpResponse("\n".join(problems), status=400, content_type="text/plain; charset=utf-8")

        def fetch(cursor: str | None) -> Awaitable[Page[StuckUser]]:
            return selectors.list_stuck(product_id, days=days, cursor=cursor, limit=selectors.EXPORT_PAGE, now=now)

        return await csv_download(
            request, product_id, "stuck", fetch, lambda r: stuck_cells(r, now), USER_COLUMNS + STUCK_COLUMNS,
            {"list": "stuck", "days": days},
        )  # fmt: skip
    cursor = request.GET.get("cursor") or None
    rows: list[StuckUser] = []
    next_cursor = None
    if not problems:
        try:
            result = await selectors.list_stuck(product_id, days=days, cursor=cursor, limit=PAGE_SIZE, now=now)
        except ValueError as exc:
            problems.append(f"This page link is not valid ({exc}); start again from the first page.")
        else:
            rows, next_cursor = result.items, result.next_cursor
    return page(
        request,
        "dashboard/stuck.html",
        {
            "product_id": product_id,
            "rows": [{"r": r, "days": (now - r.last_progress_at) / DAY_S} for r in rows],
            "days": days,
            "next_cursor": next_cursor,
            "cursor": cursor,
            "problems": problems,
            "csv_url": "?" + urlencode({"days": days, "format": "csv"}),
        },
        status=400 if problems else 200,
    )


# -- CSV ------------------------------------------------------------------------------------


def _safe(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP's CSV injection advice)."""
    return "'" + value if value[:1] in _FORMULA else value


_FORMULA = frozenset("=+-@\t\r")
CHUNK = 64 * 1024  # characters of CSV written per yield: few writes, a small buffer


@functools.lru_cache(maxsize=4096)
def _iso_day(day: int) -> str:
    return (_EPOCH + dt.timedelta(days=day)).isoformat()


_EPOCH = dt.date(1970, 1, 1)
_ISO_MAX = 253402300800  # 10000-01-01: past it, datetime says what is wrong


def _iso(t: float | None) -> str:
    """``datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")``, with the date computed once per day.

    The second is the one ``fromtimestamp`` gives: it rounds to the
    microsecond (half to even) before the fraction is dropped.
    """
    if not t:
        return ""
    if not 0 < t < _ISO_MAX:
        return dt.datetime.fromtimestamp(t, tz=dt.UTC).isoformat(timespec="seconds")
    frac, whole = math.modf(t)
    day, s = divmod(int(whole) + (round(frac * 1e6) >= 1_000_000), DAY_S)
    return f"{_iso_day(day)}T{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}+00:00"


def user_cells(u: UserSummary) -> list[object]:
    email, role = u.metadata.get("email", ""), u.metadata.get("role", "")
    return [
        _safe(u.user_id), _safe(email) if isinstance(email, str) else "", _safe(role) if isinstance(role, str) else "",
        _safe(u.journey_state), _safe(u.mastery_level), u.mastery_rating, "yes" if u.onboarded else "no",
        u.sessions_count, f"{u.completion_rate:.4f}", _iso(u.first_seen_at), _iso(u.last_activity_at),
    ]  # fmt: skip


def stuck_cells(r: StuckUser, now: float) -> list[object]:
    stuck = (now - r.last_progress_at) / DAY_S
    return [*user_cells(r.user), _safe(r.workflow_id), _iso(r.last_progress_at), f"{stuck:.1f}", _safe(r.evidence)]


async def csv_download(
    request: HttpRequest,
    product_id: str,
    name: str,
    fetch: Callable[[str | None], Awaitable[Page[Any]]],
    cells: Callable[[Any], Iterable[object]],
    header: list[str],
    details: dict[str, Any],
) -> StreamingHttpResponse:
    """Stream every page of a listing as CSV, and record the download in the audit log first.

    Rows are written into one buffer and sent in chunks of about ``CHUNK``
    characters (one write per chunk, not per row); a page is held at most.
    """
    await arecord_request(request, Action.USERS_EXPORT_CSV, product_id=product_id, details=details)

    async def lines() -> AsyncIterator[bytes]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        async for items in selectors.export_pages(fetch):
            writer.writerows(map(cells, items))
            if buffer.tell() >= CHUNK:
                yield buffer.getvalue().encode("utf-8", "backslashreplace")
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue().encode("utf-8", "backslashreplace")

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in product_id)
    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{safe}-{name}.csv"'
    return response


async def users_csv(
    request: HttpRequest, product_id: str, fetch: Callable[[str | None], Awaitable[Page[Any]]], details: dict[str, Any]
) -> HttpResponseBase:
    """The plain users list (search and quick filters) as CSV, for ``views.users``."""
    return await csv_download(request, product_id, "users", fetch, user_cells, USER_COLUMNS, details)
