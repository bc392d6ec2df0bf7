"""Admin-configured analytics sinks, live in every worker process without a restart.

One ``SinkRegistry`` per process owns the SDK clients built from the enabled
``SinkDestination`` rows. Its background thread (never the event loop) checks
a cheap configuration version (row count + latest ``updated_at``) every
``SINK_REFRESH_S`` seconds; when it moved, the clients are rebuilt and each
manager picks the new list up at its next ``get_storage()`` (the hook in
``runtime.manager_hooks``). Replaced clients are flushed and closed one cycle
later, so a write already holding one is not cut off.

The same thread persists per-destination counters: hand-off failures the
manager reports through ``on_sink_result`` and the SDKs' own delivery
outcomes (``delivery_stats()``), as ``n = n + delta`` updates at most once
per cycle, so a request never waits on them.

A webhook sink also reports each POST it made (``take_attempts()``); the same
cycle appends them to the bounded delivery log (``WebhookDelivery``).

The very first use in a process waits (at most ``FIRST_LOAD_WAIT_S``) for the
first load, so a worker's first writes already reach the sinks.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connections
from django.db.models import Count, F, Max

from .adapters.analytics import DeliveryStats, SinkQueueFullError
from .manager import StorageManager, adapter_name
from .metrics import SINK_DELIVERIES, SINK_QUEUED
from .models import SinkDestination, WebhookDelivery
from .models.sinks import SinkConfigError
from .runtime import manager_hooks, storage_settings

logger = logging.getLogger("autoplay_storage.sinks")

FIRST_LOAD_WAIT_S = 2.0
SHUTDOWN_JOIN_S = 10.0  # the longest a shutdown waits for the refresh cycle in flight
TEST_EVENT = "autoplay_sink_test"
TEST_DISTINCT_ID = "autoplay-console-test"


def build_adapter(destination: SinkDestination, **options: Any) -> Any:
    """The SDK-backed adapter for one destination; raises ``SinkConfigError`` saying what is wrong."""
    key = destination.resolve_api_key()
    name = f"{destination.kind}:{destination.name}"
    try:
        if destination.kind == SinkDestination.Kind.POSTHOG:
            from .adapters.posthog import PostHogStorageAdapter

            return PostHogStorageAdapter(
                key, host=destination.host or None, property_prefix=destination.property_prefix, name=name, **options
            )
        if destination.kind == SinkDestination.Kind.AMPLITUDE:
            from .adapters.amplitude import AmplitudeStorageAdapter

            return AmplitudeStorageAdapter(
                key,
                property_prefix=destination.property_prefix,
                server_url=destination.host or None,
                name=name,
                **options,
            )
        if destination.kind == SinkDestination.Kind.WEBHOOK:
            from .adapters.webhook import WebhookStorageAdapter

            return WebhookStorageAdapter(destination.host, key, name=name, **options)
    except ImportError as exc:
        extra = "webhooks" if destination.kind == SinkDestination.Kind.WEBHOOK else "analytics"
        raise SinkConfigError(f"the {destination.kind} library is not installed (the {extra} extra): {exc}") from exc
    raise SinkConfigError(f"unknown sink kind {destination.kind!r}")


@dataclass
class _Counts:
    """Counter deltas waiting to be written to one destination's row."""

    sent: int = 0
    failed: int = 0
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None

    def success(self, count: int, at: float | None) -> None:
        self.sent += count
        if at is not None and (self.last_success_at is None or at > self.last_success_at):
            self.last_success_at = at

    def failure(self, count: int, error: str, at: float) -> None:
        self.failed += count
        if self.last_error_at is None or at >= self.last_error_at:
            self.last_error, self.last_error_at = error, at

    def merge(self, other: _Counts) -> None:
        self.success(other.sent, other.last_success_at)
        if other.last_error is not None and other.last_error_at is not None:
            self.failure(other.failed, other.last_error, other.last_error_at)
        else:
            self.failed += other.failed

    def updates(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self.sent:
            values["sent_count"] = F("sent_count") + self.sent
        if self.failed:
            values["failed_count"] = F("failed_count") + self.failed
        if self.last_success_at is not None:
            values["last_success_at"] = datetime.fromtimestamp(self.last_success_at, UTC)
        if self.last_error is not None and self.last_error_at is not None:
            values["last_error"] = self.last_error[:2000]
            values["last_error_at"] = datetime.fromtimestamp(self.last_error_at, UTC)
        return values


@dataclass
class _Tracked:
    destination_id: int
    adapter: Any
    seen: DeliveryStats


class SinkRegistry:
    def __init__(self, refresh_s: float) -> None:
        self.refresh_s = refresh_s
        self.generation = 0
        self._lock = threading.RLock()
        self._version: tuple[int, Any] | None = None
        self._active: list[_Tracked] = []
        self._retiring: list[_Tracked] = []
        self._by_adapter: dict[int, _Tracked] = {}
        self._counts: dict[int, _Counts] = {}
        self._attempts: dict[int, list[Any]] = {}  # webhook POSTs not yet in the delivery log
        self._managers: weakref.WeakKeyDictionary[StorageManager, int] = weakref.WeakKeyDictionary()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loaded = threading.Event()

    # -- the manager hook (runs on request paths: no I/O) --

    def apply(self, manager: StorageManager) -> None:
        self._ensure_started()
        with self._lock:
            if self._managers.get(manager) == self.generation:
                return
            adapters = [t.adapter for t in self._active]
            self._managers[manager] = self.generation
        manager.set_secondaries(adapters)
        if manager.on_sink_result is None:
            manager.on_sink_result = self.on_sink_result

    def on_sink_result(self, adapter: object, method: str, exc: BaseException | None) -> None:
        """Hand-off failures (queue full, closed, unreadable document); deliveries are counted from the SDKs."""
        if exc is None:
            return
        with self._lock:
            tracked = self._by_adapter.get(id(adapter))
            if tracked is None:
                return
            error = f"{method}: {type(exc).__name__}: {exc}" if str(exc) else f"{method}: {type(exc).__name__}"
            self._counts.setdefault(tracked.destination_id, _Counts()).failure(1, error, time.time())
        outcome = "dropped" if isinstance(exc, SinkQueueFullError) else "failed"
        SINK_DELIVERIES.labels(adapter_name(adapter), outcome).inc()

    # -- the background thread --

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="autoplay-sinks", daemon=True)
            self._thread.start()
        # Once per process, bounded: the first writes should already reach the sinks.
        self._loaded.wait(FIRST_LOAD_WAIT_S)

    def _run(self) -> None:
        while True:
            try:
                self.sync_once()
            except Exception as exc:  # the database may be down; keep the current sinks and try again
                logger.warning("sink configuration refresh failed: %s", exc)
            finally:
                self._loaded.set()
                connections.close_all()  # this thread's connections only
            if self._stop.wait(self.refresh_s):
                return

    def sync_once(self) -> None:
        """One cycle: close what was replaced last cycle, pick up configuration changes, persist counters."""
        with self._lock:
            retiring, self._retiring = self._retiring, []
        for tracked in retiring:
            tracked.adapter.close()
        self.refresh()
        self.flush_counters(also=retiring)

    def refresh(self) -> bool:
        """Rebuild the clients when the configuration version moved (or a client was closed by someone)."""
        version = SinkDestination.objects.aggregate(n=Count("id"), latest=Max("updated_at"))
        key = (version["n"], version["latest"])
        with self._lock:
            broken = any(getattr(t.adapter, "closed", False) for t in self._active)
            if not broken and key == self._version:
                return False
        built: list[_Tracked] = []
        for row in SinkDestination.objects.filter(enabled=True):
            try:
                adapter = build_adapter(row)
            except (SinkConfigError, ValueError) as exc:
                logger.warning("sink %s not started: %s", row.name, exc)
                self._count(row.pk, _Counts(last_error=f"not started: {exc}", last_error_at=time.time()))
                continue
            built.append(_Tracked(row.pk, adapter, adapter.delivery_stats()))
        with self._lock:
            self._retiring.extend(self._active)
            self._active = built
            for tracked in built:
                self._by_adapter[id(tracked.adapter)] = tracked
            self._version = key
            self.generation += 1
        names = ", ".join(t.adapter.name for t in built) or "none"
        logger.info("analytics sinks in process %s: %s", os.getpid(), names)
        return True

    def _count(self, destination_id: int, counts: _Counts) -> None:
        with self._lock:
            self._counts.setdefault(destination_id, _Counts()).merge(counts)

    def _collect(self, trackeds: list[_Tracked]) -> None:
        """Turn the SDKs' delivery reports into counter deltas."""
        for tracked in trackeds:
            now, before = tracked.adapter.delivery_stats(), tracked.seen
            delta = _Counts()
            delta.success(now.delivered - before.delivered, now.last_delivered_at)
            if now.failed > before.failed or (now.last_error_at or 0) > (before.last_error_at or 0):
                delta.failure(now.failed - before.failed, now.last_error or "delivery failed", now.last_error_at or 0)
            tracked.seen = now
            _export(tracked.adapter, delta, now.pending)
            if delta.sent or delta.failed or delta.last_error:
                self._count(tracked.destination_id, delta)
            take = getattr(tracked.adapter, "take_attempts", None)
            if take is not None:
                attempts = take()
                with self._lock:
                    self._attempts.setdefault(tracked.destination_id, []).extend(attempts)

    def flush_counters(self, *, also: list[_Tracked] | None = None) -> None:
        """Write the pending counter deltas (one UPDATE per destination that has any)."""
        with self._lock:
            trackeds = [*self._active, *self._retiring, *(also or [])]
        self._collect(trackeds)
        with self._lock:
            for tracked in also or []:
                self._by_adapter.pop(id(tracked.adapter), None)
                SINK_QUEUED.labels(adapter_name(tracked.adapter)).set(0)  # closed: nothing waits in it any more
            pending, self._counts = self._counts, {}
            attempts, self._attempts = self._attempts, {}
        for destination_id, made in attempts.items():
            record_attempts(destination_id, made)
        for destination_id, counts in pending.items():
            values = counts.updates()
            if not values:
                continue
            try:
                # QuerySet.update leaves updated_at alone: counters are not a configuration change.
                SinkDestination.objects.filter(pk=destination_id).update(**values)
            except Exception:
                self._count(destination_id, counts)  # kept for the next cycle
                raise

    # -- lifecycle --

    def shutdown(self) -> None:
        """Process exit: stop refreshing, flush and close every client, write the last counters.

        The refresh thread is waited for (bounded) first: a cycle in flight
        would otherwise build clients behind the closing, or query a database
        that is going away.
        """
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(SHUTDOWN_JOIN_S)
        with self._lock:
            closing, self._active, self._retiring = [*self._active, *self._retiring], [], []
            self.generation += 1
        # In parallel: each close is bounded, and exit should wait for the slowest, not for their sum.
        threads = [threading.Thread(target=t.adapter.close, daemon=True) for t in closing]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            self.flush_counters(also=closing)
        except Exception as exc:
            logger.warning("could not save the last sink counters: %s", exc)
        finally:
            connections.close_all()


