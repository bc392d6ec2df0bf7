"""Write-only webhook sink: signed POSTs of ``user_state.saved`` and ``session.captured`` (the ``webhooks`` extra).

Signed by the Standard Webhooks scheme (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``: HMAC-SHA256 with the destination's ``whsec_`` secret)
through the ``standardwebhooks`` reference implementation, so any receiver's
library verifies it. A save only builds the event and puts it on a bounded
queue (a full queue drops it and says so); one background thread delivers,
retrying timeouts, connection errors, 429 and 5xx with exponential backoff,
up to ``max_attempts``. Every retry re-sends the same ``webhook-id``, so a
receiver that de-duplicates on it keeps one copy. Recent attempts (status,
latency, error) are kept for the console's delivery log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..request_context import request_id
from .analytics import (
    AnalyticsSink,
    DeliveryStats,
    SinkClosedError,
    SinkQueueFullError,
    logger,
    session_event_id,
    wait_event,
)

USER_STATE_SAVED = "user_state.saved"
SESSION_CAPTURED = "session.captured"
SECRET_PREFIX = "whsec_"
_RETRY_STATUSES = frozenset({408, 425, 429})


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form (``whsec_`` + base64 of 32 random bytes)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: str) -> None:
    """``ValueError`` unless ``secret`` is a usable ``whsec_`` secret."""
    from standardwebhooks.webhooks import Webhook

    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a signing secret starts with {SECRET_PREFIX}")
    try:
        Webhook(secret)
    except Exception as exc:  # the library raises several kinds for a malformed secret
        raise ValueError(f"not a valid signing secret: {exc}") from None


def state_event_id(product_id: str, user_id: str, state: dict[str, Any]) -> str:
    """The same id for the same saved document, so a re-send of one save is recognised."""
    canonical = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    digest = hashlib.sha256("\x1f".join((product_id, user_id, canonical)).encode()).hexdigest()[:32]
    return f"evt_{digest}"


@dataclass(frozen=True)
class Attempt:
    """One POST of one event, for the delivery log."""

    event_id: str
    event_type: str
    attempt: int
    status_code: int | None
    latency_ms: int
    error: str
    at: float
    delivered: bool


@dataclass(frozen=True)
class _Event:
    id: str
    type: str
    body: str
    request_id: str | None = None  # of the request that queued it, for the delivery's log lines


class WebhookStorageAdapter(AnalyticsSink):
    """POSTs signed JSON events to ``url``; getters return ``None`` (write-only)."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        name: str = "webhook",
        max_queue_size: int = 1000,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        request_timeout_s: float = 10.0,
        close_timeout_s: float = 5.0,
        log_size: int = 100,
    ) -> None:
        import httpx
        from standardwebhooks.webhooks import Webhook

        if not url.startswith(("http://", "https://")):
            raise ValueError("a webhook URL starts with http:// or https://")
        check_secret(secret)
        self.name = name
        self.url = url
        self.max_attempts = max(1, max_attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.close_timeout_s = close_timeout_s
        self._signer = Webhook(secret)
        self._http = httpx.Client(timeout=request_timeout_s, headers={"User-Agent": "autoplay-storage-webhooks"})
        self._queue: queue.Queue[_Event] = queue.Queue(max_queue_size)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closing = False
        self._deadline = float("inf")  # monotonic time by which a close gives up on what is left
        self._delivered = self._failed = self._dropped = 0
        self._last_delivered_at: float | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._log: deque[Attempt] = deque(maxlen=log_size)
        self._unread: list[Attempt] = []
        self._thread = threading.Thread(target=self._run, name=f"{name}-deliver", daemon=True)
        self._thread.start()

    # -- the wire methods (never wait on the network) --

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        data = {"product_id": product_id, "user_id": user_id, "state": state}
        self._enqueue(state_event_id(product_id, user_id, state), USER_STATE_SAVED, data, time.time())

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        data = {"product_id": product_id, "user_id": user_id, "session_id": session_id, "snapshot": snapshot}
        at = snapshot.get("captured_at")
        event_id = "evt_" + session_event_id(product_id, user_id, session_id).replace("-", "")
        self._enqueue(event_id, SESSION_CAPTURED, data, at if isinstance(at, int | float) else time.time())

    async def send_event(
        self,
        event: str,
        distinct_id: str,
        properties: dict[str, Any],
        *,
        event_id: str | None = None,
        at: float | None = None,
    ) -> None:
        """Any event (the console's "send test event" uses it)."""
        data = {"user_id": distinct_id, **properties}
        self._enqueue(event_id or f"evt_{secrets.token_hex(16)}", event, data, at or time.time())

    def _enqueue(self, event_id: str, event_type: str, data: dict[str, Any], at: float) -> None:
        if self._closing:
            raise SinkClosedError(f"{self.name} is closed")
        stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
        body = json.dumps({"type": event_type, "timestamp": stamp, "data": data}, ensure_ascii=False, default=str)
        try:
            self._queue.put_nowait(_Event(event_id, event_type, body, request_id.get()))
        except queue.Full:
            with self._lock:
                self._dropped += 1
            raise SinkQueueFullError(f"{self.name}: {self._queue.maxsize} events waiting; this one dropped") from None

    # -- delivery (the background thread) --

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                event = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            token = request_id.set(event.request_id)
            try:
                self._deliver(event)
            except Exception as exc:  # a bug must not kill the only delivery thread
                logger.exception("%s: delivery failed", self.name)
                self._note_failure(f"{type(exc).__name__}: {exc}")
            finally:
                request_id.reset(token)
                self._queue.task_done()

    def _deliver(self, event: _Event) -> None:
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            retry, error = self._post(event, attempt)
            if not retry:
                if not error:
                    return
                break
            if attempt < self.max_attempts and not self._backoff(attempt):
                error = f"{error}; not retried: the sink is closing"
                break
        logger.warning(
            "%s: %s %s not delivered after %d attempt(s): %s",
            self.name, event.type, event.id, attempt, error,
            extra={"sink": self.name, "event_id": event.id, "event_type": event.type},
        )  # fmt: skip
        self._note_failure(error)

    def _backoff(self, attempt: int) -> bool:
        """Sleep before the next attempt; ``False`` when a close's deadline comes first."""
        end = time.monotonic() + min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        while True:
            if self._stop.is_set() and end > self._deadline:
                return False
            remaining = end - time.monotonic()
            if remaining <= 0:
                return True
            if self._stop.is_set():
                time.sleep(min(remaining, 0.05))
            else:
                self._stop.wait(remaining)  # wakes early when a close starts, to check its deadline

    def _post(self, event: _Event, attempt: int) -> tuple[bool, str]:
        """One signed POST: ``(retry?, error)``; no error means delivered."""
        import httpx

        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": event.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(event.id, now, event.body),
        }
        started = time.perf_counter()
        status: int | None = None
        try:
            response = self._http.post(self.url, content=event.body.encode(), headers=headers)
            status = response.status_code
            error = "" if response.is_success else f"HTTP {status}"
            retry = status >= 500 or status in _RETRY_STATUSES
        except httpx.TimeoutException as exc:
            error, retry = f"timeout: {type(exc).__name__}", True
        except httpx.TransportError as exc:
            error, retry = f"{type(exc).__name__}: {exc}", True
        latency = round((time.perf_counter() - started) * 1000)
        self._record(Attempt(event.id, event.type, attempt, status, latency, error, time.time(), not error))
        return (retry and bool(error)), error

    def _record(self, attempt: Attempt) -> None:
        with self._lock:
            self._log.append(attempt)
            self._unread.append(attempt)
            del self._unread[: -self._log.maxlen]  # type: ignore[misc]
            if attempt.delivered:
                self._delivered += 1
                self._last_delivered_at = attempt.at

    def _note_failure(self, error: str) -> None:
        with self._lock:
            self._failed += 1
            self._last_error, self._last_error_at = error, time.time()

    # -- what the console reads --

    def delivery_stats(self) -> DeliveryStats:
        with self._lock:
            return DeliveryStats(
                delivered=self._delivered,
                failed=self._failed,
                pending=self._queue.unfinished_tasks,
                last_delivered_at=self._last_delivered_at,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
                dropped=self._dropped,
            )

    def recent_attempts(self) -> list[Attempt]:
        with self._lock:
            return list(self._log)

    def take_attempts(self) -> list[Attempt]:
        """The attempts not taken before (the registry persists them to the delivery log)."""
        with self._lock:
            taken, self._unread = self._unread, []
            return taken

    # -- lifecycle --

    @property
    def closed(self) -> bool:
        return self._closing

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every queued event is delivered or given up on; ``True`` if that happened in time."""
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        return await wait_event(done, timeout_s)

    def close(self) -> None:
        """Deliver what is queued within ``close_timeout_s``; what is left then counts as failed."""
        if self._closing:
            return
        self._closing = True
        self._deadline = time.monotonic() + self.close_timeout_s
        self._stop.set()
        self._thread.join(self.close_timeout_s + 1.0)
        left = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
            self._queue.task_done()
            left += 1
        if left:
            with self._lock:
                self._failed += left
                self._last_error = f"{left} event(s) not delivered before the sink closed"
                self._last_error_at = time.time()
        if not self._thread.is_alive():  # else a hung request still uses it; the daemon thread ends with it
            self._http.close()

    async def aclose(self) -> None:
        done = threading.Event()
        threading.Thread(target=lambda: (self.close(), done.set()), daemon=True).start()
        await wait_event(done, self.close_timeout_s + 2.0)
