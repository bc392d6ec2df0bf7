"""What the primaries do alike, written once: cursors, the page size, corrupt rows, the user filter, ids sent lately.

A listing walks rows in a total order: ``(position, tiebreak)`` — last activity
and user id for users, capture time and session id for sessions. A cursor is
the keyset position of the last row served, not an offset, so rows that move or
arrive between two pages never make an unmoved row repeat or go missing.

Every primary reads a stored value for a list row through ``user_row`` /
``session_row``: a value that is not a readable document is still listed, as a
corrupt row the console can open, instead of failing the whole page.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from ..browse import (
    MAX_PAGE_SIZE,
    Page,
    SessionSummary,
    UserQuery,
    UserSummary,
    search_terms,
    session_summary_from_doc,
    user_summary_from_doc,
)
from ..codec import parse_document
from ..errors import CorruptDocumentError

T = TypeVar("T")
Position = tuple[float, str]  # (position, tiebreak): the keyset order of every listing

# -- the page size --


def clamp_limit(limit: int) -> int:
    """The page size a listing serves: at least one row, at most ``MAX_PAGE_SIZE``."""
    return max(1, min(int(limit), MAX_PAGE_SIZE))


# -- keyset cursors --


def encode_cursor(position: Position) -> str:
    """The opaque cursor for a keyset position (URL-safe base64 of a JSON pair)."""
    at, tiebreak = position
    return base64.urlsafe_b64encode(json.dumps([at, tiebreak]).encode()).decode()


def decode_cursor(cursor: str | None) -> Position | None:
    """The keyset position a cursor names; ``None`` for no cursor; ``ValueError`` for one we did not make.

    A client may send anything: only a finite number and a string pass, so a
    forged cursor cannot turn into a NaN comparison or a server error.
    """
    if not cursor:
        return None
    try:
        at, tiebreak = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
        if isinstance(at, bool) or not isinstance(at, int | float) or not isinstance(tiebreak, str):
            raise ValueError
        at = float(at)
        if not math.isfinite(at):
            raise ValueError
        return at, tiebreak
    except (ValueError, TypeError, binascii.Error, UnicodeError, OverflowError) as exc:
        raise ValueError("invalid cursor") from exc


def is_after(item: Position, position: Position | None, descending: bool) -> bool:
    """Whether ``item`` comes after the keyset ``position`` in the listing's order."""
    if position is None:
        return True
    return item < position if descending else item > position


def next_page(found: Sequence[T], limit: int, position_of: Callable[[T], Position]) -> tuple[list[T], str | None]:
    """The page out of up to ``limit + 1`` rows fetched in order, and the cursor if there is more."""
    items = list(found[:limit])
    more = len(found) > limit and bool(items)
    return items, encode_cursor(position_of(items[-1])) if more else None


def page_in_order(
    rows: Iterable[T], position_of: Callable[[T], Position], cursor: str | None, limit: int, descending: bool
) -> Page[T]:
    """One page of rows held in full (the in-process store): sort, skip to the cursor, cut."""
    after = decode_cursor(cursor)
    ordered = sorted(rows, key=position_of, reverse=descending)
    found = [row for row in ordered if is_after(position_of(row), after, descending)][: limit + 1]
    items, next_cursor = next_page(found, limit, position_of)
    return Page(items, next_cursor)


def user_position(row: UserSummary) -> Position:
    """Where a user sits in a listing: last activity, then user id."""
    return (row.last_activity_at or 0.0, row.user_id)


def session_position(row: SessionSummary) -> Position:
    """Where a session sits in the history: capture time, then session id."""
    return (row.captured_at, row.session_id)


# -- corrupt rows --


def corrupt_user_row(product_id: str, user_id: str) -> UserSummary:
    return UserSummary(product_id=product_id, user_id=user_id, corrupt=True)


def corrupt_session_row(session_id: str, captured_at: float = 0.0) -> SessionSummary:
    return SessionSummary(session_id, session_number=0, started_at=0.0, captured_at=captured_at, corrupt=True)


def user_row(
    product_id: str,
    user_id: str,
    key: str,
    raw: str | bytes,
    summarize: Callable[[str, str, dict[str, Any]], UserSummary] = user_summary_from_doc,
) -> UserSummary:
    """A list row from the stored text of a state; a corrupt row when it is not a document.

    ``summarize`` reads the document (``browse.user_summary_from_doc`` unless a
    store has a cheaper reader that gives the same values).
    """
    try:
        doc = parse_document(key, raw)
    except CorruptDocumentError:
        return corrupt_user_row(product_id, user_id)
    return summarize(product_id, user_id, doc or {})


def session_row(session_id: str, key: str, raw: str | bytes, *, captured_at: float = 0.0) -> SessionSummary:
    """A history row from the stored text of a snapshot; a corrupt row (at ``captured_at``) when it is not one."""
    try:
        doc = parse_document(key, raw)
    except CorruptDocumentError:
        return corrupt_session_row(session_id, captured_at)
    return session_summary_from_doc(session_id, doc or {})


# -- the user filter --


def search_needle(query: UserQuery) -> str:
    """The search text as every primary compares it: trimmed, lower-cased ('' for no search)."""
    return (query.search or "").strip().lower()


def matches(row: UserSummary, query: UserQuery) -> bool:
    """Whether a list row passes the query's filters and search (a prefix of the id or a metadata value)."""
    if query.journey_state and row.journey_state != query.journey_state:
        return False
    if query.mastery_level and row.mastery_level != query.mastery_level:
        return False
    if query.onboarded is not None and row.onboarded != query.onboarded:
        return False
    needle = search_needle(query)
    return not needle or any(term.startswith(needle) for term in search_terms(row.user_id, row.metadata))


class SentLately:
    """Ids this process wrote lately to a store that only gains them, so that a write need not send them again.

    For the insight's id sets (Redis) and catalog rows (database): sending
    one again changes nothing, so leaving it out is only a saving. Marked
    only after the write that carried them succeeded (``mark``); forgotten
    after ``ttl_s``, so ids cleared behind the process's back (a rebuild, a
    flush) are written again within that time. Shared by a process's
    threads: a race between them costs one id sent twice, nothing else.
    """

    def __init__(self, ttl_s: float = 300.0, size: int = 100_000) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._at: dict[tuple[str, str], float] = {}

    def unsent(self, key: str, members: Iterable[Any]) -> list[Any]:
        """The ``members`` of ``key`` this process has not sent within ``ttl_s``."""
        at, horizon = self._at, time.monotonic() - self.ttl_s
        return [m for m in members if at.get((key, str(m)), -math.inf) < horizon]

    def mark(self, key: str, members: Iterable[Any]) -> None:
        """The write that carried ``members`` of ``key`` succeeded."""
        now = time.monotonic()
        if len(self._at) >= self.size:
            self._at.clear()  # a bound, not a cache policy: the ids are sent once more
        for m in members:
            self._at[(key, str(m))] = now
