"""The database primary's erasure and its tombstone check (inside the caller's transaction).

Why it is race-safe: the erasure holds the user's state row for its whole
transaction (creating an empty one if there is none, so even a user's very
first session end queues on it: inserting a row another writer is inserting
waits for that writer). A session end locks the same row first and reads the
tombstone after the lock, so it either committed before the erasure (and is
deleted with the rest) or sees the tombstone. On SQLite every writer holds
the database's write lock anyway (``BEGIN IMMEDIATE``).

The insight rows go in the same transaction: the user's facts are diffed to
none and every snapshot's counts taken back (``database_facts.forget_user``),
so the aggregates equal a recount of the users left.
"""

from __future__ import annotations

import time
from typing import Any

from ..tombstones import check, session_started
from . import database_facts


def check_tombstone(using: str, product_id: str, user_id: str, snapshot: dict[str, Any]) -> None:
    """Raise ``UserErasedError`` when a live tombstone covers the session of ``snapshot``."""
    from ..models.erasures import ErasedUser

    erased = ErasedUser.objects.using(using).filter(product_id=product_id, user_id=user_id, expires_at__gt=time.time())
    erased_at = erased.values_list("erased_at", flat=True).first()
    if erased_at is not None:
        check(product_id, user_id, erased_at, session_started(snapshot))


def erase_rows(using: str, product_id: str, user_id: str, tombstone_s: int) -> dict[str, int]:
    """Lock, tombstone, delete: one transaction. Expired tombstones are pruned on the way."""
    from django.db import connections, transaction

    from ..models.erasures import ErasedUser
    from ..models.records import SessionSnapshotRecord, UserSearchTerm, UserStateRecord

    mine = {"product_id": product_id, "user_id": user_id}
    with transaction.atomic(using=using):
        locked = UserStateRecord.objects.using(using).select_for_update().filter(**mine)
        while True:  # read again under the lock; gone meanwhile only if a racing erasure committed: once more
            _row, created = UserStateRecord.objects.using(using).get_or_create(**mine, defaults={"document": ""})
            found = locked.values_list("id", "document").first()
            if found is not None:
                break
        state_id, document = found
        now = time.time()
        ErasedUser.objects.using(using).filter(expires_at__lte=now).delete()
        ErasedUser.objects.using(using).update_or_create(
            **mine, defaults={"erased_at": now, "expires_at": now + tombstone_s}
        )
        their_snapshots = SessionSnapshotRecord.objects.using(using).filter(**mine)
        raws = their_snapshots.values_list("document", flat=True).iterator(chunk_size=1000)
        database_facts.forget_user(connections[using], state_id, product_id, user_id, document, raws)
        snapshots, _ = their_snapshots.delete()
        their_terms = UserSearchTerm.objects.using(using).filter(state__product_id=product_id, state__user_id=user_id)
        terms, _ = their_terms.delete()
        states, _ = UserStateRecord.objects.using(using).filter(**mine).delete()
    return {"state_rows": states - int(created), "snapshot_rows": snapshots, "search_rows": terms}
