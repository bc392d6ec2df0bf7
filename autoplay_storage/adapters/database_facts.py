"""The database adapter's insight rows, written as a diff in the transaction of every state write.

``write_user`` compares the facts of the document being replaced with those
of the new one and changes only what differs: the user's workflow and
metadata rows and the product's counters (``models.facts``). It runs in the
writer's transaction, after the state row is locked, so a retried write
(no change: no diff) and racing ends (queued on the row lock) stay exact.
``write_snapshot`` counts a snapshot in the transaction that inserts it
(write-once); ``forget_user`` takes a user's facts and snapshots back out in
the erasure's transaction. ``rebuild`` recomputes everything from the documents.

What a session end adds is kept small: the replaced document's facts come
from ``_FactsMemo`` when the locked row still holds the text this process
wrote (no parse), and the snapshot's counters, its catalog and the state's
counters go in one statement (``one_counter_statement``).
"""

from __future__ import annotations

import contextlib
import re
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..codec import loads
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
        doc = loads(raw)  # what the adapter's readers parse (codec), so the facts are of the same document
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


def _count(facts: UserFacts, sign: int, delta: Counter[str], *, workflows: bool, cohort: bool) -> None:
    """Add one user's counters times ``sign``: its workflows' statuses, and the user in its cohort."""
    if workflows:
        for wf in facts.workflows:
            delta[f"wf:{wf.workflow_id}:{wf.status}"] += sign
    if cohort:
        delta["users"] += sign
        delta[f"cohort:{facts.cohort_week}"] += sign
        if facts.sessions_to_onboard is not None:
            delta[f"onboard:{facts.cohort_week}:{facts.sessions_to_onboard}"] += sign


def counter_deltas(old: UserFacts | None, new: UserFacts | None) -> Counter[str]:
    """How one write moves the product's counters (a pure diff: old facts -1, new facts +1).

    A part equal in both (the workflows; the cohort and sessions to onboard) is skipped: it cancels out.
    """
    both = old is not None and new is not None
    workflows = not both or old.workflows != new.workflows
    cohort = not both or (old.cohort_week, old.sessions_to_onboard) != (new.cohort_week, new.sessions_to_onboard)
    delta: Counter[str] = Counter()
    for facts, sign in ((old, -1), (new, 1)):
        if facts is not None:
            _count(facts, sign, delta, workflows=workflows, cohort=cohort)
    return Counter({k: v for k, v in delta.items() if v})


def snapshot_deltas(snap: SnapshotFacts) -> Counter[str]:
    return Counter({f"day:{snap.day}": 1, f"week:{snap.week}:{snap.mastery_level}": 1})


class _Sql:
    """The statements, from the models' metadata, once per backend."""

    def __init__(self, connection: Any) -> None:
        from ..models.facts import ProductCounter, UserMetadataFact, UserWorkflowFact

        q = connection.ops.quote_name
        c, w, m = ProductCounter._meta.db_table, UserWorkflowFact._meta.db_table, UserMetadataFact._meta.db_table
        # A zero (a catalog entry) only makes sure the row exists: no write, where the row is there already.
        self.add = (
            f"INSERT INTO {q(c)} (product_id, name, shard, value) VALUES %s "
            f"ON CONFLICT (product_id, name, shard) DO UPDATE SET value = {q(c)}.value + excluded.value "
            "WHERE excluded.value <> 0"
        )
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


_batches = threading.local()  # per pool thread: the counts ``one_counter_statement`` holds back, by alias


@contextlib.contextmanager
def one_counter_statement(connection: Any) -> Iterator[None]:
    """Hold back the counters every write inside adds, and add them in one statement as the block ends.

    A session end counts its snapshot, then its state: one statement instead
    of two. Only on success: when the block raises, its transaction is rolled
    back and the counts are dropped with it.
    """
    if getattr(_batches, connection.alias, None) is not None:  # inside another: that one writes them
        yield
        return
    held: dict[tuple[str, str], Counter[str]] = {}
    setattr(_batches, connection.alias, held)
    try:
        yield
    finally:
        setattr(_batches, connection.alias, None)
    for (product_id, user_id), counts in held.items():
        add_counts(connection, product_id, user_id, counts)


