"""Admin-configured sinks at run time: picked up, swapped and counted without a restart.

The registry's background thread refreshes every ``SINK_REFRESH_S``; the
tests set it long and drive cycles with ``sync_once()`` so each step is
deterministic. Writes go through ``runtime.get_storage()`` like the API's.
"""

from __future__ import annotations

import asyncio

import pytest

from autoplay_storage import on_session_end, on_session_start, sinks
from autoplay_storage.adapters.analytics import SESSION_EVENT
from autoplay_storage.models import SinkDestination
from autoplay_storage.runtime import get_storage, manager_hooks
from autoplay_storage.user_adoption_state import SessionSnapshot
from tests.support.capture_server import await_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _sinks_runtime(settings):
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "PRIMARY": "memory", "SINK_REFRESH_S": 3600}
    sinks.reset()
    yield
    sinks.reset()


async def cycle() -> None:
    """One refresh + counter flush, as the background thread does it every SINK_REFRESH_S."""
    await asyncio.to_thread(sinks.registry().sync_once)


async def add_sink(name: str, kind: str, host: str, **fields) -> SinkDestination:
    sink = SinkDestination(name=name, kind=kind, host=host, **fields)
    if not sink.api_key_env:
        sink.set_api_key(f"key_{name}")
    await sink.asave()
    return sink


async def end_session(session_id: str, user_id: str = "u_1") -> None:
    storage = get_storage()
    state, _ = await on_session_start("prod_1", user_id, session_id, storage)
    snapshot = SessionSnapshot.from_adoption_state(
        state, session_id=session_id, session_number=1, started_at=1_790_000_000.0, catalog_workflow_ids=[]
    )
    await on_session_end("prod_1", user_id, snapshot, storage)


def test_the_app_installs_the_manager_hook():
    assert sinks.apply_configured_sinks in manager_hooks


async def test_a_new_destination_is_used_counted_and_removed_without_a_restart(capture_server):
    assert get_storage().secondaries == []
    sink = await add_sink("ph", "posthog", capture_server.url)
    await cycle()
    [adapter] = get_storage().secondaries
    assert adapter.name == "posthog:ph"

    await end_session("sess_1")
    await await_until(lambda: len(capture_server.posthog_messages()) == 3, what="$set, event, $set")
    await await_until(lambda: adapter.delivery_stats().delivered == 3, what="the SDK to finish")
    await cycle()
    row = await SinkDestination.objects.aget(pk=sink.pk)
    assert (row.sent_count, row.failed_count) == (3, 0)
    assert row.last_success_at is not None
    assert row.updated_at == sink.updated_at  # counters are not a configuration change

    row.enabled = False
    await row.asave()
    await cycle()
    assert get_storage().secondaries == []
    await cycle()  # replaced clients are closed one cycle later
    assert adapter.closed
    await end_session("sess_2")
    assert [m for m in capture_server.posthog_messages() if m["event"] == SESSION_EVENT][-1]["properties"][
        "session_id"
    ] == "sess_1"


async def test_a_changed_destination_replaces_its_client(capture_server):
    sink = await add_sink("amp", "amplitude", capture_server.url + "/2/httpapi")
    await cycle()
    [before] = get_storage().secondaries
    sink.property_prefix = "ap"
    await sink.asave()
    await cycle()
    [after] = get_storage().secondaries
    assert after is not before and after.property_prefix == "ap"
    await end_session("sess_1")
    await await_until(lambda: capture_server.amplitude_events(), what="an identify")
    assert "ap_journey_state" in capture_server.amplitude_events()[0]["user_properties"]["$set"]


async def test_delivery_failures_and_dropped_messages_are_saved_on_the_row(capture_server):
    capture_server.mode = "500"
    sink = await add_sink("amp", "amplitude", capture_server.url + "/2/httpapi")
    await cycle()
    [adapter] = get_storage().secondaries
    await end_session("sess_1")
    await await_until(lambda: adapter.delivery_stats().failed == 3, timeout=30, what="the SDK to give up")
    await cycle()
    row = await SinkDestination.objects.aget(pk=sink.pk)
    assert (row.sent_count, row.failed_count) == (0, 3)
    assert row.last_error.startswith("HTTP 500")
    assert row.last_error_at is not None

    await asyncio.to_thread(adapter.close)  # a closed client refuses hand-offs: the manager reports them
    await end_session("sess_2", user_id="u_2")
    stats = get_storage().sink_stats[adapter.name]
    assert stats.failed == 3
    await asyncio.to_thread(sinks.registry().flush_counters)
    row = await SinkDestination.objects.aget(pk=sink.pk)
    assert row.failed_count == 6
    assert "SinkClosedError" in row.last_error


async def test_a_destination_that_cannot_start_says_why(monkeypatch):
    monkeypatch.delenv("MISSING_POSTHOG_KEY", raising=False)
    sink = await add_sink("ph", "posthog", "", api_key_env="MISSING_POSTHOG_KEY")
    await cycle()
    assert get_storage().secondaries == []
    row = await SinkDestination.objects.aget(pk=sink.pk)
    assert row.last_error == "not started: the environment variable MISSING_POSTHOG_KEY is not set in this process"


async def test_clients_closed_by_a_manager_are_rebuilt(capture_server):
    await add_sink("ph", "posthog", capture_server.url)
    await cycle()
    storage = get_storage()
    [first] = storage.secondaries
    await storage.aclose()  # e.g. a management command closing "its" manager at the end
    assert first.closed
    await cycle()
    [second] = get_storage().secondaries
    assert second is not first and not second.closed
    await end_session("sess_1")
    await await_until(lambda: len(capture_server.posthog_messages()) == 3, what="delivery by the new client")


async def test_shutdown_waits_for_the_refresh_cycle_in_flight(capture_server, monkeypatch):
    """A cycle running when the registry shuts down ends before the clients close: nothing is built behind them."""
    import threading

    await add_sink("ph", "posthog", capture_server.url)
    registry = sinks.registry()  # its thread starts with the first get_storage(), below
    entered, release = threading.Event(), threading.Event()
    refresh = registry.refresh

    def slow_refresh() -> bool:
        entered.set()
        release.wait(10)
        return refresh()

    monkeypatch.setattr(registry, "refresh", slow_refresh)  # before the thread starts: its first cycle is held
    await asyncio.to_thread(get_storage)  # waits (at most 2 s) for that first cycle, then goes on without it
    assert await asyncio.to_thread(entered.wait, 10)
    stopping = asyncio.create_task(asyncio.to_thread(registry.shutdown))
    await asyncio.sleep(0.2)
    assert not stopping.done()  # held by the cycle in flight
    release.set()
    await stopping
    assert not registry._thread.is_alive()
    assert registry._active == [] and registry._retiring == []
