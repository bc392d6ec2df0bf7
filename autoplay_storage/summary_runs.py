"""Running the configured summarizer, recorded: who, when, on what, how long, outcome.

Shared by the API's session end (``summarize: true``) and the console's
"re-run summary" button, so both time out, fail and get recorded alike. A
failed or timed-out run changes nothing in the user's state.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.db import DatabaseError
from django.utils import timezone

from .errors import StorageError, StorageUnavailableError
from .lifecycle import SessionEnd, Summarizer, apply_summary, load_state
from .metrics import SUMMARIZER_RUNS, SUMMARIZER_SECONDS
from .models import SummaryClaim, SummaryRun
from .runtime import get_storage, get_summarizer, storage_settings, summarizer_path
from .user_adoption_state import SessionSnapshot

logger = logging.getLogger("autoplay_storage.summary_runs")


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


def _timeout(timeout_s: float | None) -> float:
    return float(storage_settings().get("SUMMARIZER_TIMEOUT_S", 30.0)) if timeout_s is None else timeout_s


def _name(summarizer: Summarizer) -> str:
    qualname = getattr(summarizer, "__qualname__", None)
    return f"{summarizer.__module__}.{qualname}" if qualname else summarizer_path()


async def _begin_run(
    snapshot: SessionSnapshot,
    *,
    product_id: str,
    user_id: str,
    source: str,
    summarizer: str,
    actor: Any,
    previous_summary: str | None,
) -> SummaryRun:
    """Record the run before it starts: a worker that dies mid-run leaves it, not nothing."""
    return await SummaryRun.objects.acreate(
        product_id=product_id,
        user_id=user_id,
        session_id=snapshot.session_id,
        source=source,
        summarizer=summarizer,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        started_at=timezone.now(),
        outcome=SummaryRun.Outcome.RUNNING,
        previous_summary=previous_summary,
    )


async def _execute(summarizer: Summarizer, snapshot: SessionSnapshot, timeout_s: float) -> tuple[str, str, str | None]:
    """(outcome, error, text) of one bounded run; a summarizer is user code, so nothing it raises escapes."""
    try:
        text = await asyncio.wait_for(summarizer(snapshot), timeout_s)
    except TimeoutError:
        return SummaryRun.Outcome.TIMED_OUT, f"the summarizer did not answer within {timeout_s:g} s", None
    except Exception as exc:
        return SummaryRun.Outcome.FAILED, f"{type(exc).__name__}: {exc}", None
    if not isinstance(text, str) or not text.strip():
        return SummaryRun.Outcome.FAILED, "the summarizer returned no text", None
    return SummaryRun.Outcome.SUCCEEDED, "", text.strip()


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
    claim: SummaryClaim | None = None,
) -> SummaryResult:
    """Run the (configured) summarizer with a timeout and record the run; raise ``SummaryFailed``.

    ``claim``: the session-end claim this run serves; the run is attached to
    it as it starts, so a takeover after a crash can mark it interrupted.
    """
    summarizer = summarizer or get_summarizer()
    timeout_s = _timeout(timeout_s)
    t0 = time.perf_counter()
    run = await _begin_run(
        snapshot,
        product_id=product_id,
        user_id=user_id,
        source=source,
        summarizer=_name(summarizer),
        actor=actor,
        previous_summary=previous_summary,
    )
    if claim is not None:
        await SummaryClaim.objects.filter(pk=claim.pk, token=claim.token).aupdate(run=run)
        claim.run_id = run.pk
    started = time.perf_counter()
    run.outcome, run.error, run.new_summary = await _execute(summarizer, snapshot, timeout_s)
    SUMMARIZER_RUNS.labels(run.outcome).inc()
    SUMMARIZER_SECONDS.labels(run.outcome).observe(time.perf_counter() - started)
    run.duration_ms = round((time.perf_counter() - t0) * 1000)
    await run.asave(update_fields=["outcome", "error", "new_summary", "duration_ms"])
    if run.new_summary is None:
        logger.warning(
            "summarizer %s %s for %s/%s session %s: %s",
            run.summarizer, run.outcome, product_id, user_id, snapshot.session_id, run.error,
            extra={"product_id": product_id, "user_id": user_id, "session_id": snapshot.session_id},
        )  # fmt: skip
        raise SummaryFailed(run.error, run)
    return SummaryResult(text=run.new_summary, run=run)


# -- the summary a session end asks for: run once per session, stored or superseded --

# The worker running a session's summary renews its claim every HEARTBEAT_S
# for LEASE_S more: while it lives nobody takes the claim over, and a claim
# whose worker died is free again within LEASE_S, not after the summarizer's
# whole timeout (the agent's retry waits that long at most).
LEASE_S = 6.0
HEARTBEAT_S = 2.0


async def _heartbeat(claim: SummaryClaim) -> None:
    """Keep ``claim`` leased while its run lasts (cancelled when it ends)."""
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        try:
            await SummaryClaim.objects.filter(pk=claim.pk, token=claim.token, state=SummaryClaim.State.RUNNING).aupdate(
                lease_expires_at=timezone.now() + timedelta(seconds=LEASE_S)
            )
        except DatabaseError as exc:  # the next beat tries again; the lease has room for two misses
            logger.warning("could not renew the summary claim of %s: %s", claim, exc)


@sync_to_async
def _claim(product_id: str, user_id: str, session_id: str, lease_s: float) -> tuple[SummaryClaim, bool]:
    """The session's claim, and whether this call holds it now (new, or taken over from a dead worker)."""
    now = timezone.now()
    token = uuid.uuid4().hex
    until = now + timedelta(seconds=lease_s)
    claim, created = SummaryClaim.objects.get_or_create(
        product_id=product_id,
        user_id=user_id,
        session_id=session_id,
        defaults={"token": token, "lease_expires_at": until},
    )
    if created:
        return claim, True
    if claim.state == SummaryClaim.State.RUNNING and claim.lease_expires_at <= now:
        taken = SummaryClaim.objects.filter(pk=claim.pk, token=claim.token, state=SummaryClaim.State.RUNNING).update(
            token=token, lease_expires_at=until
        )
        if taken and claim.run_id is not None:
            SummaryRun.objects.filter(pk=claim.run_id, outcome=SummaryRun.Outcome.RUNNING).update(
                outcome=SummaryRun.Outcome.INTERRUPTED,
                error="its worker stopped before the run finished; the session end's retry ran it again",
            )
        claim.refresh_from_db()
        return claim, bool(taken)
    return claim, False


