"""The state edit form: what the posted fields ask for, checked, as ``state_ops`` edits against the state.

No storage here: ``parse`` reads the POST into the values asked for (with
field errors), ``changes`` compares them with a state and builds the
``FieldChange`` list the edit service applies in one atomic ``PATCH``. The
field names are positional (``wf-3-status``), with the ids in hidden fields:
workflow ids and metadata keys may hold any character.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from autoplay_storage import state_ops
from autoplay_storage.state_ops import FieldPath
from autoplay_storage.support.edits import FieldChange
from autoplay_storage.user_adoption_state import JourneyState, MasteryLevel, UserAdoptionState, WorkflowStatus

MAX_TEXT = 10_000
MAX_ID = 200
NEW_METADATA_ROWS = 3
STATUSES = [s.value for s in WorkflowStatus]
TOP_FIELDS = (
    "journey",
    "mastery_rating",
    "mastery_level",
    "mastery_description",
    "onboarding_complete",
    "features_add",
)


@dataclass
class Progress:
    """One workflow or step row as posted."""

    workflow_id: str
    step_id: str | None
    status: str
    confidence: float | None
    evidence: str


@dataclass
class Asked:
    """Everything the form asks for, and what was wrong with it (by field name)."""

    etag: str = ""
    journey: str = ""
    rating: int | None = None
    level: str = ""
    description: str = ""
    complete: bool = False
    rows: list[Progress] = field(default_factory=list)
    add_features: list[str] = field(default_factory=list)
    remove_features: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # None: remove the key
    errors: dict[str, str] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)  # the fields the editor changed on the page
    sources: dict[FieldPath, list[str]] = field(default_factory=dict)  # each value's form fields

    def changed_by_editor(self, path: FieldPath) -> bool:
        """Whether the editor changed ``path`` on the page (what a conflict must show them)."""
        return any(name in self.touched for name in self.sources.get(path, [path[0]]))


def _text(post: Any, name: str, asked: Asked, *, limit: int = MAX_TEXT) -> str:
    value = post.get(name, "")
    if len(value) > limit:
        asked.errors[name] = f"At most {limit} characters."
    return value


def _choice(post: Any, name: str, allowed: list[str], asked: Asked) -> str:
    value = post.get(name, "")
    if value not in allowed:
        asked.errors[name] = f"Choose one of {', '.join(allowed)}."
    return value


def _unit(post: Any, name: str, asked: Asked) -> float | None:
    raw = post.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        asked.errors[name] = "A number from 0 to 1, e.g. 0.75."
        return None
    return value


def _row(post: Any, prefix: str, workflow_id: str, step_id: str | None, asked: Asked) -> Progress:
    base: FieldPath = ("workflow", workflow_id) if step_id is None else ("step", workflow_id, step_id)
    for name in ("status", "confidence", "evidence"):
        asked.sources[(*base, name)] = [f"{prefix}-{name}", f"{prefix}-id"]
    return Progress(
        workflow_id,
        step_id,
        _choice(post, f"{prefix}-status", STATUSES, asked),
        _unit(post, f"{prefix}-confidence", asked),
        _text(post, f"{prefix}-evidence", asked),
    )


def _rows(post: Any, asked: Asked) -> None:
    for name in sorted(k for k in post if k.startswith("wf-") and k.endswith("-id") and k.count("-") == 2):
        prefix = name[: -len("-id")]
        workflow_id = post.get(name, "")
        if prefix == "wf-new":
            if not workflow_id.strip():
                continue
            if len(workflow_id) > MAX_ID:
                asked.errors[name] = f"At most {MAX_ID} characters."
        asked.rows.append(_row(post, prefix, workflow_id, None, asked))
    for name in sorted(k for k in post if k.startswith("st-") and k.endswith("-id")):
        prefix = name[: -len("-id")]
        step_id = post.get(name, "")
        if prefix.endswith("-new"):  # the blank row under each workflow, for a step it does not have yet
            if not step_id.strip():
                continue
            if len(step_id) > MAX_ID:
                asked.errors[name] = f"At most {MAX_ID} characters."
        asked.rows.append(_row(post, prefix, post.get(f"{prefix}-wf", ""), step_id, asked))


def _metadata(post: Any, asked: Asked) -> None:
    for name in sorted(k for k in post if k.startswith("md-") and k.endswith("-key")):
        prefix = name[: -len("-key")]
        key = post.get(name, "").strip()
        raw = post.get(f"{prefix}-value", "")
        if prefix.startswith("md-new-"):
            if not key and not raw.strip():
                continue
            if not key:
                asked.errors[name] = "Name the key."
                continue
            if len(key) > MAX_ID:
                asked.errors[name] = f"At most {MAX_ID} characters."
                continue
        asked.sources[("metadata", key)] = [f"{prefix}-value", f"{prefix}-remove", name]
        if post.get(f"{prefix}-remove"):
            asked.metadata[key] = None
            continue
        if post.get(f"{prefix}-json"):
            try:
                asked.metadata[key] = json.loads(raw)
            except ValueError:
                asked.errors[f"{prefix}-value"] = "Not valid JSON (this key holds a number, list or object)."
            continue
        if len(raw) > MAX_TEXT:
            asked.errors[f"{prefix}-value"] = f"At most {MAX_TEXT} characters."
            continue
        asked.metadata[key] = raw


def initial_values(state: UserAdoptionState) -> dict[str, str]:
    """The text fields as the page renders them for ``state`` (the page sends them back as ``initial``)."""
    values = {
        "journey": state.journey_state.value,
        "mastery_rating": str(state.mastery.rating),
        "mastery_level": state.mastery.level.value,
        "mastery_description": state.mastery.description,
    }
    for i, wp in enumerate(state.onboarding.workflow_progress.values()):
        values.update({f"wf-{i}-id": wp.workflow_id, f"wf-{i}-status": wp.status.value})
        values.update({f"wf-{i}-confidence": str(wp.confidence), f"wf-{i}-evidence": wp.evidence})
        for j, step in enumerate(wp.steps.values()):
            values.update({f"st-{i}-{j}-wf": wp.workflow_id, f"st-{i}-{j}-id": step.step_id})
            values.update({f"st-{i}-{j}-status": step.status.value, f"st-{i}-{j}-confidence": str(step.confidence)})
            values[f"st-{i}-{j}-evidence"] = step.evidence
    for i, (key, value) in enumerate(state.metadata.items()):
        values[f"md-{i}-key"] = key
        if isinstance(value, str):
            values[f"md-{i}-value"] = value
        else:
            values.update({f"md-{i}-value": json.dumps(value, ensure_ascii=False), f"md-{i}-json": "1"})
    return values


def _touched(post: Any) -> set[str]:
    """Fields that differ from what the page showed; every field when the page did not say."""
    try:
        initial = json.loads(post.get("initial", ""))
    except ValueError:
        initial = None
    if not isinstance(initial, dict):
        return set(post)
    return {name for name in post if post.get(name) != initial.get(name, "")}


def parse(post: Any) -> Asked:
    asked = Asked(etag=post.get("etag", ""), touched=_touched(post))
    asked.sources.update(
        {
            ("journey",): ["journey"],
            ("mastery", "rating"): ["mastery_rating"],
            ("mastery", "level"): ["mastery_level"],
            ("mastery", "description"): ["mastery_description"],
            ("onboarding", "complete"): ["onboarding_complete"],
            ("features",): ["features_add", "feature_remove"],
        }
    )
    if not asked.etag:
        asked.errors["etag"] = "The form lost the version it was read at; open the edit page again."
    asked.journey = _choice(post, "journey", [j.value for j in JourneyState], asked)
    try:
        asked.rating = int(post.get("mastery_rating", ""))
    except ValueError:
        asked.rating = None
    if asked.rating is None or not 0 <= asked.rating <= 10:
        asked.errors["mastery_rating"] = "A whole number from 0 to 10."
        asked.rating = None
    asked.level = _choice(post, "mastery_level", [m.value for m in MasteryLevel], asked)
    asked.description = _text(post, "mastery_description", asked)
    asked.complete = bool(post.get("onboarding_complete"))
    _rows(post, asked)
    features = [f.strip() for f in post.get("features_add", "").split(",") if f.strip()]
    for feature in features:
        if len(feature) > MAX_ID:
            asked.errors["features_add"] = f"Each feature at most {MAX_ID} characters."
    asked.add_features = features
    asked.remove_features = post.getlist("feature_remove") if hasattr(post, "getlist") else []
    _metadata(post, asked)
    return asked


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is None or b is None or abs(float(a) - float(b)) > 1e-9
    return a != b


def changes(asked: Asked, state: UserAdoptionState) -> list[FieldChange]:
    """The edits that turn ``state`` into what the form asks for (only what differs)."""
    out: list[FieldChange] = []
    if asked.journey != state.journey_state.value:
        out.append(FieldChange((("journey",),), state_ops.journey(asked.journey)))
    mastery = {"rating": asked.rating, "level": asked.level, "description": asked.description}
    moved = tuple(("mastery", k) for k, v in mastery.items() if v != state_ops.value_at(state, ("mastery", k)))
    if moved and asked.rating is not None:
        out.append(FieldChange(moved, state_ops.mastery(asked.rating, asked.level, asked.description)))
    if asked.complete and state.onboarding.onboarding_completed_at is None:
        out.append(FieldChange((("onboarding", "complete"),), state_ops.onboarding_complete()))
    for row in asked.rows:
        base: tuple[str, ...] = (
            ("workflow", row.workflow_id) if row.step_id is None else ("step", row.workflow_id, row.step_id)
        )
        wanted = {"status": row.status, "confidence": row.confidence, "evidence": row.evidence}
        exists = state_ops.value_at(state, (*base, "status")) is not None
        moved = tuple(
            (*base, k)
            for k, v in wanted.items()
            if (v is not None or not exists) and _differs(v, state_ops.value_at(state, (*base, k)))
        )
        if not moved:
            continue
        if row.step_id is None:
            edit = state_ops.workflow_progress(
                row.workflow_id, status=row.status, confidence=row.confidence, evidence=row.evidence, source="manual"
            )
        else:
            edit = state_ops.step_progress(
                row.workflow_id, row.step_id, status=row.status, confidence=row.confidence, evidence=row.evidence
            )
        out.append(FieldChange(moved, edit))
    add = [f for f in asked.add_features if f not in state.discovered_features]
    remove = [f for f in asked.remove_features if f in state.discovered_features]
    if add or remove:
        out.append(FieldChange((("features",),), state_ops.discovered_features(add, remove)))
    metadata = {k: v for k, v in asked.metadata.items() if v != state.metadata.get(k)}
    if metadata:
        out.append(FieldChange(tuple(("metadata", k) for k in metadata), state_ops.metadata(metadata)))
    return out
