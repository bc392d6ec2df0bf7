"""Rebuilding a state that cannot be read (not JSON, not an object, an unknown ``_v``) from its snapshots.

A user whose stored state cannot be read cannot start a session: the
lifecycle refuses to overwrite what it cannot read. The rebuild keeps the
unreadable text (``QuarantinedState``, downloadable), replays every frozen
snapshot in order into a fresh state with the lifecycle's own fold
(``apply_session_end``), keeps the latest summary, and writes the result
with the primary's compare-and-set on the stored text
(``replace_state_if_raw``): if anyone repaired or replaced the state since
the preview, that repair wins and nothing is overwritten.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from .. import selectors
from ..browse import UserQuery
from ..errors import CorruptDocumentError
from ..lifecycle import apply_session_end, init_user_state
from ..models import QuarantinedState, SummaryRun
from ..runtime import get_storage
from ..user_adoption_state import SessionSnapshot, UserAdoptionState

PAGE = 200


class NothingToRebuild(LookupError):
    """The state is readable (or there is none): there is nothing to rebuild."""


@dataclass
class RebuildPlan:
    """What a rebuild would write, from what was read at ``raw_sha``."""

    product_id: str
    user_id: str
    raw: str
    reason: str
    state: UserAdoptionState
    replayed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # unreadable snapshots, by session id: why
    summary_from: str = ""

    @property
    def raw_sha(self) -> str:
        """A fingerprint of the unreadable text the plan was made from (the console's form carries it)."""
        return hashlib.sha256(self.raw.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class RebuildOutcome:
    written: bool
    quarantine: QuarantinedState
    plan: RebuildPlan


async def unreadable_state(product_id: str, user_id: str) -> tuple[str, str]:
    """(raw text, why it cannot be read); ``NothingToRebuild`` when it can be read or nothing is stored."""
    reading = await selectors.read_state(product_id, user_id)
    if not reading.unreadable:
        raise NothingToRebuild(
            f"the state of {user_id!r} in {product_id!r} is {'readable' if reading.found else 'not stored'}"
        )
    return reading.unreadable["raw"], reading.unreadable["reason"]


async def _sessions_oldest_first(product_id: str, user_id: str) -> AsyncIterator[str]:
    cursor = None
    while True:
        page = await get_storage().browser.list_sessions(
            product_id, user_id, cursor=cursor, limit=PAGE, newest_first=False
        )
        for row in page.items:
            yield row.session_id
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _salvaged(raw: str) -> dict[str, Any]:
    """What of the unreadable text is still a JSON object (a newer writer's ``_v``), else nothing."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


async def _latest_summary(product_id: str, user_id: str, salvaged: dict[str, Any]) -> tuple[str | None, str]:
    run = (
        await SummaryRun.objects.filter(product_id=product_id, user_id=user_id)
        .exclude(applied_at=None)
        .exclude(new_summary=None)
        .order_by("-applied_at", "-id")
        .afirst()
    )
    if run is not None:
        return run.new_summary, f"the latest recorded summary (run {run.pk}, {run.get_source_display().lower()})"
    onboarding = salvaged.get("onboarding")
    text = onboarding.get("summary") if isinstance(onboarding, dict) else None
    if isinstance(text, str) and text.strip():
        return text, "the summary in the unreadable document"
    return None, ""


async def plan_rebuild(product_id: str, user_id: str, *, progress: Callable[[str], None] | None = None) -> RebuildPlan:
    """Replay every readable frozen snapshot, oldest first, into a fresh state; nothing is written."""
    raw, reason = await unreadable_state(product_id, user_id)
    salvaged = _salvaged(raw)
    metadata = salvaged.get("metadata")
    state = init_user_state(user_id, metadata=metadata if isinstance(metadata, dict) else None)
    plan = RebuildPlan(product_id, user_id, raw, reason, state)
    snapshots: list[SessionSnapshot] = []
    async for session_id in _sessions_oldest_first(product_id, user_id):
        try:
            snapshot = await selectors.get_snapshot(product_id, user_id, session_id)
        except (CorruptDocumentError, TypeError) as exc:
            plan.skipped[session_id] = str(exc)
            snapshot = None
        if snapshot is not None:
            snapshots.append(snapshot)
        if progress is not None:
            progress(session_id)
    snapshots.sort(key=lambda s: (s.captured_at, s.session_number))
    if snapshots:
        state.first_seen_at = min(state.first_seen_at, snapshots[0].started_at)
    for snapshot in snapshots:
        if apply_session_end(state, snapshot, None, now=snapshot.captured_at, frozen_before=False):
            plan.replayed.append(snapshot.session_id)
    text, plan.summary_from = await _latest_summary(product_id, user_id, salvaged)
    if text is not None:
        state.onboarding.summary = text
    state.touch()
    return plan


def _actor_name(actor: Any) -> str:
    return actor.get_username() if getattr(actor, "is_authenticated", False) else str(actor or "")


async def rebuild(plan: RebuildPlan, *, actor: Any) -> RebuildOutcome:
    """Quarantine the unreadable text, then write the plan's state if the stored text is still that text."""
    quarantine = await QuarantinedState.objects.acreate(
        product_id=plan.product_id,
        user_id=plan.user_id,
        raw=plan.raw,
        reason=plan.reason,
        outcome=QuarantinedState.Outcome.SUPERSEDED,  # until the write below says otherwise
        sessions_replayed=len(plan.replayed),
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        actor_name=_actor_name(actor)[:150],
        at=timezone.now(),
    )
    written = await get_storage().replace_state_if_raw(plan.product_id, plan.user_id, plan.raw, plan.state.to_dict())
    if written:
        quarantine.outcome = QuarantinedState.Outcome.REBUILT
        await quarantine.asave(update_fields=["outcome"])
    return RebuildOutcome(written, quarantine, plan)


async def quarantined(product_id: str, user_id: str) -> list[QuarantinedState]:
    rows = QuarantinedState.objects.filter(product_id=product_id, user_id=user_id).select_related("actor")
    return [q async for q in rows.order_by("-at", "-id")[:20]]


async def quarantined_text(product_id: str, user_id: str, pk: int) -> QuarantinedState | None:
    return await QuarantinedState.objects.filter(product_id=product_id, user_id=user_id, pk=pk).afirst()


async def unreadable_users(product_id: str | None = None) -> AsyncIterator[tuple[str, str]]:
    """(product, user) of every listed user whose state cannot be read, for ``--all-unreadable``."""
    products = [product_id] if product_id else [p.product_id for p in await selectors.list_products()]
    for pid in products:
        cursor = None
        while True:
            page = await selectors.list_users(pid, UserQuery(), cursor=cursor, limit=PAGE)
            for row in page.items:
                if row.corrupt:
                    yield pid, row.user_id
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