async def _settle(claim: SummaryClaim, state: str, *, expected_state: str | None = None) -> None:
    rows = SummaryClaim.objects.filter(pk=claim.pk)
    rows = rows.filter(state=expected_state) if expected_state else rows.filter(token=claim.token)
    await rows.aupdate(state=state)


async def _release(claim: SummaryClaim) -> None:
    try:
        await SummaryClaim.objects.filter(pk=claim.pk, token=claim.token).aupdate(lease_expires_at=timezone.now())
    except DatabaseError:  # the lease then runs out by itself
        logger.warning("could not give up the summary claim of %s", claim)


async def _current(product_id: str, user_id: str, ended: SessionEnd) -> SessionEnd:
    """The end as it stands now (another worker may have stored the summary meanwhile)."""
    doc = await get_storage().get_user_state(product_id, user_id)
    if doc is None:
        return ended
    return SessionEnd(load_state(doc, user_id), doc, ended.snapshot, ended.recorded)


async def _store(
    claim: SummaryClaim, text: str, expected: str | None, product_id: str, user_id: str, ended: SessionEnd
) -> SessionEnd:
    written = await apply_summary(product_id, user_id, text, get_storage(), expected=expected)
    applied = written is not None and written.applied
    state = SummaryClaim.State.APPLIED if applied else SummaryClaim.State.SUPERSEDED
    await _settle(claim, state, expected_state=SummaryClaim.State.FINISHED)
    if applied and claim.run_id is not None:
        await SummaryRun.objects.filter(pk=claim.run_id, applied_at=None).aupdate(applied_at=timezone.now())
    if written is None:
        return ended
    return SessionEnd(written.state, written.document, ended.snapshot, ended.recorded)