def _export(adapter: Any, delta: _Counts, pending: int) -> None:
    """The delivery report as metrics: what the SDK delivered or gave up on since the last cycle, and its queue."""
    name = adapter_name(adapter)
    if delta.sent:
        SINK_DELIVERIES.labels(name, "delivered").inc(delta.sent)
    if delta.failed:
        SINK_DELIVERIES.labels(name, "failed").inc(delta.failed)
    SINK_QUEUED.labels(name).set(pending)


_registry: SinkRegistry | None = None
_registry_lock = threading.Lock()


def registry() -> SinkRegistry:
    global _registry
    if _registry is None:
        with _registry_lock:
            if _registry is None:
                _registry = SinkRegistry(float(storage_settings().get("SINK_REFRESH_S", 5.0)))
                atexit.register(_shutdown_at_exit)
    return _registry


def _forget_in_child() -> None:
    """A forked worker builds its own registry: the parent's thread and SDK clients did not come along."""
    global _registry, _registry_lock
    _registry, _registry_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def _shutdown_at_exit() -> None:
    if _registry is not None:
        _registry.shutdown()


def reset() -> None:
    """Close every client and forget the configuration (tests; the next use loads it afresh)."""
    global _registry
    with _registry_lock:
        old, _registry = _registry, None
    if old is not None:
        old.shutdown()


