"""The user adoption state: the mutable, per-(product, user) record (spec section 2).

Its fields are declared once, with their reading rules (``fields``); the
wire methods are generated from them. The methods here are the helpers an
agent changes a live state with; each bumps ``last_updated_at``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import UnsupportedVersionError
from .fields import choice, document, extras, free_form, ident, nested, opt_timestamp, strings, timestamp
from .parts import (
    SCHEMA_VERSION,
    SESSIONS_INDEX_LIMIT,
    JourneyState,
    Mastery,
    MasteryLevel,
    OnboardingState,
    SessionIndexEntry,
    SessionsState,
    StepInAssessment,
    StepProgress,
    WorkflowProgress,
    WorkflowStatus,
)
from .readers import _json_safe, _stamp, _str_list, _unit

logger = logging.getLogger(__name__)


def _known_version(data: Mapping[str, Any]) -> None:
    """Refuse an unknown ``_v``: restoring a newer writer's document would silently drop its data."""
    version = data.get("_v", SCHEMA_VERSION)
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise UnsupportedVersionError(version)


@document(top_level="a user state document", constants={"_v": SCHEMA_VERSION}, check=_known_version)
class UserAdoptionState:
    """The mutable, per-(product, user) record; overwritten every session.

    ``from_dict(data, *, user_id="")`` reads a stored state (``user_id`` fills
    in a missing one: the key knows it) and raises ``UnsupportedVersionError``
    for an unknown ``_v``. ``clone()`` is a typed deep copy: free-form bags are
    copied as ``to_dict`` writes them (NaN as null), so the clone is what
    reading the written document back would give.
    """

    user_id: str = ident()
    metadata: dict[str, Any] = free_form()  # role, email, team, plan ...; ``role`` is the conventional key
    journey_state: JourneyState = choice(JourneyState.ONBOARDING)
    mastery: Mastery = nested(Mastery)
    discovered_features: list[str] = strings()
    onboarding: OnboardingState = nested(OnboardingState)
    first_seen_at: float = timestamp()
    last_updated_at: float = timestamp()  # bumped on every mutation
    last_judged_at: float | None = opt_timestamp()
    sessions: SessionsState = nested(SessionsState)
    extra: dict[str, Any] = extras()

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    # -- reading --

    @property
    def sessions_count(self) -> int:
        return self.sessions.count

    @sessions_count.setter
    def sessions_count(self, count: int) -> None:
        self.sessions.count = count

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

    def set_journey_state(
        self, journey_state: JourneyState | str, *, reason: str = "", now: float | None = None
    ) -> None:
        """Move the journey; ``reason`` (the SDK's argument) goes to the log line of a transition."""
        journey_state = JourneyState(journey_state)
        if journey_state is not self.journey_state:
            logger.info("user %s journey %s -> %s (%s)", self.user_id, self.journey_state, journey_state, reason)
        self.journey_state = journey_state
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

    def forget_discovered_features(self, features: Iterable[str], *, now: float | None = None) -> list[str]:
        """Remove features (a correction by hand); returns the ones removed. The seen count is history: kept."""
        gone = set(features)
        removed = [f for f in self.discovered_features if f in gone]
        if removed:
            self.discovered_features = [f for f in self.discovered_features if f not in gone]
            self.touch(now)
        return removed

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
        self.touch()
        return True

    def merge_workflow_progress(self, incoming: Mapping[str, WorkflowProgress]) -> None:
        """Merge captured progress in: the later evaluation wins, stamps keep their first value."""
        for wid, new in incoming.items():
            current = self.onboarding.workflow_progress.get(wid)
            self.onboarding.workflow_progress[wid] = _merge_progress(current, new)

    # -- the SDK's API (autoplay_sdk 0.13): its names over our nested fields, same effects --

    @property
    def current_session_id(self) -> str | None:
        return self.sessions.current_session_id

    @current_session_id.setter
    def current_session_id(self, session_id: str | None) -> None:
        self.sessions.current_session_id = session_id

    @property
    def sessions_index(self) -> list[SessionIndexEntry]:
        """The index itself (not a copy): appending to it appends to the document, as in the SDK."""
        return self.sessions.index

    @sessions_index.setter
    def sessions_index(self, index: list[SessionIndexEntry]) -> None:
        self.sessions.index = index

    @property
    def role(self) -> str | None:
        """The conventional ``role`` metadata key, as text."""
        role = self.metadata.get("role")
        return None if role is None else str(role)

    def mark_welcomed(self, *, now: float | None = None) -> None:
        """The welcome was shown: it counts as proactive support."""
        self.onboarding.welcomed = True
        self.onboarding.last_welcome_at = _stamp(now)
        self.onboarding.proactive_support_count += 1
        self.touch()

    def mark_judged(self, *, now: float | None = None) -> None:
        self.last_judged_at = _stamp(now)
        self.touch()

    def set_current_session(self, session_id: str) -> None:
        """Mark the open session; a blank id clears it."""
        self.sessions.current_session_id = (session_id or "").strip() or None
        self.touch()

    def to_prompt_block(self) -> str:
        """The ``[USER ADOPTION STATE]`` block the SDK prepends to a chat prompt, word for word."""
        if self.journey_state is JourneyState.ONBOARDING:
            guidance = "favor step-by-step teaching and confirm basics"
        else:
            guidance = "be concise; skip basics unless asked"
        return "\n".join(
            [
                "[USER ADOPTION STATE]",
                f"role: {self.role or 'unknown'}",
                f"journey: {self.journey_state.value}",
                f"mastery: {self.mastery.level.value} ({self.mastery.rating}/10)",
                f"guidance: {guidance}",
            ]
        )


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
