"""End to end: granian with two worker processes picks a sink up, counts it and drops it, all without a restart.

The admin's changes are made by another process (``manage.py shell``), as an
admin's save in another worker would be; the real PostHog SDK in each worker
posts to the loopback capture server.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from autoplay_storage.adapters.analytics import SESSION_EVENT
from tests.support.api_server import ROOT, granian_server
from tests.support.capture_server import CaptureServer, wait_until

REFRESH_S = 0.2


def manage_shell(directory: Path, code: str) -> None:
    env = {
        **os.environ,
        "AUTOPLAY_VAR_DIR": str(directory),
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
        "DJANGO_SECRET_KEY": "test-only",
    }
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "shell", "-c", code], env=env, cwd=ROOT, check=True)


def row_counts(directory: Path) -> tuple[int, int]:
    with sqlite3.connect(directory / "db.sqlite3") as db:
        return db.execute("SELECT sent_count, failed_count FROM autoplay_storage_sinkdestination").fetchone()


def session_users(server: CaptureServer) -> set[str]:
    return {m["distinct_id"] for m in server.posthog_messages() if m["event"] == SESSION_EVENT}


def log_size(directory: Path) -> int:
    return len((directory / "granian.log").read_bytes())


def sink_log(directory: Path, names: str, since: int) -> set[str]:
    """The worker pids that logged building exactly this list of sinks after byte ``since`` of the log."""
    text = (directory / "granian.log").read_bytes()[since:].decode(errors="replace")
    return set(re.findall(rf"analytics sinks in process (\d+): {re.escape(names)}$", text, flags=re.M))


def end_sessions(client, users: list[str]) -> None:
    for user in users:
        base = f"/api/v1/products/p1/users/{user}/sessions/s1"
        assert client.post(f"{base}/start").status_code == 200
        body = {"state": {"user_id": user}, "catalog_workflow_ids": ["create_project"], "started_at": 1_790_000_000}
        assert client.post(f"{base}/end", json=body).status_code == 200


def test_every_worker_follows_the_sink_configuration_without_a_restart(tmp_path, capture_server, monkeypatch):
    monkeypatch.setenv("AUTOPLAY_SINK_REFRESH_S", str(REFRESH_S))
    monkeypatch.setenv("E2E_POSTHOG_KEY", "phc_workers")
    no_keepalive = httpx.Limits(max_keepalive_connections=0)  # new connections spread over the workers
    with (
        granian_server(tmp_path, ["p1"], workers=2) as (server, key),
        server.client(key, limits=no_keepalive) as client,
    ):
        before: list[str] = []

        def both_workers_serving() -> bool:  # each worker starts its sink registry at its first request
            before.append(f"before_{len(before)}")
            end_sessions(client, before[-1:])
            return len(sink_log(tmp_path, "none", 0)) == 2

        wait_until(both_workers_serving, timeout=60, what="both workers to serve a request")

        mark = log_size(tmp_path)
        manage_shell(
            tmp_path,
            "from autoplay_storage.models import SinkDestination; SinkDestination.objects.create("
            f"name='e2e', kind='posthog', host='{capture_server.url}', property_prefix='ap', "
            "api_key_env='E2E_POSTHOG_KEY')",
        )
        wait_until(lambda: len(sink_log(tmp_path, "posthog:e2e", mark)) == 2, what="both workers to build the sink")
        users = [f"u_{n}" for n in range(20)]
        end_sessions(client, users)
        wait_until(lambda: session_users(capture_server) >= set(users), what="every session event")
        assert not session_users(capture_server) & set(before)
        assert {r.body["api_key"] for r in capture_server.requests} == {"phc_workers"}
        # start $set + event + end $set per session, saved by each worker's thread
        wait_until(lambda: row_counts(tmp_path) == (60, 0), what="the counters on the row")

        mark = log_size(tmp_path)
        manage_shell(
            tmp_path,
            "from autoplay_storage.models import SinkDestination; s = SinkDestination.objects.get(); "
            "s.enabled = False; s.save()",
        )
        wait_until(lambda: len(sink_log(tmp_path, "none", mark)) == 2, what="both workers to drop the sink")
        seen = len(capture_server.requests)
        end_sessions(client, [f"after_{n}" for n in range(6)])
        time.sleep(3.0)  # longer than the SDK's flush interval: anything still sent would have arrived
        assert len(capture_server.requests) == seen
        assert not {u for u in session_users(capture_server) if u.startswith("after_")}
