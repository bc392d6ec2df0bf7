"""The engine's metrics, counted where the issue says: storage at the manager, sinks at the registry, summarizer runs.

In this process (no ``PROMETHEUS_MULTIPROC_DIR``) the values live in the
default registry; each test reads them before and after, as the metrics are
process-wide. The server-level counts (two workers, one scrape) are in
``tests/test_observability.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from prometheus_client import REGISTRY

from autoplay_storage import sinks
from autoplay_storage.adapters.analytics import SinkQueueFullError
from autoplay_storage.adapters.memory import InMemoryStorageAdapter
from autoplay_storage.adapters.webhook import new_secret
from autoplay_storage.errors import StorageUnavailableError
from autoplay_storage.manager import StorageManager
from autoplay_storage.models import SinkDestination, SummaryRun
from autoplay_storage.summary_runs import SummaryFailed, run_summarizer
from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState
from tests.support.capture_server import await_until
from tests.support.webhook_receiver import WebhookReceiver


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Counts:
    """A sample's increase since this was made."""

    def __init__(self, name: str, **labels: str) -> None:
        self.name, self.labels = name, labels
        self.start = sample(name, **labels)

    @property
    def delta(self) -> float:
        return sample(self.name, **self.labels) - self.start


class ContendedAdapter(InMemoryStorageAdapter):
    """A compare-and-set primary whose document another writer changes ``interfere`` times between read and write."""

    def __init__(self, interfere: int) -> None:
        super().__init__()
        self.interfere = interfere
        self.version = 0

    async def update_user_state(self, product_id: str, user_id: str, mutate: Any) -> dict[str, Any] | None:
        while True:
            seen = self.version
            current = await self.get_user_state(product_id, user_id)
            new = mutate(current)
            if self.interfere:  # the other writer commits first: this write must not land
                self.interfere -= 1
                self.version += 1
            if self.version != seen:
                continue
            if new is not None:
                await self.save_user_state(product_id, user_id, new)
                self.version += 1
            return new if new is not None else current


class Unreachable(InMemoryStorageAdapter):
    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        raise ConnectionRefusedError("primary down")


async def test_storage_calls_are_timed_and_counted_once_at_the_manager() -> None:
    reads = Counts(
        "autoplay_storage_operation_seconds_count", primary="InMemoryStorageAdapter", operation="get_user_state"
    )
    saves = Counts(
        "autoplay_storage_operation_seconds_count", primary="InMemoryStorageAdapter", operation="save_user_state"
    )
    storage = StorageManager([InMemoryStorageAdapter()])
    for n in range(3):
        await storage.save_user_state("p", f"u{n}", UserAdoptionState(user_id=f"u{n}").to_dict())
    for n in range(5):
        await storage.get_user_state("p", f"u{n}")
    assert (saves.delta, reads.delta) == (3, 5)


async def test_a_failing_primary_counts_an_error_by_class() -> None:
    errors = Counts(
        "autoplay_storage_operation_errors_total",
        primary="Unreachable", operation="get_user_state", error="ConnectionRefusedError",
    )  # fmt: skip
    timed = Counts("autoplay_storage_operation_seconds_count", primary="Unreachable", operation="get_user_state")
    storage = StorageManager([Unreachable()])
    for _ in range(2):
        with pytest.raises(StorageUnavailableError):
            await storage.get_user_state("p", "u")
    assert (errors.delta, timed.delta) == (2, 2)


async def test_compare_and_set_retries_are_the_extra_runs_of_the_mutation() -> None:
    retries = Counts("autoplay_storage_cas_retries_total", primary="ContendedAdapter", operation="update_user_state")
    storage = StorageManager([ContendedAdapter(interfere=2)])
    doc = await storage.update_user_state("p", "u", lambda doc: UserAdoptionState(user_id="u").to_dict())
    assert doc is not None and retries.delta == 2
    await storage.update_user_state("p", "u", lambda doc: doc)  # no contention: no retry
    assert retries.delta == 2


