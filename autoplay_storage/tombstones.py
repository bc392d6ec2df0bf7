"""Tombstones: what an erased user leaves behind, so a late session end cannot bring the history back.

A tombstone holds only the erasure time, and is kept for
``AUTOPLAY_ERASURE_TOMBSTONE_DAYS``. Each primary checks it inside its
atomic session-end step (the Redis script or WATCH, the database
transaction, the memory lock): an end whose session *started* at or before
the erasure is refused with ``UserErasedError``; a session that started
after it records a new user. While an erasure is under way the tombstone
reads ``ERASING`` and every session end is refused, so nothing can be
written between the deletion's batches.

"Started" is the snapshot's ``started_at`` (its ``captured_at`` when it has
none, 0 when it has neither: refused), the agent's clock, as every
timestamp of a snapshot is.
"""

from __future__ import annotations

from typing import Any

from .errors import UserErasedError

ERASING = "erasing"
DEFAULT_TOMBSTONE_S = 30 * 86400


def session_started(snapshot: dict[str, Any]) -> float:
    """When the session of ``snapshot`` started, as the tombstone check compares it."""
    for field in ("started_at", "captured_at"):
        value = snapshot.get(field)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            return float(value)
    return 0.0


def erased_time(value: str | bytes | float | None) -> float | None:
    """The erasure time a stored tombstone value holds (``None``: still erasing)."""
    if isinstance(value, bytes):
        value = value.decode()
    if value is None or value == ERASING:
        return None
    return float(value)


def check(product_id: str, user_id: str, tombstone: str | bytes | float | None, started: float) -> None:
    """Raise ``UserErasedError`` when a tombstone refuses a session that started at ``started``."""
    if tombstone is None:
        return
    erased_at = erased_time(tombstone)
    if erased_at is None or started <= erased_at:
        raise UserErasedError(product_id, user_id, erased_at)
