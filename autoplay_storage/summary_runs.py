"""Running the configured summarizer, recorded: who, when, on what, how long, outcome.

Shared by the API's session end (``summarize: true``) and the console's
"re-run summary" button, so both time out, fail and get recorded alike. A
failed or timed-out run changes nothing in the user's state.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from .errors import StorageError
from .lifecycle import Summarizer, load_state
from .models import SummaryRun
from .protocol import StateDoc
from .runtime import get_storage, get_summarizer, storage_settings, summarizer_path
from .user_adoption_state import SessionSnapshot


class SummaryFailed(Exception):
    """The summarizer raised, timed out or returned no text; ``run`` records it."""

    def __init__(self, message: str, run: SummaryRun) -> None:
        super().__init__(message)
        self.run = run


class NoSnapshotError(StorageError):
    """There is no finished session to summarize."""


@dataclass
class SummaryResult:
    text: str
    run: SummaryRun


async def run_summarizer(
    snapshot: SessionSnapshot,
    *,
    product_id: str,
    user_id: str,
    source: str,
    actor: Any = None,
    previous_summary: str | None = None,
    summarizer: Summarizer | None = None,
    timeout_s: float | None = None,
) -> SummaryResult:
    """Run the (configured) summarizer with a timeout and record the run; raise ``SummaryFailed``."""
    summarizer = summarizer or get_summarizer()
    timeout_s = storage_settings().get("SUMMARIZER_TIMEOUT_S", 30.0) if timeout_s is None else timeout_s
    name = getattr(summarizer, "__qualname__", None) and f"{summarizer.__module__}.{summarizer.__qualname__}"
    started = timezone.now()
    t0 = time.perf_counter()
    outcome, error, text = SummaryRun.Outcome.SUCCEEDED, "", None
    try:
        text = await asyncio.wait_for(summarizer(snapshot), timeout_s)
        if not isinstance(text, str) or not text.strip():
            outcome, error, text = SummaryRun.Outcome.FAILED, "the summarizer returned no text", None
        else:
            text = text.strip()
    except TimeoutError:
        outcome, error = SummaryRun.Outcome.TIMED_OUT, f"the summarizer did not answer within {timeout_s:g} s"
    except Exception as exc:  # a summarizer is user code: any failure is recorded, never raised raw
        outcome, error = SummaryRun.Outcome.FAILED, f"{type(exc).__name__}: {exc}"
    run = await SummaryRun.objects.acreate(
        product_id=product_id,
        user_id=user_id,
        session_id=snapshot.session_id,
        source=source,
        summarizer=name or summarizer_path(),
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        started_at=started,
        duration_ms=round((time.perf_counter() - t0) * 1000),
        outcome=outcome,
        error=error,
        previous_summary=previous_summary,
        new_summary=text,
    )
    if text is None:
        raise SummaryFailed(error, run)
    return SummaryResult(text=text, run=run)


def recorded_summarizer(product_id: str, user_id: str) -> Summarizer:
    """A summarizer for ``on_session_end`` whose runs are recorded as session-end runs."""

    async def summarize(snapshot: SessionSnapshot) -> str:
        result = await run_summarizer(
            snapshot, product_id=product_id, user_id=user_id, source=SummaryRun.Source.SESSION_END
        )
        return result.text

    return summarize


async def record_explicit_summary(product_id: str, user_id: str, session_id: str, text: str) -> SummaryRun:
    """A summary the agent passed in itself: recorded so the console can say where it came from."""
    return await SummaryRun.objects.acreate(
        product_id=product_id,
        user_id=user_id,
        session_id=session_id,
        source=SummaryRun.Source.EXPLICIT,
        summarizer="explicit summary from the caller",
        started_at=timezone.now(),
        duration_ms=0,
        outcome=SummaryRun.Outcome.SUCCEEDED,
        new_summary=text,
    )


async def latest_session_id(product_id: str, user_id: str) -> str | None:
    page = await get_storage().browser.list_sessions(product_id, user_id, limit=1)
    return page.items[0].session_id if page.items else None


async def rerun_summary(
    product_id: str, user_id: str, session_id: str | None = None, *, actor: Any = None
) -> SummaryResult:
    """Summarize a snapshot (the latest by default) and store the text as the user's summary.

    Raises ``NoSnapshotError`` when there is nothing to summarize and
    ``SummaryFailed`` (recorded, state untouched) when the summarizer fails.
    """
    storage = get_storage()
    session_id = session_id or await latest_session_id(product_id, user_id)
    if session_id is None:
        raise NoSnapshotError(f"{product_id}/{user_id} has no finished session to summarize")
    doc = await storage.get_session_snapshot(product_id, user_id, session_id)
    if doc is None:
        raise NoSnapshotError(f"no snapshot {session_id} for {product_id}/{user_id}")
    snapshot = SessionSnapshot.from_dict(doc, session_id=session_id, user_id=user_id)
    current = await storage.get_user_state(product_id, user_id)
    previous = load_state(current, user_id).onboarding.summary if current is not None else None
    result = await run_summarizer(
        snapshot,
        product_id=product_id,
        user_id=user_id,
        source=SummaryRun.Source.DASHBOARD,
        actor=actor,
        previous_summary=previous,
    )

    def mutate(stored: StateDoc | None) -> StateDoc:
        state = load_state(stored, user_id)
        state.onboarding.summary = result.text
        state.touch()
        return state.to_dict()

    await storage.update_user_state(product_id, user_id, mutate)
    return result