@pytest.mark.django_db(transaction=True)
async def test_sink_deliveries_failures_drops_and_queue_per_sink(webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.secret = new_secret()

    def configure() -> None:
        row = SinkDestination(name="hooks", kind=SinkDestination.Kind.WEBHOOK, host=webhook_receiver.url)
        row.set_api_key(webhook_receiver.secret)
        row.save()

    await sync_to_async(configure)()
    registry = sinks.SinkRegistry(refresh_s=3600)
    await sync_to_async(registry.refresh)()
    storage = StorageManager([InMemoryStorageAdapter()])
    registry.apply(storage)
    [sink] = storage.secondaries
    outcome = {name: Counts("autoplay_sink_deliveries_total", sink="webhook:hooks", outcome=name)
               for name in ("delivered", "failed", "dropped")}  # fmt: skip
    try:
        for n in range(3):
            await storage.save_user_state("p", f"u{n}", UserAdoptionState(user_id=f"u{n}").to_dict())
        assert await sink.flush(10)
        await sync_to_async(registry.flush_counters)()
        assert {k: c.delta for k, c in outcome.items()} == {"delivered": 3, "failed": 0, "dropped": 0}
        assert sample("autoplay_sink_queued", sink="webhook:hooks") == 0

        webhook_receiver.mode = "reject"  # a 4xx: given up at once
        for n in range(2):
            await storage.save_user_state("p", f"v{n}", UserAdoptionState(user_id=f"v{n}").to_dict())
        await await_until(lambda: sink.delivery_stats().failed == 2, timeout=20, what="two refusals")
        await sync_to_async(registry.flush_counters)()
        assert outcome["failed"].delta == 2

        webhook_receiver.mode = "hang"  # the receiver holds the first event; the next ones wait in the queue
        for n in range(3):
            await storage.save_user_state("p", f"w{n}", UserAdoptionState(user_id=f"w{n}").to_dict())
        await await_until(lambda: len(webhook_receiver.received) == 6, timeout=20, what="the held delivery")
        await sync_to_async(registry.flush_counters)()
        assert sample("autoplay_sink_queued", sink="webhook:hooks") == 3  # the one in flight and the two waiting

        registry.on_sink_result(sink, "save_user_state", SinkQueueFullError("full"))  # what the manager reports
        assert outcome["dropped"].delta == 1
    finally:
        webhook_receiver.release()
        await sync_to_async(registry.shutdown)()
    assert sample("autoplay_sink_queued", sink="webhook:hooks") == 0  # closed: nothing waits in it


async def _fails(snapshot: SessionSnapshot) -> str:
    raise RuntimeError("model down")


async def _slow(snapshot: SessionSnapshot) -> str:
    await asyncio.sleep(5)
    return "late"


async def _works(snapshot: SessionSnapshot) -> str:
    return "a brief"


@pytest.mark.django_db(transaction=True)
async def test_summarizer_runs_by_outcome() -> None:
    snapshot = SessionSnapshot.from_adoption_state(
        UserAdoptionState(user_id="u"), session_id="s1", session_number=1, started_at=1.0, catalog_workflow_ids=[]
    )
    runs = {
        name: Counts("autoplay_summarizer_runs_total", outcome=name) for name in ("succeeded", "failed", "timed_out")
    }
    timed = Counts("autoplay_summarizer_run_seconds_count", outcome="failed")
    common = {"product_id": "p", "user_id": "u", "source": SummaryRun.Source.SESSION_END, "timeout_s": 0.2}
    await run_summarizer(snapshot, summarizer=_works, **common)
    for summarizer in (_fails, _fails, _slow):
        with pytest.raises(SummaryFailed):
            await run_summarizer(snapshot, summarizer=summarizer, **common)
    assert {k: c.delta for k, c in runs.items()} == {"succeeded": 1, "failed": 2, "timed_out": 1}
    assert timed.delta == 2
