"""Direct loaders for bench/dashboard.py at a million users: the keys and rows the write paths would make,
written in bulk by worker processes (Redis: one ZADD/SADD per key per batch; PostgreSQL: COPY).

Each user's derivations are the adapters' own (``index_entry``,
``index_commands``, ``facts_commands``, ``user_facts``; ``user_summary``,
``search_terms``, ``counter_deltas``), only without a compare-and-set or a
transaction per user. Every user is new, so a batch's commands are all
additions of distinct members and may be merged per key; the database's
counters are summed over the load and added once, as the writes add them.
``tests/test_insight_load.py`` compares the result with the write paths.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
import queue as queues
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

Work = Callable[..., Any]  # (worker, workers, report, *args): module-level, so a spawned worker can import it


def archetypes(seed: int = 1) -> list[dict[str, Any]]:
    from autoplay_storage.demo import state_archetypes

    return asyncio.run(state_archetypes(200, seed=seed))


def my_batches(
    templates: list[dict[str, Any]], users: int, batch: int, worker: int, workers: int
) -> Iterator[tuple[int, list[tuple[str, dict[str, Any]]]]]:
    """This worker's share of ``clone_states``: every ``workers``-th batch, with the index of its first user.

    Each worker draws the whole sequence (a clone costs microseconds) so every
    user is the same whatever the number of workers.
    """
    from autoplay_storage.demo import clone_states

    rows = clone_states(templates, users, seed=1)
    for n in itertools.count():
        chunk = list(itertools.islice(rows, batch))
        if not chunk:
            return
        if n % workers == worker:
            yield n * batch, chunk


def _child(work: Work, k: int, workers: int, channel: Any, args: tuple[Any, ...]) -> None:
    try:
        channel.put(("done", k, work(k, workers, lambda n: channel.put(("progress", k, n)), *args)))
    except BaseException:
        channel.put(("error", k, traceback.format_exc()))


def run_workers(work: Work, args: tuple[Any, ...], workers: int, progress: Callable[[int], None]) -> list[Any]:
    """``work(worker, workers, report, *args)`` in ``workers`` processes; their results by worker.

    Spawned, not forked: the bench and the tests call this from a thread of a
    process with an event loop, open connections and locks a fork would copy.
    """
    if workers <= 1:
        return [work(0, 1, progress, *args)]
    ctx = multiprocessing.get_context("spawn")
    channel = ctx.Queue()
    procs = [ctx.Process(target=_child, args=(work, k, workers, channel, args), daemon=True) for k in range(workers)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    try:
        while len(results) < workers:
            try:
                kind, k, value = channel.get(timeout=1.0)
            except queues.Empty:
                dead = {k: p.exitcode for k, p in enumerate(procs) if p.exitcode not in (None, 0)}
                if dead and channel.empty():
                    raise RuntimeError(f"loader workers died without a word (exit codes {dead})") from None
                continue
            if kind == "progress":
                progress(value)
            elif kind == "done":
                results[k] = value
            else:
                raise RuntimeError(f"loader worker {k} failed:\n{value}")
    finally:
        for p in procs:
            if p.is_alive() and len(results) < workers:
                p.terminate()
            p.join()
    return [results[k] for k in range(workers)]


# -- Redis --------------------------------------------------------------------------------------


def merge_commands(commands: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One ZADD or SADD per key for a batch of new users' index commands: the same end state.

    Every command of a new user adds (no ZREM: nothing to move it from), and
    no two users share a member, so the order of the additions does not matter.
    """
    merged: dict[tuple[str, str], list[Any]] = {}
    for cmd in commands:
        if cmd[0] not in ("ZADD", "SADD") or (cmd[0] == "ZADD" and len(cmd) % 2):
            raise ValueError(f"not an addition of a new user's: {cmd[:2]}")
        merged.setdefault((cmd[0], cmd[1]), []).extend(cmd[2:])
    return [
        (op, key, *(dict.fromkeys(args) if op == "SADD" else args)) for (op, key), args in merged.items()
    ]


def redis_batch(product: str, chunk: list[tuple[str, dict[str, Any]]]) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """(MSET arguments, merged index commands) of a batch of new users, as ``ScriptWriter.update`` derives them."""
    from autoplay_storage import codec
    from autoplay_storage.adapters.redis.facts import facts_commands
    from autoplay_storage.adapters.redis.index import index_commands, index_entry
    from autoplay_storage.facts import user_facts
    from autoplay_storage.keys import user_state_key

    states: list[Any] = []
    commands: list[tuple[Any, ...]] = []
    for uid, doc in chunk:
        states += (user_state_key(product, uid), codec.dumps(doc))
        commands += index_commands(product, uid, None, index_entry(product, uid, doc))
        commands += facts_commands(product, uid, None, user_facts(doc))
    return states, merge_commands(commands)


