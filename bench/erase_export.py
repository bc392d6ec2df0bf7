"""Benchmark: erasing users with 10 / 1,000 / 10,000 sessions, and exporting the 10,000-session user.

Per primary (Redis on its own redis-server, SQLite in a temporary file, and
PostgreSQL when ``--pg-url`` names a server we may create a database on):

- erase: seconds for ``erase_user`` of one user among neighbours whose ids
  share its prefix, and what is left of the user afterwards (keys and index
  members on Redis, rows on the database): must be 0; the neighbours are
  checked untouched;
- export: seconds to stream the whole export document of a 10,000-session
  user, its size, and the peak Python memory while streaming it
  (tracemalloc), against the document's size: flat means far below it.

    .venv/bin/python bench/erase_export.py [--sizes 10,1000,10000] [--primaries redis,sqlite,postgres]
        [--pg-url postgres://postgres@127.0.0.1:5432/autoplay_bench_erase]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRODUCT = "bench_prod"
NEIGHBOURS = ["u_10", "u_1x", "xu_1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def configure_django(sqlite_path: Path, pg_url: str | None) -> None:
    import dj_database_url
    import django
    from django.conf import settings

    databases: dict[str, Any] = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(sqlite_path),
            "CONN_MAX_AGE": 60,
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
        AUTOPLAY_STORAGE={"PRIMARY": "database", "ERASURE_RETRY_POLL_S": 0},
    )
    django.setup()


def pg_admin(pg_url: str, sql: str) -> None:
    import dj_database_url
    import psycopg

    cfg = dj_database_url.parse(pg_url)
    with psycopg.connect(
        host=cfg["HOST"] or "127.0.0.1", port=cfg["PORT"] or 5432, user=cfg["USER"] or None,
        password=cfg["PASSWORD"] or None, dbname="postgres", autocommit=True, connect_timeout=5,
    ) as conn:  # fmt: skip
        conn.execute(sql)


def snapshot_doc(user_id: str, n: int) -> dict[str, Any]:
    from autoplay_storage.user_adoption_state import SessionSnapshot

    at = 1_700_000_000.0 + n * 60
    snap = SessionSnapshot(
        session_id=f"s{n:05d}", user_id=user_id, session_number=n + 1, started_at=at - 50, captured_at=at
    )
    snap.discovered_features = ["board_view", "timeline_view", "recurring_tasks"]
    snap.in_progress_workflow_ids = ["connect_calendar"]
    return snap.to_dict()


async def load_user(adapter: Any, alias: str | None, user_id: str, sessions: int) -> None:
    """A state and ``sessions`` snapshots, written the fast way for the primary."""
    from autoplay_storage.user_adoption_state import UserAdoptionState

    state = UserAdoptionState(user_id=user_id, metadata={"email": f"{user_id}@example.com"})
    state.sessions.count = sessions
    await adapter.save_user_state(PRODUCT, user_id, state.to_dict())
    if alias is None:  # Redis: the adapter's own write-once writes, 200 at a time
        for start in range(0, sessions, 200):
            docs = [snapshot_doc(user_id, n) for n in range(start, min(sessions, start + 200))]
            await asyncio.gather(*(adapter.create_session_snapshot(PRODUCT, user_id, d["session_id"], d) for d in docs))
        return
    from asgiref.sync import sync_to_async

    from autoplay_storage.adapters.database_rows import snapshot_columns
    from autoplay_storage.models.records import SessionSnapshotRecord

    def bulk() -> None:
        rows = []
        for n in range(sessions):
            doc = snapshot_doc(user_id, n)
            number, started, captured = snapshot_columns(doc)
            rows.append(SessionSnapshotRecord(
                product_id=PRODUCT, user_id=user_id, session_id=doc["session_id"], document=json.dumps(doc),
                session_number=number, started_at=started, captured_at=captured,
            ))  # fmt: skip
        SessionSnapshotRecord.objects.using(alias).bulk_create(rows, batch_size=2000)

    await sync_to_async(bulk, thread_sensitive=False)()


async def left_of(kind: str, adapter: Any, alias: str | None, user_id: str) -> int:
    """Keys and index members (Redis) or rows (database) still naming the user."""
    if alias is None:
        client = adapter.transport.client
        count = 0
        prefix = f"autoplay:user:{PRODUCT}:{user_id}:"
        async for key in client.scan_iter(count=1000):
            key = key.decode()
            if key.startswith(prefix):
                count += 1
            elif key.startswith(f"autoplay:idx:{{{PRODUCT}}}:") and await client.type(key) == b"zset":
                members = [m.decode() for m in await client.zrange(key, 0, -1)]
                count += sum(1 for m in members if m == user_id or m.endswith("\x00" + user_id))
        return count
    from asgiref.sync import sync_to_async

    from autoplay_storage.models.records import SessionSnapshotRecord, UserSearchTerm, UserStateRecord

    def rows() -> int:
        mine = {"product_id": PRODUCT, "user_id": user_id}
        return (
            UserStateRecord.objects.using(alias).filter(**mine).count()
            + SessionSnapshotRecord.objects.using(alias).filter(**mine).count()
            + UserSearchTerm.objects.using(alias).filter(state__user_id=user_id).count()
        )

    return await sync_to_async(rows, thread_sensitive=False)()


async def stream_export(user_id: str) -> tuple[float, int]:
    """Stream the whole export document, dropping each piece as a client would; (seconds, characters)."""
    from autoplay_storage import export

    began = time.perf_counter()
    head, rest = await export.export_user(PRODUCT, user_id)
    total = len(head)
    async for piece in rest:
        total += len(piece)
    return time.perf_counter() - began, total


async def run_primary(kind: str, sizes: list[int], redis_url: str | None) -> None:
    from django.conf import settings

    from autoplay_storage import runtime

    alias = {"sqlite": "default", "postgres": "postgres"}.get(kind)
    cfg = {"PRIMARY": "redis", "REDIS_URL": redis_url} if alias is None else {"DATABASE_ALIAS": alias}
    settings.AUTOPLAY_STORAGE = {"PRIMARY": "database", "ERASURE_RETRY_POLL_S": 0, **cfg}
    runtime.reset_storage()
    adapter = runtime.get_storage().primary
    print(f"{kind}:")
    for size in sizes:
        user_id = "u_1"
        for neighbour in NEIGHBOURS:
            await load_user(adapter, alias, neighbour, 3)
        await load_user(adapter, alias, user_id, size)
        if size == max(sizes):
            elapsed, total = await stream_export(user_id)
            tracemalloc.start()  # a second run, traced: tracemalloc slows Python down several times
            await stream_export(user_id)
            _current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(
                f"  export of {size:>6} sessions: {elapsed:6.2f} s, {total / 1e6:6.1f} MB document,"
                f" peak Python memory {peak / 1e6:5.1f} MB"
            )
        began = time.perf_counter()
        removed = await adapter.erase_user(PRODUCT, user_id, tombstone_s=600)
        elapsed = time.perf_counter() - began
        left = await left_of(kind, adapter, alias, user_id)
        intact = all([len((await adapter.list_sessions(PRODUCT, n)).items) == 3 for n in NEIGHBOURS])
        print(
            f"  erase of {size:>6} sessions: {elapsed:6.2f} s, left {left} (must be 0),"
            f" neighbours intact: {intact}, removed {removed}"
        )
        for neighbour in NEIGHBOURS:
            await adapter.erase_user(PRODUCT, neighbour, tombstone_s=1)
    await runtime.get_storage().aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10,1000,10000")
    parser.add_argument("--primaries", default="redis,sqlite,postgres")
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/autoplay_bench_erase")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    primaries = args.primaries.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        pg_url = args.pg_url if "postgres" in primaries else None
        if pg_url:
            name = pg_url.rsplit("/", 1)[1]
            pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{name}"')
            pg_admin(pg_url, f'CREATE DATABASE "{name}"')
        configure_django(workdir / "bench.sqlite3", pg_url)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        if pg_url:
            call_command("migrate", database="postgres", verbosity=0)
        redis_proc, redis_url = start_redis(workdir) if "redis" in primaries else (None, None)
        try:
            for kind in primaries:
                asyncio.run(run_primary(kind, sizes, redis_url))
        finally:
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(10)
            from django.db import connections

            connections.close_all()
            if pg_url:
                name = pg_url.rsplit("/", 1)[1]
                pg_admin(pg_url, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
                pg_admin(pg_url, f'DROP DATABASE IF EXISTS "{name}"')


if __name__ == "__main__":
    main()
