"""The database adapter's rows: the hot path's SQL, and the browse columns it derives from a document.

Kept apart from ``database`` (the adapter: transactions, threads, listings) so
each reads on its own; nothing here runs a query.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..browse import UserSummary
from .common import corrupt_user_row

MAX_ID_LENGTH = 128  # the id columns' width


class Statements:
    """The hot path's SQL, written once per backend from the models' metadata.

    The ORM spent more client time building and compiling these ~10 statements
    per session lifecycle than SQLite spent running them. The text is plain
    SQL that SQLite (3.35+) and PostgreSQL both accept (``RETURNING``,
    ``ON CONFLICT DO NOTHING``); the ORM keeps the cold paths (browsing, copy).
    """

    def __init__(self, connection: Any) -> None:
        from ..models.records import SessionSnapshotRecord, UserSearchTerm, UserStateRecord

        q = connection.ops.quote_name

        def table(model: Any) -> str:
            return q(model._meta.db_table)

        def col(model: Any, name: str) -> str:
            return q(model._meta.get_field(name).column)

        def where(model: Any, *names: str) -> str:
            return " AND ".join(f"{col(model, n)} = %s" for n in names)

        state, term, snap = UserStateRecord, UserSearchTerm, SessionSnapshotRecord
        state_key = where(state, "product_id", "user_id")
        lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
        self.select_state = (
            f"SELECT {col(state, 'id')}, {col(state, 'document')}, {col(state, 'search_text')} "
            f"FROM {table(state)} WHERE {state_key}{lock}"
        )
        self.select_state_document = f"SELECT {col(state, 'document')} FROM {table(state)} WHERE {state_key}"
        inserted = ("product_id", "user_id", "version", *_STATE_COLUMNS)
        self.insert_state = (
            f"INSERT INTO {table(state)} ({', '.join(col(state, n) for n in inserted)}) "
            f"VALUES ({', '.join(['%s'] * len(inserted))}) RETURNING {col(state, 'id')}"
        )
        version = col(state, "version")
        assignments = ", ".join(f"{col(state, n)} = %s" for n in _STATE_COLUMNS)
        self.update_state = (
            f"UPDATE {table(state)} SET {version} = {version} + 1, {assignments} WHERE {col(state, 'id')} = %s"
        )
        self.delete_terms = f"DELETE FROM {table(term)} WHERE {col(term, 'state')} = %s"
        self.insert_term = (
            f"INSERT INTO {table(term)} ({col(term, 'state')}, {col(term, 'product_id')}, {col(term, 'term')}) "
            "VALUES (%s, %s, %s)"
        )
        self.insert_snapshot = (
            f"INSERT INTO {table(snap)} ({', '.join(col(snap, n) for n in _SNAPSHOT_COLUMNS)}) "
            f"VALUES ({', '.join(['%s'] * len(_SNAPSHOT_COLUMNS))}) ON CONFLICT DO NOTHING"
        )
        snapshot_key = where(snap, "product_id", "user_id", "session_id")
        self.select_snapshot_document = f"SELECT {col(snap, 'document')} FROM {table(snap)} WHERE {snapshot_key}"
        self.created_at = snap._meta.get_field("created_at")


# The order of the parameters of _Statements.insert_state / update_state and insert_snapshot.
_STATE_COLUMNS = (
    "document",
    "journey_state",
    "mastery_level",
    "mastery_rating",
    "completion_rate",
    "onboarded",
    "sessions_count",
    "first_seen_at",
    "last_activity_at",
    "search_text",
    "corrupt",
)
_SNAPSHOT_COLUMNS = (
    "product_id",
    "user_id",
    "session_id",
    "document",
    "session_number",
    "started_at",
    "captured_at",
    "created_at",
)


_statements: dict[str, Statements] = {}


def statements_for(connection: Any) -> Statements:
    """The statements for this connection's backend (by vendor: an alias may be reconfigured)."""
    statements = _statements.get(connection.vendor)
    if statements is None:
        statements = _statements[connection.vendor] = Statements(connection)
    return statements


def user_summary(product_id: str, user_id: str, doc: Any) -> UserSummary:
    """``browse.user_summary_from_doc``, reading only the fields a list row holds.

    The full ``UserAdoptionState.from_dict`` also builds the workflow progress
    and every session index entry: it was a fifth of the client time of a
    session lifecycle. The same defensive readers give the same values, and
    (for a mapping) only the version check makes a document unreadable there,
    so only it marks a row corrupt here.
    """
    from ..user_adoption_state import (
        SCHEMA_VERSION,
        SESSIONS_INDEX_LIMIT,
        JourneyState,
        Mastery,
        _count,
        _dict,
        _enum,
        _json_safe,
        _list,
        _now,
        _opt_str,
        _opt_ts,
        _ts,
        _unit,
    )

    if not isinstance(doc, Mapping):
        return corrupt_user_row(product_id, user_id)
    version = doc.get("_v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        return corrupt_user_row(product_id, user_id)
    now = _now()
    mastery = Mastery.from_dict(doc.get("mastery"))
    onboarding = _dict(doc.get("onboarding"))
    sessions = _dict(doc.get("sessions"))
    # SessionsState keeps the distinct usable ids, at most SESSIONS_INDEX_LIMIT of them.
    indexed = {
        entry["session_id"]
        for entry in _list(sessions.get("index"))
        if isinstance(entry, dict) and isinstance(entry.get("session_id"), str) and entry["session_id"]
    }
    return UserSummary(
        product_id=product_id,
        user_id=user_id,
        journey_state=_enum(JourneyState, doc.get("journey_state"), JourneyState.ONBOARDING).value,
        mastery_level=mastery.level.value,
        mastery_rating=mastery.rating,
        completion_rate=_unit(onboarding.get("completion_rate")),
        onboarded=_opt_ts(onboarding.get("onboarding_completed_at")) is not None,
        sessions_count=max(_count(sessions.get("count")), min(len(indexed), SESSIONS_INDEX_LIMIT)),
        first_seen_at=_ts(doc.get("first_seen_at"), now),
        last_activity_at=_ts(doc.get("last_updated_at"), now),
        current_session_id=_opt_str(sessions.get("current_session_id")) or None,
        metadata=_json_safe(_dict(doc.get("metadata"))),
    )


def snapshot_columns(doc: Any) -> tuple[int, float, float]:
    """``session_number, started_at, captured_at`` as ``SessionSnapshot.from_dict`` reads them (leniently)."""
    from ..user_adoption_state import _count, _now, _ts

    if not isinstance(doc, Mapping):  # corrupt text, or session_summary_from_doc's corrupt row
        return 0, 0.0, 0.0
    captured = _ts(doc.get("captured_at"), _now())
    return max(1, _count(doc.get("session_number"))), _ts(doc.get("started_at"), captured), captured


def check_id(name: str, value: str) -> None:
    """Ids longer than the column, empty or with NUL would fail differently on each backend: refuse them alike."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{name} is longer than {MAX_ID_LENGTH} characters")
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: no database driver can send it
        raise ValueError(f"{name} is not valid Unicode text (a lone surrogate)") from exc


def storable(*ids: str) -> bool:
    """Reads of ids no write accepts find nothing, without a query (PostgreSQL would reject a NUL)."""
    try:
        for value in ids:
            check_id("id", value)
    except ValueError:
        return False
    return True
