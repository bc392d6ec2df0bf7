"""The enums and the nested documents of the user state and the snapshot (spec section 2).

Each field is declared once, with its reading rule (``fields``); the wire
methods are generated from the declarations.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from .fields import (
    by_id,
    choice,
    document,
    entries,
    flag,
    ident,
    integer,
    nested,
    opt_text,
    opt_timestamp,
    strings,
    text,
    timestamp,
    unit,
)
from .readers import _stamp, _unit

SCHEMA_VERSION = 1
SESSIONS_INDEX_LIMIT = 50


class JourneyState(StrEnum):
    ONBOARDING = "onboarding"
    ONBOARDED = "onboarded"


class MasteryLevel(StrEnum):
    NOVICE = "novice"
    BEGINNER = "beginner"
    INTERMEDIATE = "intermediate"
    PROFICIENT = "proficient"
    POWER_USER = "power_user"


class WorkflowStatus(StrEnum):
    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class CompletionRateDenominator(StrEnum):
    ALL_CATALOG_WORKFLOWS = "all_catalog_workflows"
    ASSIGNED_WORKFLOWS = "assigned_workflows"


@document()
class Mastery:
    rating: int = integer(0, 10)
    level: MasteryLevel = choice(MasteryLevel.NOVICE)
    description: str = text()


@document()
class StepProgress:
    step_id: str = ident()
    status: WorkflowStatus = choice(WorkflowStatus.NOT_STARTED)
    confidence: float = unit()
    evidence: str = text()
    completed_at: float | None = opt_timestamp()
    last_evaluated_at: float = timestamp()


@document()
class WorkflowProgress:
    workflow_id: str = ident()
    status: WorkflowStatus = choice(WorkflowStatus.NOT_STARTED)
    confidence: float = unit()
    evidence: str = text()
    source: str = text("unknown", nonblank=True)  # conventional: tour, activity, judge, followup, manual, unknown
    first_detected_at: float | None = opt_timestamp()
    completed_at: float | None = opt_timestamp()  # stamped once, the first time the status is completed
    last_evaluated_at: float = timestamp()
    steps: dict[str, StepProgress] = by_id(StepProgress)

    # -- the SDK's API (autoplay_sdk 0.13), same signatures and effects --

    @property
    def completed_step_ids(self) -> list[str]:
        return [sid for sid, step in self.steps.items() if step.status == WorkflowStatus.COMPLETED]

    def upsert_step_progress(
        self,
        step_id: str,
        *,
        status: WorkflowStatus | str,
        confidence: float,
        evidence: str = "",
        now: float | None = None,
    ) -> StepProgress:
        """Create or update one step's belief; ``completed_at`` is stamped the first time it completes.

        As in the SDK, the workflow's own ``last_evaluated_at`` is left alone
        and an empty ``evidence`` keeps the old one.
        """
        now = _stamp(now)
        step = self.steps.get(step_id)
        if step is None:
            step = StepProgress(step_id=step_id, last_evaluated_at=now)
            self.steps[step_id] = step
        step.status = WorkflowStatus(status)
        step.confidence = _confidence(confidence)
        if evidence:
            step.evidence = evidence
        step.last_evaluated_at = now
        if step.status is WorkflowStatus.COMPLETED and step.completed_at is None:
            step.completed_at = now
        return step


def _confidence(value: float) -> float:
    """A caller's confidence clamped to 0..1: numeric strings parse as in the SDK, NaN is 0 (not 1)."""
    return _unit(float(value))


@document(optional=True)
class StepInAssessment:
    """The agent's last "should I step in?" decision."""

    decided_at: float = timestamp()
    should_step_in: bool = flag()
    timing_assessment: str = text()
    reason: str = text()
    suggested_workflow_ids: list[str] = strings()