async def _run_claimed(claim: SummaryClaim, product_id: str, user_id: str, ended: SessionEnd) -> SessionEnd:
    previous = ended.state.onboarding.summary
    beat = asyncio.create_task(_heartbeat(claim))
    try:
        result = await run_summarizer(
            ended.snapshot,
            product_id=product_id,
            user_id=user_id,
            source=SummaryRun.Source.SESSION_END,
            previous_summary=previous,
            claim=claim,
        )
    except SummaryFailed:
        await _settle(claim, SummaryClaim.State.FAILED)
        return ended
    except BaseException:
        # Not the summarizer's failure (its own database write failed, the request was
        # cancelled): give the lease up, so the agent's retry need not wait it out.
        await _release(claim)
        raise
    finally:
        beat.cancel()
    await _settle(claim, SummaryClaim.State.FINISHED)
    return await _store(claim, result.text, previous, product_id, user_id, ended)


async def complete_session_summary(product_id: str, user_id: str, ended: SessionEnd) -> SessionEnd:
    """Run the session's summary once, whoever asks, and store its text; the session is recorded already.

    Concurrent retries of one end: the first claims it and runs the
    summarizer, holding no storage lock or connection while it runs; the
    others wait for its outcome. A run whose worker died is taken over once
    its lease runs out (``LEASE_S`` after its last heartbeat); a run that
    finished but was not stored yet is stored by the retry, without running
    again. Returns the end with the state as
    stored after. Bookkeeping failures are ``StorageUnavailableError`` (503:
    the agent retries, and the retry completes what is missing).
    """
    session_id = ended.snapshot.session_id
    pause = 0.05
    try:
        while True:
            claim, owned = await _claim(product_id, user_id, session_id, LEASE_S)
            if owned:
                return await _run_claimed(claim, product_id, user_id, ended)
            if claim.state == SummaryClaim.State.FINISHED:  # its worker stopped before storing the text
                run = await SummaryRun.objects.aget(pk=claim.run_id) if claim.run_id is not None else None
                if run is None or run.new_summary is None:
                    await _settle(claim, SummaryClaim.State.FAILED, expected_state=SummaryClaim.State.FINISHED)
                    return await _current(product_id, user_id, ended)
                return await _store(claim, run.new_summary, run.previous_summary, product_id, user_id, ended)
            if claim.state != SummaryClaim.State.RUNNING:  # applied, superseded or failed: nothing is left to do
                return await _current(product_id, user_id, ended)
            left = (claim.lease_expires_at - timezone.now()).total_seconds()
            await asyncio.sleep(max(0.01, min(pause, left)))
            pause = min(pause * 2, 0.5)
    except DatabaseError as exc:
        raise StorageUnavailableError(f"could not record the session's summary: {exc}") from exc


def recorded_summarizer(product_id: str, user_id: str) -> Summarizer:
    """A summarizer for ``on_session_end`` whose runs are recorded as session-end runs."""

    async def summarize(snapshot: SessionSnapshot) -> str:
        result = await run_summarizer(
            snapshot, product_id=product_id, user_id=user_id, source=SummaryRun.Source.SESSION_END
        )
        # on_session_end stores a summarizer's text as it returns it
        result.run.applied_at = timezone.now()
        await result.run.asave(update_fields=["applied_at"])
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
        applied_at=timezone.now(),
    )


async def latest_session_id(product_id: str, user_id: str) -> str | None:
    page = await get_storage().browser.list_sessions(product_id, user_id, limit=1)
    return page.items[0].session_id if page.items else None
