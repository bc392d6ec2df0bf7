"""Console views: async, server-rendered, reaching storage only through the service layer.

Every read goes through ``autoplay_storage.selectors`` and every write
through a service, never to the manager, Redis or the ORM records, so the
console shows exactly what the agents' API serves, on any primary. A
document that cannot be read is shown with its raw text; a primary that
cannot be reached is a 503 page, never a silent "not found".
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from django.contrib.auth.views import redirect_to_login
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.template.loader import render_to_string
from django.views.decorators.http import require_safe

from autoplay_storage import selectors
from autoplay_storage.access import astaff_access
from autoplay_storage.audit import Action, arecent_staff_entries, arecord_request
from autoplay_storage.audit import logger as audit_logger
from autoplay_storage.browse import Page, SessionSummary, UserQuery, UserSummary
from autoplay_storage.errors import (
    NotBrowsableError,
    StorageUnavailableError,
)
from autoplay_storage.user_adoption_state import JourneyState, MasteryLevel, WorkflowStatus

from .charts import session_chart
from .notes import document_notes
from .reasons import access_reason, reason_details
from .roles import ERASE_USER, EXPORT_USER, RERUN_SUMMARY, VIEW_AUDIT, VIEW_CONSOLE, VIEW_RECENT_ACCESS
from .support_context import session_changes, user_support_context

if TYPE_CHECKING:  # the rows selectors.summary_runs returns
    from autoplay_storage.models import SummaryRun

View = Callable[..., Awaitable[HttpResponseBase]]

USERS_PAGE_SIZE = 50
SESSIONS_PAGE_SIZE = 50
# The chart plots the newest sessions: every one costs the primary a document
# read, and past a couple of hundred points the trend reads no better.
CHART_SESSIONS = 200
SEARCH_MAX = 200
SUMMARY_RUNS_SHOWN = 25
RECENT_ACCESS_SHOWN = 10


def page(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    """Render with what the layout needs (the nav's role and permissions are resolved by ``console_view``).

    A lone surrogate (Python's json reads ``"\\ud800"`` as one) cannot be
    encoded as UTF-8; it is shown as that escape instead of failing the page.
    """
    content = render_to_string(template, {**getattr(request, "console", {}), **context}, request)
    return HttpResponse(content.encode("utf-8", "backslashreplace"), status=status)


def error_page(request: HttpRequest, status: int, title: str, message: str, **extra: Any) -> HttpResponse:
    context = {"status": status, "title": title, "message": message, **extra}
    return page(request, "dashboard/error.html", context, status)


class AllPermissions(frozenset):
    """A superuser's permissions: every one, as ``has_perm`` answers for an active superuser."""

    def __contains__(self, name: object) -> bool:
        return True


def not_found(
    request: HttpRequest, product_id: str, user_id: str | None = None, session_id: str | None = None, **_: Any
) -> HttpResponse:
    """The 404 page of a missing product, user or session, by what the URL names.

    A product the signed-in person is not granted gets this very page, so
    its existence is not revealed.
    """
    if session_id is not None and user_id is not None:
        message = f"There is no frozen snapshot {session_id!r} for user {user_id!r} in product {product_id!r}."
        return error_page(request, 404, "No such session", message, product_id=product_id, user_id=user_id)
    if user_id is not None:
        message = f"There is no user {user_id!r} in product {product_id!r}."
        return error_page(request, 404, "No such user", message, product_id=product_id)
    return error_page(request, 404, "No such product", f"There is no product {product_id!r}.")


def console_view(permission: str = VIEW_CONSOLE) -> Callable[[View], View]:
    """Sign-in, permission and product checks for async views, plus the 503 page for an unreachable primary.

    Resolves the user, permissions and granted products asynchronously up
    front: templates read ``request.user``, and a lazy lookup there would be
    a synchronous query inside the event loop. ``request.product_access``
    is what every view (and every later console feature) applies to lists
    that span products; a ``product_id`` in the URL outside it is a 404.
    """

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            user = await request.auser()
            request.user = user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            # One lookup (one cache read, usually) for the permissions, roles, products and the URL's product.
            access = await astaff_access(user, kwargs.get("product_id"))
            request.permissions = AllPermissions() if user.is_active and user.is_superuser else access.permissions
            request.product_access = access.products
            request.product_settings = access.product_settings
            request.console = {
                "can_rerun": RERUN_SUMMARY in request.permissions,
                "can_audit": VIEW_AUDIT in request.permissions,
                "can_export": EXPORT_USER in request.permissions,
                "can_erase": ERASE_USER in request.permissions,
                "roles": list(access.roles),
            }
            if VIEW_CONSOLE not in request.permissions or permission not in request.permissions:
                await arecord_request(
                    request, Action.PERMISSION_DENIED, product_id=kwargs.get("product_id", ""),
                    user_id=kwargs.get("user_id", ""), session_id=kwargs.get("session_id", ""),
                    details={"path": request.path, "method": request.method, "needs": permission},
                )
                return error_page(
                    request,
                    403,
                    "Not allowed",
                    "Your account does not have the permission for this page. Ask an admin to give you a role.",
                )
            product_id = kwargs.get("product_id")
            if product_id is not None and not request.product_access.allows(product_id):
                await arecord_request(
                    request, Action.PERMISSION_DENIED, product_id=product_id, user_id=kwargs.get("user_id", ""),
                    session_id=kwargs.get("session_id", ""),
                    details={"path": request.path, "method": request.method, "needs": "product grant"},
                )
                return not_found(request, **kwargs)
            try:
                return await view(request, *args, **kwargs)
            except (StorageUnavailableError, NotBrowsableError) as exc:
                response = error_page(
                    request,
                    503,
                    "Storage unavailable",
                    "The storage behind the console did not answer. Nothing was changed; try again in a moment.",
                    detail=str(exc),
                )
                response["Retry-After"] = "5"
                return response

        return wrapper

    return decorate


# -- products -----------------------------------------------------------------


@require_safe
@console_view()
async def products(request: HttpRequest) -> HttpResponse:
    rows = [row for row in await selectors.list_products() if request.product_access.allows(row.product_id)]
    return page(
        request,
        "dashboard/products.html",
        {
            "products": rows,
            "total_users": sum(p.user_count for p in rows),
            "journeys": [j.value for j in JourneyState],
            "levels": [m.value for m in MasteryLevel],
        },
    )


# -- users of a product -------------------------------------------------------

ORDERS = {"-last_activity": "Most recent activity first", "last_activity": "Oldest activity first"}
ONBOARDED = {"": None, "yes": True, "no": False}


def parse_user_query(params: Any) -> tuple[UserQuery, list[str]]:
    """The filters from the query string, and what was wrong with them (shown, answered with 400)."""
    problems = []
    search = params.get("q", "").strip()
    if len(search) > SEARCH_MAX:
        problems.append(f"The search is longer than {SEARCH_MAX} characters.")
        search = search[:SEARCH_MAX]
    journey = params.get("journey", "")
    if journey and journey not in JourneyState._value2member_map_:
        problems.append(f"Unknown journey state {journey!r}: use one of {', '.join(JourneyState)}.")
        journey = ""
    mastery = params.get("mastery", "")
    if mastery and mastery not in MasteryLevel._value2member_map_:
        problems.append(f"Unknown mastery level {mastery!r}: use one of {', '.join(MasteryLevel)}.")
        mastery = ""
    onboarded = params.get("onboarded", "")
    if onboarded not in ONBOARDED:
        problems.append(f"Unknown onboarding filter {onboarded!r}: use yes or no.")
        onboarded = ""
    order = params.get("order", "-last_activity")
    if order not in ORDERS:
        problems.append(f"Unknown sort {order!r}: use last_activity or -last_activity.")
        order = "-last_activity"
    query = UserQuery(
        search=search or None,
        journey_state=journey or None,
        mastery_level=mastery or None,
        onboarded=ONBOARDED[onboarded],
        order=order,  # type: ignore[arg-type]
    )
    return query, problems


@require_safe
@console_view()
async def users(request: HttpRequest, product_id: str) -> HttpResponseBase:
    query, problems = parse_user_query(request.GET)
    if request.GET.get("format") == "csv" and not problems:  # this very list, every page, as CSV
        from .views_insight import users_csv

        def fetch(cursor: str | None) -> Awaitable[Page[UserSummary]]:
            return selectors.list_users(product_id, query, cursor=cursor, limit=selectors.EXPORT_PAGE)

        details = {k: v for k, v in request.GET.items() if k in ("q", "journey", "mastery", "onboarded", "order")}
        return await users_csv(request, product_id, fetch, {"list": "users", "filter": details})
    cursor = request.GET.get("cursor") or None
    items, next_cursor = [], None
    if not problems:
        try:
            result = await selectors.list_users(product_id, query, cursor=cursor, limit=USERS_PAGE_SIZE)
        except ValueError as exc:  # a cursor that was edited or belongs to another primary
            problems.append(f"This page link is not valid ({exc}); start again from the first page.")
        else:
            items, next_cursor = result.items, result.next_cursor
    filtered = bool(query.search or query.journey_state or query.mastery_level or query.onboarded is not None)
    return page(
        request,
        "dashboard/users.html",
        {
            "product_id": product_id,
            "users": items,
            "next_cursor": next_cursor,
            "cursor": cursor,
            "query": query,
            "filtered": filtered,
            "problems": problems,
            "params": {
                "q": query.search or "",
                "journey": query.journey_state or "",
                "mastery": query.mastery_level or "",
                "onboarded": {True: "yes", False: "no", None: ""}[query.onboarded],
                "order": query.order,
            },
            "journeys": [j.value for j in JourneyState],
            "levels": [m.value for m in MasteryLevel],
            "orders": ORDERS,
        },
        status=400 if problems else 200,
    )


# -- one user -----------------------------------------------------------------


async def session_pages(
    product_id: str, user_id: str, cursor: str | None
) -> tuple[Page[SessionSummary], Page[SessionSummary]]:
    """The history page asked for, and the newest sessions for the chart.

    Most users have fewer sessions than one page: then the first page is the
    chart's data too, and the primary is asked once.
    """
    if cursor is None:
        first = await selectors.list_sessions(product_id, user_id, limit=SESSIONS_PAGE_SIZE)
        if first.next_cursor is None:
            return first, first
        return first, await selectors.list_sessions(product_id, user_id, limit=CHART_SESSIONS)
    history, chart = await asyncio.gather(
        selectors.list_sessions(product_id, user_id, cursor=cursor, limit=SESSIONS_PAGE_SIZE),
        selectors.list_sessions(product_id, user_id, limit=CHART_SESSIONS),
    )
    return history, chart


def summary_provenance(summary: str | None, runs: list[SummaryRun]) -> SummaryRun | None:
    """The newest run whose text became the current summary; ``None``: another writer wrote it.

    A preview that was never accepted produced the text but did not store it.
    """
    if not summary:
        return None
    return next((r for r in runs if r.new_summary == summary and r.applied_at is not None), None)


@require_safe
@console_view()
async def user_detail(request: HttpRequest, product_id: str, user_id: str) -> HttpResponse:
    reason, ask = await access_reason(request, product_id, user_id)
    if ask is not None:
        return ask
    sessions_cursor = request.GET.get("sessions") or None
    reading = await selectors.read_state(product_id, user_id)
    state, doc, unreadable = reading.value, reading.doc, reading.unreadable
    if not reading.found:
        return not_found(request, product_id, user_id)
    await arecord_request(request, Action.USER_VIEW, product_id=product_id, user_id=user_id,
                          details=reason_details(reason))
    problems = []
    try:
        history_page, chart_page = await session_pages(product_id, user_id, sessions_cursor)
    except ValueError as exc:
        problems.append(f"This history page link is not valid ({exc}); showing the newest sessions.")
        history_page, chart_page = await session_pages(product_id, user_id, None)
    chart_rows: list[SessionSummary] = list(reversed(chart_page.items))
    runs = await selectors.summary_runs(product_id, user_id, limit=SUMMARY_RUNS_SHOWN)
    summary = state.onboarding.summary if state else None
    workflows = []
    if state:
        for wp in state.onboarding.workflow_progress.values():
            steps = list(wp.steps.values())
            workflows.append(
                {
                    "wp": wp,
                    "steps": steps,
                    "steps_done": [s for s in steps if s.status is WorkflowStatus.COMPLETED],
                }
            )
    return page(
        request,
        "dashboard/user.html",
        {
            "product_id": product_id,
            "user_id": user_id,
            "state": state,
            "unreadable": unreadable,
            "raw_state": json.dumps(doc, indent=2, ensure_ascii=False) if doc is not None and state else "",
            "email": state.metadata.get("email") if state and isinstance(state.metadata.get("email"), str) else "",
            "workflows": workflows,
            "sessions": history_page.items,
            "sessions_next": history_page.next_cursor,
            "sessions_cursor": sessions_cursor,
            "chart": session_chart(chart_rows) if chart_rows else "",
            "chart_count": len(chart_rows),
            "chart_truncated": chart_page.next_cursor is not None,
            "runs": runs,
            "summary": summary,
            "summary_run": summary_provenance(summary, runs),
            "problems": problems,
            "notes": document_notes(doc if state else None, "state", product_id=product_id, user_id=user_id),
            "access_reason": reason,
            "recent_access": await recent_access(request, product_id, user_id),
            **await user_support_context(request, product_id, user_id, state, doc),
        },
        status=400 if problems else 200,
    )


# -- one frozen snapshot ------------------------------------------------------


@require_safe
@console_view()
async def snapshot(request: HttpRequest, product_id: str, user_id: str, session_id: str) -> HttpResponse:
    reason, ask = await access_reason(request, product_id, user_id)
    if ask is not None:
        return ask
    reading = await selectors.read_snapshot(product_id, user_id, session_id)
    snap, doc = reading.value, reading.doc
    if not reading.found:
        return not_found(request, product_id, user_id, session_id)
    await arecord_request(request, Action.SNAPSHOT_VIEW, product_id=product_id, user_id=user_id,
                          session_id=session_id, details=reason_details(reason))
    raw_json = json.dumps(doc, indent=2, ensure_ascii=False) if snap is not None else ""
    return page(
        request,
        "dashboard/snapshot.html",
        {
            "product_id": product_id,
            "user_id": user_id,
            "session_id": session_id,
            "snap": snap,
            "raw_json": raw_json,
            "unreadable": reading.unreadable,
            "stored_frozen": doc.get("_frozen") is True if isinstance(doc, dict) else False,
            "notes": document_notes(
                doc if snap else None, "snapshot", product_id=product_id, user_id=user_id, session_id=session_id
            ),
            **await session_changes(product_id, user_id, session_id),
        },
    )


@require_safe
@console_view()
async def snapshot_download(request: HttpRequest, product_id: str, user_id: str, session_id: str) -> HttpResponse:
    """The snapshot exactly as stored (even when it cannot be parsed), as a file."""
    reason, ask = await access_reason(request, product_id, user_id)
    if ask is not None:
        return ask
    raw = await selectors.raw_session_snapshot(product_id, user_id, session_id)
    if raw is None:
        return not_found(request, product_id, user_id, session_id)
    await arecord_request(request, Action.SNAPSHOT_DOWNLOAD, product_id=product_id, user_id=user_id,
                          session_id=session_id, details=reason_details(reason))
    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{product_id}-{user_id}-{session_id}")
    response = HttpResponse(raw, content_type="application/json; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="snapshot-{safe_name}.json"'
    return response


async def recent_access(request: HttpRequest, product_id: str, user_id: str) -> list[Any] | None:
    """Who of the staff opened or changed this user lately (``None``: not for this viewer, or not readable now).

    An audit table that cannot be read leaves the panel out rather than
    failing the page, as a failed write does (``autoplay_storage.audit``).
    """
    if VIEW_RECENT_ACCESS not in request.permissions:
        return None
    try:
        return await arecent_staff_entries(product_id, user_id, limit=RECENT_ACCESS_SHOWN)
    except DatabaseError as exc:
        audit_logger.error("recent access of %s/%s could not be read: %s", product_id, user_id, exc)
        return None
