"""Benchmark: the database adapter on SQLite and on PostgreSQL.

Prints, per backend: sessions/s (start + end of one session) run serially and
with 50 concurrent users, with p50/p99 of one session; and the time of a
users-list query over 100,000 users (filter by journey state, sort by last
activity, first page), plus a deep page (keyset cursor) and a prefix search.

Configures Django itself: its own temporary SQLite file (same options as the
project: WAL, BEGIN IMMEDIATE, 30 s busy timeout, kept connections) and its own PostgreSQL
database (``--pg-url``, created and dropped here; never anyone else's).

    .venv/bin/python bench/engine_database.py [--backends sqlite,postgres] [--sessions 400]
        [--concurrent-users 50] [--list-users 100000] [--pg-url postgres://postgres@127.0.0.1:5432/autoplay_bench_dbadapter]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/autoplay_bench_dbadapter"
# bench/engine.py's database-postgres backend: its own database, so the two scripts never share one.
ENGINE_PG_URL = "postgres://postgres@127.0.0.1:5432/autoplay_bench_engine_dbadapter"
PRODUCT = "bench_prod"


def configure_django(sqlite_path: Path, pg_url: str | None, copies: tuple[str, ...] = ("",)) -> None:
    """``copies``: suffixes of the SQLite files and PostgreSQL databases to set up (``""``: the plain ones)."""
    import dj_database_url
    import django
    from django.conf import settings

    databases: dict[str, Any] = {}
    for copy in copies:
        databases[_alias("sqlite", copy)] = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(sqlite_path.with_stem(sqlite_path.stem + copy)),
            "CONN_MAX_AGE": 60,
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
        if pg_url:
            databases[_alias("postgres", copy)] = dj_database_url.parse(pg_url + copy, conn_max_age=60)
    settings.configure(
        DATABASES=databases,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "axes", "autoplay_storage"],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
    )
    django.setup()


def _alias(kind: str, copy: str) -> str:
    return {"sqlite": "default", "postgres": "postgres"}[kind] if not copy else f"{kind}{copy}"


def pg_admin(pg_url: str, sql: str) -> None:
    """CREATE/DROP DATABASE on the maintenance database (outside any transaction)."""
    import dj_database_url
    import psycopg

    cfg = dj_database_url.parse(pg_url)
    with psycopg.connect(
        host=cfg["HOST"] or "127.0.0.1",
        port=cfg["PORT"] or 5432,
        user=cfg["USER"] or None,
        password=cfg["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
        connect_timeout=5,
    ) as conn:
        conn.execute(sql)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def one_session(storage: Any, user_id: str, n: int, timings: list[float]) -> None:
    from autoplay_storage.lifecycle import on_session_end, on_session_start
    from autoplay_storage.user_adoption_state import SessionSnapshot

    session_id = f"{user_id}_s{n}"
    began = time.perf_counter()
    state, _ = await on_session_start(PRODUCT, user_id, session_id, storage)
    snap = SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=state.sessions.count + 1,
        started_at=time.time(),
        catalog_workflow_ids=["wf_a", "wf_b", "wf_c"],
    )
    await on_session_end(PRODUCT, user_id, snap, storage)
    timings.append(time.perf_counter() - began)


def report(label: str, sessions: int, elapsed: float, timings: list[float]) -> None:
    print(
        f"  {label:<28} {sessions / elapsed:8.0f} sessions/s   "
        f"p50 {pct(timings, 0.5) * 1000:7.2f} ms   p99 {pct(timings, 0.99) * 1000:7.2f} ms   ({sessions} sessions)"
    )


async def bench_sessions(alias: str, sessions: int, concurrent_users: int) -> None:
    from autoplay_storage.adapters.database import DatabaseStorageAdapter
    from autoplay_storage.manager import StorageManager

    adapter = DatabaseStorageAdapter(alias)
    storage = StorageManager([adapter])
    try:
        timings: list[float] = []
        began = time.perf_counter()
        for n in range(sessions):
            await one_session(storage, f"serial_{n % 20}", n, timings)
        report("serial", sessions, time.perf_counter() - began, timings)

        per_user = max(1, sessions // concurrent_users)
        timings = []

        async def user(u: int) -> None:
            for n in range(per_user):
                await one_session(storage, f"conc_{u}", n, timings)

        began = time.perf_counter()
        await asyncio.gather(*(user(u) for u in range(concurrent_users)))
        report(
            f"{concurrent_users} concurrent users", per_user * concurrent_users, time.perf_counter() - began, timings
        )
    finally:
        await adapter.aclose()


def load_users(alias: str, count: int) -> float:
    """Bulk-load ``count`` users straight through the ORM (documents and browse columns alike)."""
    from django.db import connections, transaction

    from autoplay_storage.models.records import UserSearchTerm, UserStateRecord
    from autoplay_storage.user_adoption_state import UserAdoptionState

    template = UserAdoptionState(user_id="x", first_seen_at=1.7e9, last_updated_at=1.7e9).to_dict()
    levels = ["novice", "beginner", "intermediate", "proficient", "power_user"]
    began = time.perf_counter()
    batch = 2000
    with transaction.atomic(using=alias):
        for start in range(0, count, batch):
            rows = []
            for i in range(start, min(count, start + batch)):
                user_id = f"user_{i:06d}"
                journey = "onboarded" if i % 3 == 0 else "onboarding"
                level = levels[i % 5]
                at = 1.7e9 + (i * 7919) % count  # activity order unrelated to the id order
                doc = {
                    **template,
                    "user_id": user_id,
                    "metadata": {"email": f"{user_id}@example.com", "role": "admin" if i % 50 == 0 else "member"},
                    "journey_state": journey,
                    "mastery": {"rating": i % 11, "level": level, "description": ""},
                    "last_updated_at": at,
                }
                rows.append(
                    UserStateRecord(
                        product_id=PRODUCT,
                        user_id=user_id,
                        document=json.dumps(doc, separators=(",", ":")),
                        journey_state=journey,
                        mastery_level=level,
                        mastery_rating=i % 11,
                        onboarded=journey == "onboarded",
                        first_seen_at=1.7e9,
                        last_activity_at=at,
                        search_text=f"{user_id}\n{user_id}@example.com",
                    )
                )
            created = UserStateRecord.objects.using(alias).bulk_create(rows)  # ids come back (RETURNING)
            UserSearchTerm.objects.using(alias).bulk_create(
                [UserSearchTerm(state_id=r.pk, product_id=PRODUCT, term=r.user_id) for r in created]
                + [UserSearchTerm(state_id=r.pk, product_id=PRODUCT, term=f"{r.user_id}@example.com") for r in created]
            )
    with connections[alias].cursor() as cursor:
        cursor.execute("ANALYZE")
    return time.perf_counter() - began


async def bench_list(alias: str, count: int, repeats: int) -> None:
    from asgiref.sync import sync_to_async

    from autoplay_storage.adapters.database import DatabaseStorageAdapter
    from autoplay_storage.browse import UserQuery

    loaded = await sync_to_async(load_users, thread_sensitive=False)(alias, count)
    print(f"  loaded {count} users in {loaded:.1f} s (bulk_create)")
    adapter = DatabaseStorageAdapter(alias)
    try:
        queries = {
            "journey=onboarded, first page": (UserQuery(journey_state="onboarded"), 0),
            "journey=onboarded, page 200": (UserQuery(journey_state="onboarded"), 199),
            "search 'user_0123' prefix": (UserQuery(search="user_0123"), 0),
        }
        for label, (query, skip) in queries.items():
            cursor = None
            for _ in range(skip):
                cursor = (await adapter.list_users(PRODUCT, query, cursor=cursor, limit=50)).next_cursor
            timings = []
            for _ in range(repeats):
                began = time.perf_counter()
                page = await adapter.list_users(PRODUCT, query, cursor=cursor, limit=50)
                timings.append(time.perf_counter() - began)
            assert page.items, f"{label}: empty page"
            print(
                f"  list_users {label:<30} p50 {pct(timings, 0.5) * 1000:7.2f} ms   "
                f"p99 {pct(timings, 0.99) * 1000:7.2f} ms   ({len(page.items)} rows, {repeats} runs)"
            )
    finally:
        await adapter.aclose()


async def run_backend(alias: str, args: argparse.Namespace) -> None:
    from asgiref.sync import sync_to_async
    from django.core.management import call_command

    await sync_to_async(call_command, thread_sensitive=False)("migrate", database=alias, verbosity=0)
    await bench_sessions(alias, args.sessions, args.concurrent_users)
    await bench_list(alias, args.list_users, args.repeats)


# --- backends of bench/engine.py -----------------------------------------------------------

_configured: dict[str, Any] = {}


# A backend's own copy of the database (``args.database_copy``): "-no-insight" runs beside the plain
# one on its own SQLite file and PostgreSQL database, so neither sees the other's rows.
COPIES = ("", "_no_insight")


def ensure_django(pg_url: str) -> None:
    """Configure Django once per process: temporary SQLite files, and the PostgreSQL bench databases' aliases."""
    if _configured:
        return
    tmp = tempfile.TemporaryDirectory(prefix="autoplay-bench-db-")
    _configured["tmp"] = tmp
    configure_django(Path(tmp.name) / "bench.sqlite3", pg_url, COPIES)


