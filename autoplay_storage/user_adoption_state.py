"""Documents: the mutable user adoption state and the frozen session snapshot.

Pure Python, no I/O, no Django. ``to_dict`` writes the wire format of the
published ``autoplay_sdk`` 0.13; ``from_dict`` reads it defensively (spec
section 4): stored documents may be hand-edited, truncated or written by an
older writer, and reading must neither crash nor invent history. Unknown
top-level keys are kept and written back, so a newer writer's fields survive
a round trip through this engine.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from .errors import UnsupportedVersionError

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


# --- defensive readers -------------------------------------------------------


def _now() -> float:
    return time.time()


_FLOAT_MAX = sys.float_info.max


def _is_number(value: Any) -> bool:
    """A finite int or float; not a bool, and not an int too large to be a float (JSON allows those)."""
    kind = type(value)
    if kind is float:  # the hot path: exact types first (a bool's type is bool, not int)
        return value - value == 0.0  # false for NaN and ±Infinity
    if kind is int:
        return -_FLOAT_MAX <= value <= _FLOAT_MAX
    if kind is bool or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _stamp(now: float | None) -> float:
    """A time a caller passes in: ``None`` means now; a non-finite one is refused.

    A NaN stamp cannot be written as JSON and silently breaks every cooldown
    comparison, so it fails here, at the call that made it.
    """
    if now is None:
        return _now()
    if not _is_number(now):
        raise ValueError(f"a timestamp must be a finite number of unix seconds, not {now!r}")
    return float(now)


def _ts(value: Any, default: float) -> float:
    """A required timestamp: a finite number, else ``default`` (usually now)."""
    if type(value) is float and value - value == 0.0:  # the common case, without another call
        return value
    return float(value) if _is_number(value) else default


def _opt_ts(value: Any) -> float | None:
    """An optional timestamp: a finite number, else ``None`` (NaN breaks cooldowns)."""
    if value is None:
        return None
    if type(value) is float and value - value == 0.0:
        return value
    return float(value) if _is_number(value) else None


def _unit(value: Any, default: float = 0.0) -> float:
    """A confidence or rate clamped to 0..1."""
    if type(value) is float and 0.0 <= value <= 1.0:  # false for NaN
        return value
    if not _is_number(value):
        return default
    return min(1.0, max(0.0, float(value)))


def _count(value: Any) -> int:
    """A count: integers below 0 become 0; anything else is 0."""
    if not _is_number(value):
        return 0
    return max(0, int(value))


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _bool(value: Any, default: bool = False) -> bool:
    return value if isinstance(value, bool) else default


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str_list(value: Any) -> list[str]:
    """Strings only, insertion order, no duplicates, blanks dropped."""
    out: list[str] = []
    seen: set[str] = set()
    for item in _list(value):
        if isinstance(item, str) and item.strip() and item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _enum(enum: type[Enum], value: Any, default: Enum) -> Any:
    try:
        return enum._value2member_map_[value]  # what Enum(value) looks up, minus its overhead
    except (KeyError, TypeError):  # unknown, or unhashable (a list where a string belongs)
        return default


def _json_safe(value: Any) -> Any:
    """A copy of a free-form value with NaN and ±Infinity replaced by ``None``.

    Free-form bags (metadata, unknown fields) are kept as they are, but a
    non-finite float cannot be written as JSON: it would make the whole
    document unwritable.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value  # immutable: no copy needed (the hot path)
    return copy.deepcopy(value)


