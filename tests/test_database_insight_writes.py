"""What the database primary writes for the insight aggregates on a session end, on SQLite and PostgreSQL.

The numbers themselves are checked against a full recount in
``test_insight_aggregates.py``; here: how few statements a session end
adds, and that a state another process wrote is diffed from its stored
text, never from what this process wrote before.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from autoplay_storage.adapters.database import DatabaseStorageAdapter
from autoplay_storage.lifecycle import on_session_end, on_session_start
from autoplay_storage.manager import StorageManager
from autoplay_storage.user_adoption_state import SessionSnapshot, WorkflowStatus
from tests.support.insight_recount import check_insight, db_documents

PRODUCT = "prod_writes"
CATALOG = ["create_project", "invite_team", "configure_columns"]
INSIGHT_TABLES = ("productcounter", "userworkflowfact", "usermetadatafact")
ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db(transaction=True)


def orm(fn, *args):
    from django.db import connections

    def call():
        try:
            return fn(*args)
        finally:
            connections.close_all()

    return sync_to_async(call, thread_sensitive=False)()


@pytest.fixture(params=["default", pytest.param("postgres", marks=pytest.mark.postgres)])
async def adapter(request: pytest.FixtureRequest) -> Iterator[DatabaseStorageAdapter]:
    alias = request.getfixturevalue("postgres_alias") if request.param == "postgres" else "default"
    db = DatabaseStorageAdapter(alias)
    yield db
    await db.aclose()


class Statements:
    """Every SQL statement and its parameters, on connections opened while it listens (the adapter's threads
    open their own)."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.params: list[object] = []

    def __call__(self, execute, sql, params, many, context):
        self.sql.append(sql)
        self.params += list(params or ())
        return execute(sql, params, many, context)

    def hook(self, sender, connection, **kwargs) -> None:
        connection.execute_wrappers.append(self)

    def insight(self) -> list[str]:
        return [s for s in self.sql if any(t in s for t in INSIGHT_TABLES)]


async def session(storage: StorageManager, user_id: str, n: int, workflow: str, status: WorkflowStatus) -> None:
    state, _ = await on_session_start(PRODUCT, user_id, f"s{n}", storage, metadata={"plan": "team"})
    state.upsert_workflow_progress(workflow, status=status, evidence="clicked through", source="activity")
    snap = SessionSnapshot.from_adoption_state(
        state,
        session_id=f"s{n}",
        session_number=state.sessions.count + 1,
        started_at=state.last_updated_at,
        catalog_workflow_ids=CATALOG,
    )
    await on_session_end(PRODUCT, user_id, snap, storage)


def postgres(adapter: DatabaseStorageAdapter) -> bool:
    from django.db import connections

    return connections[adapter.using].vendor == "postgresql"


async def listening(adapter: DatabaseStorageAdapter, call) -> Statements:
    """What ``call()`` runs (on a connection opened for it, so the listener sees it)."""
    from django.db.backends.signals import connection_created

    await adapter.aclose()
    listen = Statements()
    connection_created.connect(listen.hook)
    try:
        await call()
    finally:
        connection_created.disconnect(listen.hook)
    return listen


async def listened(adapter: DatabaseStorageAdapter, call) -> list[str]:
    """The insight statements ``call()`` runs."""
    return (await listening(adapter, call)).insight()


async def test_a_session_end_adds_one_statement_on_postgresql_and_one_a_table_on_sqlite(adapter) -> None:
    storage = StorageManager([adapter])
    await session(storage, "u1", 1, "create_project", WorkflowStatus.COMPLETED)
    state, _ = await on_session_start(PRODUCT, "u1", "s2", storage, metadata={"plan": "team"})
    state.upsert_workflow_progress("invite_team", status=WorkflowStatus.IN_PROGRESS, evidence="sent one invite")
    snap = SessionSnapshot.from_adoption_state(
        state, session_id="s2", session_number=2, started_at=state.last_updated_at, catalog_workflow_ids=CATALOG
    )
    insight = await listened(adapter, lambda: on_session_end(PRODUCT, "u1", snap, storage))
    # The snapshot's day counter (its catalog was made sure of by the first end), the state's move to
    # invite_team in progress and the workflow row that changed: one statement (a WITH) on PostgreSQL,
    # one a table on SQLite. Nothing for the metadata, which did not change.
    tables = sorted(t for s in insight for t in INSIGHT_TABLES if t in s)
    assert tables == ["productcounter", "userworkflowfact"], insight
    assert len(insight) == (1 if postgres(adapter) else 2), insight
    await check_insight(adapter, PRODUCT, lambda: orm(db_documents, adapter.using, PRODUCT))