class _PostgresCpu:
    """CPU seconds the server's backends for one database have used (``/proc``, when the server is local).

    A backend that exits keeps the last reading taken of it, so a connection
    closed under ``CONN_MAX_AGE`` does not make the total go backwards.
    """

    def __init__(self, pg_url: str) -> None:
        import os

        import dj_database_url
        import psycopg

        cfg = dj_database_url.parse(pg_url)
        self.dbname = cfg["NAME"]
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._seen: dict[int, float] = {}
        self._conn = psycopg.connect(
            host=cfg["HOST"] or "127.0.0.1", port=cfg["PORT"] or 5432, user=cfg["USER"] or None,
            password=cfg["PASSWORD"] or None, dbname="postgres", autocommit=True,
        )

    def available(self) -> bool:
        return _server_is_local(self._conn)

    def read(self) -> float:
        pids = self._conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.dbname,)).fetchall()
        for (pid,) in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # exited meanwhile
                continue
            self._seen[pid] = (int(fields[11]) + int(fields[12])) / self._ticks  # utime, stime
        return sum(self._seen.values())

    def close(self) -> None:
        self._conn.close()


def _server_is_local(conn: Any) -> bool:
    """Whether the server runs on this machine: our connection's backend is a process ``/proc`` shows."""
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    try:
        return "postgres" in Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return False