def add_counts(connection: Any, product_id: str, user_id: str, counts: dict[str, int]) -> None:
    """Add ``counts`` to the user's shard of the product's counters: one statement (none for no counts).

    A zero is kept only for a catalog entry (its row must exist). Inside
    ``one_counter_statement`` they are held back until its end.
    """
    held = getattr(_batches, connection.alias, None)
    if held is not None:
        held.setdefault((product_id, user_id), Counter()).update(counts)  # update keeps a zero's name
        return
    rows = sorted((k, n) for k, n in counts.items() if n or k.startswith("catalog:"))
    if not rows:  # sorted: one order for every writer, so two ends never deadlock on their rows
        return
    shard = shard_of(user_id)
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    with connection.cursor() as cursor:
        cursor.execute(_sql(connection).add % values, [x for name, n in rows for x in (product_id, name, shard, n)])


class _FactsMemo:
    """The facts of the text this process last wrote per state row, so the next write need not parse it.

    Facts are a pure function of the stored text: when the locked row still
    holds exactly the text remembered, its facts are the ones remembered
    (compared as text, so another writer's change is always seen). Bounded;
    the oldest row is forgotten first.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, int], tuple[str, UserFacts | None]] = {}

    def facts(self, alias: str, state_id: int, raw: str | None) -> UserFacts | None:
        if raw is None:
            return None
        hit = self._rows.get((alias, state_id))
        if hit is not None and hit[0] == raw:
            return hit[1]
        return _facts_of_raw(raw)

    def keep(self, alias: str, state_id: int, raw: str | None, facts: UserFacts | None) -> None:
        key = (alias, state_id)
        with self._lock:
            self._rows.pop(key, None)
            if raw is None:
                return
            if len(self._rows) >= self.size:
                self._rows.pop(next(iter(self._rows)))  # the oldest: dicts keep insertion order
            self._rows[key] = (raw, facts)


# An entry holds a state's text and facts: about 6.5 KB for a 4 KB document, so some 13 MB when full.
_memo = _FactsMemo(2048)


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

    ``new_raw``: ``doc``'s stored text, which says whether it carries text no
    database can hold (and is remembered with its facts).
    """
    if doc is not None and new_raw is not None and _SURROGATE_ESCAPE.search(new_raw):
        doc = _scrub(doc)
    old = _memo.facts(connection.alias, state_id, old_raw)
    new = user_facts(doc) if doc is not None else None
    _memo.keep(connection.alias, state_id, new_raw if doc is not None else None, new)
    if old == new:
        return
    add_counts(connection, product_id, user_id, counter_deltas(old, new))
    sql = _sql(connection)
    with connection.cursor() as cursor:
        old_wf = {w.workflow_id: w for w in old.workflows} if old else {}
        new_wf = {w.workflow_id: w for w in new.workflows} if new else {}
        gone = [(state_id, wid) for wid in sorted(old_wf.keys() - new_wf.keys())]
        if gone:
            cursor.executemany(sql.delete_workflow, gone)
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
        dropped = [(state_id, key) for key in sorted(old_meta.keys() - new_meta.keys())]
        if dropped:
            cursor.executemany(sql.delete_meta, dropped)
        fresh = [(state_id, product_id, k, v) for k, v in sorted(new_meta.items()) if old_meta.get(k) != v]
        if fresh:
            cursor.executemany(sql.upsert_meta, fresh)


def write_snapshot(connection: Any, product_id: str, user_id: str, raw: str) -> None:
    """Count a snapshot this transaction just inserted (write-once: never twice), and its catalog."""
    snap = _snapshot_facts_of_raw(raw)
    if snap is None:
        return
    add_counts(connection, product_id, user_id, {**snapshot_deltas(snap), **{f"catalog:{w}": 0 for w in snap.catalog}})


def forget_user(
    connection: Any, state_id: int, product_id: str, user_id: str, old_raw: str | None, snapshots: Iterable[str]
) -> None:
    """An erasure: the user's facts diffed to none, and each stored snapshot's counts taken back.

    In the erasure's transaction, with the state row locked and before the
    rows are deleted, so the counters equal a recount of the users left. The
    snapshots were counted in the user's shard; they are taken back from it,
    in the statement that takes the user's own counters back.
    """
    delta: Counter[str] = Counter()
    for raw in snapshots:
        snap = _snapshot_facts_of_raw(raw)
        if snap is not None:
            delta.subtract(snapshot_deltas(snap))
    with one_counter_statement(connection):
        write_user(connection, state_id, product_id, user_id, old_raw, None)
        add_counts(connection, product_id, user_id, delta)


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