def load_redis(
    url: str,
    product: str,
    users: int,
    progress: Callable[[int], None],
    *,
    batch: int = 2000,
    workers: int = 2,
    templates: list[dict[str, Any]] | None = None,
) -> None:
    """``users`` cloned states with their browse and insight keys (no TTL: the bench sets none)."""
    templates = templates if templates is not None else archetypes()
    run_workers(_redis_work, (url, product, users, batch, templates), workers, progress)


def _redis_work(
    worker: int,
    workers: int,
    report: Callable[[int], None],
    url: str,
    product: str,
    users: int,
    batch: int,
    templates: list[dict[str, Any]],
) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for _, chunk in my_batches(templates, users, batch, worker, workers):
            states, commands = redis_batch(product, chunk)
            pipe = client.pipeline(transaction=False)
            for i in range(0, len(states), 1000):
                pipe.execute_command("MSET", *states[i : i + 1000])
            for cmd in commands:
                pipe.execute_command(*cmd)
            pipe.execute()
            report(len(chunk))
    finally:
        client.close()


# -- PostgreSQL -------------------------------------------------------------------------------


def _copy_sql(model: Any, fields: tuple[str, ...]) -> str:
    meta = model._meta
    columns = ", ".join(f'"{meta.get_field(f).column}"' for f in fields)
    return f'COPY "{meta.db_table}" ({columns}) FROM STDIN'


def database_rows(
    product: str, first_id: int, chunk: list[tuple[str, dict[str, Any]]], counters: dict[int, Counter[str]]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(states, search terms, workflow facts, metadata facts) rows of new users, ids from ``first_id``.

    What ``DatabaseStorageAdapter._write_state`` and ``database_facts.write_user``
    write for a user with no row yet; the counters' deltas go to ``counters`` by shard.
    """
    from autoplay_storage.adapters.database_facts import _SURROGATE_ESCAPE, _scrub, counter_deltas, shard_of
    from autoplay_storage.adapters.database_rows import user_summary
    from autoplay_storage.browse import search_terms
    from autoplay_storage.codec import dumps_text
    from autoplay_storage.facts import user_facts

    states, terms, workflows, metadata = [], [], [], []
    for i, (uid, doc) in enumerate(chunk):
        state_id = first_id + i
        raw = dumps_text(doc, allow_nan=True)
        row = user_summary(product, uid, doc)
        found = sorted(search_terms(uid, row.metadata))
        states.append((
            state_id, product, uid, 1, raw, row.journey_state, row.mastery_level, row.mastery_rating,
            row.completion_rate, row.onboarded, row.sessions_count, row.first_seen_at or 0.0,
            row.last_activity_at or 0.0, "\n".join(found), row.corrupt,
        ))  # fmt: skip
        terms += [(state_id, product, t) for t in found]
        facts = user_facts(_scrub(doc) if _SURROGATE_ESCAPE.search(raw) else doc)
        if facts is None:
            continue
        counters.setdefault(shard_of(uid), Counter()).update(counter_deltas(None, facts))
        workflows += [
            (state_id, product, uid, w.workflow_id, w.status, w.last_progress_at, w.evidence) for w in facts.workflows
        ]
        metadata += [(state_id, product, k, v) for k, v in facts.metadata]
    return states, terms, workflows, metadata


WORKFLOW_FIELDS = ("state", "product_id", "user_id", "workflow_id", "status", "last_progress_at", "evidence")
STATE_FIELDS = (
    "id", "product_id", "user_id", "version", "document", "journey_state", "mastery_level", "mastery_rating",
    "completion_rate", "onboarded", "sessions_count", "first_seen_at", "last_activity_at", "search_text", "corrupt",
)  # fmt: skip


def _database_work(
    worker: int,
    workers: int,
    report: Callable[[int], None],
    connect: dict[str, Any],
    copies: tuple[str, ...],
    product: str,
    base: int,
    users: int,
    batch: int,
    templates: list[dict[str, Any]],
) -> tuple[dict[int, Counter[str]], float]:
    """COPY this worker's batches, one transaction each; the counters' deltas and the backend's CPU seconds."""
    import psycopg

    counters: dict[int, Counter[str]] = {}
    with psycopg.connect(**connect) as conn:
        backend = conn.info.backend_pid
        for start, chunk in my_batches(templates, users, batch, worker, workers):
            tables = database_rows(product, base + start, chunk, counters)
            with conn.transaction(), conn.cursor() as cur:
                for sql, rows in zip(copies, tables, strict=True):
                    with cur.copy(sql) as copy:
                        for row in rows:
                            copy.write_row(row)
            report(len(chunk))
        return counters, process_cpu(backend)


def drop_secondary_indexes(cursor: Any, tables: list[str]) -> list[str]:
    """Drop the tables' indexes and unique constraints but their primary keys; the statements that rebuild them.

    A B-tree built once from sorted rows costs a fraction of millions of
    inserts at random places (the search terms, the metadata values); the
    rebuild checks every unique constraint again.
    """
    cursor.execute(
        "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
        " WHERE c.contype = 'u' AND c.conrelid = ANY(%s::regclass[]) ORDER BY 1, 2",
        [tables],
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i"
        " WHERE i.indrelid = ANY(%s::regclass[]) AND NOT i.indisprimary"
        " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY 1",
        [tables],
    )
    indexes = cursor.fetchall()
    for table, name, _ in constraints:
        cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cursor.execute(f"DROP INDEX {name}")
    return [definition for _, definition in indexes] + [
        f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}' for table, name, definition in constraints
    ]


