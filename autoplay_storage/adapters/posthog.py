"""Write-only PostHog sink on the official ``posthog`` SDK (the ``analytics`` extra).

A save only enqueues (a non-blocking put into the SDK's bounded queue); the
SDK's consumer thread batches, gzips, retries and posts. So a PostHog that is
down or slow never holds up a session end: a full queue drops the message
and says so, and failed uploads are counted from the SDK's ``on_error``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from queue import Empty
from typing import Any

from .analytics import (
    AnalyticsSink,
    DeliveryStats,
    SinkClosedError,
    SinkQueueFullError,
    run_in_daemon_thread,
    user_properties,
    wait_event,
)


class PostHogStorageAdapter(AnalyticsSink):
    """``$set`` person properties on every state save, one ``autoplay_session_captured`` event per snapshot.

    ``host``: blank for PostHog US cloud, ``https://eu.i.posthog.com`` for the
    EU cloud, or a self-hosted URL. Getters return ``None`` (write-only).
    """

    def __init__(
        self,
        api_key: str,
        host: str | None = None,
        property_prefix: str = "",
        *,
        name: str = "posthog",
        max_queue_size: int = 10_000,
        flush_at: int = 100,
        flush_interval_s: float = 2.0,
        max_retries: int = 3,
        request_timeout_s: float = 10.0,
        gzip: bool = True,
        close_timeout_s: float = 5.0,
    ) -> None:
        if not api_key:
            raise ValueError("PostHogStorageAdapter needs the project API key")
        from posthog import Posthog
        from posthog.utils import system_context

        self.name = name
        self.property_prefix = property_prefix
        self.close_timeout_s = close_timeout_s
        self._lock = threading.Lock()
        self._accepted = 0
        self._failed = 0
        self._written_off = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._delivered_seen = 0
        self._last_delivered_at: float | None = None
        self._closing = False  # no new messages once a close started
        self._closed = False  # leftovers written off; later SDK reports are ignored
        self._client = Posthog(
            api_key,
            host=host or None,
            max_queue_size=max_queue_size,
            flush_at=flush_at,
            flush_interval=flush_interval_s,
            max_retries=max_retries,
            timeout=request_timeout_s,
            gzip=gzip,
            on_error=self._on_error,
            disable_geoip=True,
            enable_exception_autocapture=False,
            enable_local_evaluation=False,
        )
        # The first capture reads OS details (files, maybe a subprocess) and caches
        # them; do it here, off the request path, so a save never does I/O.
        system_context()

    # -- the four wire methods --

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        self._check_open()
        props = user_properties(product_id, user_id, state, self.property_prefix)
        self._accept(self._client.set(distinct_id=user_id, properties=props))

    async def send_event(
        self,
        event: str,
        distinct_id: str,
        properties: dict[str, Any],
        *,
        event_id: str | None = None,
        at: float | None = None,
    ) -> None:
        """Enqueue one event (also used by the console's "send test event")."""
        self._check_open()
        self._accept(
            self._client.capture(
                event,
                distinct_id=distinct_id,
                properties=properties,
                uuid=event_id,
                timestamp=None if at is None else datetime.fromtimestamp(at, UTC),
            )
        )

    # -- delivery --

    @property
    def closed(self) -> bool:
        return self._closing

    def _check_open(self) -> None:
        if self._closing:
            raise SinkClosedError(f"{self.name} is closed")

    def _accept(self, queued_uuid: str | None) -> None:
        if queued_uuid is None:  # the SDK drops rather than blocks when its queue is full
            raise SinkQueueFullError(f"{self.name}: the PostHog queue is full; message dropped")
        with self._lock:
            self._accepted += 1

    def _on_error(self, error: Exception, batch: list[dict[str, Any]]) -> None:
        """Called on the SDK's consumer thread once an upload failed for good (after its retries)."""
        with self._lock:
            if self._closed:  # already written off at close
                return
            self._note_failure(len(batch), f"{type(error).__name__}: {error}")

    def _note_failure(self, count: int, error: str) -> None:
        self._failed += count
        self._last_error = error
        self._last_error_at = time.time()

    def delivery_stats(self) -> DeliveryStats:
        """Delivered = accepted - failed - still in the SDK's queue (PostHog reports failures only)."""
        with self._lock:
            pending = 0 if self._closed else self._client.queue.unfinished_tasks
            failed = self._failed + self._written_off
            delivered = max(0, self._accepted - failed - pending)
            if delivered > self._delivered_seen:  # no per-message success report: noticed when the queue drains
                self._delivered_seen = delivered
                self._last_delivered_at = time.time()
            return DeliveryStats(
                delivered=delivered,
                failed=failed,
                pending=pending,
                last_delivered_at=self._last_delivered_at,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
            )

    async def flush(self, timeout_s: float) -> bool:
        """Push out what is queued now; ``True`` when the queue drained within ``timeout_s``."""
        done = run_in_daemon_thread(lambda: self._client.flush(timeout_seconds=timeout_s), self.name)
        await wait_event(done, timeout_s + 1.0)
        return self._client.queue.unfinished_tasks == 0

    def _write_off(self) -> None:
        with self._lock:
            if self._closed:
                return
            left = self._client.queue.unfinished_tasks
            self._closed = True
            if left:
                self._written_off += left
                self._last_error = f"{left} message(s) not delivered before the client closed"
                self._last_error_at = time.time()

    def _discard_leftovers(self) -> None:
        """Drop what was written off, so the SDK's shutdown does not keep retrying it against a dead host."""
        for consumer in self._client.consumers or []:
            consumer.pause()  # finishes the request in flight, takes nothing new
        queue = self._client.queue
        while True:
            try:
                queue.get_nowait()
            except Empty:
                return
            queue.task_done()

    def _shutdown(self) -> None:
        self._client.flush(timeout_seconds=self.close_timeout_s)
        self._write_off()
        self._discard_leftovers()
        self._client.shutdown()

    async def aclose(self) -> None:
        """Flush (bounded by ``close_timeout_s``) and stop the SDK's threads; undelivered messages count as failed."""
        if self._closing:
            return
        self._closing = True
        done = run_in_daemon_thread(self._shutdown, self.name)
        await wait_event(done, self.close_timeout_s + 1.0)
        self._write_off()

    def close(self) -> None:
        """Blocking variant of ``aclose`` for threads without an event loop."""
        if self._closing:
            return
        self._closing = True
        run_in_daemon_thread(self._shutdown, self.name).wait(self.close_timeout_s + 1.0)
        self._write_off()
