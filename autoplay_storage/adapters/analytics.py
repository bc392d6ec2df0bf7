"""What the analytics sinks send (spec section 8) and the delivery bookkeeping they share.

Both vendor SDKs send from their own threads: a save only hands the message
over (non-blocking, bounded), so the outcome arrives later on an SDK thread.
``DeliveryStats`` is what an adapter reports about those outcomes, and the
console persists it per destination. Pure Python: no SDK, no Django.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..user_adoption_state import SessionSnapshot, UserAdoptionState, WorkflowStatus

logger = logging.getLogger("autoplay_storage.sinks")

SESSION_EVENT = "autoplay_session_captured"

# Fixed forever: changing it would change every session event id and let re-sends double-count.
SESSION_EVENT_NAMESPACE = uuid.UUID("6f1f9a52-3c4e-5b8a-9d2e-0a7c4b1e8f35")


class SinkQueueFullError(RuntimeError):
    """The SDK's bounded queue is full (the destination is down or slow): the message is dropped, not waited for."""


class SinkClosedError(RuntimeError):
    """The adapter was closed (its configuration was replaced or the process is stopping)."""


def prefixed(name: str, prefix: str) -> str:
    """``property_prefix="ap"`` turns ``x`` into ``ap_x``; an empty prefix changes nothing."""
    return f"{prefix}_{name}" if prefix else name


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    # "No summary yet" is the absence of a value; sending null would erase one set before.
    return {k: v for k, v in values.items() if v is not None}


def user_properties(product_id: str, user_id: str, state_doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The user/person properties for one saved state, read defensively, names prefixed."""
    state = UserAdoptionState.from_dict(state_doc, user_id=user_id)
    values = {
        "product_id": product_id,
        "journey_state": state.journey_state.value,
        "mastery_level": state.mastery.level.value,
        "mastery_rating": state.mastery.rating,
        "is_onboarded": state.is_onboarded,
        "onboarding_summary": state.onboarding.summary,
        "completion_rate": state.onboarding.completion_rate,
        "session_count": state.sessions.count,
        "completed_workflows": state.workflow_ids_with_status(WorkflowStatus.COMPLETED),
        "in_progress_workflows": state.workflow_ids_with_status(WorkflowStatus.IN_PROGRESS),
    }
    return {prefixed(k, prefix): v for k, v in _drop_none(values).items()}


def read_snapshot(user_id: str, session_id: str, snapshot_doc: dict[str, Any]) -> SessionSnapshot:
    return SessionSnapshot.from_dict(snapshot_doc, session_id=session_id, user_id=user_id)


def session_event_properties(product_id: str, snapshot: SessionSnapshot) -> dict[str, Any]:
    """The ``autoplay_session_captured`` event's properties (never prefixed)."""
    return {
        "product_id": product_id,
        "session_id": snapshot.session_id,
        "session_number": snapshot.session_number,
        "duration_s": snapshot.duration_s,
        "completion_rate": snapshot.completion_rate,
        "completed_workflow_ids": list(snapshot.completed_workflow_ids),
        "in_progress_workflow_ids": list(snapshot.in_progress_workflow_ids),
        "mastery_level": snapshot.mastery.level.value,
        "reached_onboarding_complete": snapshot.reached_onboarding_complete,
    }


def session_event_id(product_id: str, user_id: str, session_id: str) -> str:
    """A UUID that is the same every time this session is sent, so the destination de-duplicates re-sends."""
    return str(uuid.uuid5(SESSION_EVENT_NAMESPACE, "\x1f".join((product_id, user_id, session_id))))


@dataclass(frozen=True)
class DeliveryStats:
    """What the SDK reported about the messages handed to it (all counts since the adapter was built)."""

    delivered: int = 0
    failed: int = 0
    pending: int = 0
    last_delivered_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    dropped: int = 0
    """Refused at hand-off because the queue was full (also reported to the caller as a failure)."""


class PendingLedger:
    """Messages handed to an SDK, resolved exactly once by its callbacks or by closing.

    Thread-safe: SDK threads report into it. A callback for a message that is
    no longer pending (it was written off at close) is ignored, so nothing is
    counted twice. ``admit`` refuses beyond ``max_pending`` so a dead
    destination cannot grow memory without bound.
    """

    def __init__(self, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._pending: dict[str, int] = {}
        self._pending_total = 0
        self._delivered = 0
        self._failed = 0
        self._last_delivered_at: float | None = None
        self._last_error: str | None = None
        self._last_error_at: float | None = None

    def admit(self, key: str) -> None:
        with self._lock:
            if self._pending_total >= self.max_pending:
                raise SinkQueueFullError(f"{self._pending_total} messages still undelivered; dropping this one")
            self._pending[key] = self._pending.get(key, 0) + 1
            self._pending_total += 1

    def _take(self, key: str) -> bool:
        count = self._pending.get(key, 0)
        if count == 0:
            return False
        if count == 1:
            del self._pending[key]
        else:
            self._pending[key] = count - 1
        self._pending_total -= 1
        return True

    def withdraw(self, key: str) -> None:
        """The SDK refused the hand-off itself (the caller reports that failure)."""
        with self._lock:
            self._take(key)

    def delivered(self, key: str) -> None:
        with self._lock:
            if self._take(key):
                self._delivered += 1
                self._last_delivered_at = time.time()

    def failed(self, key: str, error: str) -> None:
        with self._lock:
            if self._take(key):
                self._note_failure(1, error)

    def fail_all(self, error: str) -> int:
        """Write off everything still pending (closing, or the destination refused the key)."""
        with self._lock:
            count = self._pending_total
            self._pending.clear()
            self._pending_total = 0
            if count:
                self._note_failure(count, error)
            return count

    def _note_failure(self, count: int, error: str) -> None:
        self._failed += count
        self._last_error = error
        self._last_error_at = time.time()

    def stats(self) -> DeliveryStats:
        with self._lock:
            return DeliveryStats(
                delivered=self._delivered,
                failed=self._failed,
                pending=self._pending_total,
                last_delivered_at=self._last_delivered_at,
                last_error=self._last_error,
                last_error_at=self._last_error_at,
            )


class AnalyticsSink:
    """What both write-only sinks share: no reads, and one deduplicated event per snapshot.

    A sink defines ``save_user_state`` and ``send_event(event, user_id,
    properties, *, event_id=None, at=None)``.
    """

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        return None

    async def get_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> dict[str, Any] | None:
        return None

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        snap = read_snapshot(user_id, session_id, snapshot)
        # The same id and time on every re-send: the destination keeps one copy.
        await self.send_event(  # type: ignore[attr-defined]
            SESSION_EVENT,
            user_id,
            session_event_properties(product_id, snap),
            event_id=session_event_id(product_id, user_id, session_id),
            at=snap.captured_at,
        )


def run_in_daemon_thread(fn: Callable[[], object], name: str) -> threading.Event:
    """Run a blocking SDK shutdown where it cannot hold up the event loop or the process exit."""
    done = threading.Event()

    def target() -> None:
        try:
            fn()
        except Exception:
            logger.exception("%s: SDK shutdown failed", name)
        finally:
            done.set()

    threading.Thread(target=target, name=f"{name}-close", daemon=True).start()
    return done


async def wait_event(done: threading.Event, timeout_s: float) -> bool:
    """Await a thread's ``Event`` without blocking the loop; ``False`` if it did not finish in time."""
    deadline = time.monotonic() + timeout_s
    while not done.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(0.02, remaining))
    return True
