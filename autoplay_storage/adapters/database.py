"""The database adapter: the Django ORM as the readable primary (SQLite by default, PostgreSQL at scale).

Extra: none (SQLite ships with Python); ``postgres`` installs psycopg.

The stored wire JSON is the truth; the browse columns and search terms of
``autoplay_storage.models.records`` are rewritten from it on every save, with
the same derivations as every other primary (``browse.search_terms``, and the
readers of ``browse.user_summary_from_doc`` applied to just the fields a row
holds), so filters agree whichever primary is configured.

Why it is safe under concurrency:

- A state change is one transaction: ``SELECT ... FOR UPDATE`` on PostgreSQL;
  on SQLite the project's ``transaction_mode=IMMEDIATE`` takes the write lock at
  ``BEGIN`` and the busy timeout makes other writers wait instead of failing.
  A missing row created by two writers at once makes one hit the unique
  constraint; it retries and then finds (and locks) the row.
- Snapshots are write-once through the unique constraint
  (``INSERT ... ON CONFLICT DO NOTHING``), never by a read before the write.

ORM work runs in a thread pool of this module (one per database alias, shared
by every event loop of the process), so calls run in parallel and Django's
per-thread connections are reused across calls as ``CONN_MAX_AGE`` allows.
On SQLite the pool's writers also queue on an in-process lock, so the next
one starts as soon as the last commits (measured: p99 of 50 concurrent users
halved against polling in SQLite's busy handler).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import json
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from ..browse import (
    MAX_PAGE_SIZE,
    Page,
    ProductSummary,
    SessionSummary,
    UserQuery,
    UserSummary,
    search_terms,
    session_summary_from_doc,
)
from ..codec import dumps_text
from ..codec import parse_document as _parse
from ..errors import CorruptDocumentError, StorageUnavailableError
from ..protocol import StateDoc, StateMutation

T = TypeVar("T")

MAX_ID_LENGTH = 128  # the id columns' width
_CREATE_RETRIES = 3
_SEARCH_LOOKUP_FIRST = 1000
_WORKERS = 8

_executors: dict[str, ThreadPoolExecutor] = {}
_executors_lock = threading.Lock()

# Connections the pool threads left open between calls. A thread takes its own
# out before using it, so aclose() never closes one that is in use.
_idle: set[Any] = set()
_idle_lock = threading.Lock()

_sqlite_writers: dict[str, threading.Lock] = {}

_statements: dict[str, _Statements] = {}


class _Statements:
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


def _executor(using: str) -> ThreadPoolExecutor:
    with _executors_lock:
        pool = _executors.get(using)
        if pool is None:
            pool = _executors[using] = ThreadPoolExecutor(_WORKERS, thread_name_prefix=f"autoplay-db-{using}")
        return pool


def _dumps(doc: dict[str, Any]) -> str:
    return dumps_text(doc, allow_nan=True)


def _check_id(name: str, value: str) -> None:
    """Ids longer than the column, empty or with NUL would fail differently on each backend: refuse them alike."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{name} is longer than {MAX_ID_LENGTH} characters")
    if "\x00" in value:
        raise ValueError(f"{name} must not contain NUL characters")


def _storable(*ids: str) -> bool:
    """Reads of ids no write accepts find nothing, without a query (PostgreSQL would reject a NUL)."""
    try:
        for value in ids:
            _check_id("id", value)
    except ValueError:
        return False
    return True


def _encode_cursor(position: float, tiebreak: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([position, tiebreak]).encode()).decode()


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        position, tiebreak = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(position, int | float) or isinstance(position, bool) or not isinstance(tiebreak, str):
            raise ValueError
        return float(position), tiebreak
    except (ValueError, TypeError, binascii.Error, UnicodeError) as exc:
        raise ValueError("invalid cursor") from exc


def _state_key(product_id: str, user_id: str) -> str:
    return f"db:{product_id}/{user_id}"


def _snapshot_key(product_id: str, user_id: str, session_id: str) -> str:
    return f"db:{product_id}/{user_id}/{session_id}"


