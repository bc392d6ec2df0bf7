"""Erasure and export over real HTTP (uvicorn on loopback), on the database primary and on Redis.

The vendors' deletion endpoints are a loopback server that checks method,
path, credentials and body (tests/support/deletion_server.py); the sink
configuration is the admin's (``SinkDestination`` rows, keys encrypted).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync

from autoplay_storage import sinks as sink_runtime
from autoplay_storage.models import AuditEntry, SinkDestination, SinkErasure, SummaryRun
from tests.support.api_server import ApiServer
from tests.support.capture_server import wait_until
from tests.support.deletion_server import (
    AMPLITUDE_API_KEY,
    AMPLITUDE_DAY,
    AMPLITUDE_SECRET,
    POSTHOG_PERSONAL_KEY,
    POSTHOG_PROJECT,
    DeletionServer,
)

P = "p1"
USER = f"/api/v1/products/{P}/users"
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def erasure_settings(settings: Any) -> None:
    settings.AUTOPLAY_STORAGE = {
        **settings.AUTOPLAY_STORAGE,
        "ERASURE_SINK_TIMEOUT_S": 1.0,
        "ERASURE_RETRY_BASE_S": 60.0,
        "ERASURE_MAX_ATTEMPTS": 3,
    }


@pytest.fixture
def agent(api_server: ApiServer, make_key: Any, primary: str) -> Iterator[httpx.Client]:
    with api_server.client(make_key(P)) as c:
        yield c


@pytest.fixture
def admin(api_server: ApiServer, primary: str) -> Iterator[httpx.Client]:
    from api.models import ApiKey

    _row, key = ApiKey.issue("privacy desk", [P], scopes=["read", "admin"])
    with api_server.client(key) as c:
        yield c


def sessions(client: httpx.Client, user_id: str, n: int, *, started_at: float = 1_700_000_000.0) -> None:
    assert client.post(f"{USER}/{user_id}/sessions/s0/start", json={"metadata": {"email": "x@example.com"}}).is_success
    for i in range(n):
        snapshot = {
            "session_id": f"s{i}",
            "user_id": user_id,
            "session_number": i + 1,
            "started_at": started_at + i,
            "captured_at": started_at + i + 30,
        }
        ended = client.post(f"{USER}/{user_id}/sessions/s{i}/end", json={"snapshot": snapshot, "summary": f"t{i}"})
        assert ended.status_code == 200, ended.text


def configure_sinks(server: DeletionServer, capture: str = "") -> None:
    """PostHog and Amplitude with deletion credentials, and a PostHog without; ``capture``: enabled, events there."""
    host, enabled = (capture, True) if capture else (server.url, False)
    posthog = SinkDestination(name="ph", kind="posthog", host=host, erase_host=server.url, enabled=enabled)
    posthog.set_api_key("phc_project_key")
    posthog.erase_project_id = POSTHOG_PROJECT
    posthog.set_erase_key(POSTHOG_PERSONAL_KEY)
    amplitude = SinkDestination(name="amp", kind="amplitude", host=host, erase_host=server.url, enabled=enabled)
    amplitude.set_api_key(AMPLITUDE_API_KEY)
    amplitude.set_erase_key(AMPLITUDE_SECRET)
    bare = SinkDestination(name="ph-bare", kind="posthog", host=host, enabled=False)
    bare.set_api_key("phc_other")
    for row in (posthog, amplitude, bare):
        row.save()


def by_sink(receipt: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["sink"]: row for row in receipt["sinks"]}


def test_erase_removes_the_user_only_and_a_repeat_returns_the_same_receipt(
    agent: httpx.Client, admin: httpx.Client, deletion_server: DeletionServer, capture_server: Any, primary: str
) -> None:
    configure_sinks(deletion_server, capture=capture_server.url)  # the real SDKs send the sessions' events
    sink_runtime.registry().refresh()  # now, not at the next configuration check
    for user_id in ("u_1", "u_10", "u_1x"):
        sessions(agent, user_id, 3)
    wait_until(
        lambda: (
            any(m.get("distinct_id") == "u_1" for m in capture_server.posthog_messages())
            and any(e.get("user_id") == "u_1" for e in capture_server.amplitude_events())
        ),
        what="the user's events at both vendors",
    )
    assert SummaryRun.objects.filter(user_id="u_1").exists()
    erased = admin.delete(f"{USER}/u_1")
    assert erased.status_code == 200, erased.text
    receipt = erased.json()["erasure"]
    assert receipt["primary"]["status"] == "done" and receipt["erased_at"]
    assert sum(receipt["primary"]["removed"].values()) >= 4 and receipt["primary"]["summary_rows_removed"] >= 3
    assert receipt["requested_by"].startswith("key:ap_") and receipt["requested_by"].endswith("privacy desk")
    sinks = by_sink(receipt)
    assert sinks["ph"]["status"] == "accepted" and sinks["ph"]["vendor_reference"].startswith("HTTP 202")
    assert sinks["amp"]["status"] == "accepted" and sinks["amp"]["vendor_reference"] == f"day {AMPLITUDE_DAY}"
    assert sinks["ph-bare"]["status"] == "credentials_missing"
    assert sinks["ph-bare"]["label"] == "Not erased: credentials missing"
    assert deletion_server.refused == []
    (ph,) = deletion_server.accepted_for("/api/projects/")
    assert ph.body == {"distinct_ids": ["u_1"], "delete_events": True}
    (amp,) = deletion_server.accepted_for("/api/2/deletions/")
    assert amp.body["user_ids"] == ["u_1"] and receipt["id"] in amp.body["requester"]
    assert "x@example.com" not in json.dumps(receipt)  # ids and outcomes only

    assert agent.get(f"{USER}/u_1/state").status_code == 404
    assert agent.get(f"{USER}/u_1/sessions").json()["items"] == []
    assert not SummaryRun.objects.filter(user_id="u_1").exists()
    for other in ("u_10", "u_1x"):
        assert agent.get(f"{USER}/{other}/state").json()["state"]["sessions"]["count"] == 3
        assert len(agent.get(f"{USER}/{other}/sessions").json()["items"]) == 3

    again = admin.delete(f"{USER}/u_1")
    assert again.status_code == 200 and again.json()["erasure"]["id"] == receipt["id"]
    assert len(deletion_server.requests) == 2  # the vendors were not asked twice
    shown = admin.get(f"/api/v1/erasures/{receipt['id']}")
    assert shown.status_code == 200 and shown.json()["erasure"]["id"] == receipt["id"]
    assert shown.headers["Cache-Control"] == "no-store"
    entries = AuditEntry.objects.filter(action="user.erase", user_id="u_1").order_by("id")
    actions = list(entries.values_list("details", flat=True))
    assert [d["repeat"] for d in actions] == [False, True]


def test_erasing_needs_the_admin_scope_and_receipts_stay_within_the_keys_products(
    agent: httpx.Client, admin: httpx.Client, api_server: ApiServer, make_key: Any
) -> None:
    sessions(agent, "u_1", 1)
    refused = agent.delete(f"{USER}/u_1")
    assert refused.status_code == 403 and refused.json()["code"] == "scope_forbidden"
    assert agent.get(f"{USER}/u_1/state").status_code == 200
    receipt = admin.delete(f"{USER}/u_1").json()["erasure"]
    from api.models import ApiKey

    _row, other = ApiKey.issue("other product", ["p2"], scopes=["admin"])
    with api_server.client(other) as stranger:
        hidden = stranger.get(f"/api/v1/erasures/{receipt['id']}")
        assert hidden.status_code == 404 and hidden.json()["code"] == "erasure_not_found"
        assert stranger.get("/api/v1/erasures/not-a-uuid").status_code == 404
    assert admin.delete(f"{USER}/a b").json()["code"] == "validation_error"


def test_a_late_end_of_a_session_from_before_answers_410_and_a_new_session_starts_a_new_user(
    agent: httpx.Client, admin: httpx.Client
) -> None:
    sessions(agent, "u_1", 2)
    assert agent.post(f"{USER}/u_1/sessions/late/start", json={}).status_code == 200
    admin.delete(f"{USER}/u_1")
    late = {"session_id": "late", "user_id": "u_1", "started_at": time.time() - 5, "captured_at": time.time()}
    gone = agent.post(f"{USER}/u_1/sessions/late/end", json={"snapshot": late})
    assert gone.status_code == 410, gone.text
    body = gone.json()
    assert body["code"] == "user_erased" and body["details"]["erased_at"]
    assert agent.get(f"{USER}/u_1/sessions").json()["items"] == []
    assert agent.get(f"{USER}/u_1/state").status_code == 404

    assert agent.post(f"{USER}/u_1/sessions/fresh/start", json={}).status_code == 200
    fresh = {"session_id": "fresh", "user_id": "u_1", "started_at": time.time() + 1, "captured_at": time.time() + 2}
    ended = agent.post(f"{USER}/u_1/sessions/fresh/end", json={"snapshot": fresh})
    assert ended.status_code == 200, ended.text
    assert ended.json()["state"]["sessions"]["count"] == 1
    second = admin.delete(f"{USER}/u_1").json()["erasure"]  # the user came back: a new round, a new receipt
    assert second["round"] == 2


def test_failing_and_hanging_vendors_are_retried_with_backoff_until_accepted_or_given_up(
    agent: httpx.Client, admin: httpx.Client, deletion_server: DeletionServer
) -> None:
    from autoplay_storage import services

    configure_sinks(deletion_server)
    sessions(agent, "u_1", 1)
    deletion_server.mode = "hang"
    started = time.monotonic()
    receipt = admin.delete(f"{USER}/u_1").json()["erasure"]
    assert time.monotonic() - started < 10  # the hanging vendor held the request for its timeout only
    assert receipt["primary"]["status"] == "done"
    ph = by_sink(receipt)["ph"]
    assert ph["status"] == "pending" and ph["attempts"] == 1 and "Timeout" in ph["error"] and ph["next_attempt_at"]
    deletion_server.release()

    def due_now() -> None:  # the backoff's wait, passed (what a restart later finds in the table)
        SinkErasure.objects.filter(status="pending").update(next_attempt_at="2000-01-01T00:00:00Z")

    deletion_server.mode = "500"
    due_now()
    assert async_to_sync(services.retry_sink_erasures)() == 2
    row = SinkErasure.objects.get(destination="ph")
    assert row.status == "pending" and row.attempts == 2 and "HTTP 500" in row.error
    waited = (row.next_attempt_at - row.updated_at).total_seconds()
    assert 110 < waited < 130  # the base (60 s), doubled after the second failure

    deletion_server.mode = "ok"
    SinkErasure.objects.filter(destination="amp").update(next_attempt_at="2000-01-01T00:00:00Z")
    from django.core.management import call_command

    call_command("autoplay_erase", "--retry")  # a later process: only the due row is asked
    assert SinkErasure.objects.get(destination="amp").status == "accepted"
    assert SinkErasure.objects.get(destination="ph").status == "pending"

    deletion_server.mode = "500"
    due_now()
    async_to_sync(services.retry_sink_erasures)()
    gave_up = admin.get(f"/api/v1/erasures/{receipt['id']}").json()["erasure"]
    assert (
        by_sink(gave_up)["ph"]["status"] == "failed" and "gave up after 3 attempts" in by_sink(gave_up)["ph"]["error"]
    )
    assert by_sink(gave_up)["amp"]["status"] == "accepted"


def test_a_vendor_that_refuses_the_credentials_fails_at_once(
    agent: httpx.Client, admin: httpx.Client, deletion_server: DeletionServer
) -> None:
    configure_sinks(deletion_server)
    sessions(agent, "u_1", 1)
    deletion_server.mode = "401"
    receipt = admin.delete(f"{USER}/u_1").json()["erasure"]
    assert by_sink(receipt)["ph"]["status"] == "failed" and "HTTP 401" in by_sink(receipt)["ph"]["error"]


def test_no_sinks_configured_is_said_per_vendor(agent: httpx.Client, admin: httpx.Client) -> None:
    sessions(agent, "u_1", 1)
    receipt = admin.delete(f"{USER}/u_1").json()["erasure"]
    assert {(r["sink"], r["status"]) for r in receipt["sinks"]} == {
        ("PostHog", "not_configured"),
        ("Amplitude", "not_configured"),
    }


def test_export_is_one_streamed_document_with_everything_and_unreadable_documents_raw(
    agent: httpx.Client, admin: httpx.Client, primary: str
) -> None:
    sessions(agent, "u_1", 4)
    plant_corrupt_snapshot(primary, "u_1", "broken")
    exported = agent.get(f"{USER}/u_1/export")
    assert exported.status_code == 200, exported.text
    assert exported.headers["Cache-Control"] == "no-store"
    assert "attachment" in exported.headers["Content-Disposition"]
    assert "content-length" not in exported.headers  # streamed
    doc = exported.json()
    assert doc["schema_version"] == 1 and doc["exported_at"] and doc["user_id"] == "u_1"
    assert doc["state"]["sessions"]["count"] == 4
    readable = [s for s in doc["snapshots"] if "unreadable" not in s["document"]]
    assert [s["session_id"] for s in readable] == ["s0", "s1", "s2", "s3"]  # oldest first
    (broken,) = [s for s in doc["snapshots"] if s["session_id"] == "broken"]
    assert broken["document"]["unreadable"] is True and broken["document"]["raw"] == "{not json"
    assert [r["new_summary"] for r in doc["summary_runs"]] == ["t0", "t1", "t2", "t3"]
    assert doc["erasures"] == []
    assert AuditEntry.objects.filter(action="user.export", user_id="u_1").count() == 1

    admin.delete(f"{USER}/u_1")
    after = agent.get(f"{USER}/u_1/export").json()
    assert after["state"] is None and after["snapshots"] == [] and after["summary_runs"] == []
    assert [e["primary"]["status"] for e in after["erasures"]] == ["done"]
    missing = agent.get(f"{USER}/nobody/export")
    assert missing.status_code == 404 and missing.json()["code"] == "user_not_found"


def plant_corrupt_snapshot(primary: str, user_id: str, session_id: str) -> None:
    """A snapshot another writer left unreadable, captured after every other one."""
    if primary == "redis":
        import redis
        from django.conf import settings

        from autoplay_storage.keys import session_key

        client = redis.Redis.from_url(settings.AUTOPLAY_STORAGE["REDIS_URL"])
        client.set(session_key(P, user_id, session_id), "{not json")
        client.zadd(f"autoplay:user:{P}:{user_id}:sessions", {session_id: 1_800_000_000})
        client.close()
    else:
        from autoplay_storage.models.records import SessionSnapshotRecord

        SessionSnapshotRecord.objects.create(
            product_id=P, user_id=user_id, session_id=session_id, document="{not json", captured_at=1_800_000_000
        )


def test_the_background_thread_retries_what_an_earlier_process_left_pending(
    settings: Any, deletion_server: DeletionServer
) -> None:
    from autoplay_storage import erasure_sinks
    from autoplay_storage.models import Erasure

    configure_sinks(deletion_server)
    left = Erasure.objects.create(product_id=P, user_id="u_9", requested_by="key:x", primary="database")
    SinkErasure.objects.create(
        erasure=left, destination="amp", kind="amplitude", status="pending", attempts=1,
        error="HTTP 503", next_attempt_at="2000-01-01T00:00:00Z",
    )  # fmt: skip
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "ERASURE_RETRY_POLL_S": 0.2}
    erasure_sinks.start_retrier()
    wait_until(lambda: SinkErasure.objects.get(erasure=left).status == "accepted", what="the retry thread")
    row = SinkErasure.objects.get(erasure=left)
    assert row.attempts == 2 and row.vendor_reference == f"day {AMPLITUDE_DAY}"
    (amp,) = deletion_server.accepted_for("/api/2/deletions/")
    assert amp.body["user_ids"] == ["u_9"]
