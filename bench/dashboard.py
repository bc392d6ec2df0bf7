"""Console server time: the users list (first page, filtered) and the user page, p50/p95 wall-clock and CPU.

Per primary — Redis (its own redis-server on a free loopback port) and the
embedded default (the database adapter on its own temp SQLite file, migrated
first) — loads N users (default 100,000), one fully simulated user with
500 sessions and their frozen snapshots and a typical one with 5 sessions,
then times the views in-process through Django's AsyncClient with a
signed-in lead granted the product: everything the server does per request
(middleware, session, permission and product-grant checks, engine calls,
the audit entry each user page writes, template rendering), no network.

Loading: the 100,000 users' states are cloned from a few hundred simulated
ones (a list page reads only states, so their snapshots are not written).
On Redis they go through the manager (``save_user_state``, concurrently); on
the database through the adapter's own row writer in one transaction per
batch, because one transaction per user on SQLite would take minutes.
``--direct`` (for 1,000,000 users) writes the same keys and rows in bulk from
``--workers`` processes (bench/insight_load.py): merged Redis pipelines,
PostgreSQL COPY.

    .venv/bin/python bench/dashboard.py [--users 100000] [--sessions 500] [--requests 40] [--primaries redis,postgres]

The insight pages (bench/insight_pages.py) are timed after the others
(``--pages user``: the two user pages only). The ``queries`` column is the
database queries per request, in every thread (the console's and the
database adapter's). Instructions, the figure that the machine's other
work does not move:

    valgrind --tool=callgrind --instr-atstart=no .venv/bin/python bench/dashboard.py --callgrind --pages user ...

switches the instrumentation on around each page's timed requests only and
prints instructions per request (every thread's: the sink and erasure
threads' periodic polls are switched off for it).

What the audit entry costs (bench/audit_cost.py): the user pages and an
audited API call, with the entry written and with it not, alternating rounds;
``--console-db postgres`` puts the audit log in PostgreSQL too:

    .venv/bin/python bench/dashboard.py --audit-off-too --users 2000 --requests 20 --rounds 5 --primaries database
    .venv/bin/python bench/dashboard.py --audit-off-too --users 2000 --requests 20 --rounds 5 \\
        --primaries postgres --console-db postgres
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stats import percentile  # noqa: E402

PRODUCT = "bench-product"


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
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def load_database_states(users: int, alias: str = "default", batch: int = 2000) -> None:
    """The adapter's own row writer (document, browse columns, search terms, insight rows and counters),
    one transaction per batch; then ANALYZE, as autovacuum would after a load."""
    import itertools
    import json

    from django.db import transaction
    from tqdm import tqdm

    from autoplay_storage.adapters.database import DatabaseStorageAdapter
    from autoplay_storage.demo import clone_states, state_archetypes

    adapter = DatabaseStorageAdapter(alias)
    clones = clone_states(asyncio.run(state_archetypes(200, seed=1)), users, seed=1)
    with tqdm(total=users, unit="user", desc="  users", mininterval=2.0) as bar:
        while chunk := list(itertools.islice(clones, batch)):
            with transaction.atomic(using=alias):
                for uid, doc in chunk:
                    adapter._write_state(None, PRODUCT, uid, json.dumps(doc, separators=(",", ":")), doc)
            bar.update(len(chunk))
    analyze(alias)


def analyze(alias: str) -> None:
    """VACUUM ANALYZE after a bulk load, as autovacuum would soon after (index-only scans, fresh statistics)."""
    from django.db import connections

    if connections[alias].vendor == "postgresql":
        with connections[alias].cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")
    connections[alias].close()


async def load(
    kind: str, users: int, sessions: int, concurrency: int, direct: bool, redis_url: str | None, workers: int
) -> str:
    """Load the users (Redis: through the manager, or ``--direct``) and the heavy user; returns its id."""
    from tqdm import tqdm

    from autoplay_storage.demo import load_states_bulk, load_user_direct, plan_user
    from autoplay_storage.runtime import get_storage
    from bench.insight_load import load_redis

    storage = get_storage()
    if kind == "redis":
        with tqdm(total=users, unit="user", desc="  users", mininterval=2.0) as bar:
            if direct:
                await asyncio.to_thread(load_redis, redis_url, PRODUCT, users, bar.update, workers=workers)
            else:
                await load_states_bulk(storage, PRODUCT, users, seed=1, concurrency=concurrency, progress=bar.update)
    heavy = plan_user(random.Random(2), sessions=sessions, user_id="u_heavy")
    await load_user_direct(storage, PRODUCT, heavy)
    await load_user_direct(storage, PRODUCT, plan_user(random.Random(3), sessions=5, user_id="u_typical"))
    await storage.aclose()
    return heavy.user_id


def stored_size(kind: str, alias: str, redis_url: str | None) -> str:
    """What the primary holds now: Redis ``used_memory``, the PostgreSQL database's size."""
    if kind == "redis" and redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        try:
            return f"redis used_memory {client.info('memory')['used_memory'] / 2**30:.2f} GiB, {client.dbsize():,} keys"
        finally:
            client.close()
    from django.db import connections

    if connections[alias].vendor != "postgresql":
        return "database size not shown (SQLite)"
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cursor.fetchone()[0]
    connections[alias].close()
    return f"database size {size}"


