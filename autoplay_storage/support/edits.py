"""Editing a user's state by hand: the API's ``PATCH`` operations, with the etag the page was read at.

The etag is required: staff edit what they saw, and an agent that wrote in
between makes the edit a ``ConflictError`` (nothing written) instead of an
overwrite. Each edited value is remembered (``StaffEdit``) so the console
can mark values whose last writer was a person.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from .. import services
from ..models import StaffEdit
from ..state_ops import FieldPath, StateEdit, value_at
from ..user_adoption_state import UserAdoptionState


@dataclass(frozen=True)
class FieldChange:
    """What one ``state_ops`` edit changes (``paths``: the values it sets), as a form asked for it."""

    paths: tuple[FieldPath, ...]
    edit: StateEdit


@dataclass(frozen=True)
class EditOutcome:
    versioned: services.VersionedState
    before: dict[str, Any]
    after: dict[str, Any]


def path_key(path: FieldPath) -> str:
    """A path as stored (JSON: ids may hold dots or spaces)."""
    return json.dumps(list(path), ensure_ascii=False)


def _actor_name(actor: Any) -> str:
    return actor.get_username() if getattr(actor, "is_authenticated", False) else str(actor or "")


async def edit_state(
    product_id: str, user_id: str, changes: Sequence[FieldChange], *, if_match: str, actor: Any
) -> EditOutcome:
    """Apply ``changes`` atomically if the state is still at ``if_match``; the values before and after.

    Raises ``ConflictError`` (nothing written) when it is not, and
    ``StateNotFoundError`` when the user has no state.
    """
    paths = [p for c in changes for p in c.paths]
    before: dict[str, Any] = {}

    def capture(state: UserAdoptionState) -> None:  # runs first, on the very document the edits change
        before.clear()
        before.update({path_key(p): value_at(state, p) for p in paths})

    versioned = await services.patch_state(
        product_id, user_id, [capture, *[c.edit for c in changes]], if_match=if_match
    )
    after = {path_key(p): value_at(versioned.state, p) for p in paths}
    now = timezone.now()
    user = actor if getattr(actor, "is_authenticated", False) else None
    for key, value in after.items():
        await StaffEdit.objects.aupdate_or_create(
            product_id=product_id,
            user_id=user_id,
            path=key,
            defaults={"value": value, "actor": user, "actor_name": _actor_name(actor), "at": now},
        )
    return EditOutcome(versioned, before, after)


async def staff_marks(product_id: str, user_id: str, state: UserAdoptionState) -> dict[str, StaffEdit]:
    """The values staff set that the state still holds, by path key (a newer agent write ends the mark)."""
    marks: dict[str, StaffEdit] = {}
    async for mark in StaffEdit.objects.filter(product_id=product_id, user_id=user_id).order_by("path"):
        try:
            path = tuple(json.loads(mark.path))
        except ValueError:
            continue
        if path and value_at_safe(state, path) == mark.value:
            marks[mark.path] = mark
    return marks


def value_at_safe(state: UserAdoptionState, path: FieldPath) -> Any:
    """``value_at``, with a path of a shape no longer known reading as absent."""
    try:
        return value_at(state, path)
    except (AttributeError, IndexError, KeyError):
        return None
