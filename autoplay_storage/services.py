"""Writes: the use cases that change storage, for both interfaces (the agents' API and the console).

Each function is one use case on the per-process ``StorageManager``; the
interfaces never talk to Redis or ORM records themselves (their reads go
through ``selectors``). State changes go
through the primary's atomic update, and the optimistic-concurrency check
(``if_match``) is made *inside* it, so a stale writer can never overwrite a
newer state, even when two writers race in different processes.

Versions are ETags: the SHA-256 of the stored document's canonical JSON. They
need no extra field in the wire document (which the published SDK also reads
and writes) and change whenever anything in the document changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConflictError
from .lifecycle import (
    build_agent_context,
    load_state,
    on_session_start,
)
from .lifecycle import end_session as lifecycle_end_session
from .models import Segment
from .protocol import StateDoc
from .runtime import get_storage
from .user_adoption_state import CompletionRateDenominator, SessionSnapshot, UserAdoptionState

logger = logging.getLogger("autoplay_storage.services")

StateEdit = Callable[[UserAdoptionState], object]
"""One change to a live state, made with the ``UserAdoptionState`` helpers."""


class StateNotFoundError(LookupError):
    """The user has no stored state (start a session first)."""

    def __init__(self, product_id: str, user_id: str) -> None:
        super().__init__(f"no state for user {user_id!r} in product {product_id!r}")
        self.product_id = product_id
        self.user_id = user_id


class StateExistsError(Exception):
    """A create-only write found a state already stored."""

    def __init__(self, etag: str) -> None:
        super().__init__("a state is already stored for this user")
        self.etag = etag


def state_etag(doc: Mapping[str, Any]) -> str:
    """The version of a stored document: stable across key order and whitespace.

    Defined for every document a primary hands over, including what another
    writer stored: ``NaN`` and ``Infinity`` hash as those literals and a lone
    surrogate as itself, so such a state can be read and then replaced with
    ``If-Match`` like any other (the reply is the state as the reader makes of it).
    """
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class VersionedState:
    state: UserAdoptionState
    etag: str

    @classmethod
    def of(cls, doc: StateDoc, user_id: str) -> VersionedState:
        return cls(load_state(doc, user_id), state_etag(doc))


@dataclass(frozen=True)
class SessionStart:
    state: UserAdoptionState
    etag: str
    onboarding_session: SessionSnapshot | None
    context: dict[str, Any]


ANY_VERSION = "*"


def _check_version(doc: StateDoc | None, if_match: str | None, product_id: str, user_id: str) -> None:
    """Raise unless ``if_match`` (``None``: no precondition; ``*``: any stored version) holds for ``doc``."""
    if if_match is None:
        return
    if doc is None:
        raise StateNotFoundError(product_id, user_id)
    if if_match == ANY_VERSION:
        return
    current = state_etag(doc)
    if current != if_match:
        raise ConflictError(if_match, current)


async def start_session(
    product_id: str, user_id: str, session_id: str, *, metadata: Mapping[str, Any] | None = None
) -> SessionStart:
    """Load or create the state, mark the session current; the onboarding snapshot and agent context."""
    state, onboarding = await on_session_start(
        product_id, user_id, session_id, get_storage(), metadata=dict(metadata) if metadata else None
    )
    # The stored document is the state's own to_dict (on_session_start writes exactly that).
    return SessionStart(state, state_etag(state.to_dict()), onboarding, build_agent_context(state, onboarding))


async def next_session_number(product_id: str, user_id: str) -> int:
    """The stored count + 1: the number a session ending now will most likely get."""
    stored = await get_storage().get_user_state(product_id, user_id)
    return (load_state(stored, user_id).sessions.count if stored is not None else 0) + 1


async def snapshot_from_live_state(
    product_id: str,
    user_id: str,
    session_id: str,
    live: UserAdoptionState,
    *,
    catalog_workflow_ids: Iterable[str],
    started_at: float,
    completion_rate_denominator: CompletionRateDenominator | str = CompletionRateDenominator.ALL_CATALOG_WORKFLOWS,
) -> SessionSnapshot:
    """Freeze the caller's live state; the session number follows the stored count.

    The number is a first guess: ended with ``number_at_commit``, the session is
    frozen with the position the store records it at, so racing ends still
    get distinct numbers, in the snapshot and in the index alike.
    """
    return SessionSnapshot.from_adoption_state(
        live,
        session_id=session_id,
        session_number=await next_session_number(product_id, user_id),
        started_at=started_at,
        catalog_workflow_ids=catalog_workflow_ids,
        completion_rate_denominator=completion_rate_denominator,
    )


async def end_session(
    product_id: str,
    user_id: str,
    snapshot: SessionSnapshot,
    *,
    summary: str | None = None,
    summarize: bool = False,
    number_at_commit: bool = False,
) -> VersionedState:
    """Freeze the snapshot (write-once) and fold it into the state; a retried end changes nothing.

    ``summary`` is stored as given (and recorded as an explicit summary);
    ``summarize`` runs the configured summarizer once per session, after the
    session is recorded, whoever retries (``complete_session_summary``). A
    failing summarizer never loses the session. ``number_at_commit``: the
    server chose the snapshot's number, so it becomes the position the session
    is recorded at.
    """
    from django.db import DatabaseError

    from .summary_runs import complete_session_summary, record_explicit_summary

    ended = await lifecycle_end_session(
        product_id, user_id, snapshot, get_storage(), summary=summary, number_at_commit=number_at_commit
    )
    if summary is not None and ended.recorded:
        try:
            await record_explicit_summary(product_id, user_id, ended.snapshot.session_id, summary)
        except DatabaseError:  # bookkeeping only: the session end itself is committed
            logger.exception("could not record the explicit summary", extra={"session_id": ended.snapshot.session_id})
    elif summarize and summary is None:
        ended = await complete_session_summary(product_id, user_id, ended)
    return VersionedState(ended.state, state_etag(ended.document))


def _stored(
    doc: StateDoc | None, product_id: str, user_id: str, state: UserAdoptionState | None = None
) -> VersionedState:
    """The document an atomic update left (``state``: that document, already parsed by the mutation)."""
    if doc is None:
        raise StateNotFoundError(product_id, user_id)
    return VersionedState(state, state_etag(doc)) if state is not None else VersionedState.of(doc, user_id)


def _replacement(current: UserAdoptionState | None, new: UserAdoptionState) -> UserAdoptionState:
    """Keep what only the server writes: the session history, first sight, the completion stamp."""
    merged = load_state(new.to_dict(), new.user_id)
    if current is not None:
        merged.sessions = current.sessions
        merged.first_seen_at = current.first_seen_at
        if current.onboarding.onboarding_completed_at is not None:
            merged.onboarding.onboarding_completed_at = current.onboarding.onboarding_completed_at
    merged.touch()
    return merged


def _same_content(a: StateDoc, b: StateDoc) -> bool:
    """Equal but for the ``last_updated_at`` stamp every write bumps."""
    return {**a, "last_updated_at": None} == {**b, "last_updated_at": None}


async def replace_state(
    product_id: str,
    user_id: str,
    new: UserAdoptionState,
    *,
    if_match: str | None = None,
    create_only: bool = False,
) -> VersionedState:
    """Replace the state if it is still at version ``if_match`` (``*``: any), or create it (``create_only``).

    One of the two preconditions is required: a blind overwrite is how
    concurrent agents lose each other's updates. A retried replace whose
    content is already stored succeeds without writing. The session history
    (``sessions``), ``first_seen_at`` and a set ``onboarding_completed_at``
    are kept from the stored state: only session ends write them.
    """
    if (if_match is None) == (not create_only):
        raise ValueError("pass exactly one of if_match or create_only=True")

    parsed: list[UserAdoptionState | None] = []

    def mutate(doc: StateDoc | None) -> StateDoc | None:
        current = load_state(doc, user_id) if doc is not None else None
        replacement_state = _replacement(current, new)
        replacement = replacement_state.to_dict()
        try:
            if create_only and doc is not None:
                raise StateExistsError(state_etag(doc))
            _check_version(doc, if_match, product_id, user_id)
        except (ConflictError, StateExistsError):
            # A retry of a replace that was applied (its answer lost) finds its own
            # content stored: succeed without writing rather than report a conflict.
            if current is not None and _same_content(current.to_dict(), replacement):
                parsed.append(current)
                return None
            raise
        parsed.append(replacement_state)
        return replacement

    stored = await get_storage().update_user_state(product_id, user_id, mutate)
    return _stored(stored, product_id, user_id, parsed[-1] if parsed else None)


async def patch_state(
    product_id: str, user_id: str, edits: Sequence[StateEdit], *, if_match: str | None = None
) -> VersionedState:
    """Apply small edits in order, atomically (all or none); ``if_match`` is optional here."""

    parsed: list[UserAdoptionState] = []

    def mutate(doc: StateDoc | None) -> StateDoc:
        if doc is None:
            raise StateNotFoundError(product_id, user_id)
        _check_version(doc, if_match, product_id, user_id)
        state = load_state(doc, user_id)
        for edit in edits:
            edit(state)
        parsed.append(state)
        return state.to_dict()

    stored = await get_storage().update_user_state(product_id, user_id, mutate)
    return _stored(stored, product_id, user_id, parsed[-1] if parsed else None)


# -- segments -------------------------------------------------------------------


async def create_segment(product_id: str, name: str, params: Mapping[str, str], *, actor: Any) -> Segment:
    """Save a named filter (its query-string form, already checked by ``filter_params.parse_filter``)."""
    name = name.strip()
    if not name or len(name) > 120:
        raise ValueError("A segment needs a name of 1 to 120 characters.")
    return await Segment.objects.acreate(product_id=product_id, name=name, params=dict(params), created_by=actor)


# -- erasure (docs/erasure.md) ---------------------------------------------------


async def erase_user(product_id: str, user_id: str, *, requested_by: str) -> tuple[dict[str, Any], bool]:
    """Erase the user on the primary and ask every sink to; (the receipt, whether this call started it).

    Repeating it returns the same receipt. ``requested_by`` is who asked
    (``staff:<username>``, ``key:<prefix> <name>``, a command).
    """
    from . import erasure

    receipt, created = await erasure.erase_user(product_id, user_id, requested_by=requested_by)
    return await erasure.receipt_document(receipt), created


async def retry_sink_erasures() -> int:
    """Ask every sink whose deletion is due again (the background retries do this too); how many were due."""
    from . import erasure_sinks

    return await erasure_sinks.retry_due()
