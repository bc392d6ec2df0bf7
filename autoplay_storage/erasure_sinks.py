"""Each sink's part of an erasure: asked once, retried with exponential backoff, given up after a bound.

The ledger is the ``SinkErasure`` table, so nothing is lost across restarts:
a pending row is due at ``next_attempt_at``, and any process may take it.
Taking it is a conditional update that moves ``next_attempt_at`` past the
call's timeout (a lease), so two workers never ask twice at once and a
worker that dies mid-call leaves the row due again soon after. The
background thread (``start_retrier``, started with the first storage use of
a process, as the sinks runtime is) and ``manage.py autoplay_erase --retry``
both run ``retry_due``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta

from django.db import connections
from django.utils import timezone

from .adapters.deletion import (
    Deletion,
    DeletionRefused,
    DeletionUnavailable,
    amplitude_base,
    posthog_app_host,
    request_deletion,
)
from .models import Erasure, SinkDestination, SinkErasure
from .models.sinks import SinkConfigError
from .runtime import storage_settings

logger = logging.getLogger("autoplay_storage.erasure")

Status = SinkErasure.Status
ERASABLE = (SinkDestination.Kind.POSTHOG, SinkDestination.Kind.AMPLITUDE)


def _setting(name: str) -> float:
    defaults = {"ERASURE_SINK_TIMEOUT_S": 10.0, "ERASURE_RETRY_BASE_S": 60.0, "ERASURE_MAX_ATTEMPTS": 8}
    return float(storage_settings().get(name, defaults.get(name, 15.0)))


def backoff_s(attempts: int) -> float:
    """The wait after the ``attempts``-th failure: the base, doubled each time, at most a day."""
    return min(_setting("ERASURE_RETRY_BASE_S") * 2 ** max(attempts - 1, 0), 86400.0)


def credentials_problem(destination: SinkDestination) -> str:
    """What is missing for a deletion ('' when nothing is)."""
    if not destination.erase_key_encrypted:
        return "personal API key" if destination.kind == SinkDestination.Kind.POSTHOG else "secret key"
    if destination.kind == SinkDestination.Kind.POSTHOG and not destination.erase_project_id:
        return "project id"
    return ""


def plan(erasure: Erasure) -> list[SinkErasure]:
    """One row per configured sink (enabled or not: a disabled one may hold data), and the kinds not configured."""
    rows = []
    now = timezone.now()
    destinations = list(SinkDestination.objects.order_by("name"))
    for destination in destinations:
        row = SinkErasure(erasure=erasure, destination=destination.name, kind=destination.kind)
        if destination.kind not in ERASABLE:
            row.status, row.error = Status.UNSUPPORTED, "webhooks have no deletion call; the receiver must delete"
        elif missing := credentials_problem(destination):
            row.status, row.error = Status.CREDENTIALS_MISSING, f"not erased: credentials missing ({missing})"
        else:
            row.status, row.next_attempt_at = Status.PENDING, now
        rows.append(row)
    for kind in ERASABLE:
        if not any(d.kind == kind for d in destinations):
            label = SinkDestination.Kind(kind).label
            rows.append(SinkErasure(erasure=erasure, destination=label, kind=kind, status=Status.NOT_CONFIGURED))
    return rows


def deletion_for(row: SinkErasure, destination: SinkDestination) -> Deletion:
    """The request for one row; ``SinkConfigError`` when a credential cannot be read."""
    user_ids = (row.erasure.user_id,)
    if destination.kind == SinkDestination.Kind.POSTHOG:
        base = destination.erase_host or posthog_app_host(destination.host)
        key = destination.resolve_erase_key()
        return Deletion("posthog", base, key, user_ids, project_id=destination.erase_project_id)
    base = destination.erase_host or amplitude_base(destination.host)
    requester = f"autoplay storage console, erasure {row.erasure_id}"
    return Deletion(
        "amplitude",
        base,
        destination.resolve_api_key(),
        user_ids,
        secret=destination.resolve_erase_key(),
        requester=requester,
    )


async def _take(row: SinkErasure) -> bool:
    """Lease the row for one call (a conditional update: one taker wins)."""
    now = timezone.now()
    lease = now + timedelta(seconds=_setting("ERASURE_SINK_TIMEOUT_S") + 30)
    taken = await SinkErasure.objects.filter(
        pk=row.pk, status=Status.PENDING, next_attempt_at__lte=now, attempts=row.attempts
    ).aupdate(next_attempt_at=lease)
    return taken == 1


async def attempt(row: SinkErasure) -> None:
    """One call for a due row, if this process takes it; records the outcome on the row."""
    if not await _take(row):
        return
    destination = await SinkDestination.objects.filter(name=row.destination, kind=row.kind).afirst()
    row.attempts += 1
    try:
        if destination is None:
            raise DeletionRefused("the sink was deleted from the configuration before its deletion was asked")
        deletion = deletion_for(row, destination)
        row.vendor_reference = await request_deletion(deletion, timeout_s=_setting("ERASURE_SINK_TIMEOUT_S"))
    except (DeletionRefused, SinkConfigError) as exc:
        row.status, row.error, row.next_attempt_at = Status.FAILED, str(exc), None
    except DeletionUnavailable as exc:
        row.error = str(exc)
        if row.attempts >= _setting("ERASURE_MAX_ATTEMPTS"):
            row.status, row.next_attempt_at = Status.FAILED, None
            row.error = f"gave up after {row.attempts} attempts: {exc}"
        else:
            row.next_attempt_at = timezone.now() + timedelta(seconds=backoff_s(row.attempts))
    else:
        row.status, row.error, row.next_attempt_at = Status.ACCEPTED, "", None
    await row.asave(update_fields=["status", "vendor_reference", "error", "attempts", "next_attempt_at", "updated_at"])
    logger.info(
        "sink erasure %s: %s", row.destination, row.status, extra={"erasure": str(row.erasure_id), "error": row.error}
    )


async def attempt_all(rows: list[SinkErasure]) -> None:
    await asyncio.gather(*(attempt(row) for row in rows))


async def retry_due(limit: int = 100) -> int:
    """Ask every sink whose deletion is due (any receipt); how many were due."""
    due = [
        row
        async for row in SinkErasure.objects.select_related("erasure")
        .filter(status=Status.PENDING, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")[:limit]
    ]
    await attempt_all(due)
    return len(due)


_retrier: threading.Thread | None = None
_retrier_lock = threading.Lock()


def _retry_forever() -> None:
    while True:
        poll_s = _setting("ERASURE_RETRY_POLL_S")
        if poll_s <= 0:  # switched off (tests drive retry_due themselves): look again later
            threading.Event().wait(1.0)
            continue
        try:
            asyncio.run(retry_due())
        except Exception as exc:  # the database may be down: try again next round
            logger.warning("sink erasure retries failed this round: %s", exc)
        finally:
            connections.close_all()  # this thread's only
        threading.Event().wait(poll_s)


def start_retrier(_manager: object = None) -> None:
    """``runtime.manager_hooks`` entry: the process's retry thread, started once (pending rows survive restarts)."""
    global _retrier
    if _retrier is not None or _setting("ERASURE_RETRY_POLL_S") <= 0:  # 0: switched off
        return
    with _retrier_lock:
        if _retrier is None:
            _retrier = threading.Thread(target=_retry_forever, name="autoplay-erasures", daemon=True)
            _retrier.start()
