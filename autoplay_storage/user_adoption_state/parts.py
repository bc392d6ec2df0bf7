"""The enums and the nested documents of the user state and the snapshot (spec section 2).

Each field is declared once, with its reading rule (``fields``); the wire
methods are generated from the declarations.
"""

from __future__ import annotations

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