class _StatementCounter:
    """Counts SQL statements the ORM executes (every thread): the database's round trips, BEGIN/COMMIT aside."""

    def __init__(self) -> None:
        from django.db.backends.utils import CursorWrapper

        self.count = 0
        self._cls = CursorWrapper
        self._originals = (CursorWrapper._execute, CursorWrapper._executemany)
        counter = self
        execute, executemany = self._originals

        def counted_execute(cursor: Any, *args: Any, **kwargs: Any) -> Any:
            counter.count += 1
            return execute(cursor, *args, **kwargs)

        def counted_executemany(cursor: Any, *args: Any, **kwargs: Any) -> Any:
            counter.count += 1
            return executemany(cursor, *args, **kwargs)

        CursorWrapper._execute = counted_execute  # type: ignore[method-assign]
        CursorWrapper._executemany = counted_executemany  # type: ignore[method-assign]

    def restore(self) -> None:
        self._cls._execute, self._cls._executemany = self._originals  # type: ignore[method-assign]


def register_engine_backends(backend: Callable[[str], Callable[[Any], Any]], backend_type: type) -> None:
    """Add ``database-sqlite`` and ``database-postgres`` to bench/engine.py's registry."""
    for name, kind in (("database-sqlite", "sqlite"), ("database-postgres", "postgres")):
        backend(name)(contextlib.asynccontextmanager(functools.partial(_engine_backend, kind, backend_type)))


