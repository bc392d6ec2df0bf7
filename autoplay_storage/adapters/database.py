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
- A session end (``record_session_end``) is one transaction: the state row is
  locked first, so the ends of one user queue on it; the snapshot insert and
  the folded state commit together, or neither does.

The hot path's SQL and the browse columns live in ``database_rows``; the listings'
cursors, page size and corrupt rows in ``common``, shared with the other primaries.

ORM work runs in a thread pool of this module (one per database alias, shared
by every event loop of the process), so calls run in parallel and Django's
per-thread connections are reused across calls as ``CONN_MAX_AGE`` allows.
On SQLite the pool's writers also queue on an in-process lock, so the next
one starts as soon as the last commits (measured: p99 of 50 concurrent users
halved against polling in SQLite's busy handler).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from asgiref.sync import sync_to_async

from ..browse import Page, ProductSummary, SessionSummary, UserQuery, UserSummary, search_terms
from ..codec import dumps_text
from ..codec import parse_document as _parse
from ..errors import CorruptDocumentError, StorageUnavailableError
from ..protocol import SessionFold, StateDoc, StateMutation
from . import database_facts
from .common import (
    Position,
    clamp_limit,
    corrupt_user_row,
    decode_cursor,
    next_page,
    search_needle,
    session_row,
    user_row,
)
from .database_erase import check_tombstone, erase_rows
from .database_insight import DatabaseInsight
from .database_rows import Statements, check_id, snapshot_columns, statements_for, storable, user_summary

T = TypeVar("T")

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


def _executor(using: str) -> ThreadPoolExecutor:
    with _executors_lock:
        pool = _executors.get(using)
        if pool is None:
            pool = _executors[using] = ThreadPoolExecutor(_WORKERS, thread_name_prefix=f"autoplay-db-{using}")
        return pool


def _dumps(doc: dict[str, Any]) -> str:
    return dumps_text(doc, allow_nan=True)


def _state_key(product_id: str, user_id: str) -> str:
    return f"db:{product_id}/{user_id}"


def _snapshot_key(product_id: str, user_id: str, session_id: str) -> str:
    return f"db:{product_id}/{user_id}/{session_id}"


class DatabaseStorageAdapter(DatabaseInsight):
    """Readable, browsable primary on a Django database alias."""

    name = "database"

    def __init__(self, using: str = "default") -> None:
        self.using = using
        self.catalog_sent = database_facts.SentLately()  # the catalog rows this adapter made sure of lately

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
    def _sql(connection: Any) -> Statements:
        return statements_for(connection)

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
        check_id("product_id", product_id)
        check_id("user_id", user_id)
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
                    if new is None:  # mutate may have scribbled on its copy: hand back what is stored
                        return None if row is None else _parse(_state_key(product_id, user_id), row[1])
                    self._write_state(row, product_id, user_id, _dumps(new), new)
                    return new
            except IntegrityError:
                # Another writer created the row between our read and insert:
                # the retry finds it and waits for its lock.
                if attempt == _CREATE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def replace_state_if_raw(self, product_id: str, user_id: str, expected_raw: str, state: StateDoc) -> bool:
        """Under the row lock: written only if the stored text is still ``expected_raw``."""
        check_id("product_id", product_id)
        check_id("user_id", user_id)
        raw = _dumps(state)

        def write() -> bool:
            from django.db import connections, transaction

            connection = connections[self.using]
            sql = self._sql(connection)
            with self._writer(), transaction.atomic(using=self.using), connection.cursor() as cursor:
                cursor.execute(sql.select_state, (product_id, user_id))
                row = cursor.fetchone()
                if row is None or row[1] != expected_raw:
                    return False
                self._write_state(row, product_id, user_id, raw, state)
                return True

        return await self._run(write)

    async def record_session_end(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any], fold: SessionFold
    ) -> tuple[dict[str, Any], StateDoc | None]:
        """Freeze the snapshot and fold it into the state in one transaction: a fold that raises leaves neither."""
        for name, value in (("product_id", product_id), ("user_id", user_id), ("session_id", session_id)):
            check_id(name, value)
        raw = _dumps(snapshot)
        columns = snapshot_columns(snapshot)
        return await self._run(self._end_sync, product_id, user_id, session_id, snapshot, raw, columns, fold)

    def _end_sync(
        self,
        product_id: str,
        user_id: str,
        session_id: str,
        snapshot: dict[str, Any],
        raw: str,
        columns: tuple[int, float, float],
        fold: SessionFold,
    ) -> tuple[dict[str, Any], StateDoc | None]:
        from django.db import IntegrityError, connections, transaction

        connection = connections[self.using]
        sql = self._sql(connection)
        for attempt in range(_CREATE_RETRIES):
            try:
                with (
                    self._writer(),
                    transaction.atomic(using=self.using),
                    connection.cursor() as cursor,
                    database_facts.one_statement(connection),  # the snapshot's insight changes with the state's
                ):
                    # The state row first: concurrent ends of one user queue on its lock, not on the snapshots.
                    cursor.execute(sql.select_state, (product_id, user_id))
                    row = cursor.fetchone()
                    # After the lock: an erasure holds it while it deletes, so its tombstone is visible here.
                    check_tombstone(self.using, product_id, user_id, snapshot)
                    existing = self._insert_snapshot_sync(product_id, user_id, session_id, raw, columns, snapshot)
                    key = _snapshot_key(product_id, user_id, session_id)
                    frozen = snapshot if existing is None else _parse(key, existing) or {}
                    current = None if row is None else _parse(_state_key(product_id, user_id), row[1])
                    new = fold(frozen, current)
                    if new is None:  # a retried end, most likely: what is stored, not fold's scratch copy
                        return frozen, None if row is None else _parse(_state_key(product_id, user_id), row[1])
                    self._write_state(row, product_id, user_id, _dumps(new), new)
                    return frozen, new
            except IntegrityError:
                # Another writer created the state row meanwhile: the retry finds it and waits for its lock.
                if attempt == _CREATE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    # -- erasure --

    async def erase_user(self, product_id: str, user_id: str, *, tombstone_s: int) -> dict[str, int]:
        """One transaction: the user's row locked, the tombstone written, every row of the user deleted."""
        if not storable(product_id, user_id):
            return {"state_rows": 0, "snapshot_rows": 0, "search_rows": 0}

        def erase() -> dict[str, int]:
            with self._writer():
                return erase_rows(self.using, product_id, user_id, tombstone_s)

        return await self._run(erase)

    def _write_state(
        self, row: tuple[Any, ...] | None, product_id: str, user_id: str, raw: str, doc: dict[str, Any] | None
    ) -> None:
        """Write the document and everything derived from it (inside the caller's transaction).

        ``row`` is ``(id, document, search_text)`` of the locked row (``Statements.select_state``),
        or None to create it.
        """
        from django.db import connections

        summary = user_summary(product_id, user_id, doc) if doc is not None else corrupt_user_row(product_id, user_id)
        terms = sorted(search_terms(user_id, summary.metadata))
        search_text = "\n".join(terms)
        columns = (  # in the order of database_rows._STATE_COLUMNS
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
        with connection.cursor() as cursor, database_facts.one_statement(connection):
            if row is None:
                cursor.execute(sql.insert_state, (product_id, user_id, 1, *columns))
                state_id = cursor.fetchone()[0]
                database_facts.write_user(connection, state_id, product_id, user_id, None, doc, raw)
            else:
                state_id = row[0]
                database_facts.write_user(connection, state_id, product_id, user_id, row[1], doc, raw)
                facts, params = database_facts.held_as_with(connection)  # PostgreSQL: in the update itself
                cursor.execute(facts + sql.update_state, (*params, *columns, state_id))
            if row is not None:
                if row[2] == search_text:
                    return
                cursor.execute(sql.delete_terms, (state_id,))
            cursor.executemany(sql.insert_term, [(state_id, product_id, term) for term in terms])

    # -- raw documents (the console shows corrupt ones; autoplay_copy moves them faithfully) --

    async def get_raw_user_state(self, product_id: str, user_id: str) -> str | None:
        if not storable(product_id, user_id):
            return None
        return await self._run(self._read_document, "select_state_document", (product_id, user_id))

    async def get_raw_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> str | None:
        if not storable(product_id, user_id, session_id):
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
        check_id("product_id", product_id)
        check_id("user_id", user_id)

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
        check_id("product_id", product_id)
        check_id("user_id", user_id)
        check_id("session_id", session_id)
        columns = snapshot_columns(doc)

        def write() -> str | None:
            from django.db import transaction

            with self._writer(), transaction.atomic(using=self.using):  # the snapshot and its counters
                return self._insert_snapshot_sync(product_id, user_id, session_id, raw, columns, doc)

        return await self._run(write)

    def _insert_snapshot_sync(
        self, product_id: str, user_id: str, session_id: str, raw: str, columns: tuple[int, float, float], doc: Any
    ) -> str | None:
        """The write-once insert (in the caller's transaction, if any); the text stored before on a conflict.

        ``doc``: what ``raw`` was written from (or None), so its counts need not parse it again."""
        from django.db import connections
        from django.utils import timezone

        connection = connections[self.using]
        sql = self._sql(connection)
        number, started_at, captured_at = columns
        values = (  # in the order of database_rows._SNAPSHOT_COLUMNS
            product_id,
            user_id,
            session_id,
            raw,
            number,
            started_at,
            captured_at,
            sql.created_at.get_db_prep_value(timezone.now(), connection),
        )
        with connection.cursor() as cursor:
            cursor.execute(sql.insert_snapshot, values)
            if cursor.rowcount == 1:
                database_facts.write_snapshot(connection, product_id, user_id, raw, doc, self.catalog_sent)
                return None
            cursor.execute(sql.select_snapshot_document, (product_id, user_id, session_id))
            row = cursor.fetchone()
        return raw if row is None else row[0]

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
            journeys: dict[str, dict[str, int]] = {}  # COUNT(*), not COUNT(id): the journey and mastery
            levels: dict[str, dict[str, int]] = {}  # indexes then answer it without reading the rows
            for product_id, state, n in records.values_list("product_id", "journey_state").annotate(n=Count("*")):
                journeys.setdefault(product_id, {})[state] = n
            for product_id, level, n in records.values_list("product_id", "mastery_level").annotate(n=Count("*")):
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
        limit = clamp_limit(limit)
        after = decode_cursor(cursor)
        if not storable(product_id):
            return Page([])
        return await self._run(self._list_users_sync, product_id, query, after, limit)

    def _list_users_sync(
        self, product_id: str, query: UserQuery, after: Position | None, limit: int
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
        needle = search_needle(query)
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
        page, next_cursor = next_page(found, limit, lambda row: (row[2], row[0]))
        items = [user_row(product_id, uid, _state_key(product_id, uid), raw, user_summary) for uid, raw, _ in page]
        return Page(items, next_cursor)

    async def list_sessions(
        self,
        product_id: str,
        user_id: str,
        *,
        cursor: str | None = None,
        limit: int = 50,
        newest_first: bool = True,
    ) -> Page[SessionSummary]:
        limit = clamp_limit(limit)
        after = decode_cursor(cursor)
        if not storable(product_id, user_id):
            return Page([])
        return await self._run(self._list_sessions_sync, product_id, user_id, after, limit, newest_first)

    def _list_sessions_sync(
        self, product_id: str, user_id: str, after: Position | None, limit: int, newest_first: bool
    ) -> Page[SessionSummary]:
        page, next_cursor = self._history_rows(product_id, user_id, after, limit, newest_first)
        items = [
            session_row(sid, _snapshot_key(product_id, user_id, sid), raw, captured_at=captured_at)
            for sid, raw, captured_at in page
        ]
        return Page(items, next_cursor)

    def _history_rows(
        self, product_id: str, user_id: str, after: Position | None, limit: int, newest_first: bool
    ) -> tuple[list[tuple[str, str, float]], str | None]:
        """One keyset page of ``(session_id, document, captured_at)``, and the next cursor."""
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
        return next_page(found, limit, lambda row: (row[2], row[0]))

    async def list_raw_sessions(
        self, product_id: str, user_id: str, *, cursor: str | None = None, limit: int = 50
    ) -> Page[tuple[str, str]]:
        """The history oldest first as ``(session_id, stored text)``: one query per page (the export)."""
        after = decode_cursor(cursor)
        if not storable(product_id, user_id):
            return Page([])

        def read() -> Page[tuple[str, str]]:
            page, next_cursor = self._history_rows(product_id, user_id, after, clamp_limit(limit), False)
            return Page([(sid, raw) for sid, raw, _ in page], next_cursor)

        return await self._run(read)

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