def _user_summary(product_id: str, user_id: str, doc: Any) -> UserSummary:
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
        return UserSummary(product_id=product_id, user_id=user_id, corrupt=True)
    version = doc.get("_v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        return UserSummary(product_id=product_id, user_id=user_id, corrupt=True)
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


def _snapshot_columns(doc: Any) -> tuple[int, float, float]:
    """``session_number, started_at, captured_at`` as ``SessionSnapshot.from_dict`` reads them (leniently)."""
    from ..user_adoption_state import _count, _now, _ts

    if not isinstance(doc, Mapping):  # session_summary_from_doc's corrupt row
        return 0, 0.0, 0.0
    captured = _ts(doc.get("captured_at"), _now())
    return max(1, _count(doc.get("session_number"))), _ts(doc.get("started_at"), captured), captured


class DatabaseStorageAdapter:
    """Readable, browsable primary on a Django database alias."""

    name = "database"

    def __init__(self, using: str = "default") -> None:
        self.using = using

    # -- plumbing --

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        # A plain executor hop with the caller's context, as sync_to_async(thread_sensitive=False)
        # does, without its bookkeeping for async_to_sync calls from the thread (plain functions here):
        # measured 10-15% of a session lifecycle, which makes five hops.
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(_executor(self.using), context.run, self._in_thread, fn, *args)

    def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ORM work with Django's request-style connection handling, failures as ``StorageUnavailableError``."""
        from django.db import DatabaseError, connections

        connection = connections[self.using]
        with _idle_lock:
            _idle.discard(connection)
        try:
            connection.close_if_unusable_or_obsolete()
            return fn(*args)
        except DatabaseError as exc:
            raise StorageUnavailableError(f"database ({self.using}): {exc}") from exc
        finally:
            connection.close_if_unusable_or_obsolete()
            if connection.connection is not None:  # kept open under CONN_MAX_AGE: aclose() can reach it
                with _idle_lock:
                    _idle.add(connection)

    @staticmethod
    def _sql(connection: Any) -> _Statements:
        """The statements for this connection's backend (by vendor: an alias may be reconfigured)."""
        statements = _statements.get(connection.vendor)
        if statements is None:
            statements = _statements[connection.vendor] = _Statements(connection)
        return statements

    def _writer(self) -> contextlib.AbstractContextManager[Any]:
        """On SQLite, this process's writers queue on a lock: the next one starts the moment the
        last commits, instead of polling in SQLite's busy handler (sleeps of up to 100 ms). Other
        processes are still kept in line by the busy timeout."""
        from django.db import connections

        if connections[self.using].vendor != "sqlite":
            return contextlib.nullcontext()
        with _executors_lock:
            return _sqlite_writers.setdefault(self.using, threading.Lock())

    # -- wire --

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        await self.update_user_state(product_id, user_id, lambda _current: state)

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        raw = await self.get_raw_user_state(product_id, user_id)
        return None if raw is None else _parse(_state_key(product_id, user_id), raw)

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        await self.create_session_snapshot(product_id, user_id, session_id, snapshot)

    async def create_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> dict[str, Any]:
        """Write-once; the insert's row count says whether this call wrote it, so only a conflict reads."""
        existing = await self._insert_snapshot(product_id, user_id, session_id, _dumps(snapshot), snapshot)
        if existing is None:
            return snapshot
        return _parse(_snapshot_key(product_id, user_id, session_id), existing)

    async def get_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> dict[str, Any] | None:
        raw = await self.get_raw_session_snapshot(product_id, user_id, session_id)
        return None if raw is None else _parse(_snapshot_key(product_id, user_id, session_id), raw)

    # -- atomic update --

    async def update_user_state(self, product_id: str, user_id: str, mutate: StateMutation) -> StateDoc | None:
        _check_id("product_id", product_id)
        _check_id("user_id", user_id)
        return await self._run(self._update_sync, product_id, user_id, mutate)

    def _update_sync(self, product_id: str, user_id: str, mutate: StateMutation) -> StateDoc | None:
        from django.db import IntegrityError, connections, transaction

        connection = connections[self.using]
        sql = self._sql(connection)
        for attempt in range(_CREATE_RETRIES):
            try:
                with self._writer(), transaction.atomic(using=self.using), connection.cursor() as cursor:
                    cursor.execute(sql.select_state, (product_id, user_id))
                    row = cursor.fetchone()
                    current = None if row is None else _parse(_state_key(product_id, user_id), row[1])
                    new = mutate(current)
                    if new is None:
                        return current
                    self._write_state(row, product_id, user_id, _dumps(new), new)
                    return new
            except IntegrityError:
                # Another writer created the row between our read and insert:
                # the retry finds it and waits for its lock.
                if attempt == _CREATE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def _write_state(
        self, row: tuple[Any, ...] | None, product_id: str, user_id: str, raw: str, doc: dict[str, Any] | None
    ) -> None:
        """Write the document and everything derived from it (inside the caller's transaction).

        ``row`` is ``(id, document, search_text)`` of the locked row (``_Statements.select_state``),
        or None to create it.
        """
        from django.db import connections

        summary = (
            _user_summary(product_id, user_id, doc)
            if doc is not None
            else UserSummary(product_id=product_id, user_id=user_id, corrupt=True)
        )
        terms = sorted(search_terms(user_id, summary.metadata))
        search_text = "\n".join(terms)
        columns = (  # in the order of _STATE_COLUMNS
            raw,
            summary.journey_state,
            summary.mastery_level,
            summary.mastery_rating,
            summary.completion_rate,
            summary.onboarded,
            summary.sessions_count,
            summary.first_seen_at or 0.0,
            summary.last_activity_at or 0.0,
            search_text,
            summary.corrupt,
        )
        connection = connections[self.using]
        sql = self._sql(connection)
        with connection.cursor() as cursor:
            if row is None:
                cursor.execute(sql.insert_state, (product_id, user_id, 1, *columns))
                state_id = cursor.fetchone()[0]
            else:
                state_id = row[0]
                cursor.execute(sql.update_state, (*columns, state_id))
                if row[2] == search_text:
                    return
                cursor.execute(sql.delete_terms, (state_id,))
            cursor.executemany(sql.insert_term, [(state_id, product_id, term) for term in terms])

    # -- raw documents (the console shows corrupt ones; autoplay_copy moves them faithfully) --

    async def get_raw_user_state(self, product_id: str, user_id: str) -> str | None:
        if not _storable(product_id, user_id):
            return None
        return await self._run(self._read_document, "select_state_document", (product_id, user_id))

    async def get_raw_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> str | None:
        if not _storable(product_id, user_id, session_id):
            return None
        return await self._run(self._read_document, "select_snapshot_document", (product_id, user_id, session_id))

    def _read_document(self, statement: str, key: tuple[str, ...]) -> str | None:
        from django.db import connections

        connection = connections[self.using]
        with connection.cursor() as cursor:
            cursor.execute(getattr(self._sql(connection), statement), key)
            row = cursor.fetchone()
        return None if row is None else row[0]

    async def save_raw_user_state(self, product_id: str, user_id: str, raw: str) -> None:
        """Store text as it is (a corrupt document copied from another primary stays recoverable)."""
        _check_id("product_id", product_id)
        _check_id("user_id", user_id)

        def write() -> None:
            from django.db import connections, transaction

            try:
                doc: dict[str, Any] | None = _parse(_state_key(product_id, user_id), raw)
            except CorruptDocumentError:
                doc = None
            connection = connections[self.using]
            sql = self._sql(connection)
            with self._writer(), transaction.atomic(using=self.using), connection.cursor() as cursor:
                cursor.execute(sql.select_state, (product_id, user_id))
                self._write_state(cursor.fetchone(), product_id, user_id, raw, doc)

        await self._run(write)

    async def save_raw_session_snapshot(self, product_id: str, user_id: str, session_id: str, raw: str) -> None:
        """Store text as it is; write-once like ``save_session_snapshot``."""
        try:
            doc: dict[str, Any] | None = _parse(_snapshot_key(product_id, user_id, session_id), raw)
        except CorruptDocumentError:
            doc = None
        await self._insert_snapshot(product_id, user_id, session_id, raw, doc)

    async def _insert_snapshot(
        self, product_id: str, user_id: str, session_id: str, raw: str, doc: dict[str, Any] | None
    ) -> str | None:
        """Write-once by the unique constraint (``ON CONFLICT DO NOTHING``): a second write changes nothing.

        Returns ``None`` when this call wrote the row, else the text stored before.
        """
        _check_id("product_id", product_id)
        _check_id("user_id", user_id)
        _check_id("session_id", session_id)
        number, started_at, captured_at = _snapshot_columns(doc) if doc is not None else (0, 0.0, 0.0)

        def write() -> str | None:
            from django.db import connections
            from django.utils import timezone

            connection = connections[self.using]
            sql = self._sql(connection)
            values = (  # in the order of _SNAPSHOT_COLUMNS
                product_id,
                user_id,
                session_id,
                raw,
                number,
                started_at,
                captured_at,
                sql.created_at.get_db_prep_value(timezone.now(), connection),
            )
            with self._writer(), connection.cursor() as cursor:
                cursor.execute(sql.insert_snapshot, values)
                if cursor.rowcount == 1:
                    return None
                cursor.execute(sql.select_snapshot_document, (product_id, user_id, session_id))
                row = cursor.fetchone()
            return raw if row is None else row[0]

        return await self._run(write)

    # -- browsing --

    async def ping(self) -> None:
        from django.db import connections

        def ping() -> None:
            with connections[self.using].cursor() as cursor:
                cursor.execute("SELECT 1")

        await self._run(ping)

    async def list_products(self) -> list[ProductSummary]:
        from django.db.models import Count

        from ..models.records import UserStateRecord

        def read() -> list[ProductSummary]:
            records = UserStateRecord.objects.using(self.using).order_by()
            journeys: dict[str, dict[str, int]] = {}
            levels: dict[str, dict[str, int]] = {}
            for product_id, state, n in records.values_list("product_id", "journey_state").annotate(n=Count("id")):
                journeys.setdefault(product_id, {})[state] = n
            for product_id, level, n in records.values_list("product_id", "mastery_level").annotate(n=Count("id")):
                levels.setdefault(product_id, {})[level] = n
            return [
                ProductSummary(product_id, sum(journeys[product_id].values()), journeys[product_id], levels[product_id])
                for product_id in sorted(journeys)
            ]

        return await self._run(read)

    async def list_users(
        self, product_id: str, query: UserQuery | None = None, *, cursor: str | None = None, limit: int = 50
    ) -> Page[UserSummary]:
        query = query or UserQuery()
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        after = _decode_cursor(cursor) if cursor else None
        if not _storable(product_id):
            return Page([])
        return await self._run(self._list_users_sync, product_id, query, after, limit)

    def _list_users_sync(
        self, product_id: str, query: UserQuery, after: tuple[float, str] | None, limit: int
    ) -> Page[UserSummary]:
        from django.db import connections
        from django.db.models import Q

        from ..models.records import UserSearchTerm, UserStateRecord

        rows = UserStateRecord.objects.using(self.using).filter(product_id=product_id)
        if query.journey_state:
            rows = rows.filter(journey_state=query.journey_state)
        if query.mastery_level:
            rows = rows.filter(mastery_level=query.mastery_level)
        if query.onboarded is not None:
            rows = rows.filter(onboarded=query.onboarded)
        needle = (query.search or "").strip().lower()
        if needle:
            terms = UserSearchTerm.objects.using(self.using).filter(product_id=product_id)
            if connections[self.using].vendor == "postgresql":
                terms = terms.filter(term__startswith=needle)  # LIKE 'x%' on the varchar_pattern_ops index
            else:  # binary collation: a range is a prefix match, and uses the index (LIKE would not)
                terms = terms.filter(term__gte=needle, term__lt=needle + "\U0010ffff")
            # Planners misjudge how many users a prefix matches. A selective one is
            # looked up first (the matches are then sorted); an unselective one is
            # left as a subquery, where walking the activity order finds a page fast.
            ids = list(terms.values_list("state_id", flat=True).distinct()[: _SEARCH_LOOKUP_FIRST + 1])
            if len(ids) <= _SEARCH_LOOKUP_FIRST:
                rows = rows.filter(id__in=ids)
            else:
                rows = rows.filter(id__in=terms.values("state_id"))
        descending = query.order == "-last_activity"
        if after is not None:
            at, user_id = after
            if descending:
                # The first condition is the index seek; the second only drops the ties before the cursor.
                rows = rows.filter(Q(last_activity_at__lte=at), Q(last_activity_at__lt=at) | Q(user_id__lt=user_id))
            else:
                rows = rows.filter(Q(last_activity_at__gte=at), Q(last_activity_at__gt=at) | Q(user_id__gt=user_id))
        order = ("-last_activity_at", "-user_id") if descending else ("last_activity_at", "user_id")
        found = list(rows.order_by(*order).values_list("user_id", "document", "last_activity_at")[: limit + 1])
        items = [self._user_row(product_id, user_id, raw) for user_id, raw, _ in found[:limit]]
        next_cursor = None
        if len(found) > limit:
            last_user, _, last_at = found[limit - 1]
            next_cursor = _encode_cursor(last_at, last_user)
        return Page(items, next_cursor)

    @staticmethod
    def _user_row(product_id: str, user_id: str, raw: str) -> UserSummary:
        try:
            doc = _parse(_state_key(product_id, user_id), raw)
        except CorruptDocumentError:
            return UserSummary(product_id=product_id, user_id=user_id, corrupt=True)
        return _user_summary(product_id, user_id, doc)

    async def list_sessions(
        self,
        product_id: str,
        user_id: str,
        *,
        cursor: str | None = None,
        limit: int = 50,
        newest_first: bool = True,
    ) -> Page[SessionSummary]:
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        after = _decode_cursor(cursor) if cursor else None
        if not _storable(product_id, user_id):
            return Page([])
        return await self._run(self._list_sessions_sync, product_id, user_id, after, limit, newest_first)

    def _list_sessions_sync(
        self, product_id: str, user_id: str, after: tuple[float, str] | None, limit: int, newest_first: bool
    ) -> Page[SessionSummary]:
        from django.db.models import Q

        from ..models.records import SessionSnapshotRecord

        rows = SessionSnapshotRecord.objects.using(self.using).filter(product_id=product_id, user_id=user_id)
        if after is not None:
            at, session_id = after
            if newest_first:
                rows = rows.filter(Q(captured_at__lte=at), Q(captured_at__lt=at) | Q(session_id__lt=session_id))
            else:
                rows = rows.filter(Q(captured_at__gte=at), Q(captured_at__gt=at) | Q(session_id__gt=session_id))
        order = ("-captured_at", "-session_id") if newest_first else ("captured_at", "session_id")
        found = list(rows.order_by(*order).values_list("session_id", "document", "captured_at")[: limit + 1])
        items = []
        for session_id, raw, captured_at in found[:limit]:
            try:
                doc = _parse(_snapshot_key(product_id, user_id, session_id), raw)
            except CorruptDocumentError:
                items.append(SessionSummary(session_id, 0, started_at=0.0, captured_at=captured_at, corrupt=True))
                continue
            items.append(session_summary_from_doc(session_id, doc))
        next_cursor = None
        if len(found) > limit:
            last_session, _, last_at = found[limit - 1]
            next_cursor = _encode_cursor(last_at, last_session)
        return Page(items, next_cursor)

    async def aclose(self) -> None:
        """Close the connections this alias keeps open between calls (persistent under ``CONN_MAX_AGE``)."""
        await sync_to_async(self._close_idle, thread_sensitive=False)()

    def _close_idle(self) -> None:
        with _idle_lock:
            mine = [c for c in _idle if c.alias == self.using]
            for connection in mine:
                _idle.discard(connection)
                # Owned by an idle pool thread, which cannot touch it until we release the lock.
                connection.inc_thread_sharing()
                try:
                    connection.close()
                finally:
                    connection.dec_thread_sharing()
