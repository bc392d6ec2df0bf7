"""Reads: what the agents' API and the console show, from the per-process storage.

Both interfaces read through these functions (and write through
``services``); neither talks to the manager, an adapter or the ORM's records
itself, so the console shows exactly what the API serves, on any primary.
A primary that cannot be reached raises ``StorageUnavailableError`` (the API
answers 503, the console shows its 503 page); a document that cannot be read
is reported with its raw text, never as "not found".
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .browse import MAX_PAGE_SIZE, Page, ProductSummary, SessionSummary, UserQuery, UserSummary
from .errors import CorruptDocumentError, NotBrowsableError, UnsupportedVersionError
from .facts import DAY_S, InsightStore, ProductStats, StuckUser, UserFilter
from .facts import FunnelRow as FunnelRow  # the interfaces' names for what the insight reads return
from .filter_params import PARAMS
from .filter_params import parse_filter as parse_filter
from .lifecycle import build_agent_context, load_onboarding_snapshot, load_state
from .models import Segment, SummaryRun
from .runtime import get_storage
from .services import StateNotFoundError, VersionedState
from .user_adoption_state import SessionSnapshot, UserAdoptionState

T = TypeVar("T")


def _page_size(limit: int) -> int:
    return max(1, min(limit, MAX_PAGE_SIZE))


# -- for agents -----------------------------------------------------------------


async def get_state(product_id: str, user_id: str) -> VersionedState:
    doc = await get_storage().get_user_state(product_id, user_id)
    if doc is None:
        raise StateNotFoundError(product_id, user_id)
    return VersionedState.of(doc, user_id)


async def get_snapshot(product_id: str, user_id: str, session_id: str) -> SessionSnapshot | None:
    doc = await get_storage().get_session_snapshot(product_id, user_id, session_id)
    if doc is None:
        return None
    return SessionSnapshot.from_dict(doc, session_id=session_id, user_id=user_id)


async def get_context(product_id: str, user_id: str) -> dict[str, Any]:
    """The agent context alone, as session start would build it (without starting a session)."""
    storage = get_storage()
    doc = await storage.get_user_state(product_id, user_id)
    if doc is None:
        raise StateNotFoundError(product_id, user_id)
    state = load_state(doc, user_id)
    onboarding = None
    if state.sessions.count > 0:
        onboarding = await load_onboarding_snapshot(product_id, user_id, state, storage)
    return build_agent_context(state, onboarding)


async def list_sessions(
    product_id: str, user_id: str, *, cursor: str | None = None, limit: int = 50
) -> Page[SessionSummary]:
    """The full history from the snapshots, newest first. ``ValueError`` for a cursor not ours."""
    return await get_storage().browser.list_sessions(product_id, user_id, cursor=cursor, limit=_page_size(limit))


async def ping() -> None:
    """Return when the primary answers; ``StorageError`` otherwise (the readiness probe)."""
    await get_storage().ping()


# -- for the console ----------------------------------------------------------------


@dataclass(frozen=True)
class Reading(Generic[T]):
    """A stored document as the console shows it.

    ``value`` is the parsed document and ``doc`` the stored one; when it
    cannot be parsed, ``unreadable`` says why, with the raw text (``reason``,
    ``raw``). All three empty: nothing is stored.
    """

    value: T | None = None
    doc: dict[str, Any] | None = None
    unreadable: dict[str, str] = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return self.value is not None or bool(self.unreadable)


async def list_products() -> list[ProductSummary]:
    return await get_storage().browser.list_products()


async def list_users(
    product_id: str, query: UserQuery, *, cursor: str | None = None, limit: int = 50
) -> Page[UserSummary]:
    """One page of a product's users matching ``query``. ``ValueError`` for a cursor not ours."""
    return await get_storage().browser.list_users(product_id, query, cursor=cursor, limit=_page_size(limit))


async def read_state(product_id: str, user_id: str) -> Reading[UserAdoptionState]:
    """The user's state, or why it cannot be read (a corrupt document, an unknown ``_v``) with its raw text."""
    storage = get_storage()
    try:
        doc = await storage.get_user_state(product_id, user_id)
    except CorruptDocumentError as exc:
        return Reading(unreadable={"reason": exc.reason, "raw": exc.raw})
    if doc is None:
        return Reading()
    try:
        return Reading(UserAdoptionState.from_dict(doc, user_id=user_id), doc)
    except UnsupportedVersionError as exc:
        reason = f"schema version _v={exc.version!r}, which this console does not know"
    except TypeError as exc:
        reason = str(exc)
    raw = await storage.browser.get_raw_user_state(product_id, user_id)
    return Reading(None, doc, {"reason": reason, "raw": raw if raw is not None else json.dumps(doc, indent=2)})