ANOTHER_PROCESS = """
import asyncio, django
django.setup()
from autoplay_storage.adapters.database import DatabaseStorageAdapter
from autoplay_storage.lifecycle import load_state
from autoplay_storage.user_adoption_state import WorkflowStatus

def mutate(doc):
    state = load_state(doc, "u1")
    state.upsert_workflow_progress("create_project", status=WorkflowStatus.COMPLETED, evidence="done")
    state.metadata["plan"] = "enterprise"
    return state.to_dict()

async def main():
    adapter = DatabaseStorageAdapter("default")
    await adapter.update_user_state(PRODUCT, "u1", mutate)
    await adapter.aclose()

asyncio.run(main())
"""


def database_url(alias: str) -> str:
    from django.db import connections

    cfg = connections[alias].settings_dict
    if cfg["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{cfg['NAME']}"
    return f"postgres://{cfg['USER']}@{cfg['HOST'] or '127.0.0.1'}:{cfg['PORT'] or 5432}/{cfg['NAME']}"


async def test_a_state_another_process_wrote_is_diffed_from_its_stored_text(adapter) -> None:
    storage = StorageManager([adapter])
    await session(storage, "u1", 1, "create_project", WorkflowStatus.IN_PROGRESS)
    await session(storage, "u2", 1, "create_project", WorkflowStatus.IN_PROGRESS)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "DATABASE_URL": database_url(adapter.using)}
    env.pop("REDIS_URL", None)
    code = ANOTHER_PROCESS.replace("PRODUCT", repr(PRODUCT))
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    # This process wrote u1 last before; the next write must take back what the other one stored
    # (create_project completed, plan enterprise), not what this process remembers writing.
    await session(storage, "u1", 2, "invite_team", WorkflowStatus.IN_PROGRESS)
    await check_insight(adapter, PRODUCT, lambda: orm(db_documents, adapter.using, PRODUCT))


def rework(doc: dict) -> dict:
    """Two workflows and a metadata key gone, a workflow and a key changed, a key added."""
    progress = doc["onboarding"]["workflow_progress"]
    del progress["create_project"], progress["invite_team"]
    progress["configure_columns"]["status"] = "completed"
    progress["configure_columns"]["completed_at"] = doc["last_updated_at"]
    doc["metadata"].pop("role")
    doc["metadata"].update(plan="enterprise", region="eu")
    return doc


async def test_a_write_that_changes_many_rows_is_one_statement_on_postgresql(adapter) -> None:
    storage = StorageManager([adapter])
    for n, workflow in enumerate(CATALOG):
        await session(storage, "u1", n, workflow, WorkflowStatus.IN_PROGRESS)
    await adapter.update_user_state(PRODUCT, "u1", lambda doc: {**doc, "metadata": {**doc["metadata"], "role": "pm"}})
    insight = await listened(adapter, lambda: adapter.update_user_state(PRODUCT, "u1", rework))
    # Rows deleted and upserted in both tables and the counters: one statement, or one a part on SQLite.
    assert len(insight) == (1 if postgres(adapter) else 5), insight
    await check_insight(adapter, PRODUCT, lambda: orm(db_documents, adapter.using, PRODUCT))
    same = await listened(adapter, lambda: adapter.update_user_state(PRODUCT, "u1", lambda doc: {**doc, "x": 1}))
    assert same == []  # facts that do not change write nothing


