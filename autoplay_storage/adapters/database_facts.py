"""The database adapter's insight rows, written as a diff in the transaction of every state write.

``write_user`` compares the facts of the document being replaced with those
of the new one and changes only what differs: the user's workflow and
metadata rows and the product's counters (``models.facts``). It runs in the
writer's transaction, after the state row is locked, so a retried write
(no change: no diff) and racing ends (queued on the row lock) stay exact.
``write_snapshot`` counts a snapshot in the transaction that inserts it
(write-once); ``forget_user`` takes a user's facts and snapshots back out in
the erasure's transaction. ``rebuild`` recomputes everything from the documents.
"""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from ..facts import SnapshotFacts, UserFacts, snapshot_facts, user_facts

SHARDS = 8


def shard_of(user_id: str) -> int:
    return zlib.crc32(user_id.encode("utf-8", "surrogatepass")) % SHARDS


# A ``\ud800`` or ``\u0000`` escape: JSON can carry a lone surrogate, which no database driver
# can encode, and NUL, which PostgreSQL's text cannot hold.
_SURROGATE_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|0000)")


def _scrub(value: Any) -> Any:
    """Lone surrogates and NUL as their escape text (``"\\ud800"``), so the facts can be stored like any text."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _document(raw: str | None) -> dict[str, Any] | None:
    """The stored text as an object to take facts from; ``None`` for what no reader could take facts from."""
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        if isinstance(doc, dict) and _SURROGATE_ESCAPE.search(raw):
            doc = _scrub(doc)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than any document
        return None
    return doc if isinstance(doc, dict) else None


def _facts_of_raw(raw: str | None) -> UserFacts | None:
    doc = _document(raw)
    return user_facts(doc) if doc is not None else None


def _snapshot_facts_of_raw(raw: str) -> SnapshotFacts | None:
    doc = _document(raw)
    return snapshot_facts(doc) if doc is not None else None


def counter_deltas(old: UserFacts | None, new: UserFacts | None) -> Counter[str]:
    """How one write moves the product's counters (a pure diff: old facts -1, new facts +1)."""
    delta: Counter[str] = Counter()
    for facts, sign in ((old, -1), (new, 1)):
        if facts is None:
            continue
        delta["users"] += sign
        for wf in facts.workflows:
            delta[f"wf:{wf.workflow_id}:{wf.status}"] += sign
        delta[f"cohort:{facts.cohort_week}"] += sign
        if facts.sessions_to_onboard is not None:
            delta[f"onboard:{facts.cohort_week}:{facts.sessions_to_onboard}"] += sign
    return Counter({k: v for k, v in delta.items() if v})


def snapshot_deltas(snap: SnapshotFacts) -> Counter[str]:
    return Counter({f"day:{snap.day}": 1, f"week:{snap.week}:{snap.mastery_level}": 1})


class _Sql:
    """The statements, from the models' metadata, once per backend."""

    def __init__(self, connection: Any) -> None:
        from ..models.facts import ProductCounter, UserMetadataFact, UserWorkflowFact

        q = connection.ops.quote_name
        c, w, m = ProductCounter._meta.db_table, UserWorkflowFact._meta.db_table, UserMetadataFact._meta.db_table
        self.add = (
            f"INSERT INTO {q(c)} (product_id, name, shard, value) VALUES %s "
            f"ON CONFLICT (product_id, name, shard) DO UPDATE SET value = {q(c)}.value + excluded.value"
        )
        self.touch = f"INSERT INTO {q(c)} (product_id, name, shard, value) VALUES %s ON CONFLICT DO NOTHING"
        self.upsert_workflow = (
            f"INSERT INTO {q(w)} (state_id, product_id, user_id, workflow_id, status, last_progress_at, evidence) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (state_id, workflow_id) DO UPDATE SET "
            "status = excluded.status, last_progress_at = excluded.last_progress_at, evidence = excluded.evidence"
        )
        self.delete_workflow = f"DELETE FROM {q(w)} WHERE state_id = %s AND workflow_id = %s"
        self.upsert_meta = (
            f"INSERT INTO {q(m)} (state_id, product_id, key, value) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (state_id, key) DO UPDATE SET value = excluded.value"
        )
        self.delete_meta = f"DELETE FROM {q(m)} WHERE state_id = %s AND key = %s"


_statements: dict[str, _Sql] = {}


def _sql(connection: Any) -> _Sql:
    found = _statements.get(connection.vendor)
    if found is None:
        found = _statements[connection.vendor] = _Sql(connection)
    return found


def _add(cursor: Any, sql: str, product_id: str, shard: int, deltas: dict[str, int]) -> None:
    if not deltas:
        return
    rows = sorted(deltas.items())  # one order for every writer: no deadlock between two ends
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    cursor.execute(sql % values, [x for name, n in rows for x in (product_id, name, shard, n)])


