"""Request and response shapes. State and snapshot are the spec's wire documents.

Responses carry ``UserAdoptionState.to_dict()`` / ``SessionSnapshot.to_dict()``
as they are, so a client of the published SDK can ``from_dict`` them; the
models here describe those documents for the OpenAPI schema and validate what
agents send. Unknown top-level fields are allowed (the engine keeps them), and
fields an agent leaves out take the engine's defaults.

The document models are written out, with the API's own limits and
descriptions; ``tests/test_schemas.py`` checks them against the documents'
field declarations, so a field added to a document without its schema here
(or one here that no document writes) fails that test.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from autoplay_storage import state_ops
from autoplay_storage.user_adoption_state import (
    CompletionRateDenominator,
    JourneyState,
    MasteryLevel,
    UserAdoptionState,
    WorkflowStatus,
)

Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Timestamp = Annotated[float, Field(description="unix seconds")]
# Counts and ordinals fit the database adapter's integer columns.
INT32_MAX = 2**31 - 1
Count = Annotated[int, Field(ge=0, le=INT32_MAX)]
Text = Annotated[str, Field(max_length=10_000)]
WorkflowId = Annotated[str, Field(min_length=1, max_length=200)]


class Doc(BaseModel):
    """Finite numbers only; unknown nested fields are dropped by the engine, so they are refused."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")


class OpenDoc(Doc):
    """A top-level document: unknown fields are kept and written back."""

    model_config = ConfigDict(allow_inf_nan=False, extra="allow")


# --- wire documents -----------------------------------------------------------


class MasteryDoc(Doc):
    rating: int = Field(0, ge=0, le=10)
    level: MasteryLevel = MasteryLevel.NOVICE
    description: Text = ""


class StepProgressDoc(Doc):
    step_id: str = ""
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    confidence: Unit = 0.0
    evidence: Text = ""
    completed_at: Timestamp | None = None
    last_evaluated_at: Timestamp | None = None


class WorkflowProgressDoc(Doc):
    workflow_id: str = ""
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    confidence: Unit = 0.0
    evidence: Text = ""
    source: str = Field("unknown", description="tour, activity, judge, followup, manual, unknown (free text)")
    first_detected_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    last_evaluated_at: Timestamp | None = None
    steps: dict[str, StepProgressDoc] = Field(default_factory=dict)


class StepInDoc(Doc):
    decided_at: Timestamp | None = None
    should_step_in: bool = False
    timing_assessment: Text = ""
    reason: Text = ""
    suggested_workflow_ids: list[str] = Field(default_factory=list)


class OnboardingDoc(Doc):
    welcomed: bool = False
    exploration_started_at: Timestamp | None = None
    distinct_features_seen: Count = 0
    explore_gate_passed: bool = False
    workflow_progress: dict[str, WorkflowProgressDoc] = Field(default_factory=dict)
    last_step_in: StepInDoc | None = None
    last_reasoned_at: Timestamp | None = None
    last_welcome_at: Timestamp | None = None
    proactive_support_count: Count = 0
    onboarding_completed_at: Timestamp | None = None
    summary: str | None = None
    completion_rate: Unit = 0.0


class SessionIndexEntryDoc(Doc):
    session_id: str = Field(min_length=1)
    session_number: int = Field(ge=1, le=INT32_MAX)
    started_at: Timestamp
    captured_at: Timestamp


class SessionsDoc(Doc):
    count: Count = 0
    current_session_id: str | None = None
    index: list[SessionIndexEntryDoc] = Field(default_factory=list, max_length=50)


