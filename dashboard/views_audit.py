"""The audit page: who looked at or changed what, filtered, paged by id, downloadable as CSV.

Admins only (``autoplay_storage.view_auditentry``, which the support and
lead roles do not hold). Pages are keyset on the entry id (``cursor``: show
entries older than this id), so a page is as cheap deep in the log as at
its top and an entry written meanwhile never shifts one page into the next.
The CSV streams the whole filtered log, fetched in chunks, without holding
it in memory.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.views.decorators.http import require_safe

from autoplay_storage.audit import Action, AuditFilter, aexport, apage, arecord_request

from .roles import VIEW_AUDIT
from .views import console_view, page

PAGE_SIZE = 100
ACTION_SHAPE = re.compile(r"[a-z_]+(\.[a-z_]+)+")
LIMITS = {"actor": 255, "action": 64, "product": 128, "user": 128}
CSV_COLUMNS = ["id", "at", "actor_kind", "actor", "action", "product_id", "user_id", "session_id",
               "client_address", "details"]
KNOWN_ACTIONS = sorted(v for k, v in vars(Action).items() if k.isupper() and isinstance(v, str))


def _moment(text: str, name: str, problems: list[str], *, end: bool) -> datetime | None:
    """An ISO date or date-time (UTC unless it says otherwise); a bare date ``until`` includes that day."""
    if not text:
        return None
    try:
        day = parse_date(text)  # first: Python reads a bare date as a date-time at midnight too
        moment = None if day else parse_datetime(text)
    except ValueError:
        moment = day = None
    if day is not None:
        moment = datetime.combine(day, time.min, tzinfo=UTC)
        if end:
            moment += timedelta(days=1)
    if moment is None:
        problems.append(f"{name} {text!r} is not a date or date-time: use e.g. 2026-12-01 or 2026-12-01T09:30.")
        return None
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)


def parse_filter(params: QueryDict) -> tuple[AuditFilter, int | None, list[str]]:
    """The filter and cursor from the query string, and what was wrong with them (answered with 400)."""
    problems: list[str] = []
    values = {name: params.get(name, "").strip() for name in LIMITS}
    for name, limit in LIMITS.items():
        if len(values[name]) > limit:
            problems.append(f"The {name} filter is longer than {limit} characters.")
            values[name] = ""
    if values["action"] and not ACTION_SHAPE.fullmatch(values["action"]):
        problems.append(f"Unknown action {values['action']!r}: actions look like user.view (see the list).")
        values["action"] = ""
    since = _moment(params.get("since", "").strip(), "since", problems, end=False)
    until = _moment(params.get("until", "").strip(), "until", problems, end=True)
    if since and until and since >= until:
        problems.append("since must be before until.")
    cursor_text = params.get("cursor", "").strip()
    cursor = None
    if cursor_text:
        if cursor_text.isdigit() and 0 < int(cursor_text) < 2**63:
            cursor = int(cursor_text)
        else:
            problems.append(f"This page link is not valid (cursor {cursor_text!r}); start again from the first page.")
    where = AuditFilter(
        actor=values["actor"], action=values["action"], product_id=values["product"], user_id=values["user"],
        since=since, until=until,
    )
    return where, cursor, problems


def _filter_details(params: QueryDict) -> dict[str, str]:
    return {k: params[k] for k in (*LIMITS, "since", "until") if params.get(k)}


class _Line:
    """A write-through buffer: ``csv.writer`` writes one row, we hand it on."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> str:
    # A cell starting with = + - @ is a formula to a spreadsheet: quote it as text.
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


async def _csv_rows(where: AuditFilter) -> AsyncIterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(CSV_COLUMNS)
    async for entry in aexport(where):
        yield writer.writerow([
            entry.id, entry.at.isoformat(), entry.actor_kind, _cell(entry.actor), entry.action,
            _cell(entry.product_id), _cell(entry.user_id), _cell(entry.session_id), entry.client_address or "",
            _cell(json.dumps(entry.details, ensure_ascii=False, sort_keys=True)),
        ])


@require_safe
@console_view(VIEW_AUDIT)
async def audit_log(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    where, cursor, problems = parse_filter(request.GET)
    wants_csv = request.GET.get("format", "") == "csv"
    if request.GET.get("format", "") not in ("", "csv", "html"):
        problems.append(f"Unknown format {request.GET['format']!r}: use csv, or leave it out for the page.")
    if wants_csv and not problems:
        await arecord_request(request, Action.AUDIT_EXPORT, details={"filter": _filter_details(request.GET)})
        response = StreamingHttpResponse(_csv_rows(where), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="audit-{timezone.now():%Y%m%d-%H%M%S}.csv"'
        response["Cache-Control"] = "no-store, private"
        return response
    entries, next_cursor = [], None
    if not problems:
        entries, next_cursor = await apage(where, before_id=cursor, limit=PAGE_SIZE)
        await arecord_request(
            request, Action.AUDIT_VIEW, details={"filter": _filter_details(request.GET), "cursor": cursor}
        )
    kept = _filter_details(request.GET)
    return page(
        request,
        "dashboard/audit.html",
        {
            "entries": entries,
            "params": {name: request.GET.get(name, "") for name in (*LIMITS, "since", "until")},
            "problems": problems,
            "actions": KNOWN_ACTIONS,
            "next_url": f"?{urlencode({**kept, 'cursor': next_cursor})}" if next_cursor else "",
            "first_url": f"?{urlencode(kept)}" if cursor else "",
            "csv_url": f"?{urlencode({**kept, 'format': 'csv'})}",
        },
        status=400 if problems else 200,
    )
