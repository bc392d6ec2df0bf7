"""Rows and pages the console lists; the same for every browsable primary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")

MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class ProductSummary:
    product_id: str
    user_count: int
    journey_states: dict[str, int] = field(default_factory=dict)
    mastery_levels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class UserQuery:
    """Filters for the users of one product.

    ``search`` matches a prefix of the user id or of a metadata value
    (``email``, ``role``, ``name`` and other string values), case-insensitively.
    """

    search: str | None = None
    journey_state: str | None = None
    mastery_level: str | None = None
    onboarded: bool | None = None
    order: Literal["-last_activity", "last_activity"] = "-last_activity"


@dataclass(frozen=True)
class UserSummary:
    product_id: str
    user_id: str
    journey_state: str = "onboarding"
    mastery_level: str = "novice"
    mastery_rating: int = 0
    completion_rate: float = 0.0
    onboarded: bool = False
    sessions_count: int = 0
    first_seen_at: float | None = None
    last_activity_at: float | None = None
    current_session_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    corrupt: bool = False  # the stored document could not be read; open the user to see it


@dataclass(frozen=True)
class SessionSummary:
    session_id: str
    session_number: int
    started_at: float
    captured_at: float
    duration_s: float = 0.0
    journey_state: str = "onboarding"
    mastery_level: str = "novice"
    mastery_rating: int = 0
    completion_rate: float = 0.0
    reached_onboarding_complete: bool = False
    corrupt: bool = False


# --- shared derivations, so every primary indexes and lists alike ------------

SEARCH_TERM_MAX = 200


def _indexable(term: str) -> bool:
    """No store can index a NUL (PostgreSQL text refuses it) or a lone surrogate (not UTF-8)."""
    if "\x00" in term:
        return False
    if term.isascii():
        return True
    try:
        term.encode()
    except UnicodeEncodeError:
        return False
    return True


def search_terms(user_id: str, metadata: dict[str, Any]) -> set[str]:
    """Lower-cased values a user can be found by: the user id and metadata strings (those a store can index)."""
    terms = {user_id.lower()}
    for value in metadata.values():
        if isinstance(value, str) and value.strip():
            terms.add(value.strip().lower()[:SEARCH_TERM_MAX])
    return {t for t in terms if _indexable(t)}


def user_summary_from_doc(product_id: str, user_id: str, doc: dict[str, Any]) -> UserSummary:
    """A list row from a stored state document (read defensively)."""
    from .errors import DocumentError
    from .user_adoption_state import UserAdoptionState

    try:
        state = UserAdoptionState.from_dict(doc, user_id=user_id)
    except (DocumentError, TypeError):
        return UserSummary(product_id=product_id, user_id=user_id, corrupt=True)
    return UserSummary(
        product_id=product_id,
        user_id=user_id,
        journey_state=state.journey_state.value,
        mastery_level=state.mastery.level.value,
        mastery_rating=state.mastery.rating,
        completion_rate=state.onboarding.completion_rate,
        onboarded=state.is_onboarded,
        sessions_count=state.sessions.count,
        first_seen_at=state.first_seen_at,
        last_activity_at=state.last_updated_at,
        current_session_id=state.sessions.current_session_id,
        metadata=state.metadata,
    )


def session_summary_from_doc(session_id: str, doc: dict[str, Any]) -> SessionSummary:
    """A history row from a stored snapshot document (read leniently)."""
    from .user_adoption_state import SessionSnapshot

    try:
        snap = SessionSnapshot.from_dict(doc, session_id=session_id)
    except TypeError:
        return SessionSummary(session_id=session_id, session_number=0, started_at=0.0, captured_at=0.0, corrupt=True)
    return SessionSummary(
        session_id=session_id,
        session_number=snap.session_number,
        started_at=snap.started_at,
        captured_at=snap.captured_at,
        duration_s=snap.duration_s,
        journey_state=snap.journey_state.value,
        mastery_level=snap.mastery.level.value,
        mastery_rating=snap.mastery.rating,
        completion_rate=snap.completion_rate,
        reached_onboarding_complete=snap.reached_onboarding_complete,
    )