async def test_a_snapshot_is_counted_as_its_stored_text_reads(adapter) -> None:
    storage = StorageManager([adapter])
    await session(storage, "u1", 1, "create_project", WorkflowStatus.IN_PROGRESS)
    snapshot = {
        "session_id": "s9",
        "captured_at": 1.7e9,
        "mastery": {"level": "beginner"},
        "completed_workflow_ids": ("from_a_tuple",),  # JSON writes a list: the stored text lists it
        "workflow_progress": {7: {}},  # and a key as text
    }
    await adapter.save_session_snapshot(PRODUCT, "u1", "s9", snapshot)
    stats = await adapter.insight_stats(PRODUCT)
    await check_insight(adapter, PRODUCT, lambda: orm(db_documents, adapter.using, PRODUCT))
    assert {"from_a_tuple", "7"} <= {row.workflow_id for row in stats.funnel}, stats


async def catalog_sent(adapter: DatabaseStorageAdapter, call) -> set[str]:
    """The catalog entries the insight statements of ``call()`` make sure of."""
    params = (await listening(adapter, call)).params
    return {p for p in params if isinstance(p, str) and p.startswith("catalog:")}


async def test_catalog_entries_made_sure_of_lately_are_not_sent_again(adapter) -> None:
    from django.db import connections, transaction

    from autoplay_storage.adapters import database_facts

    storage = StorageManager([adapter])
    first = await catalog_sent(adapter, lambda: session(storage, "u1", 1, "create_project", WorkflowStatus.COMPLETED))
    assert first == {f"catalog:{w}" for w in CATALOG}
    # The same process, the next end: the rows exist, nothing to make sure of.
    second = await catalog_sent(adapter, lambda: session(storage, "u2", 1, "invite_team", WorkflowStatus.IN_PROGRESS))
    assert second == set()
    # Another adapter (another process) knows nothing of them: it sends them once more.
    other = DatabaseStorageAdapter(adapter.using)
    try:
        elsewhere, done = StorageManager([other]), WorkflowStatus.COMPLETED
        again = await catalog_sent(other, lambda: session(elsewhere, "u3", 1, "create_project", done))
    finally:
        await other.aclose()
    assert again == {f"catalog:{w}" for w in CATALOG}
    await check_insight(adapter, PRODUCT, lambda: orm(db_documents, adapter.using, PRODUCT))

    # An entry is marked only once the transaction that carried it commits.
    sent = database_facts.SentLately()
    snapshot = '{"session_id": "s1", "captured_at": 1.7e9, "completed_workflow_ids": ["rolled_back"]}'

    def rolled_back() -> None:
        with pytest.raises(RuntimeError), transaction.atomic(using=adapter.using):
            database_facts.write_snapshot(connections[adapter.using], "p_rb", "u1", snapshot, None, sent)
            raise RuntimeError("the end failed after counting its snapshot")

    await orm(rolled_back)
    assert sent.unsent("p_rb", ["rolled_back"]) == ["rolled_back"]


async def test_counters_written_in_the_spelling_before_still_count_and_net_out(adapter) -> None:
    """A database from before one counter a snapshot (``day:<d>`` and ``week:<w>:<level>``) reads as it did, and
    an erasure that takes such a snapshot back in today's spelling (``day:<d>:<level>``) nets it out."""
    from django.db import connections, transaction

    from autoplay_storage.adapters import database_facts
    from autoplay_storage.facts import SnapshotFacts, day_of, week_of

    at = 1.7e9
    day, week = day_of(at), week_of(at)
    snap = SnapshotFacts(day, week, "beginner", ())

    def count(counts: dict[str, int]) -> None:
        with transaction.atomic(using=adapter.using):
            database_facts.add_counts(connections[adapter.using], PRODUCT, "u1", counts)

    await orm(count, {f"day:{day}": 1, f"week:{week}:beginner": 1})  # counted before the upgrade
    await orm(count, dict(database_facts.snapshot_deltas(snap)))  # and one counted since
    stats = await adapter.insight_stats(PRODUCT)
    assert stats.sessions_per_day == {day: 2} and stats.mastery_per_week == {week: {"beginner": 2}}, stats
    await orm(count, {name: -n for name, n in database_facts.snapshot_deltas(snap).items()})  # one erased
    stats = await adapter.insight_stats(PRODUCT)
    assert stats.sessions_per_day == {day: 1} and stats.mastery_per_week == {week: {"beginner": 1}}, stats
