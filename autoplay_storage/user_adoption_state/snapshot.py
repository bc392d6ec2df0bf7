"""The session snapshot: one frozen, write-once record of a finished session (spec section 3).

Its fields are declared once, with their reading rules (``fields``). A
snapshot is history, so it is read leniently: a bad field degrades and the
rest stays.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .fields import (
    by_id,
    choice,
    document,
    duration,
    extras,
    flag,
    ident,
    integer,
    nested,
    schema_version,
    strings,
    timestamp,
    unit,
)
from .parts import (
    SCHEMA_VERSION,
    CompletionRateDenominator,
    JourneyState,
    Mastery,
    WorkflowProgress,
    WorkflowStatus,
)
from .readers import _stamp, _str_list
from .state import UserAdoptionState


@document(top_level="a session snapshot document", constants={"_frozen": True})
class SessionSnapshot:
    """One frozen, write-once record of a finished session.

    ``from_dict(data, *, session_id="", user_id="")`` reads one; the ids fill
    in missing ones (the key knows them).
    """

    session_id: str = ident()
    user_id: str = ident()
    session_number: int = integer(1, no_default=True)  # 1-based ordinal of the session for this user
    started_at: float = timestamp(fallback="captured_at", no_default=True)
    captured_at: float = timestamp(no_default=True)
    duration_s: float = duration("started_at", "captured_at")
    journey_state: JourneyState = choice(JourneyState.ONBOARDING)
    mastery: Mastery = nested(Mastery)
    proactive_support_count: int = integer()
    distinct_features_seen: int = integer()
    discovered_features: list[str] = strings()
    reached_onboarding_complete: bool = flag()
    completion_rate: float = unit()  # completed / denominator, 4 decimals
    completion_rate_denominator: CompletionRateDenominator = choice(CompletionRateDenominator.ALL_CATALOG_WORKFLOWS)
    total_catalog_workflows: int = integer()
    completed_workflow_ids: list[str] = strings()
    in_progress_workflow_ids: list[str] = strings()
    untouched_workflow_ids: list[str] = strings()  # catalog ids with no progress entry, in catalog order
    workflow_progress: dict[str, WorkflowProgress] = by_id(WorkflowProgress)  # a deep copy at capture
    version: Any = schema_version(SCHEMA_VERSION)  # ``_v``, written first
    extra: dict[str, Any] = extras()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_adoption_state(
        cls,
        state: UserAdoptionState,
        *,
        session_id: str,
        session_number: int,
        started_at: float,
        catalog_workflow_ids: Iterable[str],
        completion_rate_denominator: CompletionRateDenominator | str = CompletionRateDenominator.ALL_CATALOG_WORKFLOWS,
        now: float | None = None,
    ) -> SessionSnapshot:
        """Freeze a live state at the end of a session, so callers write no mapping code.

        ``assigned_workflows`` divides by the workflows tracked for this user
        (those with a progress entry); ``all_catalog_workflows`` by the catalog.
        A non-finite ``started_at`` or ``now`` raises ``ValueError``: it could
        not be written as JSON.
        """
        captured = _stamp(now)
        started = _stamp(started_at)
        denominator_kind = CompletionRateDenominator(completion_rate_denominator)
        catalog = _str_list(list(catalog_workflow_ids))
        progress = {wid: wp.clone() for wid, wp in state.onboarding.workflow_progress.items()}
        completed = [wid for wid, wp in progress.items() if wp.status is WorkflowStatus.COMPLETED]
        in_progress = [wid for wid, wp in progress.items() if wp.status is WorkflowStatus.IN_PROGRESS]
        untouched = [wid for wid in catalog if wid not in progress]
        if denominator_kind is CompletionRateDenominator.ALL_CATALOG_WORKFLOWS:
            denominator = len(catalog)
            done = len([wid for wid in completed if wid in catalog])
        else:
            denominator = len(progress)
            done = len(completed)
        rate = round(min(1.0, done / denominator), 4) if denominator else 0.0
        return cls(
            session_id=session_id,
            user_id=state.user_id,
            session_number=max(1, int(session_number)),
            started_at=started,
            captured_at=captured,
            duration_s=round(max(0.0, captured - started), 2),
            journey_state=state.journey_state,
            mastery=state.mastery.clone(),
            proactive_support_count=state.onboarding.proactive_support_count,
            distinct_features_seen=state.onboarding.distinct_features_seen,
            discovered_features=list(state.discovered_features),
            reached_onboarding_complete=state.is_onboarded or state.journey_state is JourneyState.ONBOARDED,
            completion_rate=rate,
            completion_rate_denominator=denominator_kind,
            total_catalog_workflows=len(catalog),
            completed_workflow_ids=completed,
            in_progress_workflow_ids=in_progress,
            untouched_workflow_ids=untouched,
            workflow_progress=progress,
        )


def build_onboarding_summary_input(snapshot: SessionSnapshot) -> dict[str, Any]:
    """The exact placeholders of ``ONBOARDING_SUMMARY_PROMPT["content"]``."""
    return {
        "session_number": snapshot.session_number,
        "duration_minutes": round(snapshot.duration_s / 60.0, 1),
        "journey_state": snapshot.journey_state.value,
        "mastery_level": snapshot.mastery.level.value,
        "mastery_rating": snapshot.mastery.rating,
        "reached_onboarding_complete": snapshot.reached_onboarding_complete,
        "completion_rate": snapshot.completion_rate,
        "completed_workflow_ids_json": json.dumps(snapshot.completed_workflow_ids),
        "in_progress_workflow_ids_json": json.dumps(snapshot.in_progress_workflow_ids),
        "untouched_workflow_ids_json": json.dumps(snapshot.untouched_workflow_ids),
        "discovered_features_json": json.dumps(snapshot.discovered_features),
    }