async def _engine_backend(kind: str, backend_type: type, args: argparse.Namespace) -> AsyncIterator[Any]:
    from asgiref.sync import sync_to_async
    from django.core.management import call_command
    from django.db import connections

    from autoplay_storage.adapters.database import DatabaseStorageAdapter
    from autoplay_storage.manager import StorageManager

    base_url = getattr(args, "pg_url", None) or ENGINE_PG_URL
    ensure_django(base_url)
    from autoplay_storage.models.facts import ProductCounter, UserMetadataFact, UserWorkflowFact
    from autoplay_storage.models.records import SessionSnapshotRecord, UserSearchTerm, UserStateRecord

    insight = (UserWorkflowFact, UserMetadataFact, ProductCounter)
    copy = getattr(args, "database_copy", "")
    alias = _alias(kind, copy)
    pg_url = base_url + copy
    dbname = pg_url.rsplit("/", 1)[-1]
    if kind == "postgres":
        pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        pg_admin(pg_url, f'CREATE DATABASE "{dbname}"')
    in_thread = functools.partial(sync_to_async, thread_sensitive=False)
    await in_thread(call_command)("migrate", database=alias, verbosity=0)
    adapter = DatabaseStorageAdapter(alias)
    counter = _StatementCounter()

    def empty() -> None:
        if kind == "postgres":  # TRUNCATE gives the space back, so the size probe starts from zero
            tables = [m._meta.db_table for m in (*insight, UserSearchTerm, UserStateRecord, SessionSnapshotRecord)]
            with connections[alias].cursor() as cursor:
                cursor.execute(f"TRUNCATE {', '.join(tables)}")
        else:
            for model in (*insight, UserSearchTerm, UserStateRecord, SessionSnapshotRecord):
                model.objects.using(alias).all().delete()

    def size() -> int:
        with connections[alias].cursor() as cursor:
            if kind == "postgres":
                cursor.execute("SELECT pg_database_size(current_database())")
                return int(cursor.fetchone()[0])
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.execute("PRAGMA page_size")
            page = cursor.fetchone()[0]
            cursor.execute("PRAGMA page_count")
            pages = cursor.fetchone()[0]
            cursor.execute("PRAGMA freelist_count")
            return (pages - cursor.fetchone()[0]) * page

    async def reset() -> None:
        await in_thread(empty)()

    async def used_bytes() -> int:
        return await in_thread(size)()

    server_cpu = _PostgresCpu(pg_url) if kind == "postgres" else None
    if server_cpu is not None and not server_cpu.available():
        server_cpu.close()
        server_cpu = None

    async def server_cpu_s() -> float:
        assert server_cpu is not None
        return server_cpu.read()

    try:
        yield backend_type(
            name=f"database-{kind}",
            storage=StorageManager([adapter]),
            reset=reset,
            round_trips=lambda: counter.count,
            memory_bytes=used_bytes,
            server_cpu_s=server_cpu_s if server_cpu is not None else None,
            notes=[
                (
                    "DatabaseStorageAdapter on a temporary SQLite file (WAL, BEGIN IMMEDIATE, 30 s busy timeout)"
                    if kind == "sqlite"
                    else f"DatabaseStorageAdapter on PostgreSQL database {dbname!r} (created and dropped here)"
                ),
                "round trips: SQL statements the ORM executed (SQLite's BEGIN IMMEDIATE is one; COMMIT is not counted)",
                "memory: bytes the tables and indexes take on disk (pages in use / pg_database_size delta)",
                *(["server CPU: CPU time of the server's backends for this database (/proc)"] if server_cpu else []),
            ],
        )
    finally:
        if server_cpu is not None:
            server_cpu.close()
        counter.restore()
        await adapter.aclose()
        if kind == "postgres":  # FORCE: also ends the connections the reset and size probes kept
            pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--sessions", type=int, default=400, help="sessions per run (serial and concurrent)")
    parser.add_argument("--concurrent-users", type=int, default=50)
    parser.add_argument("--list-users", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=30, help="runs of each list query")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]

    tmp = tempfile.TemporaryDirectory(prefix="autoplay-bench-db-")
    pg_url = args.pg_url if "postgres" in backends else None
    dbname = pg_url.rsplit("/", 1)[-1] if pg_url else ""
    if pg_url:
        pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        pg_admin(pg_url, f'CREATE DATABASE "{dbname}"')
    try:
        configure_django(Path(tmp.name) / "bench.sqlite3", pg_url)
        for backend in backends:
            alias = {"sqlite": "default", "postgres": "postgres"}[backend]
            print(f"== database adapter on {backend}")
            asyncio.run(run_backend(alias, args))
    finally:
        if pg_url:
            from django.db import connections

            connections.close_all()
            pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        tmp.cleanup()


if __name__ == "__main__":
    main()