def write_user(
    connection: Any,
    state_id: int,
    product_id: str,
    user_id: str,
    old_raw: str | None,
    doc: dict[str, Any] | None,
    new_raw: str | None = None,
) -> None:
    """Apply the diff of the replaced document's facts against ``doc``'s (in the caller's transaction).

    ``new_raw``: ``doc``'s stored text, which says whether it carries text no database can hold.
    """
    if doc is not None and new_raw is not None and _SURROGATE_ESCAPE.search(new_raw):
        doc = _scrub(doc)
    old = _facts_of_raw(old_raw)
    new = user_facts(doc) if doc is not None else None
    if old == new:
        return
    sql = _sql(connection)
    with connection.cursor() as cursor:
        _add(cursor, sql.add, product_id, shard_of(user_id), counter_deltas(old, new))
        old_wf = {w.workflow_id: w for w in old.workflows} if old else {}
        new_wf = {w.workflow_id: w for w in new.workflows} if new else {}
        for wid in sorted(old_wf.keys() - new_wf.keys()):
            cursor.execute(sql.delete_workflow, (state_id, wid))
        changed = [w for wid, w in sorted(new_wf.items()) if old_wf.get(wid) != w]
        if changed:
            cursor.executemany(
                sql.upsert_workflow,
                [
                    (state_id, product_id, user_id, w.workflow_id, w.status, w.last_progress_at, w.evidence)
                    for w in changed
                ],
            )
        old_meta = dict(old.metadata) if old else {}
        new_meta = dict(new.metadata) if new else {}
        for key in sorted(old_meta.keys() - new_meta.keys()):
            cursor.execute(sql.delete_meta, (state_id, key))
        fresh = [(state_id, product_id, k, v) for k, v in sorted(new_meta.items()) if old_meta.get(k) != v]
        if fresh:
            cursor.executemany(sql.upsert_meta, fresh)


def write_snapshot(connection: Any, product_id: str, user_id: str, raw: str) -> None:
    """Count a snapshot this transaction just inserted (write-once: never twice)."""
    snap = _snapshot_facts_of_raw(raw)
    if snap is None:
        return
    sql = _sql(connection)
    with connection.cursor() as cursor:
        _add(cursor, sql.add, product_id, shard_of(user_id), snapshot_deltas(snap))
        _add(cursor, sql.touch, product_id, 0, {f"catalog:{wid}": 0 for wid in snap.catalog})


def forget_user(
    connection: Any, state_id: int, product_id: str, user_id: str, old_raw: str | None, snapshots: Iterable[str]
) -> None:
    """An erasure: the user's facts diffed to none, and each stored snapshot's counts taken back.

    In the erasure's transaction, with the state row locked and before the
    rows are deleted, so the counters equal a recount of the users left. The
    snapshots were counted in the user's shard; they are taken back from it.
    """
    write_user(connection, state_id, product_id, user_id, old_raw, None)
    delta: Counter[str] = Counter()
    for raw in snapshots:
        snap = _snapshot_facts_of_raw(raw)
        if snap is not None:
            delta.subtract(snapshot_deltas(snap))
    with connection.cursor() as cursor:
        _add(cursor, _sql(connection).add, product_id, shard_of(user_id), {k: n for k, n in delta.items() if n})


def rebuild(using: str, progress: Callable[[int], None] | None = None, batch: int = 2000) -> dict[str, int]:
    """Recompute every insight row and counter from the stored documents (one transaction; safe to re-run)."""
    from django.db import transaction

    from ..models.facts import ProductCounter, UserMetadataFact, UserWorkflowFact
    from ..models.records import SessionSnapshotRecord, UserStateRecord

    counts = {"states": 0, "snapshots": 0}
    with transaction.atomic(using=using):
        for model in (UserWorkflowFact, UserMetadataFact, ProductCounter):
            model.objects.using(using).all().delete()
        totals: dict[tuple[str, int], Counter[str]] = {}
        workflows: list[Any] = []
        metadata: list[Any] = []
        rows = (
            UserStateRecord.objects.using(using).order_by("id").values_list("id", "product_id", "user_id", "document")
        )
        for state_id, product_id, user_id, raw in rows.iterator(chunk_size=batch):
            facts = _facts_of_raw(raw)
            counts["states"] += 1
            if progress is not None:
                progress(1)
            if facts is None:
                continue
            totals.setdefault((product_id, shard_of(user_id)), Counter()).update(counter_deltas(None, facts))
            workflows += [
                UserWorkflowFact(
                    state_id=state_id,
                    product_id=product_id,
                    user_id=user_id,
                    workflow_id=w.workflow_id,
                    status=w.status,
                    last_progress_at=w.last_progress_at,
                    evidence=w.evidence,
                )
                for w in facts.workflows
            ]
            metadata += [
                UserMetadataFact(state_id=state_id, product_id=product_id, key=k, value=v) for k, v in facts.metadata
            ]
            if len(workflows) + len(metadata) >= batch:
                _flush(using, workflows, metadata)
        _flush(using, workflows, metadata)
        catalog: set[tuple[str, str]] = set()
        snaps = (
            SessionSnapshotRecord.objects.using(using).order_by("id").values_list("product_id", "user_id", "document")
        )
        for product_id, user_id, raw in snaps.iterator(chunk_size=batch):
            counts["snapshots"] += 1
            if progress is not None:
                progress(1)
            snap = _snapshot_facts_of_raw(raw)
            if snap is None:
                continue
            totals.setdefault((product_id, shard_of(user_id)), Counter()).update(snapshot_deltas(snap))
            catalog.update((product_id, wid) for wid in snap.catalog)
        counters = [
            ProductCounter(product_id=p, name=name, shard=shard, value=n)
            for (p, shard), names in totals.items()
            for name, n in names.items()
            if n
        ]
        counters += [ProductCounter(product_id=p, name=f"catalog:{wid}", shard=0, value=0) for p, wid in catalog]
        ProductCounter.objects.using(using).bulk_create(counters, batch_size=batch)
    return counts


def _flush(using: str, workflows: list[Any], metadata: list[Any]) -> None:
    from ..models.facts import UserMetadataFact, UserWorkflowFact

    UserWorkflowFact.objects.using(using).bulk_create(workflows, batch_size=1000)
    UserMetadataFact.objects.using(using).bulk_create(metadata, batch_size=1000)
    workflows.clear()
    metadata.clear()
