"""The webhook sink against a loopback receiver that verifies every signature with ``standardwebhooks``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from autoplay_storage import InMemoryStorageAdapter, StorageManager
from autoplay_storage.adapters.analytics import SinkQueueFullError
from autoplay_storage.adapters.webhook import SESSION_CAPTURED, USER_STATE_SAVED, WebhookStorageAdapter, new_secret
from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState
from tests.support.capture_server import await_until
from tests.support.webhook_receiver import WebhookReceiver


@pytest.fixture
def receiver(webhook_receiver: WebhookReceiver) -> WebhookReceiver:
    webhook_receiver.secret = new_secret()
    return webhook_receiver


@pytest.fixture
def make_sink(receiver: WebhookReceiver) -> Iterator:
    made: list[WebhookStorageAdapter] = []

    def make(**options) -> WebhookStorageAdapter:
        options = {"backoff_s": 0.01, "request_timeout_s": 2.0, "close_timeout_s": 2.0, **options}
        sink = WebhookStorageAdapter(receiver.url, receiver.secret, **options)
        made.append(sink)
        return sink

    yield make
    receiver.release()
    for sink in made:
        sink.close()


def snapshot_doc(session_id: str = "s1") -> dict:
    state = UserAdoptionState(user_id="u1")
    state.upsert_workflow_progress("create_project", status="completed")
    return SessionSnapshot.from_adoption_state(
        state, session_id=session_id, session_number=1, started_at=1_700_000_000.0, catalog_workflow_ids=["a"]
    ).to_dict()


async def test_events_arrive_signed_with_their_payloads(receiver: WebhookReceiver, make_sink) -> None:
    sink = make_sink()
    state = UserAdoptionState(user_id="u1").to_dict()
    await sink.save_user_state("p1", "u1", state)
    await sink.save_session_snapshot("p1", "u1", "s1", snapshot_doc())
    assert await sink.flush(10)
    saved, captured = receiver.received
    assert saved.verified and captured.verified, (saved.error, captured.error)
    assert saved.body["type"] == USER_STATE_SAVED and saved.body["data"] == {
        "product_id": "p1",
        "user_id": "u1",
        "state": state,
    }
    assert captured.body["type"] == SESSION_CAPTURED and captured.body["data"]["session_id"] == "s1"
    assert captured.body["data"]["snapshot"]["completed_workflow_ids"] == ["create_project"]
    assert captured.body["timestamp"].endswith("Z")
    assert sink.delivery_stats().delivered == 2

    # A re-send of the same snapshot (or the same state) carries the same id.
    await sink.save_session_snapshot("p1", "u1", "s1", snapshot_doc())
    await sink.save_user_state("p1", "u1", state)
    assert await sink.flush(10)
    assert receiver.ids()[2:] == [captured.id, saved.id]
    await sink.save_session_snapshot("p1", "u1", "s2", snapshot_doc("s2"))
    assert await sink.flush(10)
    assert receiver.ids()[-1] not in receiver.ids()[:-1]


async def test_a_failing_receiver_gets_the_same_id_again(receiver: WebhookReceiver, make_sink) -> None:
    receiver.plan = ["fail", "fail"]
    sink = make_sink()
    await sink.save_session_snapshot("p1", "u1", "s1", snapshot_doc())
    assert await sink.flush(10)
    assert len(set(receiver.ids())) == 1 and len(receiver.ids()) == 3
    assert all(r.verified for r in receiver.received), "every retry is signed afresh"
    log = sink.recent_attempts()
    assert [(a.attempt, a.status_code, a.delivered) for a in log] == [(1, 500, False), (2, 500, False), (3, 200, True)]
    assert log[0].error == "HTTP 500"
    stats = sink.delivery_stats()
    assert (stats.delivered, stats.failed) == (1, 0)


async def test_retries_are_bounded(receiver: WebhookReceiver, make_sink) -> None:
    receiver.mode = "fail"
    sink = make_sink(max_attempts=3)
    await sink.save_user_state("p1", "u1", UserAdoptionState(user_id="u1").to_dict())
    assert await sink.flush(10)
    assert len(receiver.received) == 3
    stats = sink.delivery_stats()
    assert (stats.delivered, stats.failed, stats.last_error) == (0, 1, "HTTP 500")


async def test_a_hanging_receiver_times_out_and_is_retried(receiver: WebhookReceiver, make_sink) -> None:
    receiver.plan = ["hang"]
    sink = make_sink(request_timeout_s=0.3)
    await sink.save_session_snapshot("p1", "u1", "s1", snapshot_doc())
    assert await sink.flush(10)
    first, second = sink.recent_attempts()
    assert first.status_code is None and first.error.startswith("timeout")
    assert second.delivered and receiver.ids()[0] == receiver.ids()[1]


async def test_a_slow_answer_is_delivered_once(receiver: WebhookReceiver, make_sink) -> None:
    receiver.mode = "slow"
    sink = make_sink(request_timeout_s=5.0)
    await sink.save_session_snapshot("p1", "u1", "s1", snapshot_doc())
    assert await sink.flush(10)
    assert len(receiver.received) == 1 and sink.delivery_stats().delivered == 1


async def test_a_full_queue_drops_and_counts_without_holding_up_the_write(
    receiver: WebhookReceiver, make_sink
) -> None:
    receiver.mode = "hang"
    sink = make_sink(max_queue_size=2, request_timeout_s=30.0, close_timeout_s=0.5)
    storage = StorageManager([InMemoryStorageAdapter(), sink])
    await storage.save_session_snapshot("p1", "u1", "s0", snapshot_doc("s0"))
    await await_until(lambda: receiver.received, what="the first delivery in flight")
    for n in range(1, 6):  # two fit in the queue; the rest are dropped, and the writes go on
        await storage.save_session_snapshot("p1", "u1", f"s{n}", snapshot_doc(f"s{n}"))
    assert await storage.get_session_snapshot("p1", "u1", "s5") is not None
    stats = sink.delivery_stats()
    assert stats.dropped == 3 and stats.pending == 3
    assert storage.sink_stats[sink.name].failed == 3
    with pytest.raises(SinkQueueFullError):
        await sink.save_user_state("p1", "u1", UserAdoptionState(user_id="u1").to_dict())
    sink.close()
    receiver.release()
    assert sink.delivery_stats().failed >= 2, "what was still queued at close is counted as failed"


def test_a_bad_secret_or_url_is_refused() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        WebhookStorageAdapter("http://127.0.0.1:9/x", "not-a-secret")
    with pytest.raises(ValueError, match="http"):
        WebhookStorageAdapter("ftp://example/x", new_secret())




@pytest.mark.django_db(transaction=True)
async def test_the_registry_delivers_and_keeps_a_bounded_delivery_log(receiver: WebhookReceiver) -> None:
    from asgiref.sync import sync_to_async

    from autoplay_storage import sinks
    from autoplay_storage.models import SinkDestination, WebhookDelivery

    def configure() -> SinkDestination:
        row = SinkDestination(name="hooks", kind=SinkDestination.Kind.WEBHOOK, host=receiver.url)
        row.set_api_key(receiver.secret)
        row.full_clean()
        row.save()
        return row

    row = await sync_to_async(configure)()
    registry = sinks.SinkRegistry(refresh_s=3600)
    await sync_to_async(registry.refresh)()
    storage = StorageManager([InMemoryStorageAdapter()])
    registry.apply(storage)
    [sink] = storage.secondaries
    receiver.plan = ["fail"]
    await storage.save_session_snapshot("p1", "u1", "s1", snapshot_doc())
    assert await sink.flush(10)
    await sync_to_async(registry.flush_counters)()
    log = await sync_to_async(lambda: list(WebhookDelivery.objects.filter(destination=row).order_by("id")))()
    assert [(d.attempt, d.status_code, d.delivered) for d in log] == [(1, 500, False), (2, 200, True)]
    assert log[0].event_id == log[1].event_id == receiver.ids()[0]
    counted = await SinkDestination.objects.aget(pk=row.pk)
    assert counted.sent_count == 1

    # The log is bounded: only the newest rows stay.
    many = [sink.recent_attempts()[-1]] * (WebhookDelivery.LOG_KEEP + 5)
    await sync_to_async(sinks.record_attempts)(row.pk, many)
    assert await WebhookDelivery.objects.filter(destination=row).acount() == WebhookDelivery.LOG_KEEP
    await sync_to_async(registry.shutdown)()


@pytest.mark.django_db(transaction=True)
async def test_send_test_event_reports_a_failing_receiver(receiver: WebhookReceiver) -> None:
    from autoplay_storage.models import SinkDestination, WebhookDelivery
    from autoplay_storage.sinks import send_test_event

    row = SinkDestination(name="hooks", kind=SinkDestination.Kind.WEBHOOK, host=receiver.url)
    row.set_api_key(receiver.secret)
    await row.asave()
    receiver.mode = "fail"
    result = await send_test_event(row, sent_by="root")
    assert not result.ok and "HTTP 500" in result.message
    assert await WebhookDelivery.objects.filter(destination=row, delivered=False).acount() == 2
    receiver.mode = "ok"
    assert (await send_test_event(row, sent_by="root")).ok
    assert receiver.received[-1].verified and receiver.received[-1].body["data"]["sent_by"] == "root"
