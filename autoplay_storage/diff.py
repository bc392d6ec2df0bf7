"""What changed between two readings of one user: two session snapshots, or a snapshot and the live state.

Pure rules (no Django, no I/O), shared by the console's "changes in this
session" and compare views and the API's ``.../diff`` route, so both say the
same thing. Each side is read the way the documents read a stored document
(leniently for a snapshot, refusing an unknown ``_v`` for a state); a side
that cannot be read makes the diff *not comparable* and says why, it never
guesses.

The diff is computed over a flat projection of the fields support staff
compare (``compared_fields``): journey, mastery, onboarding completion, the
completion rate, each workflow's and step's status, confidence and
evidence, the discovered features and, when the caller knows it, the
summary. Every change carries its ``before`` and ``after`` value, so
``apply_changes(compared_fields(a), diff(a, b).changes)`` is exactly
``compared_fields(b)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import UnsupportedVersionError
from .user_adoption_state import SessionSnapshot, UserAdoptionState, WorkflowProgress, WorkflowStatus

Path = tuple[str, ...]

_RANK = {None: 0, WorkflowStatus.NOT_STARTED.value: 0, WorkflowStatus.IN_PROGRESS.value: 1}
_RANK[WorkflowStatus.COMPLETED.value] = 2
# Keeps the order a reader expects: the user's standing first, then the work, then what they saw.
_AREA_ORDER = {"journey": 0, "mastery": 1, "onboarding": 2, "workflow": 3, "step": 4, "feature": 5, "summary": 6}


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a session snapshot or the live state, or why it cannot be read.

    ``summary``: the summary text at that point, when the caller knows it
    (snapshots do not carry one); ``known_summary`` says whether it does.
    """

    label: str
    kind: str  # "session" or "state"
    session_id: str | None = None
    session_number: int | None = None
    values: dict[Path, Any] | None = None
    reason: str = ""

    @property
    def readable(self) -> bool:
        return self.values is not None

    def describe(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "kind": self.kind,
            "session_id": self.session_id,
            "session_number": self.session_number,
            "readable": self.readable,
            "reason": self.reason or None,
        }


@dataclass(frozen=True)
class Change:
    path: Path
    kind: str
    before: Any
    after: Any

    @property
    def area(self) -> str:
        return self.path[0]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"area": self.area, "kind": self.kind, "before": self.before, "after": self.after}
        if self.area == "workflow":
            out.update(workflow_id=self.path[1], field=self.path[2])
        elif self.area == "step":
            out.update(workflow_id=self.path[1], step_id=self.path[2], field=self.path[3])
        elif self.area == "feature":
            out.update(feature=self.path[1], field="discovered")
        else:
            out["field"] = self.path[-1]
        return out


@dataclass(frozen=True)
class Diff:
    before: Side
    after: Side
    changes: list[Change] = field(default_factory=list)

    @property
    def comparable(self) -> bool:
        return self.before.readable and self.after.readable

    @property
    def problem(self) -> str:
        """Why there is no diff, in words; empty when both sides were read."""
        bad = [s for s in (self.before, self.after) if not s.readable]
        return "; ".join(f"{s.label} cannot be read: {s.reason}" for s in bad)

    def by_area(self) -> dict[str, list[Change]]:
        out: dict[str, list[Change]] = {}
        for change in self.changes:
            out.setdefault(change.area, []).append(change)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "before": self.before.describe(),
            "after": self.after.describe(),
            "comparable": self.comparable,
            "problem": self.problem or None,
            "changes": [c.as_dict() for c in self.changes],
        }


def _workflows(progress: Mapping[str, WorkflowProgress]) -> dict[Path, Any]:
    values: dict[Path, Any] = {}
    for workflow_id, wp in progress.items():
        values[("workflow", workflow_id, "status")] = wp.status.value
        values[("workflow", workflow_id, "confidence")] = wp.confidence
        values[("workflow", workflow_id, "evidence")] = wp.evidence
        for step_id, step in wp.steps.items():
            values[("step", workflow_id, step_id, "status")] = step.status.value
            values[("step", workflow_id, step_id, "confidence")] = step.confidence
            values[("step", workflow_id, step_id, "evidence")] = step.evidence
    return values