def apply_configured_sinks(manager: StorageManager) -> None:
    """``runtime.manager_hooks`` entry: keep the manager's secondaries in line with the admin's configuration."""
    registry().apply(manager)


def install() -> None:
    if apply_configured_sinks not in manager_hooks:
        manager_hooks.append(apply_configured_sinks)


def record_attempts(destination_id: int, attempts: list[Any]) -> None:
    """Append webhook attempts to the delivery log and keep only its newest ``LOG_KEEP`` rows."""
    if not attempts:
        return
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            destination_id=destination_id,
            event_id=a.event_id[:64],
            event_type=a.event_type[:64],
            attempt=a.attempt,
            status_code=a.status_code,
            latency_ms=a.latency_ms,
            error=a.error[:2000],
            delivered=a.delivered,
            at=datetime.fromtimestamp(a.at, UTC),
        )
        for a in attempts
    )
    rows = WebhookDelivery.objects.filter(destination_id=destination_id)
    keep = WebhookDelivery.LOG_KEEP
    oldest_kept = list(rows.order_by("-id").values_list("id", flat=True)[keep - 1 : keep])
    if oldest_kept:
        rows.filter(id__lt=oldest_kept[0]).delete()


# -- "send test event" (the admin's button) --

# A test reports at once: few retries, short waits.
_TEST_OPTIONS: dict[str, dict[str, Any]] = {
    SinkDestination.Kind.WEBHOOK: {"max_attempts": 2, "backoff_s": 0.2, "close_timeout_s": 1.0},
}
_VENDOR_TEST_OPTIONS = {"max_retries": 1, "flush_interval_s": 0.05, "close_timeout_s": 1.0}


