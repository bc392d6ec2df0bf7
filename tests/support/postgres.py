"""PostgreSQL for the tests: a database alias of our own on the local server.

Tests marked ``postgres`` run against the alias ``postgres``:
``AUTOPLAY_TEST_POSTGRES_URL`` (default ``postgres://postgres@127.0.0.1:5432/autoplay_dbadapter``);
pytest-django creates and drops the test database ``test_autoplay_dbadapter_<pid>``
on that server: a name no one else uses, one per test process so concurrent
runs on one machine never drop each other's. Databases left by killed runs
(their process is gone) are dropped when the next run starts.

The alias is added only when such tests are collected and the server answers,
so a machine without PostgreSQL runs every other test as usual. When it does
not answer, each ``postgres`` test is skipped with the reason — or, when the
environment variable ``CI`` is set, FAILS: CI has the service, so its absence
is a broken pipeline, not a reason to go green.

Use: parametrize with ``pytest.param(..., marks=pytest.mark.postgres)`` and
request the ``postgres_alias`` fixture in that case; the test's ``django_db``
marker gets the alias added automatically.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

ALIAS = "postgres"
TEST_DATABASE_PREFIX = "test_autoplay_dbadapter_"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/autoplay_dbadapter"

_PROBLEM = pytest.StashKey[str | None]()


def postgres_url() -> str:
    return os.environ.get("AUTOPLAY_TEST_POSTGRES_URL") or DEFAULT_URL


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


def alias_settings() -> dict:
    import dj_database_url

    cfg = dj_database_url.parse(postgres_url(), conn_max_age=0)
    cfg["TEST"] = {"NAME": f"{TEST_DATABASE_PREFIX}{os.getpid()}"}
    cfg.setdefault("OPTIONS", {})["connect_timeout"] = 5
    return cfg


def probe() -> str | None:
    """``None`` if the server answers, else why not."""
    import psycopg

    cfg = alias_settings()
    if cfg["ENGINE"] != "django.db.backends.postgresql":
        return f"AUTOPLAY_TEST_POSTGRES_URL is not a PostgreSQL URL: {postgres_url()}"
    try:
        conn = psycopg.connect(
            host=cfg["HOST"] or "127.0.0.1",
            port=cfg["PORT"] or 5432,
            user=cfg["USER"] or None,
            password=cfg["PASSWORD"] or None,
            dbname="postgres",
            connect_timeout=3,
        )
    except psycopg.Error as exc:
        return f"PostgreSQL at {cfg['HOST']}:{cfg['PORT']} is unreachable: {exc}".strip()
    with conn:
        _drop_orphans(conn)
    return None


def _drop_orphans(conn: Any) -> None:
    """Drop test databases of ours whose test process no longer exists (a killed run) and nobody uses."""
    import psycopg
    from psycopg import sql

    conn.autocommit = True
    names = conn.execute(
        "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (TEST_DATABASE_PREFIX,)
    ).fetchall()
    for (name,) in names:
        pid = name.removeprefix(TEST_DATABASE_PREFIX)
        if pid.isdigit() and not _alive(int(pid)):
            try:  # no FORCE: a database someone is connected to is not an orphan
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            except psycopg.errors.ObjectInUse:
                continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _add_alias() -> None:
    from django.conf import settings
    from django.db import connections

    settings.DATABASES[ALIAS] = alias_settings()
    # Django may have read DATABASES already; make it read them again (defaults filled in).
    connections.__dict__.pop("settings", None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = [item for item in items if item.get_closest_marker("postgres")]
    if not wanted:
        return
    problem = probe()
    config.stash[_PROBLEM] = problem
    if problem is not None:
        return
    _add_alias()
    for item in wanted:
        base = item.get_closest_marker("django_db")
        kwargs = dict(base.kwargs) if base else {}
        databases = kwargs.get("databases") or ["default"]
        if databases != "__all__":
            kwargs["databases"] = [*databases, ALIAS]
        item.add_marker(pytest.mark.django_db(**kwargs), append=False)  # closest: it wins


@pytest.fixture
def postgres_alias(request: pytest.FixtureRequest) -> str:
    """The Django alias of the test PostgreSQL database; skips (fails under CI) when it is missing."""
    if request.node.get_closest_marker("postgres") is None:
        raise RuntimeError("a test using postgres_alias must be marked postgres")
    problem = request.config.stash.get(_PROBLEM, "not probed")
    if problem is None:
        return ALIAS
    if under_ci():
        pytest.fail(f"CI is set and PostgreSQL is required: {problem}", pytrace=False)
    pytest.skip(problem)