def compared_fields(
    doc: SessionSnapshot | UserAdoptionState, *, summary: str | None = None, known_summary: bool = False
) -> dict[Path, Any]:
    """The flat projection a diff compares (a missing path means "absent": no such workflow or feature)."""
    if isinstance(doc, UserAdoptionState):
        progress, rate = doc.onboarding.workflow_progress, doc.onboarding.completion_rate
        complete = doc.onboarding.onboarding_completed_at is not None
    else:
        progress, rate, complete = doc.workflow_progress, doc.completion_rate, doc.reached_onboarding_complete
    values: dict[Path, Any] = {
        ("journey", "journey_state"): doc.journey_state.value,
        ("mastery", "rating"): doc.mastery.rating,
        ("mastery", "level"): doc.mastery.level.value,
        ("mastery", "description"): doc.mastery.description,
        ("onboarding", "complete"): complete,
        ("onboarding", "completion_rate"): rate,
        **_workflows(progress),
    }
    for feature in doc.discovered_features:
        values[("feature", feature)] = True
    if known_summary:
        values[("summary", "text")] = summary
    return values


def read_snapshot(
    doc: Any, *, label: str, session_id: str, user_id: str, summary: str | None = None, known_summary: bool = False
) -> Side:
    """A snapshot side; ``doc`` is the parsed document, or a ``str`` saying why the stored text is unreadable."""
    if isinstance(doc, str):
        return Side(label, "session", session_id, reason=doc)
    try:
        snap = SessionSnapshot.from_dict(doc, session_id=session_id, user_id=user_id)
    except (TypeError, ValueError) as exc:
        return Side(label, "session", session_id, reason=str(exc))
    values = compared_fields(snap, summary=summary, known_summary=known_summary)
    return Side(label, "session", session_id, snap.session_number, values)


def read_state(doc: Any, *, label: str, user_id: str) -> Side:
    """The live state's side (its summary is always known); ``doc`` as for ``read_snapshot``."""
    if isinstance(doc, str):
        return Side(label, "state", reason=doc)
    try:
        state = UserAdoptionState.from_dict(doc, user_id=user_id)
    except UnsupportedVersionError as exc:
        return Side(label, "state", reason=f"schema version _v={exc.version!r}, which this engine does not know")
    except (TypeError, ValueError) as exc:
        return Side(label, "state", reason=str(exc))
    return Side(label, "state", values=compared_fields(state, summary=state.onboarding.summary, known_summary=True))


def _status_kind(before: Any, after: Any) -> str:
    if after is None:
        return "removed"
    if after == WorkflowStatus.COMPLETED.value and before != after:
        return "completed"
    if _RANK.get(after, 0) < _RANK.get(before, 0):
        return "regressed"
    if after == WorkflowStatus.IN_PROGRESS.value and _RANK.get(before, 0) == 0:
        return "started"
    return "added" if before is None else "changed"


def _kind(path: Path, before: Any, after: Any) -> str:
    if path[0] == "feature":
        return "discovered" if after else "removed"
    if path[-1] == "status" and path[0] in ("workflow", "step"):
        return _status_kind(before, after)
    if path == ("onboarding", "complete"):
        return "completed" if after else "regressed"
    if before is None:
        return "added"
    if after is None:
        return "removed"
    if isinstance(before, bool) or isinstance(after, bool):
        return "changed"
    if isinstance(before, int | float) and isinstance(after, int | float):
        return "increased" if after > before else "decreased"
    return "changed"


def _sort_key(path: Path) -> tuple[Any, ...]:
    # A workflow's status before its confidence and evidence; steps under their workflow.
    fields = {"status": 0, "confidence": 1, "evidence": 2}
    return (_AREA_ORDER.get(path[0], 9), path[1:-1], fields.get(path[-1], 3), path[-1])


def diff_values(before: Mapping[Path, Any], after: Mapping[Path, Any]) -> list[Change]:
    """The changes from one projection to the other, in reading order."""
    paths = set(before) | set(after)
    changed = [p for p in paths if before.get(p) != after.get(p) or (p in before) != (p in after)]
    return [
        Change(p, _kind(p, before.get(p), after.get(p)), before.get(p), after.get(p))
        for p in sorted(changed, key=_sort_key)
    ]


def diff(before: Side, after: Side) -> Diff:
    """What changed from ``before`` to ``after``; not comparable (and empty) when a side cannot be read.

    The summary is compared only when both sides know theirs.
    """
    if before.values is None or after.values is None:
        return Diff(before, after)
    a, b = dict(before.values), dict(after.values)
    if (("summary", "text") in a) != (("summary", "text") in b):
        a.pop(("summary", "text"), None)
        b.pop(("summary", "text"), None)
    return Diff(before, after, diff_values(a, b))


def apply_changes(values: Mapping[Path, Any], changes: Iterable[Change]) -> dict[Path, Any]:
    """``values`` with each change's ``after`` put in (an absent ``after`` removes the path)."""
    out = dict(values)
    for change in changes:
        if change.after is None and change.path[0] in ("workflow", "step", "feature"):
            out.pop(change.path, None)
        else:
            out[change.path] = change.after
    return out