@dataclass(frozen=True)
class SinkTestResult:
    ok: bool
    message: str


async def send_test_event(
    destination: SinkDestination, *, sent_by: str = "", timeout_s: float = 10.0
) -> SinkTestResult:
    """Send one real event through the vendor SDK with a client of its own, and say what happened."""
    try:
        adapter = build_adapter(destination, **_TEST_OPTIONS.get(destination.kind, _VENDOR_TEST_OPTIONS))
    except SinkConfigError as exc:
        return SinkTestResult(False, f"not sent: {exc}")
    started = time.perf_counter()
    try:
        await adapter.send_event(
            TEST_EVENT, TEST_DISTINCT_ID, {"destination": destination.name, "sent_by": sent_by or "console"}
        )
        await adapter.flush(timeout_s)
        stats = adapter.delivery_stats()
    finally:
        await adapter.aclose()
    if hasattr(adapter, "take_attempts"):
        from asgiref.sync import sync_to_async

        await sync_to_async(record_attempts)(destination.pk, adapter.take_attempts())
    elapsed_ms = round((time.perf_counter() - started) * 1000)
    if stats.delivered and not stats.failed:
        return SinkTestResult(True, f"delivered to {destination.host or 'the vendor default host'} in {elapsed_ms} ms")
    if stats.failed:
        return SinkTestResult(False, f"failed: {stats.last_error}")
    return SinkTestResult(False, f"no answer within {timeout_s:g} s")
