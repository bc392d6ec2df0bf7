"""Benchmark: the database adapter on SQLite and on PostgreSQL.

Prints, per backend: sessions/s (start + end of one session) run serially and
with 50 concurrent users, with p50/p99 of one session; and the time of a
users-list query over 100,000 users (filter by journey state, sort by last
activity, first page), plus a deep page (keyset cursor) and a prefix search.

Configures Django itself: its own temporary SQLite file (same options as the
project: WAL, BEGIN IMMEDIATE, 30 s busy timeout) and its own PostgreSQL
database (``--pg-url``, created and dropped here; never anyone else's).

    .venv/bin/python bench/engine_database.py [--backends sqlite,postgres] [--sessions 400]
        [--concurrent-users 50] [--list-users 100000] [--pg-url postgres://postgres@127.0.0.1:5432/autoplay_bench_dbadapter]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/autoplay_bench_dbadapter"
PRODUCT = "bench_prod"


def configure_django(sqlite_path: Path, pg_url: str | None) -> None:
    import dj_database_url
    import django
    from django.conf import settings

    databases: dict[str, Any] = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(sqlite_path),
            "OPTIONS": {
                "timeout": 30,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
    if pg_url:
        databases["postgres"] = dj_database_url.parse(pg_url, conn_max_age=60)
    settings.configure(
        DATABASES=databases,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "autoplay_storage"],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
    )
    django.setup()


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
