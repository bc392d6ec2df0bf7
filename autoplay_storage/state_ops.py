"""The small edits of a live state, shared by the API's ``PATCH`` and the console's edit form.

Pure rules (no storage): each builder returns a ``StateEdit``, a function
that makes one change with a ``UserAdoptionState`` helper. Both interfaces
hand lists of them to ``services.patch_state``, so an edit by hand and an
agent's patch are the same operation through the same atomic update and the
same optimistic check.

``FieldPath`` names one edited value (``("mastery", "rating")``,
``("workflow", id, "status")``, ``("metadata", key)`` ...); ``value_at``
reads it from a state, for the before/after of the audit log and for the
console's marks of values staff set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .user_adoption_state import JourneyState, MasteryLevel, UserAdoptionState, WorkflowStatus

StateEdit = Callable[[UserAdoptionState], object]
FieldPath = tuple[str, ...]


def workflow_progress(
    workflow_id: str,
    *,
    status: WorkflowStatus | str | None = None,
    confidence: float | None = None,
    evidence: str | None = None,
    source: str | None = None,
) -> StateEdit:
    def edit(state: UserAdoptionState) -> None:
        state.upsert_workflow_progress(
            workflow_id, status=status, confidence=confidence, evidence=evidence, source=source
        )

    return edit


def step_progress(
    workflow_id: str,
    step_id: str,
    *,
    status: WorkflowStatus | str | None = None,
    confidence: float | None = None,
    evidence: str | None = None,
) -> StateEdit:
    def edit(state: UserAdoptionState) -> None:
        state.upsert_step_progress(workflow_id, step_id, status=status, confidence=confidence, evidence=evidence)

    return edit


def mastery(rating: int, level: MasteryLevel | str | None = None, description: str | None = None) -> StateEdit:
    return lambda state: state.set_mastery(rating, level, description)


def journey(journey_state: JourneyState | str) -> StateEdit:
    return lambda state: state.set_journey_state(journey_state)


def discovered_features(add: Iterable[str] = (), remove: Iterable[str] = ()) -> StateEdit:
    """Add features in order (blanks and ones seen skipped), then remove the ones named in ``remove``."""
    add, remove = list(add), list(remove)

    def edit(state: UserAdoptionState) -> None:
        state.record_discovered_features(add)
        state.forget_discovered_features(remove)

    return edit


def metadata(values: Mapping[str, Any]) -> StateEdit:
    """Shallow merge; a ``None`` value removes the key."""
    values = dict(values)
    return lambda state: state.merge_metadata(values)


def step_in(
    *, should_step_in: bool, timing_assessment: str = "", reason: str = "", suggested_workflow_ids: Iterable[str] = ()
) -> StateEdit:
    suggested = list(suggested_workflow_ids)
    return lambda state: state.record_step_in(
        should_step_in=should_step_in,
        timing_assessment=timing_assessment,
        reason=reason,
        suggested_workflow_ids=suggested,
    )


def onboarding_complete() -> StateEdit:
    return lambda state: state.mark_onboarding_complete()


def summary(text: str) -> StateEdit:
    """Store ``text`` as the cross-session summary (a hand-written, accepted or restored version)."""

    def edit(state: UserAdoptionState) -> None:
        state.onboarding.summary = text
        state.touch()

    return edit


def value_at(state: UserAdoptionState, path: FieldPath) -> Any:
    """The JSON value at ``path`` (``None``: absent), as the audit log and the staff marks compare it."""
    head, rest = path[0], path[1:]
    if head == "journey":
        return state.journey_state.value
    if head == "mastery":
        value = getattr(state.mastery, rest[0])
        return value.value if isinstance(value, MasteryLevel) else value
    if head == "onboarding":
        return state.onboarding.onboarding_completed_at is not None
    if head == "features":
        return list(state.discovered_features)
    if head == "metadata":
        return state.metadata.get(rest[0])
    wp = state.onboarding.workflow_progress.get(rest[0])
    target: Any = wp if head == "workflow" else (wp.steps.get(rest[1]) if wp is not None else None)
    if target is None:
        return None
    value = getattr(target, path[-1])
    return value.value if isinstance(value, WorkflowStatus) else value


def path_label(path: FieldPath) -> str:
    """``path`` for people: ``workflow create_project · status``."""
    head, rest = path[0], path[1:]
    if head in ("workflow", "step"):
        return f"{head} {' / '.join(rest[:-1])} · {rest[-1]}"
    if head in ("metadata", "mastery"):
        return f"{head} · {rest[0]}"
    return {"journey": "journey", "onboarding": "onboarding complete", "features": "discovered features"}[head]
