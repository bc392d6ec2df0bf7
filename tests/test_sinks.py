"""PostHog and Amplitude sinks: the real vendor SDKs post real HTTP to a loopback capture server."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from autoplay_storage import InMemoryStorageAdapter, StorageManager, on_session_end, on_session_start
from autoplay_storage.adapters.amplitude import AmplitudeStorageAdapter
from autoplay_storage.adapters.analytics import SESSION_EVENT, PendingLedger, SinkQueueFullError, session_event_id
from autoplay_storage.adapters.posthog import PostHogStorageAdapter
from autoplay_storage.user_adoption_state import SessionSnapshot
from tests.support.capture_server import CaptureServer, await_until

CATALOG = ["create_project", "invite_team", "configure_columns"]
SUMMARY = "They created a project and are halfway through inviting the team."


def posthog(server: CaptureServer, **kw) -> PostHogStorageAdapter:
    kw.setdefault("property_prefix", "ap")
    return PostHogStorageAdapter("phc_capture_test", host=server.url, flush_interval_s=0.05, **kw)


def amplitude(server: CaptureServer, **kw) -> AmplitudeStorageAdapter:
    kw.setdefault("property_prefix", "ap")
    return AmplitudeStorageAdapter(
        "amp_capture_test", server_url=f"{server.url}/2/httpapi", flush_interval_s=0.05, **kw
    )


async def play_session(storage: StorageManager, session_id: str = "sess_1", user_id: str = "u_42") -> SessionSnapshot:
    """One full session: start, progress on two workflows, onboarding completed, end with a summary."""
    state, _ = await on_session_start("prod_1", user_id, session_id, storage)
    state.set_mastery(6, "intermediate")
    state.set_journey_state("onboarded")
    state.upsert_workflow_progress("create_project", status="completed")
    state.upsert_workflow_progress("invite_team", status="in_progress")
    state.mark_onboarding_complete()
    started = 1_790_000_000.0
    snapshot = SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=state.sessions.count + 1,
        started_at=started,
        catalog_workflow_ids=CATALOG,
        now=started + 125.5,
    )
    await on_session_end("prod_1", user_id, snapshot, storage, summary=SUMMARY)
    return snapshot


EXPECTED_USER = {
    "ap_product_id": "prod_1",
    "ap_journey_state": "onboarded",
    "ap_mastery_level": "intermediate",
    "ap_mastery_rating": 6,
    "ap_is_onboarded": True,
    "ap_onboarding_summary": SUMMARY,
    "ap_completion_rate": 0.3333,
    "ap_session_count": 1,
    "ap_completed_workflows": ["create_project"],
    "ap_in_progress_workflows": ["invite_team"],
}

EXPECTED_EVENT = {
    "product_id": "prod_1",
    "session_id": "sess_1",
    "session_number": 1,
    "duration_s": 125.5,
    "completion_rate": 0.3333,
    "completed_workflow_ids": ["create_project"],
    "in_progress_workflow_ids": ["invite_team"],
    "mastery_level": "intermediate",
    "reached_onboarding_complete": True,
}


def own(properties: dict) -> dict:
    """Event properties without the ones the SDK adds itself (``$lib``, ``$os``...)."""
    return {k: v for k, v in properties.items() if not k.startswith("$")}


async def test_posthog_sends_person_properties_and_a_deduplicated_session_event(capture_server):
    sink = posthog(capture_server)
    storage = StorageManager([InMemoryStorageAdapter(), sink])
    await play_session(storage)
    await on_session_end(  # the agent retries the same end: the event is re-sent with the same id
        "prod_1", "u_42", SessionSnapshot.from_dict(await storage.get_session_snapshot("prod_1", "u_42", "sess_1")),
        storage,
    )
    def session_events() -> list[dict]:
        return [m for m in capture_server.posthog_messages() if m["event"] == SESSION_EVENT]

    await await_until(lambda: len(session_events()) == 2, what="two session events")
    events = session_events()
    sets = [m for m in capture_server.posthog_messages() if m["event"] == "$set"]
    assert all(m["distinct_id"] == "u_42" for m in sets + events)
    assert sets[-1]["$set"] == EXPECTED_USER
    assert own(events[0]["properties"]) == EXPECTED_EVENT
    assert events[0]["uuid"] == events[1]["uuid"] == session_event_id("prod_1", "u_42", "sess_1")
    assert events[0]["timestamp"] == events[1]["timestamp"]
    assert capture_server.requests[0].path == "/batch/"
    assert capture_server.requests[0].headers.get("Content-Encoding") == "gzip"
    assert capture_server.requests[0].body["api_key"] == "phc_capture_test"
    assert await sink.get_user_state("prod_1", "u_42") is None
    assert await sink.get_session_snapshot("prod_1", "u_42", "sess_1") is None
    await storage.aclose()
    stats = sink.delivery_stats()
    assert (stats.failed, stats.pending) == (0, 0)
    assert stats.delivered == len(capture_server.posthog_messages())


async def test_amplitude_sends_an_identify_and_a_deduplicated_session_event(capture_server):
    sink = amplitude(capture_server)
    storage = StorageManager([InMemoryStorageAdapter(), sink])
    await play_session(storage)
    await sink.save_session_snapshot(  # a re-send, as after a retried end
        "prod_1", "u_42", "sess_1", await storage.get_session_snapshot("prod_1", "u_42", "sess_1")
    )
    def session_events() -> list[dict]:
        return [e for e in capture_server.amplitude_events() if e["event_type"] == SESSION_EVENT]

    await await_until(lambda: len(session_events()) == 2, what="two session events")
    events = session_events()
    identifies = [e for e in capture_server.amplitude_events() if e["event_type"] == "$identify"]
    assert all(e["user_id"] == "u_42" for e in identifies + events)
    assert identifies[-1]["user_properties"] == {"$set": EXPECTED_USER}
    assert events[0]["event_properties"] == EXPECTED_EVENT
    assert events[0]["insert_id"] == events[1]["insert_id"] == session_event_id("prod_1", "u_42", "sess_1")
    assert events[0]["time"] == events[1]["time"] == round((1_790_000_000.0 + 125.5) * 1000)
    body = capture_server.requests[0].body
    assert capture_server.requests[0].path == "/2/httpapi"
    assert body["api_key"] == "amp_capture_test"
    assert body["options"] == {"min_id_length": 1}
    await storage.aclose()
    stats = sink.delivery_stats()
    assert (stats.failed, stats.pending) == (0, 0)
    assert stats.delivered == len(capture_server.amplitude_events())


@pytest.mark.parametrize("make", [posthog, amplitude], ids=["posthog", "amplitude"])
async def test_an_empty_prefix_leaves_property_names_alone(capture_server, make):
    sink = make(capture_server, property_prefix="")
    storage = StorageManager([InMemoryStorageAdapter(), sink])
    await play_session(storage)
    await storage.aclose()
    expected = {k.removeprefix("ap_"): v for k, v in EXPECTED_USER.items()}
    if isinstance(sink, PostHogStorageAdapter):
        sent = [m["$set"] for m in capture_server.posthog_messages() if m["event"] == "$set"]
    else:
        identifies = [e for e in capture_server.amplitude_events() if e["event_type"] == "$identify"]
        sent = [e["user_properties"]["$set"] for e in identifies]
    assert sent[-1] == expected


@pytest.mark.parametrize(
    "make", [lambda s: posthog(s, max_retries=0), lambda s: amplitude(s, max_retries=1)], ids=["posthog", "amplitude"]
)
async def test_a_failing_destination_never_fails_the_session_end_and_is_counted(capture_server, make):
    capture_server.mode = "500"
    sink = make(capture_server)
    primary = InMemoryStorageAdapter()
    storage = StorageManager([primary, sink])
    await play_session(storage)
    stored = await primary.get_user_state("prod_1", "u_42")
    assert stored["sessions"]["count"] == 1
    assert await primary.get_session_snapshot("prod_1", "u_42", "sess_1") is not None
    await await_until(lambda: sink.delivery_stats().failed >= 3, what="the SDK to report the failed uploads")
    stats = sink.delivery_stats()
    assert stats.delivered == 0
    assert "500" in stats.last_error
    await storage.aclose()


@pytest.mark.parametrize("make", [posthog, amplitude], ids=["posthog", "amplitude"])
async def test_a_hanging_destination_does_not_stall_the_session_end(capture_server, make):
    capture_server.mode = "hang"
    sink = make(capture_server, close_timeout_s=0.5)
    primary = InMemoryStorageAdapter()
    storage = StorageManager([primary, sink])
    await play_session(storage, session_id="sess_1")
    await await_until(lambda: capture_server.hanging, what="the SDK to be stuck in a request")
    # The destination holds the SDK's request open; the next session ends anyway.
    await play_session(storage, session_id="sess_2")
    assert capture_server.hanging and not capture_server.released
    stored = await primary.get_user_state("prod_1", "u_42")
    assert stored["sessions"]["count"] == 2
    assert await primary.get_session_snapshot("prod_1", "u_42", "sess_2") is not None
    await storage.aclose()  # bounded by close_timeout_s, however long the destination hangs
    stats = sink.delivery_stats()
    assert stats.delivered == 0
    assert stats.failed >= 1
    assert "not delivered before the client closed" in stats.last_error
    assert stats.pending == 0


@pytest.mark.parametrize(
    "make",
    [lambda s: posthog(s, max_queue_size=1), lambda s: amplitude(s, max_pending=1)],
    ids=["posthog", "amplitude"],
)
async def test_a_full_queue_drops_and_counts_instead_of_blocking(capture_server, make):
    capture_server.mode = "hang"
    sink = make(capture_server)
    primary = InMemoryStorageAdapter()
    results: list[BaseException | None] = []
    storage = StorageManager([primary, sink], on_sink_result=lambda adapter, method, exc: results.append(exc))
    await play_session(storage, session_id="sess_0")
    await await_until(lambda: capture_server.hanging, what="the SDK to be stuck in a request")
    for n in range(1, 4):
        await play_session(storage, session_id=f"sess_{n}")
    assert (await primary.get_user_state("prod_1", "u_42"))["sessions"]["count"] == 4
    dropped = [e for e in results if isinstance(e, SinkQueueFullError)]
    assert dropped
    assert storage.sink_stats[sink.name].failed == len(dropped)
    assert "SinkQueueFullError" in storage.sink_stats[sink.name].last_error
    capture_server.release()
    await storage.aclose()


async def test_amplitude_counts_a_rejected_api_key(capture_server):
    capture_server.mode = "badkey"
    sink = amplitude(capture_server)
    storage = StorageManager([InMemoryStorageAdapter(), sink])
    await play_session(storage)
    await await_until(lambda: sink.delivery_stats().failed >= 3, what="the rejection to be counted")
    assert sink.delivery_stats().last_error == "Amplitude rejected the API key"
    assert sink.delivery_stats().pending == 0
    await storage.aclose()


def test_the_engine_and_the_adapter_modules_import_without_the_sdks():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["posthog"] = None
        sys.modules["amplitude"] = None
        import autoplay_storage
        from autoplay_storage.adapters.posthog import PostHogStorageAdapter
        from autoplay_storage.adapters.amplitude import AmplitudeStorageAdapter
        for cls in (PostHogStorageAdapter, AmplitudeStorageAdapter):
            try:
                cls(api_key="k")
            except ImportError:
                pass
            else:
                raise SystemExit(f"{cls.__name__} built without its SDK")
        assert "django.conf" not in sys.modules or not __import__("django.conf").conf.settings.configured
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_pending_ledger_resolves_each_message_exactly_once():
    ledger = PendingLedger(max_pending=3)
    ledger.admit("a")
    ledger.admit("a")  # the same session event re-sent while the first is in flight
    ledger.admit("b")
    with pytest.raises(SinkQueueFullError):
        ledger.admit("c")
    ledger.delivered("a")
    ledger.failed("b", "HTTP 500: down")
    assert ledger.stats().pending == 1
    assert ledger.fail_all("not delivered before the client closed") == 1
    ledger.delivered("a")  # a late SDK report for a message already written off
    ledger.failed("b", "late")
    stats = ledger.stats()
    assert (stats.delivered, stats.failed, stats.pending) == (1, 2, 0)
    assert stats.last_error == "not delivered before the client closed"
    ledger.admit("c")  # room again
    ledger.withdraw("c")
    assert ledger.stats().pending == 0
