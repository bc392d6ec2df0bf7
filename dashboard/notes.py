"""Plain-words notes about stored documents and ids that read, but not as they were written.

The console shows what the agents' API serves; where that differs from the
stored text (non-finite numbers) or where agents cannot reach a user at all
(an id made only of dots), staff are told so and how it reads.
"""

from __future__ import annotations

from typing import Any

from autoplay_storage.codec import non_finite_paths
from autoplay_storage.ids import is_dots_only

_HOW_NON_FINITE_READS = (
    "They read by the rules for hostile documents: a required timestamp as the time of reading, "
    "an optional one as empty, a rating, rate or count as 0, and a value in metadata or another "
    "free-form field as null."
)


def non_finite_note(doc: Any, what: str) -> str:
    """``""`` unless ``doc`` holds NaN or ±Infinity; ``what`` is ``"state"`` or ``"snapshot"``."""
    paths = non_finite_paths(doc)
    if not paths:
        return ""
    where = ", ".join(paths) + (" and more" if len(paths) >= 20 else "")
    if what == "state":
        after = (
            "The agents' API answers with the state read that way, and the next write "
            "(a session start or end, a PUT or a PATCH) stores it so."
        )
    else:
        after = "The API serves the snapshot read that way; snapshots are write-once, so the stored text stays."
    return (
        f"The stored {what} holds non-finite numbers (NaN or Infinity, which JSON does not allow "
        f"but Python's json writes) at: {where}. {_HOW_NON_FINITE_READS} {after}"
    )


def dots_only_notes(**ids: str) -> list[str]:
    """One note per id (``user_id="..."``) that the agents' API refuses because it is made only of dots."""
    return [
        f"The {name.replace('_', ' ')} {value!r} is made only of dots. The agents' API refuses such ids "
        "(HTTP clients and browsers rewrite '.' and '..' in a URL path), so agents cannot reach these "
        "documents: another writer stored them, or they predate the rule. manage.py autoplay_reindex "
        "lists every such id."
        for name, value in ids.items()
        if is_dots_only(value)
    ]


def document_notes(doc: Any, what: str, **ids: str) -> list[str]:
    """Every note for one page: its ids, then its document (``None``: no readable document)."""
    notes = dots_only_notes(**ids)
    note = non_finite_note(doc, what) if doc is not None else ""
    return [*notes, note] if note else notes
