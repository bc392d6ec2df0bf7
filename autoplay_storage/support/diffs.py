"""Diffs of stored sessions: a session against the one before it, another session, or the live state.

Reads the documents (an unreadable one becomes a side that says why) and
the summary each session ended with, when a recorded run says it, then
hands both sides to the engine's pure ``diff``.
"""

from __future__ import annotations

from typing import Any

from .. import selectors
from ..diff import Diff, Side, diff, read_snapshot, read_state
from ..errors import CorruptDocumentError
from ..models import SummaryRun
from ..runtime import get_storage

PREVIOUS = "previous"
STATE = "state"
PAGE = 200


class SessionMissing(LookupError):
    """A session to compare has no snapshot for this user."""


async def _document(product_id: str, user_id: str, session_id: str) -> dict[str, Any] | str | None:
    """The stored snapshot, or why its text cannot be read; ``None``: no such session."""
    try:
        doc = await get_storage().get_session_snapshot(product_id, user_id, session_id)
    except CorruptDocumentError as exc:
        return f"the stored text is not a JSON document ({exc.reason})"
    return doc


async def _session_summary(product_id: str, user_id: str, session_id: str) -> tuple[str | None, bool]:
    """The summary this session's end stored, and whether a recorded run says so."""
    run = (
        await SummaryRun.objects.filter(
            product_id=product_id,
            user_id=user_id,
            session_id=session_id,
            source__in=[SummaryRun.Source.SESSION_END, SummaryRun.Source.EXPLICIT],
        )
        .exclude(applied_at=None)
        .order_by("-applied_at", "-id")
        .afirst()
    )
    return (run.new_summary, True) if run is not None else (None, False)


async def session_side(product_id: str, user_id: str, session_id: str, label: str) -> Side:
    doc = await _document(product_id, user_id, session_id)
    if doc is None:
        raise SessionMissing(f"there is no snapshot {session_id!r} for this user")
    summary, known = await _session_summary(product_id, user_id, session_id)
    return read_snapshot(doc, label=label, session_id=session_id, user_id=user_id, summary=summary, known_summary=known)


async def previous_session(product_id: str, user_id: str, session_id: str) -> str | None:
    """The session recorded just before ``session_id`` (the history's order), ``None`` for the first."""
    cursor = None
    found = False
    while True:
        page = await selectors.list_sessions(product_id, user_id, cursor=cursor, limit=PAGE)
        for row in page.items:
            if found:
                return row.session_id
            found = row.session_id == session_id
        if page.next_cursor is None:
            return None
        cursor = page.next_cursor


async def state_side(product_id: str, user_id: str) -> Side:
    reading = await selectors.read_state(product_id, user_id)
    if reading.unreadable:
        return read_state(reading.unreadable["reason"], label="the live state", user_id=user_id)
    if reading.doc is None:
        return read_state("no state is stored for this user", label="the live state", user_id=user_id)
    return read_state(reading.doc, label="the live state", user_id=user_id)


async def session_diff(product_id: str, user_id: str, session_id: str, against: str = PREVIOUS) -> Diff | None:
    """``session_id`` against ``previous`` (``None``: it is the first session), ``state``, or another session.

    Two sessions are compared earlier first (by session number); against
    ``state``, the live state is the later side.
    """
    this = await session_side(product_id, user_id, session_id, f"session {session_id}")
    if against == STATE:
        return diff(this, await state_side(product_id, user_id))
    other = await previous_session(product_id, user_id, session_id) if against == PREVIOUS else against
    if other is None:
        return None
    that = await session_side(product_id, user_id, other, f"session {other}")
    if against != PREVIOUS and (this.session_number or 0) < (that.session_number or 0):
        return diff(this, that)  # any two sessions: the earlier one first
    return diff(that, this)
