"""The database adapter's insight rows, written as a diff in the transaction of every state write.

``write_user`` compares the facts of the document being replaced with those
of the new one and changes only what differs: the user's workflow and
metadata rows and the product's counters (``models.facts``). It runs in the
writer's transaction, after the state row is locked, so a retried write
(no change: no diff) and racing ends (queued on the row lock) stay exact.
``write_snapshot`` counts a snapshot in the transaction that inserts it
(write-once); ``forget_user`` takes a user's facts and snapshots back out in
the erasure's transaction. ``rebuild`` recomputes everything from the documents.

What a write adds is kept small: the replaced document's facts come from
``_FactsMemo`` when the locked row still holds the text this process wrote
(no parse), a snapshot's from the document it was written from, and facts
that do not change write nothing. What does change (the rows deleted and
upserted, the snapshot's and the state's counters) is written together
(``one_statement``): one statement on PostgreSQL, one a table on SQLite.
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
from .common import SentLately

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


_PLAIN = frozenset((str, int, float, bool, type(None), list, dict))  # what JSON text reads back as the same class


def _plain_keys(d: Any) -> bool:
    return d.__class__ is not dict or all(k.__class__ is str for k in d)


def _snapshot_doc_facts(doc: dict[str, Any], raw: str) -> SnapshotFacts | None:
    """``snapshot_facts`` of the snapshot ``raw`` was written from, without parsing ``raw``.

    Only where every field the facts read has a class JSON gives back (no
    tuple, no enum, no key that is not text): else those of ``raw``, so the
    counts are always of the stored text.
    """
    if doc.__class__ is not dict or not _plain_keys(doc):
        return _snapshot_facts_of_raw(raw)
    mastery = doc.get("mastery")
    fields = [doc.get("captured_at"), mastery, doc.get("workflow_progress")]
    if mastery.__class__ is dict:
        fields.append(mastery.get("level"))
    for name in ("completed_workflow_ids", "in_progress_workflow_ids", "untouched_workflow_ids"):
        ids = doc.get(name)
        fields.append(ids)
        if ids.__class__ is list:
            fields += ids
    if not all(f.__class__ in _PLAIN for f in fields) or not (
        _plain_keys(mastery) and _plain_keys(doc.get("workflow_progress"))
    ):
        return _snapshot_facts_of_raw(raw)
    if _SURROGATE_ESCAPE.search(raw):
        doc = _scrub(doc)
    return snapshot_facts(doc)


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
    """One counter a snapshot: its day and level (the day chart sums the levels, the week chart the days).

    Counters written before as ``day:<d>`` and ``week:<w>:<level>`` are still
    read (``database_insight._stats`` sums both spellings), so an erasure that
    takes a snapshot back in this spelling nets out one counted in the other.
    """
    return Counter({f"day:{snap.day}:{snap.mastery_level}": 1})


class _Sql:
    """The statements' parts, from the models' metadata, once per backend."""

    def __init__(self, connection: Any) -> None:
        from ..models.facts import ProductCounter, UserMetadataFact, UserWorkflowFact

        q = connection.ops.quote_name
        c, w, m = ProductCounter._meta.db_table, UserWorkflowFact._meta.db_table, UserMetadataFact._meta.db_table
        self.with_clause = connection.vendor == "postgresql"  # data-modifying WITH: every part in one statement
        # A zero (a catalog entry) only makes sure the row exists: no write, where the row is there already.
        self.add = (
            f"INSERT INTO {q(c)} (product_id, name, shard, value) VALUES %s "
            f"ON CONFLICT (product_id, name, shard) DO UPDATE SET value = {q(c)}.value + excluded.value "
            "WHERE excluded.value <> 0"
        )
        self.ensure = f"INSERT INTO {q(c)} (product_id, name, shard, value) VALUES %s ON CONFLICT DO NOTHING"
        self.upsert_workflows = (
            f"INSERT INTO {q(w)} (state_id, product_id, user_id, workflow_id, status, last_progress_at, evidence) "
            "VALUES %s ON CONFLICT (state_id, workflow_id) DO UPDATE SET "
            "status = excluded.status, last_progress_at = excluded.last_progress_at, evidence = excluded.evidence"
        )
        self.delete_workflows = f"DELETE FROM {q(w)} WHERE state_id = %s AND workflow_id IN (%s)"
        self.upsert_meta = (
            f"INSERT INTO {q(m)} (state_id, product_id, key, value) VALUES %s "
            "ON CONFLICT (state_id, key) DO UPDATE SET value = excluded.value"
        )
        self.delete_meta = f"DELETE FROM {q(m)} WHERE state_id = %s AND key IN (%s)"


_statements: dict[str, _Sql] = {}


def _sql(connection: Any) -> _Sql:
    found = _statements.get(connection.vendor)
    if found is None:
        found = _statements[connection.vendor] = _Sql(connection)
    return found


_CHUNK = 500  # rows per part: far below any database's limit on parameters


def _rows_part(template: str, width: int, rows: list[tuple[Any, ...]]) -> Iterator[tuple[str, list[Any]]]:
    """``INSERT ... VALUES (..), (..)``: one part per chunk of rows."""
    group = "(" + ", ".join(["%s"] * width) + ")"
    for i in range(0, len(rows), _CHUNK):
        chunk = rows[i : i + _CHUNK]
        yield template % ", ".join([group] * len(chunk)), [x for row in chunk for x in row]


def _delete_part(template: str, keys: list[tuple[int, str]]) -> Iterator[tuple[str, list[Any]]]:
    """``DELETE ... WHERE state_id = %s AND key IN (..)``: one part per state and chunk of keys."""
    by_state: dict[int, list[str]] = {}
    for state_id, key in keys:
        by_state.setdefault(state_id, []).append(key)
    for state_id, names in sorted(by_state.items()):
        for i in range(0, len(names), _CHUNK):
            chunk = names[i : i + _CHUNK]
            yield template % ("%s", ", ".join(["%s"] * len(chunk))), [state_id, *chunk]


class _Pending:
    """What the writes of one transaction change in the insight tables, written together at its end.

    Rows by key (the last write of a key wins, as if each write had run on
    its own); counters by ``(product, name, shard)``, summed.
    """

    __slots__ = ("counts", "metadata", "workflows")

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.workflows: dict[tuple[int, str], tuple[Any, ...] | None] = {}  # None: delete the row
        self.metadata: dict[tuple[int, str], tuple[Any, ...] | None] = {}

    def count(self, product_id: str, user_id: str, counts: dict[str, int]) -> None:
        if not counts:
            return
        shard = shard_of(user_id)
        held = self.counts
        for name, n in counts.items():
            key = (product_id, name, shard)
            held[key] = held.get(key, 0) + n  # a zero keeps its name: a catalog entry's row must exist

    def parts(self, sql: _Sql) -> list[tuple[str, list[Any]]]:
        """The statements' parts: rows deleted, rows upserted, then the counters.

        The counters sorted by their key: one order for every writer, so two
        transactions never deadlock on them. The rows are the user's own,
        already behind the state row's lock.
        """
        out: list[tuple[str, list[Any]]] = []
        for table, delete, upsert, width in (
            (self.workflows, sql.delete_workflows, sql.upsert_workflows, 7),
            (self.metadata, sql.delete_meta, sql.upsert_meta, 4),
        ):
            gone = sorted(key for key, row in table.items() if row is None)
            if gone:
                out += _delete_part(delete, gone)
            rows = [row for _key, row in sorted(table.items()) if row is not None]
            if rows:
                out += _rows_part(upsert, width, rows)
        counters = sorted((k, n) for k, n in self.counts.items() if n or k[1].startswith("catalog:"))
        if sql.with_clause:  # a catalog entry's zero apart: DO NOTHING reads its row, DO UPDATE would lock it
            catalog = [(p, name, shard, 0) for (p, name, shard), n in counters if not n]
            counters = [(k, n) for k, n in counters if n]
            if catalog:
                out += _rows_part(sql.ensure, 4, catalog)
        if counters:
            out += _rows_part(sql.add, 4, [(p, name, shard, n) for (p, name, shard), n in counters])
        return out

    def take(self, sql: _Sql) -> list[tuple[str, list[Any]]]:
        """The parts, and nothing left held: whoever takes them writes them."""
        parts = self.parts(sql)
        self.counts, self.workflows, self.metadata = {}, {}, {}
        return parts

    def write(self, connection: Any) -> None:
        """As few statements as the database allows: one on PostgreSQL (a WITH of the parts), one a part on SQLite."""
        sql = _sql(connection)
        parts = self.parts(sql)
        if not parts:
            return
        with connection.cursor() as cursor:
            if sql.with_clause and len(parts) > 1:
                *first, (last, last_params) = parts
                text, params = _with(first)
                cursor.execute(text + last, params + last_params)
            else:
                for part, params in parts:
                    cursor.execute(part, params)


def _with(parts: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    """``WITH f0 AS (part), f1 AS (part) `` and its parameters, to put before a statement."""
    text = "WITH " + ", ".join(f"f{i} AS ({part})" for i, (part, _) in enumerate(parts)) + " "
    return text, [x for _part, params in parts for x in params]


def held_as_with(connection: Any) -> tuple[str, list[Any]]:
    """On PostgreSQL, what ``one_statement`` holds as a WITH for the caller's next statement, which then writes it.

    The state's UPDATE carries them: no statement of their own. Elsewhere (and
    with nothing held) ``("", [])``, and the block's end writes them.
    """
    held = getattr(_batches, connection.alias, None)
    if held is None or not _sql(connection).with_clause:
        return "", []
    parts = held.take(_sql(connection))
    return _with(parts) if parts else ("", [])


_batches = threading.local()  # per pool thread: the changes ``one_statement`` holds back, by alias


@contextlib.contextmanager
def one_statement(connection: Any) -> Iterator[None]:
    """Hold back the insight changes of every write inside, and write them together as the block ends.

    A session end counts its snapshot, then writes its state: one statement
    for both on PostgreSQL, one per table on SQLite. Only on success: when
    the block raises, its transaction is rolled back and the changes are
    dropped with it.
    """
    if getattr(_batches, connection.alias, None) is not None:  # inside another: that one writes them
        yield
        return
    pending = _Pending()
    setattr(_batches, connection.alias, pending)
    try:
        yield
    finally:
        setattr(_batches, connection.alias, None)
    pending.write(connection)


def _pending(connection: Any) -> tuple[_Pending, bool]:
    """The enclosing block's changes, or fresh ones to write now (``True``)."""
    held = getattr(_batches, connection.alias, None)
    return (held, False) if held is not None else (_Pending(), True)


