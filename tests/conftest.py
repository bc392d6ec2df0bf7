"""Shared fixtures. Each real service has its own plugin module under tests/support/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = [
    "tests.support.redis_server",
    "tests.support.api_server",
    "tests.support.postgres",
    "tests.support.capture_server",
    "tests.support.deletion_server",
    "tests.support.llm_server",
    "tests.support.webhook_receiver",
]

FIXTURES_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "sdk-0.13"


def load_fixtures() -> dict[str, dict]:
    """Documents written by the published SDK, by file stem."""
    if not FIXTURES_DIR.is_dir():
        raise RuntimeError(f"SDK fixtures not found at {FIXTURES_DIR} (../shared must sit beside the checkout)")
    return {p.stem: json.loads(p.read_text()) for p in sorted(FIXTURES_DIR.glob("*.json"))}


@pytest.fixture(scope="session")
def sdk_fixtures() -> dict[str, dict]:
    return load_fixtures()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """pytest-django's test databases, and the sinks' registry shut down before they are dropped.

    The first ``get_storage()`` of a process starts the registry's thread, which reads the
    sink configuration every ``SINK_REFRESH_S``; left running, it and the registry's exit
    hook (the last counters, webhook attempts) would write to a dropped test database
    ("no such table" tracebacks after the summary).
    """
    yield
    with django_db_blocker.unblock():  # the last counters go to the test database while it exists
        stop_sink_thread()


@pytest.fixture(scope="session", autouse=True)
def _sink_thread_stopped_in_every_worker() -> Iterator[None]:
    """The same shutdown in a worker whose tests never set up the test databases.

    Its tests may still have started the registry's thread (``get_storage()`` with the
    Redis or memory primary); left running, it would query a database with no tables
    while the interpreter exits ("Logging error" after the summary). Database access
    stays blocked here: the shutdown's last counters fail, logged, instead of going anywhere.
    """
    yield
    stop_sink_thread()


def stop_sink_thread() -> None:
    """Shut the process's sink registry down and wait for its thread to return."""
    from autoplay_storage import sinks

    registry = sinks._registry
    sinks.reset()
    thread = registry._thread if registry is not None else None
    if thread is not None:
        thread.join(timeout=30)
        if thread.is_alive():
            raise RuntimeError("the sinks' background thread did not stop within 30 s")


@pytest.fixture(autouse=True)
def _plain_static_files(settings):
    """Static files straight from the apps: the hashed manifest exists only after collectstatic."""
    plain = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    settings.STORAGES = {**settings.STORAGES, "staticfiles": plain}


@pytest.fixture(autouse=True)
def _no_background_erasure_retries(settings):
    """The sink-erasure retry thread stays off: the tests that need retries drive them (or turn it on)."""
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "ERASURE_RETRY_POLL_S": 0}


@pytest.fixture(autouse=True)
def _fresh_storage_runtime():
    """Every test gets managers built from its own settings."""
    from autoplay_storage.runtime import reset_storage

    reset_storage()
    yield
    reset_storage()
