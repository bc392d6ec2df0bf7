"""Metrics and logs as operators collect them, on the real server: ``/metrics`` summed over workers, JSON lines.

The two server tests start ``make run``'s server (``python -m config.serve``,
two granian workers). One sends known traffic over fresh connections (so
both workers serve it) and checks the exact counts a scrape returns, and
that each worker's own files hold part of them. The other runs with
``AUTOPLAY_LOG_FORMAT=json``, a webhook sink whose receiver refuses every
event and a summarizer that fails, sends requests with ``X-Request-ID``,
then parses every line the server wrote as JSON and finds the ids on the
storage engine's and the sink's lines (the latter logged by the sink's own
delivery thread).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from autoplay_storage.adapters.webhook import new_secret
from autoplay_storage.user_adoption_state import SessionSnapshot
from config import serve
from config.logs import _VALID
from tests.support.api_server import ROOT, granian_server
from tests.support.webhook_receiver import WebhookReceiver

TOKEN = "scrape-token-for-tests"
START = "/api/v1/products/<product_id>/users/<user_id>/sessions/<session_id>/start"
STATE = "/api/v1/products/<product_id>/users/<user_id>/state"
NO_KEEPALIVE = httpx.Limits(max_keepalive_connections=0)  # a new connection per request: both workers serve


async def failing_summarizer(snapshot: SessionSnapshot) -> str:
    """The server's summarizer in the JSON test (configured by dotted path): a model that is down."""
    raise RuntimeError("the model is down")


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def worker_counts(directory: Path, name: str, **labels: str) -> dict[int, float]:
    """One sample's value in each worker's own counter file (the pid is in the file name)."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        for family in MultiProcessCollector.merge([str(path)]):
            for s in family.samples:
                if s.name == name and s.labels == labels:
                    counts[pid] = s.value
    return counts


# -- /metrics in process: off, locked, open --


def test_metrics_are_off_without_a_token(client, settings) -> None:
    settings.AUTOPLAY_METRICS_TOKEN = ""
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 404


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"])
def test_metrics_need_the_bearer_token(client, settings, authorization: str | None) -> None:
    settings.AUTOPLAY_METRICS_TOKEN = TOKEN
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = client.get("/metrics", **headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"autoplay_" not in response.content


def test_metrics_answer_with_the_token(client, settings) -> None:
    settings.AUTOPLAY_METRICS_TOKEN = TOKEN
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    families = {f.name for f in text_string_to_metric_families(response.content.decode())}
    assert {"autoplay_storage_operation_seconds", "autoplay_sink_deliveries", "autoplay_summarizer_runs"} <= families


# -- the request id --


@pytest.mark.parametrize(
    ("given", "kept"),
    [(b"abc-123", True), (b"4bf92f3577b34da6a3ce929d0e0e4736", True), (b"a" * 128, True), (b"a" * 129, False),
     (b"", False), (b"has space", False), (b"new\nline", False), (b"<script>", False), ("é".encode(), False)],
)  # fmt: skip
def test_a_request_id_is_kept_only_when_short_and_plain(given: bytes, kept: bool) -> None:
    assert bool(_VALID.fullmatch(given)) is kept


# -- the multiprocess directory --


def test_each_start_gets_a_fresh_directory_and_dead_starts_are_cleared(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{serve.METRICS_DIR_PREFIX}{dead.pid}-old"
    alive = tmp_path / f"{serve.METRICS_DIR_PREFIX}{os.getppid()}-running"
    for directory in (stale, alive):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"x")
    first, second = serve.metrics_dir({}, tmp_path), serve.metrics_dir({}, tmp_path)
    assert first != second and not list(Path(first).iterdir())
    assert not stale.exists()  # its server is gone
    assert alive.exists()  # another server still running keeps its files
    named = tmp_path / "named"
    named.mkdir()
    (named / "counter_9.db").write_bytes(b"x")
    (named / "notes.txt").write_text("kept")
    assert serve.metrics_dir({"PROMETHEUS_MULTIPROC_DIR": str(named)}) == str(named)
    assert [p.name for p in named.iterdir()] == ["notes.txt"]


# -- the real server --


def test_a_scrape_sums_both_workers_exact_counts(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    env = {"AUTOPLAY_METRICS_TOKEN": TOKEN, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with granian_server(tmp_path, ["p1"], workers=2, extra_env=env) as (server, key):
        with server.client(key, limits=NO_KEEPALIVE) as client:
            starts = 0
            while starts < 20 or len(worker_counts(metrics_dir, "autoplay_http_requests_total", route=START,
                                                   method="POST", status="200")) < 2:  # fmt: skip
                assert starts < 400, "one worker served every request"
                assert client.post(f"/api/v1/products/p1/users/u{starts}/sessions/s1/start").status_code == 200
                starts += 1
            for n in range(10):
                assert client.get(f"/api/v1/products/p1/users/u{n}/state").status_code == 200
            for n in range(4):
                assert client.get(f"/api/v1/products/p1/users/nobody{n}/state").status_code == 404
            for path in ("/api/v1/nowhere", "/api/v2/products", "/api/x/y/z"):  # three paths, one pattern
                assert client.get(path).status_code == 404
        with server.client(None, limits=NO_KEEPALIVE) as anonymous:
            assert anonymous.get("/metrics").status_code == 401
            assert anonymous.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
            scraped = anonymous.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        per_worker = worker_counts(
            metrics_dir, "autoplay_http_requests_total", route=START, method="POST", status="200"
        )
    assert scraped.status_code == 200
    found = samples(scraped.text)
    requests = "autoplay_http_requests_total"
    assert value(found, requests, route=START, method="POST", status="200") == starts
    assert value(found, requests, route=STATE, method="GET", status="200") == 10
    assert value(found, requests, route=STATE, method="GET", status="404") == 4
    assert value(found, requests, route="/^api/(?P<rest>.*)$", method="GET", status="404") == 3
    assert value(found, requests, route="/metrics", method="GET", status="401") == 2
    assert value(found, requests, route="/metrics", method="GET", status="200") == 0  # counted once answered
    assert value(found, "autoplay_http_request_seconds_count", route=START, method="POST") == starts
    assert value(found, "autoplay_http_request_seconds_bucket", route=START, method="POST", le="+Inf") == starts
    assert value(found, "autoplay_http_request_seconds_sum", route=START, method="POST") > 0
    # Storage, counted once at the manager: a start is one atomic update, a state read one get.
    primary = "DatabaseStorageAdapter"
    seconds = "autoplay_storage_operation_seconds_count"
    assert value(found, seconds, primary=primary, operation="update_user_state") == starts
    assert value(found, seconds, primary=primary, operation="get_user_state") == 14
    assert value(found, "autoplay_storage_cas_retries_total", primary=primary, operation="update_user_state") == 0
    assert not [k for k in found if k[0] == "autoplay_storage_operation_errors_total"]
    # Both workers served part of the starts, and the scrape is their sum.
    assert len(per_worker) == 2 and min(per_worker.values()) > 0
    assert sum(per_worker.values()) == starts
    assert not any(re.search(r"sessions/[a-z0-9]+/start", route) for (_, labels) in found for _, route in labels)


def test_json_lines_carry_the_request_id_into_storage_and_sink_lines(tmp_path: Path) -> None:
    manage = [sys.executable, str(ROOT / "manage.py")]
    env = {
        **os.environ,
        "AUTOPLAY_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_SECRET_KEY": "test-only",
    }
    receiver = WebhookReceiver()
    receiver.secret, receiver.mode = new_secret(), "reject"
    try:
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)
        subprocess.run(
            [*manage, "shell", "-c", "from autoplay_storage.models import SinkDestination; SinkDestination.objects"
             f".create(name='hooks', kind='webhook', host='{receiver.url}', api_key_env='E2E_WEBHOOK_SECRET')"],
            env=env, cwd=ROOT, check=True,
        )  # fmt: skip
        server_env = {
            "AUTOPLAY_LOG_FORMAT": "json",
            "E2E_WEBHOOK_SECRET": receiver.secret,
            "AUTOPLAY_SUMMARIZER": f"{__name__}.failing_summarizer",
        }
        with (
            granian_server(tmp_path, ["p1"], workers=2, extra_env=server_env) as (server, key),
            server.client(key) as client,
        ):
            base = "/api/v1/products/p1/users/u1/sessions/s1"
            started = client.post(f"{base}/start", headers={"X-Request-ID": "trace-start-1"})
            body = {
                "state": {"user_id": "u1"},
                "catalog_workflow_ids": ["a"],
                "started_at": 1_790_000_000,
                "summarize": True,
            }
            ended = client.post(f"{base}/end", json=body, headers={"X-Request-ID": "trace-end-2"})
            unsafe = client.get("/api/v1/products/p1/users/u1/state", headers={"X-Request-ID": "bad id\t<x>"})
            made = client.get("/api/v1/products/p1/users/u1/state")
            deadline = time.monotonic() + 30
            while len(receiver.received) < 3 and time.monotonic() < deadline:  # start's save, end's two events
                time.sleep(0.05)
            time.sleep(0.5)  # the refusals' log lines follow the answers
        log = (tmp_path / "granian.log").read_text()
    finally:
        receiver.close()
    assert started.status_code == 200 and started.headers["X-Request-ID"] == "trace-start-1"
    assert ended.status_code == 200 and ended.headers["X-Request-ID"] == "trace-end-2"
    assert re.fullmatch(r"[0-9a-f]{32}", unsafe.headers["X-Request-ID"])
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
    assert unsafe.headers["X-Request-ID"] != made.headers["X-Request-ID"]
    assert len(receiver.received) == 3
    lines: list[dict[str, Any]] = [json.loads(line) for line in log.splitlines() if line.strip()]  # each one JSON
    assert all(isinstance(line, dict) and {"time", "level", "logger", "message"} <= line.keys() for line in lines)
    summarizer = [line for line in lines if line["logger"] == "autoplay_storage.summary_runs"]
    assert [(line["request_id"], line["session_id"]) for line in summarizer] == [("trace-end-2", "s1")]
    assert "failing_summarizer failed" in summarizer[0]["message"]
    refused = [
        line for line in lines if line["logger"] == "autoplay_storage.sinks" and "not delivered" in line["message"]
    ]
    assert sorted(line["request_id"] for line in refused) == ["trace-end-2", "trace-end-2", "trace-start-1"]
    assert {line["sink"] for line in refused} == {"webhook:hooks"}
    assert any(line["logger"] == "_granian" for line in lines)  # granian's own lines are JSON too