@document()
class OnboardingState:
    welcomed: bool = flag()
    exploration_started_at: float = timestamp()
    distinct_features_seen: int = integer()
    explore_gate_passed: bool = flag()
    workflow_progress: dict[str, WorkflowProgress] = by_id(WorkflowProgress)
    last_step_in: StepInAssessment | None = nested(StepInAssessment, optional=True)
    last_reasoned_at: float | None = opt_timestamp()
    last_welcome_at: float | None = opt_timestamp()
    proactive_support_count: int = integer()
    onboarding_completed_at: float | None = opt_timestamp()  # once set, never cleared
    summary: str | None = opt_text()  # the cross-session brief
    completion_rate: float = unit()  # a copy of the last snapshot's rate

    # -- the SDK's API (autoplay_sdk 0.13), same signatures and effects --

    @property
    def completed_workflow_ids(self) -> list[str]:
        return [wid for wid, wp in self.workflow_progress.items() if wp.status == WorkflowStatus.COMPLETED]

    @property
    def in_progress_workflow_ids(self) -> list[str]:
        return [wid for wid, wp in self.workflow_progress.items() if wp.status == WorkflowStatus.IN_PROGRESS]

    def outstanding_workflow_ids(self, plan_workflow_ids: Iterable[str]) -> list[str]:
        """The plan's ids not completed yet, in plan order."""
        completed = set(self.completed_workflow_ids)
        return [wid for wid in plan_workflow_ids if wid not in completed]

    @property
    def is_onboarding_complete(self) -> bool:
        return self.onboarding_completed_at is not None

    def upsert_workflow_progress(
        self,
        workflow_id: str,
        *,
        status: WorkflowStatus | str,
        confidence: float,
        evidence: str = "",
        source: str | None = None,
        now: float | None = None,
    ) -> WorkflowProgress:
        """Create or update one workflow's belief, as the SDK does.

        A new entry is first detected now; ``completed_at`` is stamped the
        first time it completes; ``source=None`` (or blank) keeps the old
        source and an empty ``evidence`` keeps the old evidence.
        """
        now = _stamp(now)
        given_source = source if source and source.strip() else None
        wp = self.workflow_progress.get(workflow_id)
        if wp is None:
            wp = WorkflowProgress(
                workflow_id=workflow_id,
                first_detected_at=now,
                last_evaluated_at=now,
                source=given_source or "unknown",
            )
            self.workflow_progress[workflow_id] = wp
        wp.status = WorkflowStatus(status)
        wp.confidence = _confidence(confidence)
        if evidence:
            wp.evidence = evidence
        if given_source:
            wp.source = given_source
        wp.last_evaluated_at = now
        if wp.status is WorkflowStatus.COMPLETED and wp.completed_at is None:
            wp.completed_at = now
        return wp

    def record_step_in(self, assessment: StepInAssessment) -> None:
        """Keep the agent's latest step-in decision; it was reasoned at its ``decided_at``."""
        self.last_step_in = assessment
        self.last_reasoned_at = assessment.decided_at

    def mark_onboarding_complete(self, *, now: float | None = None) -> bool:
        """Stamp completion once; later calls change nothing. Returns whether it stamped."""
        if self.onboarding_completed_at is not None:
            return False
        self.onboarding_completed_at = _stamp(now)
        return True


@document(frozen=True, optional=True)
class SessionIndexEntry:
    """One finished session in the state's index: facts that never change, so copies share it.

    An entry without a usable session id is dropped: it points nowhere.
    """

    session_id: str = ident(drops_document=True)
    session_number: int = integer(1, no_default=True)
    started_at: float = timestamp(fallback="captured_at", no_default=True)
    captured_at: float = timestamp(no_default=True)


@document()
class SessionsState:
    # The lifetime total: never below what the index proves.
    count: int = integer(at_least_len_of="index")
    current_session_id: str | None = opt_text(blank_is_none=True)
    # The newest entries; a retried end under the SDK listed a session several times: the first is kept.
    index: list[SessionIndexEntry] = entries(SessionIndexEntry, unique="session_id", keep=SESSIONS_INDEX_LIMIT)