def _extras(data: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    if len(data) <= len(known) and known.issuperset(data):  # the usual case: no unknown fields
        return {}
    return {k: _json_safe(v) for k, v in data.items() if k not in known}


# --- nested documents --------------------------------------------------------
# ``to_dict`` reads an enum member's ``_value_`` (a plain attribute) rather than
# ``.value`` (a descriptor call): a state and its snapshot write ~25 of them.


@dataclass(slots=True)
class Mastery:
    rating: int = 0
    level: MasteryLevel = MasteryLevel.NOVICE
    description: str = ""

    def clone(self) -> Mastery:
        """A copy (every field is immutable)."""
        return Mastery(self.rating, self.level, self.description)

    def to_dict(self) -> dict[str, Any]:
        return {"rating": self.rating, "level": self.level._value_, "description": self.description}

    @classmethod
    def from_dict(cls, data: Any) -> Mastery:
        data = _dict(data)
        rating = data.get("rating")
        rating = min(10, max(0, int(rating))) if _is_number(rating) else 0
        return cls(
            rating=rating,
            level=_enum(MasteryLevel, data.get("level"), MasteryLevel.NOVICE),
            description=_str(data.get("description")),
        )


@dataclass(slots=True)
class StepProgress:
    step_id: str
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    confidence: float = 0.0
    evidence: str = ""
    completed_at: float | None = None
    last_evaluated_at: float = field(default_factory=_now)

    def clone(self) -> StepProgress:
        """A copy (every field is immutable)."""
        return StepProgress(
            self.step_id, self.status, self.confidence, self.evidence, self.completed_at, self.last_evaluated_at
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "status": self.status._value_,
            "confidence": self.confidence,
            "evidence": self.evidence,
            "completed_at": self.completed_at,
            "last_evaluated_at": self.last_evaluated_at,
        }

    @classmethod
    def from_dict(cls, data: Any, step_id: str = "") -> StepProgress:
        data = _dict(data)
        return cls(
            step_id=_str(data.get("step_id"), step_id) or step_id,
            status=_enum(WorkflowStatus, data.get("status"), WorkflowStatus.NOT_STARTED),
            confidence=_unit(data.get("confidence")),
            evidence=_str(data.get("evidence")),
            completed_at=_opt_ts(data.get("completed_at")),
            last_evaluated_at=_ts(data.get("last_evaluated_at"), _now()),
        )


@dataclass(slots=True)
class WorkflowProgress:
    workflow_id: str
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    confidence: float = 0.0
    evidence: str = ""
    source: str = "unknown"
    first_detected_at: float | None = None
    completed_at: float | None = None
    last_evaluated_at: float = field(default_factory=_now)
    steps: dict[str, StepProgress] = field(default_factory=dict)

    def clone(self) -> WorkflowProgress:
        """A deep copy, without copy.deepcopy's generic (slow) walk."""
        return WorkflowProgress(
            self.workflow_id,
            self.status,
            self.confidence,
            self.evidence,
            self.source,
            self.first_detected_at,
            self.completed_at,
            self.last_evaluated_at,
            {sid: step.clone() for sid, step in self.steps.items()},
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "status": self.status._value_,
            "confidence": self.confidence,
            "evidence": self.evidence,
            "source": self.source,
            "first_detected_at": self.first_detected_at,
            "completed_at": self.completed_at,
            "last_evaluated_at": self.last_evaluated_at,
            "steps": {sid: step.to_dict() for sid, step in self.steps.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, workflow_id: str = "") -> WorkflowProgress:
        data = _dict(data)
        steps = data.get("steps")
        wid, status, confidence = data.get("workflow_id"), data.get("status"), data.get("confidence")
        evidence, source, last = data.get("evidence"), data.get("source"), data.get("last_evaluated_at")
        first, completed = data.get("first_detected_at"), data.get("completed_at")
        if (  # what this engine writes, with no steps: nothing to repair, so no helper calls
            type(wid) is str
            and wid
            and type(status) is str
            and status in _WORKFLOW_STATUSES
            and type(confidence) is float
            and 0.0 <= confidence <= 1.0
            and type(evidence) is str
            and type(source) is str
            and source
            and type(last) is float
            and last - last == 0.0
            and (first is None or (type(first) is float and first - first == 0.0))
            and (completed is None or (type(completed) is float and completed - completed == 0.0))
            and (steps is None or (type(steps) is dict and not steps))
        ):
            return cls(wid, _WORKFLOW_STATUSES[status], confidence, evidence, source, first, completed, last, {})
        return cls(
            workflow_id=_str(data.get("workflow_id"), workflow_id) or workflow_id,
            status=_enum(WorkflowStatus, data.get("status"), WorkflowStatus.NOT_STARTED),
            confidence=_unit(data.get("confidence")),
            evidence=_str(data.get("evidence")),
            source=_str(data.get("source"), "unknown") or "unknown",
            first_detected_at=_opt_ts(data.get("first_detected_at")),
            completed_at=_opt_ts(data.get("completed_at")),
            last_evaluated_at=_ts(data.get("last_evaluated_at"), _now()),
            steps={str(sid): StepProgress.from_dict(step, str(sid)) for sid, step in steps.items()}
            if type(steps) is dict and steps
            else {},
        )


_WORKFLOW_STATUSES: dict[str, WorkflowStatus] = {status.value: status for status in WorkflowStatus}


def _read_progress_map(value: Any) -> dict[str, WorkflowProgress]:
    return {str(wid): WorkflowProgress.from_dict(wp, str(wid)) for wid, wp in _dict(value).items()}


@dataclass(slots=True)
class StepInAssessment:
    """The agent's last "should I step in?" decision."""

    decided_at: float = field(default_factory=_now)
    should_step_in: bool = False
    timing_assessment: str = ""
    reason: str = ""
    suggested_workflow_ids: list[str] = field(default_factory=list)

    def clone(self) -> StepInAssessment:
        return StepInAssessment(
            self.decided_at, self.should_step_in, self.timing_assessment, self.reason, list(self.suggested_workflow_ids)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "decided_at": self.decided_at,
            "should_step_in": self.should_step_in,
            "timing_assessment": self.timing_assessment,
            "reason": self.reason,
            "suggested_workflow_ids": list(self.suggested_workflow_ids),
        }

    @classmethod
    def from_dict(cls, data: Any) -> StepInAssessment | None:
        if not isinstance(data, dict):
            return None
        return cls(
            decided_at=_ts(data.get("decided_at"), _now()),
            should_step_in=_bool(data.get("should_step_in")),
            timing_assessment=_str(data.get("timing_assessment")),
            reason=_str(data.get("reason")),
            suggested_workflow_ids=_str_list(data.get("suggested_workflow_ids")),
        )


@dataclass(slots=True)
class OnboardingState:
    welcomed: bool = False
    exploration_started_at: float = field(default_factory=_now)
    distinct_features_seen: int = 0
    explore_gate_passed: bool = False
    workflow_progress: dict[str, WorkflowProgress] = field(default_factory=dict)
    last_step_in: StepInAssessment | None = None
    last_reasoned_at: float | None = None
    last_welcome_at: float | None = None
    proactive_support_count: int = 0
    onboarding_completed_at: float | None = None
    summary: str | None = None
    completion_rate: float = 0.0

    def clone(self) -> OnboardingState:
        return OnboardingState(
            self.welcomed,
            self.exploration_started_at,
            self.distinct_features_seen,
            self.explore_gate_passed,
            {wid: wp.clone() for wid, wp in self.workflow_progress.items()},
            self.last_step_in.clone() if self.last_step_in is not None else None,
            self.last_reasoned_at,
            self.last_welcome_at,
            self.proactive_support_count,
            self.onboarding_completed_at,
            self.summary,
            self.completion_rate,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "welcomed": self.welcomed,
            "exploration_started_at": self.exploration_started_at,
            "distinct_features_seen": self.distinct_features_seen,
            "explore_gate_passed": self.explore_gate_passed,
            "workflow_progress": {wid: wp.to_dict() for wid, wp in self.workflow_progress.items()},
            "last_step_in": self.last_step_in.to_dict() if self.last_step_in else None,
            "last_reasoned_at": self.last_reasoned_at,
            "last_welcome_at": self.last_welcome_at,
            "proactive_support_count": self.proactive_support_count,
            "onboarding_completed_at": self.onboarding_completed_at,
            "summary": self.summary,
            "completion_rate": self.completion_rate,
        }

    @classmethod
    def from_dict(cls, data: Any, *, now: float | None = None) -> OnboardingState:
        data = _dict(data)
        now = _stamp(now)
        return cls(
            welcomed=_bool(data.get("welcomed")),
            exploration_started_at=_ts(data.get("exploration_started_at"), now),
            distinct_features_seen=_count(data.get("distinct_features_seen")),
            explore_gate_passed=_bool(data.get("explore_gate_passed")),
            workflow_progress=_read_progress_map(data.get("workflow_progress")),
            last_step_in=StepInAssessment.from_dict(data.get("last_step_in")),
            last_reasoned_at=_opt_ts(data.get("last_reasoned_at")),
            last_welcome_at=_opt_ts(data.get("last_welcome_at")),
            proactive_support_count=_count(data.get("proactive_support_count")),
            onboarding_completed_at=_opt_ts(data.get("onboarding_completed_at")),
            summary=_opt_str(data.get("summary")),
            completion_rate=_unit(data.get("completion_rate")),
        )


@dataclass(slots=True, frozen=True)
class SessionIndexEntry:
    """One finished session in the state's index: facts that never change, so copies share it."""

    session_id: str
    session_number: int
    started_at: float
    captured_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "session_number": self.session_number,
            "started_at": self.started_at,
            "captured_at": self.captured_at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> SessionIndexEntry | None:
        """An entry without a usable session id is dropped: it points nowhere."""
        if not isinstance(data, dict):
            return None
        session_id = data.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            return None
        number = data.get("session_number")
        started = data.get("started_at")
        captured = data.get("captured_at")
        if (  # what this engine writes: nothing to repair, so no helper calls (the index is read every session)
            type(number) is int
            and 1 <= number <= _FLOAT_MAX
            and type(started) is float
            and started - started == 0.0
            and type(captured) is float
            and captured - captured == 0.0
        ):
            return cls(session_id, number, started, captured)
        now = _now()
        captured = _ts(data.get("captured_at"), now)
        return cls(
            session_id=session_id,
            session_number=max(1, _count(data.get("session_number"))),
            started_at=_ts(data.get("started_at"), captured),
            captured_at=captured,
        )


@dataclass(slots=True)
class SessionsState:
    count: int = 0
    current_session_id: str | None = None
    index: list[SessionIndexEntry] = field(default_factory=list)

    def clone(self) -> SessionsState:
        return SessionsState(self.count, self.current_session_id, list(self.index))  # entries are immutable

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "current_session_id": self.current_session_id,
            "index": [entry.to_dict() for entry in self.index],
        }

    @classmethod
    def from_dict(cls, data: Any) -> SessionsState:
        data = _dict(data)
        entries = [e for e in (SessionIndexEntry.from_dict(x) for x in _list(data.get("index"))) if e]
        # Deduplicate on session id (a retried end under the SDK listed a session
        # several times); keep the first occurrence.
        seen: set[str] = set()
        index = []
        for entry in entries:
            if entry.session_id not in seen:
                seen.add(entry.session_id)
                index.append(entry)
        index = index[-SESSIONS_INDEX_LIMIT:]
        # count is the lifetime total: never below what the index proves.
        count = max(_count(data.get("count")), len(index))
        return cls(count=count, current_session_id=_opt_str(data.get("current_session_id")) or None, index=index)


# --- the user adoption state -------------------------------------------------

_STATE_KEYS = frozenset((
    "_v", "user_id", "metadata", "journey_state", "mastery", "discovered_features",
    "onboarding", "first_seen_at", "last_updated_at", "last_judged_at", "sessions",
))


@dataclass(slots=True)
class UserAdoptionState:
    """The mutable, per-(product, user) record; overwritten every session."""

    user_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    journey_state: JourneyState = JourneyState.ONBOARDING
    mastery: Mastery = field(default_factory=Mastery)
    discovered_features: list[str] = field(default_factory=list)
    onboarding: OnboardingState = field(default_factory=OnboardingState)
    first_seen_at: float = field(default_factory=_now)
    last_updated_at: float = field(default_factory=_now)
    last_judged_at: float | None = None
    sessions: SessionsState = field(default_factory=SessionsState)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def clone(self) -> UserAdoptionState:
        """A deep copy, typed: what a store's memo of this state hands out instead of a new parse.

        Free-form bags are copied as ``to_dict`` writes them (NaN as null), so
        the clone is what reading the written document back would give.
        """
        return UserAdoptionState(
            self.user_id,
            _json_safe(self.metadata),
            self.journey_state,
            self.mastery.clone(),
            list(self.discovered_features),
            self.onboarding.clone(),
            self.first_seen_at,
            self.last_updated_at,
            self.last_judged_at,
            self.sessions.clone(),
            _json_safe(self.extra),
        )

    # -- wire --

    def to_dict(self) -> dict[str, Any]:
        doc = _json_safe(self.extra)
        doc.update(
            {
                "_v": SCHEMA_VERSION,
                "user_id": self.user_id,
                "metadata": _json_safe(self.metadata),
                "journey_state": self.journey_state._value_,
                "mastery": self.mastery.to_dict(),
                "discovered_features": list(self.discovered_features),
                "onboarding": self.onboarding.to_dict(),
                "first_seen_at": self.first_seen_at,
                "last_updated_at": self.last_updated_at,
                "last_judged_at": self.last_judged_at,
                "sessions": self.sessions.to_dict(),
            }
        )
        return doc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, user_id: str = "") -> UserAdoptionState:
        """Read a stored state; ``user_id`` fills in a missing one (the key knows it).

        Raises ``UnsupportedVersionError`` for an unknown ``_v``: restoring a
        newer writer's document would silently drop its data.
        """
        if not isinstance(data, Mapping):
            raise TypeError("a user state document must be a JSON object")
        version = data.get("_v", SCHEMA_VERSION)
        if version != SCHEMA_VERSION or isinstance(version, bool):
            raise UnsupportedVersionError(version)
        now = _now()
        first_seen = _ts(data.get("first_seen_at"), now)
        return cls(
            user_id=_str(data.get("user_id")) or user_id,
            metadata=_json_safe(_dict(data.get("metadata"))),
            journey_state=_enum(JourneyState, data.get("journey_state"), JourneyState.ONBOARDING),
            mastery=Mastery.from_dict(data.get("mastery")),
            discovered_features=_str_list(data.get("discovered_features")),
            onboarding=OnboardingState.from_dict(data.get("onboarding"), now=now),
            first_seen_at=first_seen,
            last_updated_at=_ts(data.get("last_updated_at"), now),
            last_judged_at=_opt_ts(data.get("last_judged_at")),
            sessions=SessionsState.from_dict(data.get("sessions")),
            extra=_extras(data, _STATE_KEYS),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    # -- reading --

    @property
    def sessions_count(self) -> int:
        return self.sessions.count

    @property
    def is_onboarded(self) -> bool:
        return self.onboarding.onboarding_completed_at is not None

    def has_session(self, session_id: str) -> bool:
        return any(entry.session_id == session_id for entry in self.sessions.index)

    def workflow_ids_with_status(self, status: WorkflowStatus) -> list[str]:
        return [wid for wid, wp in self.onboarding.workflow_progress.items() if wp.status is status]

    # -- mutation helpers an agent needs (each bumps last_updated_at) --

    def touch(self, now: float | None = None) -> None:
        self.last_updated_at = _stamp(now)

    def set_journey_state(self, journey_state: JourneyState | str, *, now: float | None = None) -> None:
        self.journey_state = JourneyState(journey_state)
        self.touch(now)

    def set_mastery(
        self,
        rating: int,
        level: MasteryLevel | str | None = None,
        description: str | None = None,
        *,
        now: float | None = None,
    ) -> None:
        self.mastery = Mastery(
            rating=min(10, max(0, int(rating))),
            level=MasteryLevel(level) if level is not None else self.mastery.level,
            description=self.mastery.description if description is None else description,
        )
        self.touch(now)

    def record_discovered_features(self, features: Iterable[str], *, now: float | None = None) -> list[str]:
        """Add features in order, skipping blanks and ones already seen; returns the new ones."""
        added = []
        for feature in features:
            if isinstance(feature, str) and feature.strip() and feature not in self.discovered_features:
                self.discovered_features.append(feature)
                added.append(feature)
        if added:
            self.touch(now)
        return added

    def merge_metadata(self, values: Mapping[str, Any], *, now: float | None = None) -> None:
        """Shallow merge; a ``None`` value removes the key."""
        for key, value in values.items():
            if value is None:
                self.metadata.pop(key, None)
            else:
                self.metadata[key] = _json_safe(value)
        self.touch(now)

    def upsert_workflow_progress(
        self,
        workflow_id: str,
        *,
        status: WorkflowStatus | str | None = None,
        confidence: float | None = None,
        evidence: str | None = None,
        source: str | None = None,
        now: float | None = None,
    ) -> WorkflowProgress:
        now = _stamp(now)
        wp = self.onboarding.workflow_progress.get(workflow_id)
        if wp is None:
            wp = WorkflowProgress(workflow_id=workflow_id, last_evaluated_at=now)
            self.onboarding.workflow_progress[workflow_id] = wp
        if status is not None:
            wp.status = WorkflowStatus(status)
        if confidence is not None:
            wp.confidence = _unit(confidence)
        if evidence is not None:
            wp.evidence = evidence
        if source is not None:
            wp.source = source or "unknown"
        if wp.status is not WorkflowStatus.NOT_STARTED and wp.first_detected_at is None:
            wp.first_detected_at = now
        if wp.status is WorkflowStatus.COMPLETED and wp.completed_at is None:
            wp.completed_at = now
        wp.last_evaluated_at = now
        self.touch(now)
        return wp

    def upsert_step_progress(
        self,
        workflow_id: str,
        step_id: str,
        *,
        status: WorkflowStatus | str | None = None,
        confidence: float | None = None,
        evidence: str | None = None,
        now: float | None = None,
    ) -> StepProgress:
        now = _stamp(now)
        wp = self.onboarding.workflow_progress.get(workflow_id)
        if wp is None:
            wp = self.upsert_workflow_progress(workflow_id, status=WorkflowStatus.IN_PROGRESS, now=now)
        step = wp.steps.get(step_id)
        if step is None:
            step = StepProgress(step_id=step_id, last_evaluated_at=now)
            wp.steps[step_id] = step
        if status is not None:
            step.status = WorkflowStatus(status)
        if confidence is not None:
            step.confidence = _unit(confidence)
        if evidence is not None:
            step.evidence = evidence
        if step.status is WorkflowStatus.COMPLETED and step.completed_at is None:
            step.completed_at = now
        step.last_evaluated_at = now
        wp.last_evaluated_at = now
        self.touch(now)
        return step

    def record_step_in(
        self,
        *,
        should_step_in: bool,
        timing_assessment: str = "",
        reason: str = "",
        suggested_workflow_ids: Iterable[str] = (),
        now: float | None = None,
    ) -> StepInAssessment:
        now = _stamp(now)
        decision = StepInAssessment(
            decided_at=now,
            should_step_in=bool(should_step_in),
            timing_assessment=timing_assessment,
            reason=reason,
            suggested_workflow_ids=_str_list(list(suggested_workflow_ids)),
        )
        self.onboarding.last_step_in = decision
        self.onboarding.last_reasoned_at = now
        if should_step_in:
            self.onboarding.proactive_support_count += 1
        self.touch(now)
        return decision

    def mark_onboarding_complete(self, at: float | None = None) -> bool:
        """Stamp completion once; later calls change nothing. Returns whether it stamped."""
        if self.onboarding.onboarding_completed_at is not None:
            return False
        stamp = _stamp(at)
        self.onboarding.onboarding_completed_at = stamp
        self.journey_state = JourneyState.ONBOARDED
        self.touch()
        return True

    def mark_session_started(self, session_id: str, *, now: float | None = None) -> None:
        self.sessions.current_session_id = session_id
        self.touch(now)

    def record_session(self, entry: SessionIndexEntry) -> bool:
        """Append to the bounded index and count it; a known session id is a no-op."""
        if self.has_session(entry.session_id):
            return False
        self.sessions.index.append(entry)
        del self.sessions.index[:-SESSIONS_INDEX_LIMIT]
        self.sessions.count += 1
        return True

    def merge_workflow_progress(self, incoming: Mapping[str, WorkflowProgress]) -> None:
        """Merge captured progress in: the later evaluation wins, stamps keep their first value."""
        for wid, new in incoming.items():
            current = self.onboarding.workflow_progress.get(wid)
            self.onboarding.workflow_progress[wid] = _merge_progress(current, new)


def _earliest(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None


def _merge_progress(current: WorkflowProgress | None, new: WorkflowProgress) -> WorkflowProgress:
    """The later evaluation wins; stamps keep their first value whatever the later status says.

    A stamp is kept even if a later evaluation moved the status back, as
    ``upsert_workflow_progress`` does: completion is stamped once, not undone.
    """
    if current is None:
        return new.clone()
    if current == new:  # most workflows did not move this session: nothing to merge
        return current
    newer, older = (new, current) if new.last_evaluated_at >= current.last_evaluated_at else (current, new)
    merged = newer.clone()
    merged.first_detected_at = _earliest(current.first_detected_at, new.first_detected_at)
    merged.completed_at = _earliest(current.completed_at, new.completed_at)
    for sid, step in older.steps.items():
        kept = merged.steps.get(sid)
        if kept is None or kept.last_evaluated_at < step.last_evaluated_at:
            merged.steps[sid] = step.clone()
        if kept is not None:
            merged.steps[sid].completed_at = _earliest(kept.completed_at, step.completed_at)
    return merged


# --- the session snapshot ----------------------------------------------------

_SNAPSHOT_KEYS = frozenset((
    "_v", "_frozen", "session_id", "user_id", "session_number", "started_at", "captured_at",
    "duration_s", "journey_state", "mastery", "proactive_support_count", "distinct_features_seen",
    "discovered_features", "reached_onboarding_complete", "completion_rate",
    "completion_rate_denominator", "total_catalog_workflows", "completed_workflow_ids",
    "in_progress_workflow_ids", "untouched_workflow_ids", "workflow_progress",
))


@dataclass(slots=True)
class SessionSnapshot:
    """One frozen, write-once record of a finished session."""

    session_id: str
    user_id: str
    session_number: int
    started_at: float
    captured_at: float
    duration_s: float = 0.0
    journey_state: JourneyState = JourneyState.ONBOARDING
    mastery: Mastery = field(default_factory=Mastery)
    proactive_support_count: int = 0
    distinct_features_seen: int = 0
    discovered_features: list[str] = field(default_factory=list)
    reached_onboarding_complete: bool = False
    completion_rate: float = 0.0
    completion_rate_denominator: CompletionRateDenominator = CompletionRateDenominator.ALL_CATALOG_WORKFLOWS
    total_catalog_workflows: int = 0
    completed_workflow_ids: list[str] = field(default_factory=list)
    in_progress_workflow_ids: list[str] = field(default_factory=list)
    untouched_workflow_ids: list[str] = field(default_factory=list)
    workflow_progress: dict[str, WorkflowProgress] = field(default_factory=dict)
    version: Any = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def clone(self) -> SessionSnapshot:
        """A deep copy, typed (free-form fields copied as ``to_dict`` writes them)."""
        return SessionSnapshot(
            self.session_id,
            self.user_id,
            self.session_number,
            self.started_at,
            self.captured_at,
            self.duration_s,
            self.journey_state,
            self.mastery.clone(),
            self.proactive_support_count,
            self.distinct_features_seen,
            list(self.discovered_features),
            self.reached_onboarding_complete,
            self.completion_rate,
            self.completion_rate_denominator,
            self.total_catalog_workflows,
            list(self.completed_workflow_ids),
            list(self.in_progress_workflow_ids),
            list(self.untouched_workflow_ids),
            {wid: wp.clone() for wid, wp in self.workflow_progress.items()},
            self.version,
            _json_safe(self.extra),
        )

    def to_dict(self) -> dict[str, Any]:
        doc = _json_safe(self.extra)
        doc.update(
            {
                "_v": self.version,
                "_frozen": True,
                "session_id": self.session_id,
                "user_id": self.user_id,
                "session_number": self.session_number,
                "started_at": self.started_at,
                "captured_at": self.captured_at,
                "duration_s": self.duration_s,
                "journey_state": self.journey_state._value_,
                "mastery": self.mastery.to_dict(),
                "proactive_support_count": self.proactive_support_count,
                "distinct_features_seen": self.distinct_features_seen,
                "discovered_features": list(self.discovered_features),
                "reached_onboarding_complete": self.reached_onboarding_complete,
                "completion_rate": self.completion_rate,
                "completion_rate_denominator": self.completion_rate_denominator._value_,
                "total_catalog_workflows": self.total_catalog_workflows,
                "completed_workflow_ids": list(self.completed_workflow_ids),
                "in_progress_workflow_ids": list(self.in_progress_workflow_ids),
                "untouched_workflow_ids": list(self.untouched_workflow_ids),
                "workflow_progress": {wid: wp.to_dict() for wid, wp in self.workflow_progress.items()},
            }
        )
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, session_id: str = "", user_id: str = ""
    ) -> SessionSnapshot:
        """Read leniently: a snapshot is history, so a bad field degrades and the rest stays."""
        if not isinstance(data, Mapping):
            raise TypeError("a session snapshot document must be a JSON object")
        now = _now()
        captured = _ts(data.get("captured_at"), now)
        started = _ts(data.get("started_at"), captured)
        duration = data.get("duration_s")
        duration = float(duration) if _is_number(duration) else captured - started
        duration = round(max(0.0, duration), 2)
        version = data.get("_v", SCHEMA_VERSION)
        return cls(
            session_id=_str(data.get("session_id")) or session_id,
            user_id=_str(data.get("user_id")) or user_id,
            session_number=max(1, _count(data.get("session_number"))),
            started_at=started,
            captured_at=captured,
            duration_s=duration,
            journey_state=_enum(JourneyState, data.get("journey_state"), JourneyState.ONBOARDING),
            mastery=Mastery.from_dict(data.get("mastery")),
            proactive_support_count=_count(data.get("proactive_support_count")),
            distinct_features_seen=_count(data.get("distinct_features_seen")),
            discovered_features=_str_list(data.get("discovered_features")),
            reached_onboarding_complete=_bool(data.get("reached_onboarding_complete")),
            completion_rate=_unit(data.get("completion_rate")),
            completion_rate_denominator=_enum(
                CompletionRateDenominator,
                data.get("completion_rate_denominator"),
                CompletionRateDenominator.ALL_CATALOG_WORKFLOWS,
            ),
            total_catalog_workflows=_count(data.get("total_catalog_workflows")),
            completed_workflow_ids=_str_list(data.get("completed_workflow_ids")),
            in_progress_workflow_ids=_str_list(data.get("in_progress_workflow_ids")),
            untouched_workflow_ids=_str_list(data.get("untouched_workflow_ids")),
            workflow_progress=_read_progress_map(data.get("workflow_progress")),
            version=version if isinstance(version, int) and not isinstance(version, bool) else SCHEMA_VERSION,
            extra=_extras(data, _SNAPSHOT_KEYS),
        )

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
