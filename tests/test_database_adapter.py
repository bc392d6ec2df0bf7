"""The database adapter on a real database: SQLite (the project's test database) and PostgreSQL (when reachable).

Browsing is checked against the in-memory reference adapter on the same
documents, so every primary lists alike.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from autoplay_storage.adapters.database import DatabaseStorageAdapter
from autoplay_storage.adapters.memory import InMemoryStorageAdapter
from autoplay_storage.browse import UserQuery, search_terms, user_summary_from_doc
from autoplay_storage.errors import CorruptDocumentError, StorageUnavailableError
from autoplay_storage.lifecycle import on_session_start
from autoplay_storage.user_adoption_state import JourneyState, Mastery, SessionSnapshot, UserAdoptionState
from tests.support.redis_server import free_port

# The adapter works from its own threads: only transactional tests see its writes.
db = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


def orm(fn, *args, **kwargs):
    """Direct ORM access from an async test, in a worker thread that closes its connections after."""
    from django.db import connections

    def call():
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    return sync_to_async(call, thread_sensitive=False)()


@pytest.fixture(params=["default", pytest.param("postgres", marks=pytest.mark.postgres)])
def alias(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_alias")
    return "default"


@pytest.fixture
async def adapter(alias: str):
    db = DatabaseStorageAdapter(alias)
    yield db
    await db.aclose()


def make_state(user_id: str, *, at: float, journey: str = "onboarding", level: str = "novice", **metadata) -> dict:
    state = UserAdoptionState(user_id=user_id, metadata=metadata, first_seen_at=at - 100, last_updated_at=at)
    state.journey_state = JourneyState(journey)
    state.mastery = Mastery.from_dict({"rating": 3, "level": level})
    if journey == "onboarded":
        state.onboarding.onboarding_completed_at = at - 1
    return state.to_dict()


def make_snapshot(session_id: str, user_id: str = "u_1", *, captured: float = 2000.0) -> SessionSnapshot:
    return SessionSnapshot(
        session_id=session_id, user_id=user_id, session_number=1, started_at=captured - 60, captured_at=captured
    )


def record(model_name: str, alias: str, **filters):
    from autoplay_storage.models import records

    return getattr(records, model_name).objects.using(alias).get(**filters)


def set_document(model_name: str, alias: str, raw: str, **filters) -> None:
    """Hand-edit a stored document, as an operator (or a broken writer) might."""
    from autoplay_storage.models import records

    assert getattr(records, model_name).objects.using(alias).filter(**filters).update(document=raw) == 1


# -- the wire --


@db
async def test_sdk_documents_round_trip_as_compact_json(adapter, alias, sdk_fixtures) -> None:
    assert sdk_fixtures
    for name, doc in sdk_fixtures.items():
        kind, product_id, user_id, *rest = name.split("__")
        if kind == "state":
            await adapter.save_user_state(product_id, user_id, doc)
            assert await adapter.get_user_state(product_id, user_id) == doc
            raw = await adapter.get_raw_user_state(product_id, user_id)
        else:
            await adapter.save_session_snapshot(product_id, user_id, rest[0], doc)
            assert await adapter.get_session_snapshot(product_id, user_id, rest[0]) == doc
            raw = await adapter.get_raw_session_snapshot(product_id, user_id, rest[0])
        assert raw == json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


@db
async def test_snapshot_is_write_once(adapter, alias) -> None:
    first = make_snapshot("s1", captured=1000.0).to_dict()
    second = {**first, "session_number": 7, "captured_at": 5000.0}
    await adapter.save_session_snapshot("p", "u_1", "s1", first)
    await adapter.save_session_snapshot("p", "u_1", "s1", second)  # no error, no overwrite
    await asyncio.gather(*(adapter.save_session_snapshot("p", "u_1", "s1", second) for _ in range(5)))
    assert await adapter.get_session_snapshot("p", "u_1", "s1") == first
    row = await orm(record, "SessionSnapshotRecord", alias, product_id="p", user_id="u_1", session_id="s1")
    assert (row.session_number, row.captured_at, row.started_at) == (1, 1000.0, 940.0)


@db
async def test_browse_columns_and_search_terms_follow_the_document(adapter, alias) -> None:
    from autoplay_storage.models.records import UserSearchTerm

    doc = make_state("U_Mixed", at=1500.0, journey="onboarded", level="proficient", email="Ann@Example.com")
    await adapter.save_user_state("p", "U_Mixed", doc)
    row = await orm(record, "UserStateRecord", alias, product_id="p", user_id="U_Mixed")
    expected = user_summary_from_doc("p", "U_Mixed", doc)
    assert (row.journey_state, row.mastery_level, row.mastery_rating) == ("onboarded", "proficient", 3)
    assert (row.onboarded, row.sessions_count, row.completion_rate) == (True, 0, 0.0)
    assert (row.first_seen_at, row.last_activity_at, row.corrupt) == (1400.0, 1500.0, False)
    assert expected.journey_state == row.journey_state and expected.onboarded == row.onboarded

    def terms() -> set[str]:
        return set(UserSearchTerm.objects.using(alias).filter(state_id=row.pk).values_list("term", flat=True))

    assert await orm(terms) == search_terms("U_Mixed", {"email": "Ann@Example.com"}) == {"u_mixed", "ann@example.com"}

    doc2 = make_state("U_Mixed", at=1600.0, level="beginner", email="bob@example.com")
    await adapter.save_user_state("p", "U_Mixed", doc2)
    row2 = await orm(record, "UserStateRecord", alias, product_id="p", user_id="U_Mixed")
    assert (row2.journey_state, row2.mastery_level, row2.onboarded, row2.last_activity_at) == (
        "onboarding",
        "beginner",
        False,
        1600.0,
    )
    assert row2.version == row.version + 1
    assert await orm(terms) == {"u_mixed", "bob@example.com"}


@db
async def test_ids_the_columns_cannot_hold_are_refused(adapter) -> None:
    with pytest.raises(ValueError, match="longer than 128"):
        await adapter.save_user_state("p", "u" * 129, make_state("u", at=1.0))
    with pytest.raises(ValueError, match="NUL"):
        await adapter.save_session_snapshot("p", "u", "s\x00", make_snapshot("s").to_dict())
    with pytest.raises(ValueError, match="non-empty"):
        await adapter.update_user_state("", "u", lambda doc: doc)
    # Reads of such ids find nothing (as on any primary), rather than failing in the driver.
    for bad in ("u" * 129, "nul\x00"):
        assert await adapter.get_user_state("p", bad) is None
        assert await adapter.get_session_snapshot("p", "u", bad) is None
        assert (await adapter.list_users(bad)).items == []
        assert (await adapter.list_sessions("p", bad)).items == []


# -- one transaction per session end --


@db
async def test_a_session_end_that_fails_freezes_nothing(adapter) -> None:
    """Snapshot and state commit together: a fold that raises rolls the snapshot back too (the retry starts clean)."""
    await adapter.save_user_state("p", "u_1", make_state("u_1", at=1.0))

    def broken(frozen, doc):
        raise RuntimeError("fold failed")

    with pytest.raises(RuntimeError):
        await adapter.record_session_end("p", "u_1", "s1", make_snapshot("s1").to_dict(), broken)
    assert await adapter.get_raw_session_snapshot("p", "u_1", "s1") is None
    assert (await adapter.list_sessions("p", "u_1")).items == []


@db
async def test_a_session_end_on_a_corrupt_state_freezes_nothing(adapter, alias) -> None:
    await adapter.save_user_state("p", "u_bad", make_state("u_bad", at=1.0))
    await orm(set_document, "UserStateRecord", alias, "{broken", product_id="p", user_id="u_bad")
    with pytest.raises(CorruptDocumentError) as caught:
        await adapter.record_session_end("p", "u_bad", "s1", make_snapshot("s1").to_dict(), lambda f, d: d)
    assert (caught.value.key, caught.value.raw) == ("db:p/u_bad", "{broken")
    assert await adapter.get_raw_session_snapshot("p", "u_bad", "s1") is None


# -- raw text --


@db
async def test_raw_writes_keep_corrupt_text_recoverable(adapter) -> None:
    await adapter.save_raw_user_state("p", "u_raw", "{oops")
    await adapter.save_raw_session_snapshot("p", "u_raw", "s1", "{oops too")
    assert await adapter.get_raw_user_state("p", "u_raw") == "{oops"
    assert await adapter.get_raw_session_snapshot("p", "u_raw", "s1") == "{oops too"
    assert (await adapter.list_users("p")).items[0].corrupt
    doc = make_state("u_raw", at=5.0)
    await adapter.save_raw_user_state("p", "u_raw", json.dumps(doc))
    assert await adapter.get_user_state("p", "u_raw") == doc
    assert not (await adapter.list_users("p")).items[0].corrupt


# -- browsing, against the reference adapter --


async def _load_both(adapter: DatabaseStorageAdapter, docs: dict[tuple[str, str], dict]) -> InMemoryStorageAdapter:
    memory = InMemoryStorageAdapter()
    for (product_id, user_id), doc in docs.items():
        await memory.save_user_state(product_id, user_id, doc)
    await asyncio.gather(*(adapter.save_user_state(p, u, doc) for (p, u), doc in docs.items()))
    return memory


async def _all_pages(browser, product_id: str, query: UserQuery, limit: int) -> list:
    rows, cursor = [], None
    while True:
        page = await browser.list_users(product_id, query, cursor=cursor, limit=limit)
        rows.extend(page.items)
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


def _population() -> dict[tuple[str, str], dict]:
    journeys = ["onboarding", "onboarded"]
    levels = ["novice", "beginner", "intermediate", "proficient", "power_user"]
    docs = {}
    for i in range(37):
        user_id = f"user_{i:02d}"
        # Ties on last activity (groups of four) must still page without gaps or repeats.
        docs[("prod_a", user_id)] = make_state(
            user_id,
            at=1000.0 + (i // 4),
            journey=journeys[i % 2],
            level=levels[i % 5],
            email=f"{'ann' if i % 3 == 0 else 'bob'}{i}@Example.com",
            role="Admin" if i % 7 == 0 else "member",
        )
    for i in range(5):
        docs[("prod_b", f"b_{i}")] = make_state(f"b_{i}", at=500.0 + i, level="power_user")
    return docs


@db
@pytest.mark.parametrize("search", ["b", "user_1", "ann"])
async def test_unselective_search_takes_the_subquery_path_alike(adapter, monkeypatch, search: str) -> None:
    import autoplay_storage.adapters.database as module

    monkeypatch.setattr(module, "_SEARCH_LOOKUP_FIRST", 1)  # every search here matches more than one user
    memory = await _load_both(adapter, _population())
    query = UserQuery(search=search, order="last_activity")
    expected = await _all_pages(memory, "prod_a", query, limit=500)
    assert len(expected) > 1
    assert await _all_pages(adapter, "prod_a", query, limit=4) == expected


# -- connections --


@db
@pytest.mark.postgres
async def test_aclose_closes_persistent_connections(postgres_alias: str) -> None:
    from django.db import connections

    def backends() -> set[int]:
        """Server processes connected to the test database (the test's own threads hold some too)."""
        with _maintenance() as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s",
                (connections[postgres_alias].settings_dict["NAME"],),
            ).fetchall()
        return {pid for (pid,) in rows}

    settings_dict = connections.settings[postgres_alias]
    settings_dict["CONN_MAX_AGE"] = 60
    try:
        before = await orm(backends)
        adapter = DatabaseStorageAdapter(postgres_alias)
        await asyncio.gather(*(adapter.get_user_state("p", f"u{i}") for i in range(8)))
        kept = await orm(backends) - before
        assert kept  # persistent: still open after the calls
        await adapter.aclose()
        # A server process exits a moment after its client hangs up: give it a few seconds, no more.
        for _ in range(50):
            left = kept & await orm(backends)
            if not left:
                break
            await asyncio.sleep(0.1)
        assert not left, "aclose() left these connections open"
        assert await adapter.get_user_state("p", "u") is None  # usable again after closing
        await adapter.aclose()
    finally:
        settings_dict["CONN_MAX_AGE"] = 0