async def read_snapshot(product_id: str, user_id: str, session_id: str) -> Reading[SessionSnapshot]:
    """One frozen snapshot, or why it cannot be read, with its raw text."""
    storage = get_storage()
    try:
        doc = await storage.get_session_snapshot(product_id, user_id, session_id)
    except CorruptDocumentError as exc:
        return Reading(unreadable={"reason": exc.reason, "raw": exc.raw})
    if doc is None:
        return Reading()
    try:
        return Reading(SessionSnapshot.from_dict(doc, session_id=session_id, user_id=user_id), doc)
    except TypeError as exc:
        raw = await storage.browser.get_raw_session_snapshot(product_id, user_id, session_id)
        return Reading(None, doc, {"reason": str(exc), "raw": raw})


async def raw_session_snapshot(product_id: str, user_id: str, session_id: str) -> str | None:
    """The snapshot's text exactly as stored, even when it cannot be parsed; ``None``: none stored."""
    return await get_storage().browser.get_raw_session_snapshot(product_id, user_id, session_id)


async def summary_runs(product_id: str, user_id: str, *, limit: int) -> list[SummaryRun]:
    """The user's newest summary runs first, with who ran them."""
    runs = SummaryRun.objects.filter(product_id=product_id, user_id=user_id).select_related("actor")
    return [run async for run in runs.order_by("-started_at", "-id")[:limit]]


# -- insight (docs/insight.md) ---------------------------------------------------

EXPORT_PAGE = MAX_PAGE_SIZE
EXPORT_BATCH = 2000  # rows per read of export_filtered_users: few round trips, a few MB held at most
FILTER_PARAMS = PARAMS  # the query-string names of a segment's filter


def _insight() -> InsightStore:
    primary = get_storage().primary
    if not isinstance(primary, InsightStore):
        raise NotBrowsableError(f"the primary {type(primary).__name__} keeps no insight aggregates")
    return primary


async def product_stats(product_id: str) -> ProductStats:
    """The funnel, the cohorts and the charts' numbers, from the aggregates the primary keeps as it writes."""
    return await _insight().insight_stats(product_id)


async def count_users(product_id: str, f: UserFilter) -> int:
    return await _insight().count_users(product_id, f)


async def list_filtered_users(
    product_id: str, f: UserFilter, *, cursor: str | None = None, limit: int = 50
) -> Page[UserSummary]:
    """One page of the users in a segment's filter. ``ValueError`` for a cursor not ours."""
    return await _insight().list_filtered_users(product_id, f, cursor=cursor, limit=_page_size(limit))


async def export_filtered_users(product_id: str, f: UserFilter, *, cursor: str | None = None) -> Page[UserSummary]:
    """A page of ``list_filtered_users`` for a CSV (a row may carry only the ``email`` and ``role`` metadata)."""
    return await _insight().export_users(product_id, f, cursor=cursor, limit=EXPORT_BATCH)


async def stuck_after_days(product_id: str) -> int:
    """The product's setting (7 days unless set in the admin)."""
    from .access import aproduct_settings

    return (await aproduct_settings(product_id)).stuck_after_days


async def list_stuck(
    product_id: str, *, days: int, cursor: str | None = None, limit: int = 50, now: float | None = None
) -> Page[StuckUser]:
    """The support queue: in progress on a workflow with no progress for ``days`` days, newest stuck first."""
    older_than = (time.time() if now is None else now) - days * DAY_S
    return await _insight().list_stuck(product_id, older_than, cursor=cursor, limit=_page_size(limit))


async def export_pages(fetch: Callable[[str | None], Awaitable[Page[T]]]) -> AsyncIterator[list[T]]:
    """Every page of a listing, a page at a time (an export holds one page in memory, never the whole list)."""
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        if page.items:
            yield page.items
        if not (cursor := page.next_cursor):
            return


async def segments(product_id: str) -> list[Segment]:
    return [s async for s in Segment.objects.filter(product_id=product_id).select_related("created_by")]


async def segment(product_id: str, slug: str) -> Segment | None:
    return await Segment.objects.filter(product_id=product_id, slug=slug).select_related("created_by").afirst()


# -- erasure receipts and the export (docs/erasure.md) ------------------------


async def erasure_receipt(erasure_id: str) -> dict[str, Any] | None:
    from . import erasure

    found = await erasure.receipt(erasure_id)
    return None if found is None else await erasure.receipt_document(found)


async def erasure_receipts(product_id: str, user_id: str) -> list[dict[str, Any]]:
    from . import erasure

    return [await erasure.receipt_document(r) for r in await erasure.receipts_of(product_id, user_id)]


async def holds_user(product_id: str, user_id: str) -> bool:
    """Whether anything is stored about the user: a state, a snapshot, or an erasure receipt."""
    from . import erasure

    return await erasure.holds_data(product_id, user_id) or bool(await erasure.receipts_of(product_id, user_id))


async def export_user(product_id: str, user_id: str) -> tuple[str, AsyncIterator[str]]:
    """All of the user's data as one JSON document: its head, read now, and the rest, streamed (``export``)."""
    from .export import export_user as export

    return await export(product_id, user_id)
