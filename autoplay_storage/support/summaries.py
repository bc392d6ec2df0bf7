"""Summaries under review: a re-run shows a preview first; staff write, accept or restore with the etag.

Every text that becomes a user's summary is a ``SummaryRun`` with
``applied_at`` (session ends, explicit summaries, accepted previews, texts
written by hand, restores), so the history of a user's summaries is those
rows, newest first, each saying where it came from. Writes go through
``services.patch_state`` with the etag the reviewer saw: when the agent
wrote meanwhile, the write is a ``ConflictError`` and nothing changes.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from .. import selectors, services
from ..models import SummaryRun
from ..state_ops import summary as summary_edit
from ..summary_runs import NoSnapshotError, latest_session_id, run_summarizer

MAX_SUMMARY_CHARS = 20_000


class SummaryReviewError(ValueError):
    """What the reviewer asked for cannot be done (no such preview or version, an empty text)."""


@dataclass(frozen=True)
class Preview:
    run: SummaryRun
    current: str | None
    etag: str

    @property
    def new(self) -> str:
        return self.run.new_summary or ""


def _who(actor: Any) -> tuple[Any, str]:
    """(the console user or ``None``, a label for anyone else such as an API key)."""
    if getattr(actor, "is_authenticated", False):
        return actor, ""
    return None, str(actor or "")


async def preview_summary(product_id: str, user_id: str, session_id: str | None = None, *, actor: Any) -> Preview:
    """Run the summarizer on a snapshot (the latest by default) and record the run; store nothing.

    Raises ``NoSnapshotError``, ``SummaryFailed`` (recorded) and the state's read errors.
    """
    versioned = await selectors.get_state(product_id, user_id)
    session_id = session_id or await latest_session_id(product_id, user_id)
    if session_id is None:
        raise NoSnapshotError(f"{product_id}/{user_id} has no finished session to summarize")
    snapshot = await selectors.get_snapshot(product_id, user_id, session_id)
    if snapshot is None:
        raise NoSnapshotError(f"no snapshot {session_id} for {product_id}/{user_id}")
    user, label = _who(actor)
    result = await run_summarizer(
        snapshot,
        product_id=product_id,
        user_id=user_id,
        source=SummaryRun.Source.PREVIEW,
        actor=user,
        previous_summary=versioned.state.onboarding.summary,
    )
    if label:
        result.run.actor_label = label[:200]
        await result.run.asave(update_fields=["actor_label"])
    return Preview(result.run, versioned.state.onboarding.summary, versioned.etag)


async def summary_run(product_id: str, user_id: str, pk: int) -> SummaryRun:
    try:
        return await SummaryRun.objects.select_related("actor").aget(pk=pk, product_id=product_id, user_id=user_id)
    except SummaryRun.DoesNotExist as exc:
        raise SummaryReviewError(f"there is no summary run {pk} for this user") from exc


async def write_summary(
    product_id: str,
    user_id: str,
    *,
    if_match: str,
    actor: Any,
    text: str | None = None,
    preview_id: int | None = None,
    restore_id: int | None = None,
) -> tuple[services.VersionedState, SummaryRun]:
    """Store one of: a text written by hand, an accepted preview, or an earlier version; recorded.

    Exactly one of ``text``, ``preview_id``, ``restore_id``. Raises
    ``SummaryReviewError`` for a bad request and ``ConflictError`` when the
    state is no longer at ``if_match`` (nothing written, nothing recorded).
    """
    if sum(x is not None for x in (text, preview_id, restore_id)) != 1:
        raise SummaryReviewError("send exactly one of text, preview_id or restore_id")
    user, label = _who(actor)
    now = timezone.now()
    run: SummaryRun | None = None
    restored: SummaryRun | None = None
    if preview_id is not None:
        run = await summary_run(product_id, user_id, preview_id)
        if run.source != SummaryRun.Source.PREVIEW or not run.new_summary:
            raise SummaryReviewError(f"summary run {preview_id} is not a preview with a text")
        if run.applied_at is not None:
            raise SummaryReviewError(f"preview {preview_id} was accepted already")
        new_text = run.new_summary
    elif restore_id is not None:
        restored = await summary_run(product_id, user_id, restore_id)
        if restored.applied_at is None or not restored.new_summary:
            raise SummaryReviewError(f"summary run {restore_id} never was this user's summary")
        new_text = restored.new_summary
    else:
        new_text = (text or "").strip()
        if not new_text:
            raise SummaryReviewError("the summary text is empty")
        if len(new_text) > MAX_SUMMARY_CHARS:
            raise SummaryReviewError(f"the summary is longer than {MAX_SUMMARY_CHARS} characters")
    previous: list[str | None] = []

    def remember(state: Any) -> None:
        previous[:] = [state.onboarding.summary]

    versioned = await services.patch_state(product_id, user_id, [remember, summary_edit(new_text)], if_match=if_match)
    if run is not None:
        run.applied_at, run.applied_by = now, user
        await run.asave(update_fields=["applied_at", "applied_by"])
        return versioned, run
    source = SummaryRun.Source.RESTORED if restored is not None else SummaryRun.Source.MANUAL
    record = await SummaryRun.objects.acreate(
        product_id=product_id,
        user_id=user_id,
        session_id=restored.session_id if restored is not None else "",
        source=source,
        summarizer=f"restored from version {restored.pk}" if restored is not None else "written by hand",
        actor=user,
        actor_label=label[:200],
        started_at=now,
        duration_ms=0,
        outcome=SummaryRun.Outcome.SUCCEEDED,
        previous_summary=previous[0] if previous else None,
        new_summary=new_text,
        applied_at=now,
        applied_by=user,
        restored_from=restored,
    )
    return versioned, record


@dataclass(frozen=True)
class Version:
    """One text the user's summary held: the run that wrote it (``None``: another writer's text)."""

    text: str
    run: SummaryRun | None
    current: bool


async def summary_history(product_id: str, user_id: str, current: str | None, *, limit: int = 50) -> list[Version]:
    """Every summary text the user had, newest first; the current one first when no run wrote it."""
    runs = (
        SummaryRun.objects.filter(product_id=product_id, user_id=user_id)
        .exclude(applied_at=None)
        .exclude(new_summary=None)
        .select_related("actor", "applied_by", "restored_from")
        .order_by("-applied_at", "-id")
    )
    versions = [Version(r.new_summary or "", r, False) async for r in runs[:limit]]
    if versions and current is not None and versions[0].text == current:
        versions[0] = Version(versions[0].text, versions[0].run, True)
    elif current:
        versions.insert(0, Version(current, None, True))
    return versions


_WORDS = re.compile(r"\s+|[^\s]+")


def text_diff(old: str, new: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Word-level differences for a side-by-side view: (old parts, new parts), each ``(kind, text)``.

    ``kind`` is ``same``, ``del`` (only in the old text) or ``ins`` (only in the new one).
    """
    a, b = _WORDS.findall(old or ""), _WORDS.findall(new or "")
    left: list[tuple[str, str]] = []
    right: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            left.append(("same", "".join(a[i1:i2])))
            right.append(("same", "".join(b[j1:j2])))
            continue
        if i2 > i1:
            left.append(("del", "".join(a[i1:i2])))
        if j2 > j1:
            right.append(("ins", "".join(b[j1:j2])))
    return left, right