def add_counts(connection: Any, product_id: str, user_id: str, counts: dict[str, int]) -> None:
    """Add ``counts`` to the user's shard of the product's counters: one statement (none for no counts).

    A zero is kept only for a catalog entry (its row must exist). Inside
    ``one_statement`` they are held back until its end.
    """
    pending, now = _pending(connection)
    pending.count(product_id, user_id, counts)
    if now:
        pending.write(connection)


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
    database can hold (and is remembered with its facts). Facts that do not
    change (a session start's, mostly) write nothing.
    """
    if doc is not None and new_raw is not None and _SURROGATE_ESCAPE.search(new_raw):
        doc = _scrub(doc)
    old = _memo.facts(connection.alias, state_id, old_raw)
    new = user_facts(doc) if doc is not None else None
    _memo.keep(connection.alias, state_id, new_raw if doc is not None else None, new)
    if old == new:
        return
    pending, now = _pending(connection)
    pending.count(product_id, user_id, counter_deltas(old, new))
    old_wf = old.workflows if old else ()
    new_wf = new.workflows if new else ()
    if old_wf != new_wf:
        kept = {w.workflow_id: w for w in new_wf}
        rows = pending.workflows
        for w in old_wf:
            if w.workflow_id not in kept:
                rows[(state_id, w.workflow_id)] = None
        before = set(old_wf)
        for w in new_wf:
            if w not in before:
                rows[(state_id, w.workflow_id)] = (
                    state_id, product_id, user_id, w.workflow_id, w.status, w.last_progress_at, w.evidence
                )
    old_meta = old.metadata if old else ()
    new_meta = new.metadata if new else ()
    if old_meta != new_meta:
        fresh = dict(new_meta)
        rows = pending.metadata
        for key, _value in old_meta:
            if key not in fresh:
                rows[(state_id, key)] = None
        before_meta = set(old_meta)
        for key, value in new_meta:
            if (key, value) not in before_meta:
                rows[(state_id, key)] = (state_id, product_id, key, value)
    if now:
        pending.write(connection)


def write_snapshot(
    connection: Any, product_id: str, user_id: str, raw: str, doc: dict[str, Any] | None = None,
    sent: SentLately | None = None,
) -> None:
    """Count a snapshot this transaction just inserted (write-once: never twice), and its catalog.

    ``doc``: the snapshot ``raw`` was written from, read instead of parsing
    ``raw`` again where it reads the same (``_snapshot_doc_facts``).
    ``sent``: the catalog entries this process made sure of lately, left out
    (they only gain rows); the others are marked once the transaction commits.
    """
    snap = _snapshot_doc_facts(doc, raw) if doc is not None else _snapshot_facts_of_raw(raw)
    if snap is None:
        return
    catalog = snap.catalog if sent is None else sent.unsent(product_id, snap.catalog)
    add_counts(connection, product_id, user_id, {**snapshot_deltas(snap), **{f"catalog:{w}": 0 for w in catalog}})
    if catalog and sent is not None:
        connection.on_commit(lambda: sent.mark(product_id, catalog))


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
    with one_statement(connection):
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