def _maintenance():
    import psycopg

    from tests.support.postgres import alias_settings

    cfg = alias_settings()
    return psycopg.connect(host=cfg["HOST"], port=cfg["PORT"], user=cfg["USER"], dbname="postgres", autocommit=True)


@db
@pytest.mark.postgres
async def test_connections_the_server_dropped_are_unavailable_once_then_replaced(postgres_alias: str) -> None:
    """A PostgreSQL restart under kept connections: each dead one fails a call with a 503, never "not found"."""
    from django.db import connections

    settings_dict = connections.settings[postgres_alias]
    settings_dict["CONN_MAX_AGE"] = 60
    adapter = DatabaseStorageAdapter(postgres_alias)
    database_name = connections[postgres_alias].settings_dict["NAME"]

    def backends() -> set[int]:
        with _maintenance() as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database_name,)).fetchall()
        return {pid for (pid,) in rows}

    def terminate(pids: set[int]) -> None:
        with _maintenance() as conn:
            for pid in pids:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

    try:
        before = await orm(backends)  # the test's own connections: not the adapter's, spared
        await adapter.save_user_state("p", "u", make_state("u", at=1.0))
        await asyncio.gather(*(adapter.get_user_state("p", "u") for _ in range(16)))  # every pool thread connected
        kept = await orm(backends) - before
        assert kept
        await orm(terminate, kept)
        failed = 0
        for _ in range(4):
            answers = await asyncio.gather(
                *(adapter.get_user_state("p", "u") for _ in range(16)), return_exceptions=True
            )
            for answer in answers:
                if isinstance(answer, StorageUnavailableError):
                    failed += 1
                else:
                    assert isinstance(answer, dict) and answer["user_id"] == "u", answer
        assert 0 < failed <= len(kept)  # each dead connection failed one call at most, then was replaced
        assert all(a["user_id"] == "u" for a in answers)  # the last round: every thread reconnected
    finally:
        await adapter.aclose()
        settings_dict["CONN_MAX_AGE"] = 0


