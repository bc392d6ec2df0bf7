"""Erase a user everywhere, and export everything of a user: the use cases behind the API, the console and the command.

Erasure, in order: the receipt (one per round, so a repeat returns the same
one), the primary's ``erase_user`` (tombstone first, then every document and
index entry), the user's summary runs and claims (their texts are about the
user), then each sink's deletion request (``erasure_sinks``: asked now,
retried in the background). The receipt keeps ids, counts, statuses and
vendor references only.

A primary that cannot be reached leaves the receipt ``failed``; the caller
sees ``StorageUnavailableError`` (a 503) and repeating the request completes
the same receipt.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.utils import timezone

from . import erasure_sinks
from .errors import StorageUnavailableError
from .models import Erasure, SinkErasure, SummaryClaim, SummaryRun
from .protocol import BrowsableStorage, ErasableStorage
from .runtime import get_storage, storage_settings
from .tombstones import DEFAULT_TOMBSTONE_S


def tombstone_s() -> int:
    days = storage_settings().get("ERASURE_TOMBSTONE_DAYS")
    return int(float(days) * 86400) if days is not None else DEFAULT_TOMBSTONE_S


async def holds_data(product_id: str, user_id: str) -> bool:
    """A state or a snapshot on the primary (raw: an unreadable one counts)."""
    primary = get_storage().primary
    if not isinstance(primary, BrowsableStorage):
        return await primary.get_user_state(product_id, user_id) is not None
    if await primary.get_raw_user_state(product_id, user_id) is not None:
        return True
    return bool((await primary.list_sessions(product_id, user_id, limit=1)).items)


async def _receipt_for(product_id: str, user_id: str, requested_by: str) -> tuple[Erasure, bool]:
    """The receipt of this erasure round and whether it is new.

    The last one, while it is unfinished or the user is still gone; a new
    round once the user came back (a session after the erasure). Racing
    requests agree through the unique (product, user, round).
    """
    for _ in range(3):
        last = await Erasure.objects.filter(product_id=product_id, user_id=user_id).order_by("-round").afirst()
        if last is not None and (
            last.primary_status != Erasure.PrimaryStatus.DONE or not await holds_data(product_id, user_id)
        ):
            return last, False
        receipt = Erasure(
            product_id=product_id,
            user_id=user_id,
            round=last.round + 1 if last else 1,
            requested_by=requested_by[:255],
            primary=str(getattr(get_storage().primary, "name", "") or type(get_storage().primary).__name__),
        )
        try:
            await receipt.asave(force_insert=True)
        except IntegrityError:
            continue  # another request made this round first: take theirs
        return receipt, True
    raise StorageUnavailableError("the erasure receipt kept changing under racing requests; retry")


async def _erase_primary(receipt: Erasure) -> None:
    primary = get_storage().primary
    if not isinstance(primary, ErasableStorage):
        receipt.primary_status = Erasure.PrimaryStatus.FAILED
        receipt.primary_error = f"the primary {receipt.primary} cannot erase a user"
        await receipt.asave()
        return
    try:
        removed = await primary.erase_user(receipt.product_id, receipt.user_id, tombstone_s=tombstone_s())
    except StorageUnavailableError as exc:
        receipt.primary_status, receipt.primary_error = Erasure.PrimaryStatus.FAILED, str(exc)
        await receipt.asave()
        raise
    runs, _ = await SummaryRun.objects.filter(product_id=receipt.product_id, user_id=receipt.user_id).adelete()
    claims, _ = await SummaryClaim.objects.filter(product_id=receipt.product_id, user_id=receipt.user_id).adelete()
    receipt.primary_removed = removed
    receipt.summary_rows_removed += runs + claims
    receipt.primary_status, receipt.primary_error = Erasure.PrimaryStatus.DONE, ""
    receipt.erased_at = timezone.now()
    await receipt.asave()


async def erase_user(product_id: str, user_id: str, *, requested_by: str) -> tuple[Erasure, bool]:
    """Erase the user everywhere; (the receipt, whether this call started it). Idempotent."""
    receipt, created = await _receipt_for(product_id, user_id, requested_by)
    if created:
        await SinkErasure.objects.abulk_create(await _plan(receipt))
    if receipt.primary_status != Erasure.PrimaryStatus.DONE:
        await _erase_primary(receipt)
    pending = [
        row
        async for row in receipt.sinks.select_related("erasure").filter(
            status=SinkErasure.Status.PENDING, next_attempt_at__lte=timezone.now()
        )
    ]
    await erasure_sinks.attempt_all(pending)
    return receipt, created


async def _plan(receipt: Erasure) -> list[SinkErasure]:
    from asgiref.sync import sync_to_async

    return await sync_to_async(erasure_sinks.plan)(receipt)


async def receipt(erasure_id: str) -> Erasure | None:
    try:
        return await Erasure.objects.filter(pk=erasure_id).afirst()
    except (ValidationError, ValueError):  # not a UUID: no such receipt
        return None


async def receipts_of(product_id: str, user_id: str) -> list[Erasure]:
    return [r async for r in Erasure.objects.filter(product_id=product_id, user_id=user_id).order_by("round")]


async def receipt_document(erasure: Erasure) -> dict[str, Any]:
    """The receipt as the API and the console show it: ids, outcomes, no personal data."""
    sinks = [
        {
            "sink": row.destination,
            "kind": row.kind,
            "status": row.status,
            "label": row.get_status_display(),
            "vendor_reference": row.vendor_reference or None,
            "error": row.error or None,
            "attempts": row.attempts,
            "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
        }
        async for row in erasure.sinks.order_by("kind", "destination")
    ]
    return {
        "id": str(erasure.id),
        "product_id": erasure.product_id,
        "user_id": erasure.user_id,
        "round": erasure.round,
        "requested_by": erasure.requested_by,
        "requested_at": erasure.requested_at.isoformat(),
        "erased_at": erasure.erased_at.isoformat() if erasure.erased_at else None,
        "primary": {
            "adapter": erasure.primary,
            "status": erasure.primary_status,
            "removed": erasure.primary_removed,
            "summary_rows_removed": erasure.summary_rows_removed,
            "error": erasure.primary_error or None,
        },
        "sinks": sinks,
    }
