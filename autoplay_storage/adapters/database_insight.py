"""Insight reads of the database adapter: numbers from the counters, segments and lists over indexed rows.

A mixin of ``DatabaseStorageAdapter`` (it runs on the adapter's threads and
alias). The product page reads the sharded counters ``database_facts``
keeps (one indexed range of a few hundred rows); segments and lists filter
``UserStateRecord``'s browse columns and the workflow and metadata rows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..browse import Page, UserSummary
from ..facts import DAY_S, ProductStats, StuckUser, UserFilter, build_stats, cohort_row, list_row, week_of
from .common import Position, clamp_limit, decode_cursor, next_page, user_row


def _state_key(product_id: str, user_id: str) -> str:
    return f"db:{product_id}/{user_id}"


def _stats(using: str, product_id: str) -> ProductStats:
    from django.db.models import Sum

    from ..models.facts import ProductCounter

    rows = (
        ProductCounter.objects.using(using)
        .filter(product_id=product_id)
        .values_list("name")
        .annotate(n=Sum("value"))
        .order_by()
    )
    users, catalog, statuses = 0, [], {}
    days: dict[int, int] = {}
    cohorts: dict[int, int] = {}
    onboard: dict[int, dict[int, int]] = {}
    weeks: dict[int, dict[str, int]] = {}
    for name, n in rows:
        kind, _, rest = name.partition(":")
        if kind == "users":
            users = n
        elif kind == "catalog":
            catalog.append(rest)
        elif kind == "wf" and n:
            wid, _, status = rest.rpartition(":")
            statuses[(wid, status)] = n
        elif kind == "cohort":
            cohorts[int(rest)] = n
        elif kind == "onboard" and n:
            week, _, count = rest.partition(":")
            onboard.setdefault(int(week), {})[int(count)] = n
        elif kind == "day":  # day:<d>:<level>, or day:<d> as written before (its level in a week: counter)
            day, _, level = rest.partition(":")
            days[int(day)] = days.get(int(day), 0) + n
            if level:
                by_level = weeks.setdefault(week_of(int(day) * DAY_S), {})
                by_level[level] = by_level.get(level, 0) + n
        elif kind == "week":  # written before: the sessions of a week at a level
            week, _, level = rest.partition(":")
            by_level = weeks.setdefault(int(week), {})
            by_level[level] = by_level.get(level, 0) + n
    rows_out = [cohort_row(week, n, onboard.get(week, {})) for week, n in cohorts.items()]
    return build_stats(users, catalog, statuses, rows_out, days, weeks)


def _filtered(using: str, product_id: str, f: UserFilter) -> Any:
    from ..models.facts import UserMetadataFact, UserWorkflowFact
    from ..models.records import UserStateRecord

    rows = UserStateRecord.objects.using(using).filter(product_id=product_id, corrupt=False)
    if f.journey_state:
        rows = rows.filter(journey_state=f.journey_state)
    if len(f.mastery_levels) == 1:
        rows = rows.filter(mastery_level=f.mastery_levels[0])
    elif f.mastery_levels:
        rows = rows.filter(mastery_level__in=f.mastery_levels)
    if f.onboarded is not None:
        rows = rows.filter(onboarded=f.onboarded)
    if f.active_after is not None:
        rows = rows.filter(last_activity_at__gte=f.active_after)
    if f.active_before is not None:
        rows = rows.filter(last_activity_at__lt=f.active_before)
    if f.first_seen_after is not None:
        rows = rows.filter(first_seen_at__gte=f.first_seen_after)
    if f.first_seen_before is not None:
        rows = rows.filter(first_seen_at__lt=f.first_seen_before)
    if f.sessions_min is not None:
        rows = rows.filter(sessions_count__gte=f.sessions_min)
    if f.sessions_max is not None:
        rows = rows.filter(sessions_count__lte=f.sessions_max)
    if f.workflow_id:
        facts = UserWorkflowFact.objects.using(using).filter(product_id=product_id, workflow_id=f.workflow_id)
        status = f.workflow_status or "in_progress"
        if status == "untouched":
            rows = rows.exclude(id__in=facts.values("state_id"))
        else:
            rows = rows.filter(id__in=facts.filter(status=status).values("state_id"))
    if f.meta_key:
        meta = UserMetadataFact.objects.using(using).filter(
            product_id=product_id, key=f.meta_key, value=f.meta_value or ""
        )
        rows = rows.filter(id__in=meta.values("state_id"))
    return rows


def _count(using: str, product_id: str, f: UserFilter) -> int:
    if (
        f.workflow_id
        and (f.workflow_status or "in_progress") != "untouched"
        and f == UserFilter(workflow_id=f.workflow_id, workflow_status=f.workflow_status, order=f.order)
    ):
        from django.db.models import Sum

        from ..models.facts import ProductCounter

        name = f"wf:{f.workflow_id}:{f.workflow_status or 'in_progress'}"
        total = ProductCounter.objects.using(using).filter(product_id=product_id, name=name).aggregate(n=Sum("value"))
        return int(total["n"] or 0)
    return _filtered(using, product_id, f).count()


def _list(using: str, product_id: str, f: UserFilter, after: Position | None, limit: int) -> Page[UserSummary]:
    from django.db.models import Q

    rows = _filtered(using, product_id, f)
    descending = f.order == "-last_activity"
    if after is not None:
        at, user_id = after
        if descending:
            rows = rows.filter(Q(last_activity_at__lte=at), Q(last_activity_at__lt=at) | Q(user_id__lt=user_id))
        else:
            rows = rows.filter(Q(last_activity_at__gte=at), Q(last_activity_at__gt=at) | Q(user_id__gt=user_id))
    order = ("-last_activity_at", "-user_id") if descending else ("last_activity_at", "user_id")
    found = list(rows.order_by(*order).values_list("user_id", "document", "last_activity_at")[: limit + 1])
    page, next_cursor = next_page(found, limit, lambda row: (row[2], row[0]))
    items = [user_row(product_id, uid, _state_key(product_id, uid), raw, list_row) for uid, raw, _ in page]
    return Page(items, next_cursor)


EXPORT_COLUMNS = (
    "user_id", "journey_state", "mastery_level", "mastery_rating", "completion_rate", "onboarded", "sessions_count",
    "first_seen_at", "last_activity_at",
)  # fmt: skip
EXPORT_METADATA = ("email", "role")  # what the CSV shows of the metadata


def _export(using: str, product_id: str, f: UserFilter, after: Position | None, limit: int) -> Page[UserSummary]:
    """A page of the list for a CSV: the browse columns and the metadata rows, no document parsed.

    The columns and the metadata rows are what the write derived from the
    document (``user_summary``, ``user_facts``), so they hold the values
    ``list_row`` would read. Only a string of at most ``META_VALUE_MAX``
    characters has a metadata row: when ``email`` or ``role`` has none, the
    row's document is read instead (a user without one, or a longer one).
    """
    from django.db.models import Case, F, FilteredRelation, Q, When

    rows = _filtered(using, product_id, f)
    descending = f.order == "-last_activity"
    if after is not None:
        at, user_id = after
        if descending:
            rows = rows.filter(Q(last_activity_at__lte=at), Q(last_activity_at__lt=at) | Q(user_id__lt=user_id))
        else:
            rows = rows.filter(Q(last_activity_at__gte=at), Q(last_activity_at__gt=at) | Q(user_id__gt=user_id))
    order = ("-last_activity_at", "-user_id") if descending else ("last_activity_at", "user_id")
    joins = {f"m_{k}": FilteredRelation("metadata_facts", condition=Q(metadata_facts__key=k)) for k in EXPORT_METADATA}
    missing = Q()
    for name in joins:
        missing |= Q(**{f"{name}__value__isnull": True})
    found = list(
        rows.annotate(**joins)
        .annotate(doc=Case(When(missing, then=F("document"))))
        .order_by(*order)
        .values_list(*EXPORT_COLUMNS, *(f"{name}__value" for name in joins), "doc")[: limit + 1]
    )
    page, next_cursor = next_page(found, limit, lambda row: (row[8], row[0]))
    items = []
    for uid, journey, level, rating, rate, onboarded, count, first, last, *meta, raw in page:
        if raw is not None:
            items.append(user_row(product_id, uid, _state_key(product_id, uid), raw, list_row))
            continue
        items.append(
            UserSummary(
                product_id, uid, journey, level, rating, rate, onboarded, count, first, last,
                metadata=dict(zip(EXPORT_METADATA, meta, strict=True)),
            )
        )  # fmt: skip
    return Page(items, next_cursor)


def _stuck(using: str, product_id: str, older_than: float, after: Position | None, limit: int) -> Page[StuckUser]:
    from django.db.models import Q

    from ..models.facts import UserWorkflowFact
    from ..models.records import UserStateRecord

    rows = UserWorkflowFact.objects.using(using).filter(
        product_id=product_id, status="in_progress", last_progress_at__lt=older_than
    )
    if after is not None:
        at, fact_id = after
        if not fact_id.isdigit():
            raise ValueError("invalid cursor")
        rows = rows.filter(Q(last_progress_at__lt=at) | Q(last_progress_at=at, id__lt=int(fact_id)))
    # The page first, then its documents: joined in one query, PostgreSQL reads the document of every
    # row tied on the last progress time before it sorts them by id (thousands when users share a time).
    found = list(
        rows.order_by("-last_progress_at", "-id").values_list(
            "id", "user_id", "workflow_id", "last_progress_at", "evidence", "state_id"
        )[: limit + 1]
    )
    page, next_cursor = next_page(found, limit, lambda row: (row[3], str(row[0])))
    states = UserStateRecord.objects.using(using).filter(id__in=[row[5] for row in page])
    documents = dict(states.values_list("id", "document"))
    items = [
        StuckUser(user_row(product_id, uid, _state_key(product_id, uid), documents[sid], list_row), wid, at, evidence)
        for _id, uid, wid, at, evidence, sid in page
        if sid in documents  # erased between the two reads
    ]
    return Page(items, next_cursor)


class DatabaseInsight:
    """``InsightStore`` for ``DatabaseStorageAdapter``."""

    using: str
    _run: Callable[..., Awaitable[Any]]

    async def insight_stats(self, product_id: str) -> ProductStats:
        return await self._run(_stats, self.using, product_id)

    async def count_users(self, product_id: str, f: UserFilter) -> int:
        return await self._run(_count, self.using, product_id, f)

    async def list_filtered_users(
        self, product_id: str, f: UserFilter, *, cursor: str | None = None, limit: int = 50
    ) -> Page[UserSummary]:
        return await self._run(_list, self.using, product_id, f, decode_cursor(cursor), clamp_limit(limit))

    async def export_users(
        self, product_id: str, f: UserFilter, *, cursor: str | None = None, limit: int = 50
    ) -> Page[UserSummary]:
        return await self._run(_export, self.using, product_id, f, decode_cursor(cursor), max(1, limit))

    async def list_stuck(
        self, product_id: str, older_than: float, *, cursor: str | None = None, limit: int = 50
    ) -> Page[StuckUser]:
        return await self._run(_stuck, self.using, product_id, older_than, decode_cursor(cursor), clamp_limit(limit))

    async def rebuild_insight(self, progress: Callable[[int], None] | None = None) -> dict[str, int]:
        from .database_facts import rebuild

        return await self._run(rebuild, self.using, progress)