def own_cpu() -> float:
    """CPU seconds of this process and its finished children (the loaders' workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def redis_cpu(url: str) -> Callable[[], float]:
    """The redis-server's CPU seconds so far (user + system, ``INFO cpu``)."""

    def read() -> float:
        import redis

        client = redis.Redis.from_url(url)
        try:
            info = client.info("cpu")
        finally:
            client.close()
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    return read


class QueryCounter:
    """Database queries in every thread: a wrapper on each connection as it opens (Django's public hooks)."""

    def __init__(self) -> None:
        from django.db.backends.signals import connection_created

        self.count = 0
        connection_created.connect(self._wrap, weak=False)

    def _wrap(self, sender: object, connection: Any, **_: Any) -> None:
        if self._counted not in connection.execute_wrappers:  # a reconnect keeps the wrapper's list
            connection.execute_wrappers.append(self._counted)

    def _counted(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        return execute(sql, params, many, context)

    def read(self) -> int:
        return self.count


class Callgrind:
    """Instructions per request under ``valgrind --tool=callgrind --instr-atstart=no`` (``--callgrind``)."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)

    def start(self) -> None:
        if self.on:
            self._control("--zero")
            self._control("--instr=on")

    def stop(self, requests: int) -> float | None:
        """Instructions per request since ``start`` (read from the dump callgrind writes)."""
        if not self.on:
            return None
        self._control("--instr=off")
        before = set(Path.cwd().glob(f"callgrind.out.{os.getpid()}*"))
        self._control("--dump")
        (dump,) = set(Path.cwd().glob(f"callgrind.out.{os.getpid()}*")) - before
        totals = next(line for line in dump.read_text().splitlines() if line.startswith("totals:"))
        dump.unlink()
        return int(totals.split()[1]) / requests


async def measure(
    urls: dict[str, str], requests: int, export_filter: dict[str, str] | None,
    server_cpu: Callable[[], float] | None = None, callgrind: Callgrind | None = None,
) -> dict[str, tuple[list[float], list[float], float, float | None]]:
    """Wall-clock and process CPU milliseconds per request, queries and instructions per request, per page.

    CPU time (every thread of this process: the event loop and the threads
    ``sync_to_async`` hands database calls to) is the figure to compare on a
    busy machine, where wall-clock time measures the neighbours too.
    ``export_filter`` ``None``: no insight pages.
    """
    from asgiref.sync import sync_to_async
    from django.contrib.auth.models import User
    from django.db import connections
    from django.test import AsyncClient

    from autoplay_storage.runtime import get_storage
    from bench.insight_pages import measure_insight

    # Connections opened from here on are counted: close those the loading left open.
    await sync_to_async(connections.close_all)()
    await get_storage().aclose()
    counter, callgrind = QueryCounter(), callgrind or Callgrind(False)
    user = await User.objects.aget(username="bench-lead")
    client = AsyncClient()
    await client.aforce_login(user)
    timings = {}
    for name, url in urls.items():
        response = await client.get(url)  # warm-up (pool, caches)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
        wall, cpu = [], []
        queries_before = counter.count
        callgrind.start()
        for _ in range(requests):
            t0, c0 = time.perf_counter(), time.process_time()
            response = await client.get(url)
            wall.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
            assert response.status_code == 200
        instructions = callgrind.stop(requests)
        timings[name] = (wall, cpu, (counter.count - queries_before) / requests, instructions)
    if export_filter is not None:
        await measure_insight(client, PRODUCT, requests, export_filter, server_cpu)
    await get_storage().aclose()
    return timings


def run_primary(kind: str, args: argparse.Namespace, redis_url: str | None) -> None:
    from django.conf import settings
    from django.urls import reverse

    from autoplay_storage.runtime import reset_storage

    primary = "database" if kind in ("database", "postgres") else kind
    alias = "postgres" if kind == "postgres" else "default"
    settings.AUTOPLAY_STORAGE = {
        **settings.AUTOPLAY_STORAGE, "PRIMARY": primary, "REDIS_URL": redis_url or "", "DATABASE_ALIAS": alias,
    }  # fmt: skip
    reset_storage()
    print(f"\n== {kind} primary: loading {args.users:,} users + 1 user with {args.sessions} sessions")
    t0, cpu0 = time.perf_counter(), own_cpu()
    server_cpu = redis_cpu(redis_url) if kind == "redis" and redis_url else None
    primary_cpu = server_cpu() if server_cpu else 0.0
    if kind in ("database", "postgres"):
        if args.direct and kind == "postgres":
            from tqdm import tqdm

            from bench.insight_load import load_database

            with tqdm(total=args.users, unit="user", desc="  users", mininterval=2.0) as bar:
                primary_cpu = load_database(alias, PRODUCT, args.users, bar.update, workers=args.workers)
            t1 = time.perf_counter()
            analyze(alias)
            print(f"  VACUUM ANALYZE: {time.perf_counter() - t1:.1f} s")
        else:
            load_database_states(args.users, alias)
    heavy = asyncio.run(load(kind, args.users, args.sessions, args.concurrency, args.direct, redis_url, args.workers))
    prefix = "ana."
    elapsed = time.perf_counter() - t0
    if server_cpu:
        primary_cpu = server_cpu() - primary_cpu
    print(f"  loaded in {elapsed:.1f} s ({args.users / elapsed:,.0f} users/s); {stored_size(kind, alias, redis_url)};"
          f" load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"  loading CPU: this process and its workers {own_cpu() - cpu0:.1f} s, the primary {primary_cpu:.1f} s"
          " (redis-server: INFO cpu; PostgreSQL: the COPY backends, 0 if not on this machine)")
    users_url = reverse("dashboard:users", args=[PRODUCT])
    urls = {
        "products": reverse("dashboard:products"),
        "users list, journey=onboarded": users_url + "?journey=onboarded",
        "users list, mastery=proficient + sort oldest": users_url + "?mastery=proficient&order=last_activity",
        f"users list, search q={prefix}": users_url + f"?q={prefix}",
        "user page, 5 sessions": reverse("dashboard:user", args=[PRODUCT, "u_typical"]),
        f"user page, {args.sessions} sessions": reverse("dashboard:user", args=[PRODUCT, heavy]),
    }
    if args.pages == "user":
        urls = {name: url for name, url in urls.items() if name.startswith("user page")}
    server_cpu = redis_cpu(redis_url) if kind == "redis" and redis_url else None
    insight_filter = args.export_filter if args.pages == "all" else None
    if args.audit_off_too:
        from bench.audit_cost import measure_audit

        pages = {name: url for name, url in urls.items() if name.startswith("user page")}
        asyncio.run(measure_audit(pages, PRODUCT, "u_typical", args.rounds, args.requests, QueryCounter().read))
        reset_storage()
        return
    timings = asyncio.run(measure(urls, args.requests, insight_filter, server_cpu, Callgrind(args.callgrind)))
    print(f"  load average after the timed requests: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"  {'page':<46} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'cpu p50':>8} {'cpu p95':>8} {'queries':>8}"
          + (f" {'instructions':>13}" if args.callgrind else ""))
    for name, (values, cpu, queries, instructions) in timings.items():
        print(f"  {name:<46} {statistics.median(values):8.1f} {percentile(values, 0.95):8.1f} "
              f"{statistics.fmean(values):8.1f} {statistics.median(cpu):8.1f} {percentile(cpu, 0.95):8.1f} "
              f"{queries:8.1f}" + (f" {instructions:13,.0f}" if instructions is not None else ""))
    reset_storage()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=500, help="sessions of the one heavy user")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per page")
    parser.add_argument("--concurrency", type=int, default=200, help="users written at once while loading")
    parser.add_argument("--primaries", default="redis,database", help="redis, database (SQLite), postgres")
    parser.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432/autoplay_bench_dashboard",
                        help="PostgreSQL for the postgres primary (the database is dropped and created)")
    parser.add_argument("--direct", action="store_true",
                        help="bulk loaders for 1,000,000 (Redis: merged pipelines; PostgreSQL: COPY)")
    parser.add_argument("--workers", type=int, default=2, help="processes of the --direct loaders")
    parser.add_argument("--export-filter", default="", help="query string of the timed CSV export, e.g. mastery=novice")
    parser.add_argument("--pages", choices=["all", "user"], default="all", help="user: the two user pages only")
    parser.add_argument("--callgrind", action="store_true",
                        help="under valgrind --tool=callgrind --instr-atstart=no: instructions per request")
    parser.add_argument("--audit-off-too", action="store_true",
                        help="the user pages and an API PATCH with the audit entry written and not, alternating"
                             " --rounds rounds of --requests each way (bench/audit_cost.py)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds each way of --audit-off-too")
    parser.add_argument("--console-db", choices=["sqlite", "postgres"], default="sqlite",
                        help="postgres: the console's own tables (sign-in, grants, the audit log) in PostgreSQL"
                             " too, a database named after --pg-url's plus _console")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.primaries.split(",") if k.strip()]

    workdir = Path(tempfile.mkdtemp(prefix="autoplay-bench-dashboard-"))
    os.environ["AUTOPLAY_VAR_DIR"] = str(workdir)
    (workdir / "static").mkdir()  # whitenoise warns about a missing STATIC_ROOT
    os.environ["DATABASE_URL"] = f"sqlite:///{workdir / 'bench.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "false"
    if args.callgrind:  # the background threads' polls would count, once per few (slow) requests
        os.environ["AUTOPLAY_SINK_REFRESH_S"] = "3600"
        os.environ["AUTOPLAY_ERASURE_RETRY_POLL_S"] = "0"
    args.export_filter = dict(urllib.parse.parse_qsl(args.export_filter))
    if args.console_db == "postgres":
        from bench.engine_database import pg_admin

        console_url = f"{args.pg_url}_console"
        name = console_url.rsplit("/", 1)[-1]
        pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        pg_admin(args.pg_url, f'CREATE DATABASE "{name}"')
        os.environ["DATABASE_URL"] = console_url
    import django
    from django.conf import settings

    if "postgres" in kinds:
        import dj_database_url

        from bench.engine_database import pg_admin

        name = args.pg_url.rsplit("/", 1)[-1]
        pg_admin(args.pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        pg_admin(args.pg_url, f'CREATE DATABASE "{name}"')
        settings.DATABASES  # noqa: B018 (configure the settings before adding an alias)
        settings.DATABASES["postgres"] = dj_database_url.parse(args.pg_url, conn_max_age=60)
    if args.callgrind:  # ten times slower: no connection or cached access may age out mid-run, as none would
        for database in settings.DATABASES.values():
            database["CONN_MAX_AGE"] = None
    django.setup()
    # The simulated users' journey changes are logged at INFO: hundreds of lines per load, no figure.
    logging.getLogger("autoplay_storage.user_adoption_state").setLevel(logging.WARNING)
    if args.callgrind:
        from autoplay_storage import access

        access.CACHE_TTL_S = 3600
    from django.contrib.auth.models import Group, Permission, User
    from django.core.management import call_command

    from autoplay_storage.models import ProductGrant
    from dashboard.roles import LEAD, sync_roles

    settings.STORAGES = {**settings.STORAGES, "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    call_command("migrate", verbosity=0)
    if "postgres" in kinds:
        call_command("migrate", database="postgres", verbosity=0)
    sync_roles(Group, Permission)
    lead = User.objects.create_user("bench-lead", password=None)
    lead.groups.add(Group.objects.get(name=LEAD))
    ProductGrant.objects.create(user=lead, product_id=PRODUCT)  # staff see only granted products
    print(f"console bench: {args.users:,} users, heavy user with {args.sessions} sessions, "
          f"{args.requests} timed requests per page (in-process AsyncClient, signed-in lead)")

    redis_proc = None
    try:
        for kind in kinds:
            url = None
            if kind == "redis":
                redis_proc, url = start_redis(workdir)
            run_primary(kind, args, url)
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