def process_cpu(pid: int) -> float:
    """CPU seconds of a process on this machine (a PostgreSQL backend); 0 where /proc does not show it."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_database(
    alias: str,
    product: str,
    users: int,
    progress: Callable[[int], None],
    *,
    batch: int = 2000,
    workers: int = 2,
    templates: list[dict[str, Any]] | None = None,
) -> float:
    """``users`` cloned states with their search terms, insight rows and counters, by COPY (PostgreSQL only).

    Ids are given in clone order after the largest one there (each worker
    owns its batches' ranges), then the sequence is moved past them. The
    tables' secondary indexes are dropped for the load and built after it. Returns
    the CPU seconds of the workers' PostgreSQL backends (on this machine).
    """
    from django.db import connections, transaction

    from autoplay_storage.adapters.database_facts import _sql
    from autoplay_storage.models.facts import UserMetadataFact, UserWorkflowFact
    from autoplay_storage.models.records import UserSearchTerm, UserStateRecord

    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise ValueError("the COPY loader needs PostgreSQL")
    templates = templates if templates is not None else archetypes()
    table = UserStateRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT coalesce(max(id), 0) FROM "{table}"')
        base = cursor.fetchone()[0] + 1
    params = connection.get_connection_params()
    copies = (
        _copy_sql(UserStateRecord, STATE_FIELDS),
        _copy_sql(UserSearchTerm, ("state", "product_id", "term")),
        _copy_sql(UserWorkflowFact, WORKFLOW_FIELDS),
        _copy_sql(UserMetadataFact, ("state", "product_id", "key", "value")),
    )

    keep = ("dbname", "user", "password", "host", "port", "sslmode")
    connect = {k: v for k, v in params.items() if k in keep and v is not None}
    tables = [m._meta.db_table for m in (UserStateRecord, UserSearchTerm, UserWorkflowFact, UserMetadataFact)]
    with connection.cursor() as cursor:
        rebuild = drop_secondary_indexes(cursor, tables)
    connection.close()
    try:
        totals: dict[int, Counter[str]] = {}
        results = run_workers(
            _database_work, (connect, copies, product, base, users, batch, templates), workers, progress
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '512MB'")
            for statement in rebuild:
                cursor.execute(statement)
    for counters, _ in results:
        for shard, deltas in counters.items():
            totals.setdefault(shard, Counter()).update(deltas)
    try:
        with transaction.atomic(using=alias), connection.cursor() as cursor:
            add = _sql(connection).add
            for shard, deltas in sorted(totals.items()):
                rows = sorted((k, n) for k, n in deltas.items() if n or k.startswith("catalog:"))
                if rows:  # the statement a session end's counts run (database_facts.add_counts), per shard
                    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
                    cursor.execute(add % values, [x for name, n in rows for x in (product, name, shard, n)])
            sequence = f"pg_get_serial_sequence('\"{table}\"', 'id')"
            cursor.execute(f'SELECT setval({sequence}, (SELECT max(id) FROM "{table}"))')
    finally:
        connection.close()
    return sum(backend_cpu for _, backend_cpu in results)