class UserStateDoc(OpenDoc):
    """``UserAdoptionState`` (wire, ``_v`` 1)."""

    v: Literal[1] = Field(1, alias="_v")
    user_id: str = Field("", description="filled in from the path when empty; must match it otherwise")
    metadata: dict[str, Any] = Field(default_factory=dict, description="free-form; `role` is the conventional key")
    journey_state: JourneyState = JourneyState.ONBOARDING
    mastery: MasteryDoc = Field(default_factory=MasteryDoc)
    discovered_features: list[str] = Field(default_factory=list)
    onboarding: OnboardingDoc = Field(default_factory=OnboardingDoc)
    first_seen_at: Timestamp | None = None
    last_updated_at: Timestamp | None = None
    last_judged_at: Timestamp | None = None
    sessions: SessionsDoc = Field(default_factory=SessionsDoc)

    def wire(self) -> dict[str, Any]:
        """The document as sent (what was left out is left out: the engine fills defaults)."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


class SnapshotDoc(OpenDoc):
    """``SessionSnapshot`` (wire, frozen)."""

    v: int = Field(1, ge=1, alias="_v")
    frozen: bool = Field(True, alias="_frozen")
    session_id: str = Field(min_length=1, description="must be the session id of the path")
    user_id: str = ""
    session_number: int = Field(1, ge=1, le=INT32_MAX, description="when left out: the stored session count + 1")
    started_at: Timestamp
    captured_at: Timestamp
    duration_s: float = Field(0.0, ge=0.0)
    journey_state: JourneyState = JourneyState.ONBOARDING
    mastery: MasteryDoc = Field(default_factory=MasteryDoc)
    proactive_support_count: Count = 0
    distinct_features_seen: Count = 0
    discovered_features: list[str] = Field(default_factory=list)
    reached_onboarding_complete: bool = False
    completion_rate: Unit = 0.0
    completion_rate_denominator: CompletionRateDenominator = CompletionRateDenominator.ALL_CATALOG_WORKFLOWS
    total_catalog_workflows: Count = 0
    completed_workflow_ids: list[str] = Field(default_factory=list)
    in_progress_workflow_ids: list[str] = Field(default_factory=list)
    untouched_workflow_ids: list[str] = Field(default_factory=list)
    workflow_progress: dict[str, WorkflowProgressDoc] = Field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


class AgentContext(OpenDoc):
    """``build_agent_context``: what the agent puts in its trigger context."""

    user_journey_state: JourneyState
    user_mastery_level: MasteryLevel
    user_mastery_rating: int = Field(ge=0, le=10)
    session_count: Count
    is_returning_user: bool
    onboarding_summary: str | None = Field(None, description="only when a summary exists")
    onboarding_session_in_progress_workflows: list[str] | None = Field(None, description="returning users only")
    onboarding_session_untouched_workflows: list[str] | None = Field(None, description="returning users only")


# --- requests -------------------------------------------------------------------


class SessionStartIn(Doc):
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="merged into the state's metadata bag; a null value removes a key"
    )


class SessionEndIn(Doc):
    """Either ``snapshot``, or ``state`` + ``catalog_workflow_ids`` + ``started_at`` (the server freezes it)."""

    snapshot: SnapshotDoc | None = None
    state: UserStateDoc | None = None
    catalog_workflow_ids: list[WorkflowId] | None = Field(None, max_length=1000)
    started_at: Timestamp | None = None
    completion_rate_denominator: CompletionRateDenominator = CompletionRateDenominator.ALL_CATALOG_WORKFLOWS
    summary: str | None = Field(None, max_length=20_000, description="an explicit summary; wins over summarize")
    summarize: bool = Field(False, description="run the configured summarizer (recorded)")

    @model_validator(mode="after")
    def _one_form(self) -> SessionEndIn:
        if (self.snapshot is None) == (self.state is None):
            raise ValueError("send either 'snapshot' or 'state' (with 'catalog_workflow_ids' and 'started_at')")
        if self.state is not None and (self.catalog_workflow_ids is None or self.started_at is None):
            raise ValueError("with 'state', also send 'catalog_workflow_ids' and 'started_at'")
        return self


# PATCH operations: each maps onto one UserAdoptionState helper.


class WorkflowProgressOp(Doc):
    op: Literal["workflow_progress"]
    workflow_id: WorkflowId
    status: WorkflowStatus | None = None
    confidence: Unit | None = None
    evidence: Text | None = None
    source: Annotated[str, Field(max_length=64)] | None = None

    def apply(self, state: UserAdoptionState) -> None:
        state_ops.workflow_progress(
            self.workflow_id, status=self.status, confidence=self.confidence, evidence=self.evidence, source=self.source
        )(state)


class StepProgressOp(Doc):
    op: Literal["step_progress"]
    workflow_id: WorkflowId
    step_id: WorkflowId
    status: WorkflowStatus | None = None
    confidence: Unit | None = None
    evidence: Text | None = None

    def apply(self, state: UserAdoptionState) -> None:
        state_ops.step_progress(
            self.workflow_id, self.step_id, status=self.status, confidence=self.confidence, evidence=self.evidence
        )(state)


class MasteryOp(Doc):
    op: Literal["mastery"]
    rating: int = Field(ge=0, le=10)
    level: MasteryLevel | None = None
    description: Text | None = None

    def apply(self, state: UserAdoptionState) -> None:
        state_ops.mastery(self.rating, self.level, self.description)(state)


class JourneyOp(Doc):
    op: Literal["journey"]
    journey_state: JourneyState

    def apply(self, state: UserAdoptionState) -> None:
        state_ops.journey(self.journey_state)(state)


class DiscoveredFeaturesOp(Doc):
    op: Literal["discovered_features"]
    features: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=500)
    remove: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, max_length=500, description="features to remove (a correction), after adding"
    )

    def apply(self, state: UserAdoptionState) -> None:
        state_ops.discovered_features(self.features, self.remove)(state)


class MetadataOp(Doc):
    op: Literal["metadata"]
    values: dict[str, Any] = Field(description="shallow merge; a null value removes the key")

    def apply(self, state: UserAdoptionState) -> None:
        state_ops.metadata(self.values)(state)


class StepInOp(Doc):
    op: Literal["step_in"]
    should_step_in: bool
    timing_assessment: Text = ""
    reason: Text = ""
    suggested_workflow_ids: list[WorkflowId] = Field(default_factory=list, max_length=200)

    def apply(self, state: UserAdoptionState) -> None:
        state_ops.step_in(
            should_step_in=self.should_step_in,
            timing_assessment=self.timing_assessment,
            reason=self.reason,
            suggested_workflow_ids=self.suggested_workflow_ids,
        )(state)


class OnboardingCompleteOp(Doc):
    op: Literal["onboarding_complete"]

    def apply(self, state: UserAdoptionState) -> None:
        state_ops.onboarding_complete()(state)


PatchOp = Annotated[
    WorkflowProgressOp
    | StepProgressOp
    | MasteryOp
    | JourneyOp
    | DiscoveredFeaturesOp
    | MetadataOp
    | StepInOp
    | OnboardingCompleteOp,
    Field(discriminator="op"),
]


class StatePatchIn(Doc):
    """Small mid-session updates, applied in order and atomically (all or none)."""

    ops: list[PatchOp] = Field(min_length=1, max_length=100)


# --- responses ------------------------------------------------------------------


class Error(Doc):
    code: str = Field(description="stable, machine-readable")
    message: str = Field(description="for humans")
    details: Any = None


class StateOut(Doc):
    state: UserStateDoc
    etag: str = Field(description="the state's version; send it back as If-Match to replace it")


class SessionStartOut(StateOut):
    onboarding_session: SnapshotDoc | None = Field(description="session 1, for returning users")
    context: AgentContext


class SnapshotOut(Doc):
    snapshot: SnapshotDoc


class ContextOut(Doc):
    context: AgentContext


class SessionRow(Doc):
    session_id: str
    session_number: int = Field(ge=0, description="0 only for an unreadable snapshot")
    started_at: Timestamp
    captured_at: Timestamp
    duration_s: float = Field(ge=0.0)
    journey_state: JourneyState
    mastery_level: MasteryLevel
    mastery_rating: int = Field(ge=0, le=10)
    completion_rate: Unit
    reached_onboarding_complete: bool
    corrupt: bool = Field(description="the snapshot is stored but could not be read")


class SessionPage(Doc):
    items: list[SessionRow]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")
