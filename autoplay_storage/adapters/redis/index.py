"""The browsing-index diff of one state write: pure functions, no I/O.

Each user is filed in a product's ``users`` set, one set per filter value
(journey, mastery, onboarded) and a lex-ordered ``search`` set of its terms.
``index_commands`` says which commands move a user from its old entry to its
new one; the writers send them in the same atomic step as the state.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ...browse import UserSummary, search_terms, session_summary_from_doc, user_summary_from_doc
from .keys import JOURNEY_STATES, MASTERY_LEVELS, PRODUCTS_KEY, SEARCH_SEP, filter_keys, search_key, users_key

MAX_MEMBERS = 500  # members per ZADD/ZREM: a Lua unpack() and a reply stay small
_JOURNEY_SET = frozenset(JOURNEY_STATES)
_MASTERY_SET = frozenset(MASTERY_LEVELS)

Command = tuple[Any, ...]


class IndexEntry(NamedTuple):
    """What the browsing indexes hold for one user: exactly what ``user_summary_from_doc`` reads."""

    journey_state: str
    mastery_level: str
    onboarded: bool
    score: float  # last activity
    terms: frozenset[str]  # search_terms(): the user id and metadata strings, lower-cased

    @classmethod
    def from_row(cls, row: UserSummary) -> IndexEntry:
        return cls(
            row.journey_state,
            row.mastery_level,
            row.onboarded,
            row.last_activity_at or 0.0,
            frozenset(search_terms(row.user_id, row.metadata)),
        )


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def index_entry(product_id: str, user_id: str, doc: dict[str, Any]) -> IndexEntry:
    """The index view of a document.

    Documents this engine writes are canonical (every field already valid), and
    for them the fields can be read directly; anything else goes through the
    defensive ``user_summary_from_doc`` so the two can never disagree. This
    keeps a full document parse off the hot path of every write.
    """
    version = doc.get("_v", 1)
    journey = doc.get("journey_state")
    mastery = doc.get("mastery")
    onboarding = doc.get("onboarding")
    metadata = doc.get("metadata")
    updated = doc.get("last_updated_at")
    if (
        version == 1
        and not isinstance(version, bool)
        and type(journey) is str  # a list or an object here (another writer's) cannot be looked up in a set
        and journey in _JOURNEY_SET
        and isinstance(mastery, dict)
        and type(mastery.get("level")) is str
        and mastery["level"] in _MASTERY_SET
        and isinstance(onboarding, dict)
        and isinstance(metadata, dict)
        and finite(updated)
    ):
        return IndexEntry(
            journey,
            mastery["level"],
            finite(onboarding.get("onboarding_completed_at")),
            float(updated) or 0.0,
            frozenset(search_terms(user_id, metadata)),
        )
    return IndexEntry.from_row(user_summary_from_doc(product_id, user_id, doc))


def captured_at(session_id: str, doc: dict[str, Any]) -> float:
    """The history score of a snapshot: its capture time, read as ``session_summary_from_doc`` does."""
    captured = doc.get("captured_at")
    if finite(captured):
        return float(captured)
    return session_summary_from_doc(session_id, doc).captured_at


def search_members(user_id: str, entry: IndexEntry) -> set[str]:
    return {f"{term}{SEARCH_SEP}{user_id}" for term in entry.terms}


def index_commands(
    product_id: str, user_id: str, old: IndexEntry | None, new: IndexEntry, *, filed: bool = False
) -> list[Command]:
    """Commands that move one user's index entries from ``old`` to ``new`` (idempotent).

    ``old`` is the entry of the document being replaced (``None``: there is none).
    ``filed`` says this adapter filed ``old`` itself when it wrote those very
    bytes: then the product and unchanged search terms are not filed again.
    Otherwise (another writer, such as the SDK) everything is filed, so the
    indexes heal. The score is written as text once (``repr``, what the client
    would send for the float): a float's shortest repr costs more than the
    rest of a command's packing, and every filter set repeats it.
    """
    score = repr(new.score)
    cmds: list[Command] = [] if filed else [("SADD", PRODUCTS_KEY, product_id)]
    cmds.append(("ZADD", users_key(product_id), score, user_id))
    new_filters = filter_keys(product_id, new.journey_state, new.mastery_level, new.onboarded)
    if old is not None and old[:3] != new[:3]:  # journey, mastery or onboarded changed
        old_filters = filter_keys(product_id, old.journey_state, old.mastery_level, old.onboarded)
        for key in set(old_filters) - set(new_filters):
            cmds.append(("ZREM", key, user_id))
    for key in new_filters:
        cmds.append(("ZADD", key, score, user_id))
    if filed and old is not None and old.terms == new.terms:
        return cmds  # filed under these terms already (search scores are all 0)
    new_terms = search_members(user_id, new)
    search = search_key(product_id)
    if old is not None and old.terms != new.terms:
        stale = sorted(search_members(user_id, old) - new_terms)
        for i in range(0, len(stale), MAX_MEMBERS):
            cmds.append(("ZREM", search, *stale[i : i + MAX_MEMBERS]))
    members = sorted(new_terms)
    for i in range(0, len(members), MAX_MEMBERS):
        cmds.append(("ZADD", search, *[x for m in members[i : i + MAX_MEMBERS] for x in (0, m)]))
    return cmds