# -- wiring --


@db
async def test_console_primary_is_the_database_without_redis(settings) -> None:
    from autoplay_storage.runtime import get_storage

    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "PRIMARY": "", "REDIS_URL": ""}
    storage = get_storage()
    assert isinstance(storage.primary, DatabaseStorageAdapter) and storage.primary.using == "default"
    await on_session_start("p", "u_console", "s1", storage)
    row = await orm(record, "UserStateRecord", "default", product_id="p", user_id="u_console")
    assert json.loads(row.document)["sessions"]["current_session_id"] == "s1"
    assert [u.user_id for u in (await storage.browser.list_users("p")).items] == ["u_console"]


def test_adapter_module_imports_without_django_settings() -> None:
    code = "import autoplay_storage.adapters.database as m, sys; assert 'django.db' not in sys.modules; print('ok')"
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize("ci", ["true", ""])
def test_missing_postgres_fails_under_ci_and_skips_elsewhere(ci: str, tmp_path: Path) -> None:
    """The contract of tests/support/postgres.py, run in a child pytest against a closed port."""
    import os

    env = {
        **os.environ,
        "CI": ci,
        "AUTOPLAY_TEST_POSTGRES_URL": f"postgres://postgres@127.0.0.1:{free_port()}/nothing",
        "AUTOPLAY_VAR_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rA",
            "tests/test_adapter_contract.py::TestAdapterContract::test_missing_documents_are_none[sqlite]",
            "tests/test_adapter_contract.py::TestAdapterContract::test_missing_documents_are_none[postgres]",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = result.stdout.strip().splitlines()[-1]
    if ci:
        assert result.returncode != 0, result.stdout
        assert "1 passed, 1 error" in summary and "CI is set and PostgreSQL is required" in result.stdout
    else:
        assert result.returncode == 0, result.stdout
        assert "1 passed, 1 skipped" in summary
