"""The engine imports without Django settings and exports what the issue lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import autoplay_storage

ROOT = Path(__file__).resolve().parent.parent

ISSUE_EXPORTS = [
    "AutoplayStorageAdapter",
    "StorageManager",
    "InMemoryStorageAdapter",
    "RedisStorageAdapter",
    "user_state_key",
    "session_key",
    "init_user_state",
    "on_session_start",
    "on_session_end",
    "build_agent_context",
    "StorageError",
    "StorageUnavailableError",
    "DocumentError",
    "CorruptDocumentError",
    "UnsupportedVersionError",
    "ConflictError",
    "NotBrowsableError",
]

PROBE = r"""
import asyncio, json, sys
import autoplay_storage
from autoplay_storage import (
    StorageManager, InMemoryStorageAdapter, on_session_start, on_session_end, build_agent_context,
    init_user_state, user_state_key, session_key, StorageUnavailableError, UnsupportedVersionError,
)
from autoplay_storage.user_adoption_state import SessionSnapshot

async def session():
    storage = StorageManager([InMemoryStorageAdapter()])
    state, onboarding = await on_session_start("prod_1", "u_123", "sess_abc", storage)
    snap = SessionSnapshot.from_adoption_state(
        state, session_id="sess_abc", session_number=1, started_at=1.0, catalog_workflow_ids=["a"], now=2.0)
    ended = await on_session_end("prod_1", "u_123", snap, storage, summary="hi")
    return build_agent_context(ended)

context = asyncio.run(session())
django_loaded = sorted(m for m in sys.modules if m == "django" or m.startswith("django."))
settings_configured = None
if "django.conf" in sys.modules:
    settings_configured = sys.modules["django.conf"].settings.configured
print(json.dumps({
    "context": context,
    "django_modules": django_loaded,
    "settings_configured": settings_configured,
    "client_libraries": sorted(m for m in ("redis", "posthog", "amplitude") if m in sys.modules),
    "key": user_state_key("prod_1", "u_123"),
}))
"""


def run_probe(code: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_engine_runs_a_session_without_django_settings():
    out = run_probe(PROBE)
    assert out["context"]["session_count"] == 1
    assert out["context"]["onboarding_summary"] == "hi"
    assert out["django_modules"] == [], "the engine must not import Django"
    assert out["settings_configured"] is None
    assert out["client_libraries"] == [], "client libraries are imported lazily, by the adapter that needs them"
    assert out["key"] == "autoplay:user:prod_1:u_123:state"


def test_every_name_the_issue_lists_is_exported():
    for name in ISSUE_EXPORTS:
        assert name in autoplay_storage.__all__, name
    for name in autoplay_storage.__all__:
        if name != "RedisStorageAdapter":
            assert getattr(autoplay_storage, name) is not None, name


def test_redis_adapter_resolves_lazily():
    code = (
        "import json, sys, autoplay_storage\n"
        "before = 'autoplay_storage.adapters.redis' in sys.modules\n"
        "cls = autoplay_storage.RedisStorageAdapter\n"
        "print(json.dumps({'before': before, 'module': cls.__module__, 'name': cls.__name__}))\n"
    )
    assert (ROOT / "autoplay_storage" / "adapters" / "redis" / "__init__.py").is_file()
    out = run_probe(code)
    assert out == {"before": False, "module": "autoplay_storage.adapters.redis.adapter", "name": "RedisStorageAdapter"}


def test_unknown_attributes_are_attribute_errors():
    try:
        autoplay_storage.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("an unknown name resolved")


def test_wire_keys_and_cluster_keys():
    from autoplay_storage import session_key, user_state_key

    assert user_state_key("prod_1", "u_123") == "autoplay:user:prod_1:u_123:state"
    assert session_key("prod_1", "u_123", "sess_abc") == "autoplay:user:prod_1:u_123:session:sess_abc"
    assert user_state_key("prod_1", "u_123", cluster=True) == "autoplay:user:{prod_1:u_123}:state"
    assert session_key("prod_1", "u_123", "sess_abc", cluster=True) == "autoplay:user:{prod_1:u_123}:session:sess_abc"


def test_document_module_offers_what_the_issue_lists():
    from autoplay_storage import user_adoption_state as documents

    for name in (
        "UserAdoptionState",
        "SessionSnapshot",
        "SessionIndexEntry",
        "Mastery",
        "OnboardingState",
        "WorkflowProgress",
        "StepProgress",
        "StepInAssessment",
        "JourneyState",
        "MasteryLevel",
        "WorkflowStatus",
        "build_onboarding_summary_input",
    ):
        assert hasattr(documents, name), name
    assert callable(documents.SessionSnapshot.from_adoption_state)
    helpers = (
        "upsert_workflow_progress",
        "upsert_step_progress",
        "set_mastery",
        "set_journey_state",
        "record_discovered_features",
        "record_step_in",
        "mark_onboarding_complete",
    )
    for helper in helpers:
        assert callable(getattr(documents.UserAdoptionState, helper)), helper


def test_the_remote_client_imports_without_django():
    code = (
        "import json, sys\n"
        "from autoplay_storage.remote import ConsoleClient, ConsoleStorageAdapter, SyncConsoleClient\n"
        "from autoplay_storage import StorageManager\n"
        "StorageManager([ConsoleStorageAdapter('http://127.0.0.1:9', 'key')])\n"
        "print(json.dumps({'django': sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))}))\n"
    )
    assert run_probe(code) == {"django": []}
