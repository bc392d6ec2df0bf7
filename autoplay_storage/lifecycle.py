"""Session lifecycle: what an agent calls at session start and end.

Stronger than the published SDK in the ways the spec measures (section 6):
every state change is one atomic read-modify-write (``atomic_update``), so
racing session ends never lose an update; a session end already recorded is
a no-op (idempotent on ``session_id``); a failed read raises instead of
saving a blank state over history; workflow progress captured in the snapshot
is merged into the state; the ending session stops being "current".
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .errors import CorruptDocumentError, NotBrowsableError, StorageUnavailableError
from .manager import atomic_update, record_session_end
from .protocol import AutoplayStorageAdapter, BrowsableStorage, StateDoc, TypedDocument, WrittenDocument
from .user_adoption_state import SessionIndexEntry, SessionSnapshot, UserAdoptionState

logger = logging.getLogger("autoplay_storage.lifecycle")

Summarizer = Callable[[SessionSnapshot], Awaitable[str]]


def init_user_state(user_id: str, *, metadata: dict[str, Any] | None = None) -> UserAdoptionState:
    """A fresh state for a user seen for the first time."""
    if not isinstance(user_id, str) or not user_id:
        raise ValueError("user_id must be a non-empty string")
    return UserAdoptionState(user_id=user_id, metadata=dict(metadata or {}))


def load_state(doc: StateDoc | None, user_id: str) -> UserAdoptionState:
    """Parse a stored document, or start a new state when there is none.

    Raises ``UnsupportedVersionError`` for an unknown ``_v``: the caller must
    see it rather than overwrite a newer writer's data. A state the store
    hands over with the typed state it was written from (``TypedDocument``)
    is that typed state, taken once: no parse at all.
    """
    if doc is None:
        return init_user_state(user_id)
    if type(doc) is TypedDocument:
        typed = doc.take()
        if type(typed) is UserAdoptionState:
            return typed
    return UserAdoptionState.from_dict(doc, user_id=user_id)


def state_document(state: UserAdoptionState) -> WrittenDocument:
    """The document to store for ``state``, with a private copy of it a store may keep (``WrittenDocument``).

    The copy is what reading the stored document back gives (``clone`` writes
    free-form bags as ``to_dict`` does), for a state built by the engine's own
    rules; the lifecycle's next step for this user starts from it unparsed.
    """
    return WrittenDocument(state.to_dict(), state.clone())


async def on_session_start(
    product_id: str,
    user_id: str,
    session_id: str,
    storage: AutoplayStorageAdapter,
    *,
    metadata: dict[str, Any] | None = None,
) -> tuple[UserAdoptionState, SessionSnapshot | None]:
    """Load (or create) the state, mark the session current, persist; fetch the onboarding snapshot.

    ``metadata``, if given, is merged into the state's metadata bag.
    """

    parsed: list[UserAdoptionState] = []

    def mutate(doc: StateDoc | None) -> StateDoc:
        state = load_state(doc, user_id)
        if metadata:
            state.merge_metadata(metadata)
        state.mark_session_started(session_id)
        parsed.append(state)
        return state_document(state)

    await atomic_update(storage, product_id, user_id, mutate)
    state = parsed[-1]  # the last attempt is the one stored: no need to parse it again
    onboarding = None
    if state.sessions.count > 0:
        onboarding = await load_onboarding_snapshot(product_id, user_id, state, storage)
    return state, onboarding


async def load_onboarding_snapshot(
    product_id: str, user_id: str, state: UserAdoptionState, storage: AutoplayStorageAdapter
) -> SessionSnapshot | None:
    """Session number 1, found through the index, or through the full history once it fell out."""
    first = next((e for e in state.sessions.index if e.session_number == 1), None)
    session_id = first.session_id if first else None
    if session_id is None:
        try:
            browser = getattr(storage, "browser", storage)
        except NotBrowsableError:  # a primary without listings: the agent starts without it
            return None
        if isinstance(browser, BrowsableStorage):
            page = await browser.list_sessions(product_id, user_id, limit=1, newest_first=False)
            session_id = page.items[0].session_id if page.items else None
    if session_id is None:
        return None
    try:
        doc = await storage.get_session_snapshot(product_id, user_id, session_id)
    except CorruptDocumentError as exc:
        # Context for the agent, not the record itself: start the session without it.
        logger.warning("onboarding snapshot unreadable: %s", exc, extra={"product_id": product_id, "user_id": user_id})
        return None
    if doc is None:
        return None
    return read_snapshot(doc, session_id, user_id)


def read_snapshot(doc: dict[str, Any], session_id: str, user_id: str) -> SessionSnapshot:
    """A stored snapshot, typed: a copy of the store's typed one when it has it for these bytes (``TypedDocument``)."""
    if type(doc) is TypedDocument and type(doc.typed) is SessionSnapshot:
        return doc.typed.clone()
    return SessionSnapshot.from_dict(doc, session_id=session_id, user_id=user_id)


def snapshot_document(snapshot: SessionSnapshot, user_id: str) -> dict[str, Any]:
    """The document to freeze for ``snapshot``.

    The first session's snapshot is read back at every later session start
    (``load_onboarding_snapshot``), so it carries how it reads
    (``WrittenDocument``) for a store that keeps that: parsed here once, not
    at every start.
    """
    doc = snapshot.to_dict()
    if snapshot.session_number != 1:
        return doc
    return WrittenDocument(doc, SessionSnapshot.from_dict(doc, session_id=snapshot.session_id, user_id=user_id))


async def resolve_summary(
    snapshot: SessionSnapshot, *, summarizer: Summarizer | None = None, summary: str | None = None
) -> str | None:
    """An explicit summary wins; else the summarizer's output; a failing summarizer gives ``None``."""
    if summary is not None:
        return summary
    if summarizer is None:
        return None
    try:
        text = await summarizer(snapshot)
    except Exception:
        logger.exception(
            "summarizer failed; the session is recorded without a new summary",
            extra={"session_id": snapshot.session_id, "user_id": snapshot.user_id},
        )
        return None
    if not isinstance(text, str) or not text.strip():
        logger.warning("summarizer returned no text", extra={"session_id": snapshot.session_id})
        return None
    return text.strip()


def recorded_before(state: UserAdoptionState, snapshot: SessionSnapshot, *, frozen_before: bool) -> bool:
    """Whether the state already counts this session.

    The inline index answers for the newest 50. An older session has left it,
    but its snapshot was frozen before this call (write-once keys tell), and its
    number lies among the sessions the index no longer holds: a late retry of
    it must change nothing. A frozen snapshot numbered past those was never
    counted (a writer that froze it and died before its state write, such as
    the published SDK's two-step end): folding it in heals the history.
    """
    if state.has_session(snapshot.session_id):
        return True
    left_the_index = state.sessions.count - len(state.sessions.index)
    return frozen_before and 0 < snapshot.session_number <= left_the_index


def apply_session_end(
    state: UserAdoptionState,
    snapshot: SessionSnapshot,
    summary: str | None,
    *,
    now: float | None = None,
    frozen_before: bool = False,
) -> bool:
    """Fold a finished session into the state; ``False`` if it was already recorded (``recorded_before``)."""
    if recorded_before(state, snapshot, frozen_before=frozen_before):
        return False
    state.journey_state = snapshot.journey_state
    state.mastery = snapshot.mastery.clone()
    state.onboarding.completion_rate = snapshot.completion_rate
    if summary is not None:
        state.onboarding.summary = summary
    if snapshot.reached_onboarding_complete and state.onboarding.onboarding_completed_at is None:
        state.onboarding.onboarding_completed_at = snapshot.captured_at
    state.record_discovered_features(snapshot.discovered_features)
    state.merge_workflow_progress(snapshot.workflow_progress)
    state.record_session(
        SessionIndexEntry(
            session_id=snapshot.session_id,
            # The ordinal assigned when the end is committed: racing ends that all
            # believed they were session N still get distinct, gap-free numbers.
            session_number=state.sessions.count + 1,
            started_at=snapshot.started_at,
            captured_at=snapshot.captured_at,
        )
    )
    if state.sessions.current_session_id == snapshot.session_id:
        state.sessions.current_session_id = None
    state.touch(now)
    return True


@dataclass
class SessionEnd:
    """What a session end did: the state as stored, and whether this call recorded the session."""

    state: UserAdoptionState
    document: StateDoc
    snapshot: SessionSnapshot
    recorded: bool


class _NumberTaken(Exception):
    """Another end took the session number this one was frozen with; freeze again as ``number``."""

    def __init__(self, number: int) -> None:
        super().__init__(number)
        self.number = number


# Racing ends for one user take numbers one at a time; this bounds the rounds a
# loser may need (as many as the ends racing with it).
MAX_RENUMBER_ROUNDS = 500


async def end_session(
    product_id: str,
    user_id: str,
    session_snapshot: SessionSnapshot,
    storage: AutoplayStorageAdapter,
    *,
    summarizer: Summarizer | None = None,
    summary: str | None = None,
    number_at_commit: bool = False,
) -> SessionEnd:
    """Freeze the snapshot (write-once) and fold it into the state, as one atomic step where the store can.

    A retried end is a no-op, however old the session (``recorded_before``).
    The state is folded from the snapshot as stored, so a retry that rebuilt
    its snapshot cannot make the index disagree with the frozen record.

    ``number_at_commit``: the caller did not choose ``session_number`` (the
    server froze the snapshot for it), so the snapshot is frozen with the
    position the store records the session at; racing ends each get their own.
    Otherwise the number is kept as sent, as the published SDK does.

    A summarizer runs after the session is recorded, holding nothing, and
    only when this call recorded it; its text is then stored unless the
    summary changed meanwhile (``apply_summary``). A crash in between leaves
    the session recorded without the new summary: nothing half-written.
    """
    if not session_snapshot.session_id:
        raise ValueError("the session snapshot has no session_id")
    if not session_snapshot.user_id:
        session_snapshot.user_id = user_id
    for _round in range(MAX_RENUMBER_ROUNDS):
        try:
            ended = await _record_end(
                product_id, user_id, session_snapshot, storage, summary=summary, number_at_commit=number_at_commit
            )
            break
        except _NumberTaken as taken:
            session_snapshot = session_snapshot.clone()
            session_snapshot.session_number = taken.number
            await asyncio.sleep(random.uniform(0, 0.002))  # spread the herd of racing ends a little
    else:
        raise StorageUnavailableError(f"gave up numbering a session of {product_id}/{user_id}: too many racing ends")
    if summary is None and summarizer is not None and ended.recorded:
        text = await resolve_summary(ended.snapshot, summarizer=summarizer)
        if text is not None:
            written = await apply_summary(
                product_id, user_id, text, storage, expected=ended.state.onboarding.summary
            )
            if written is not None:
                ended = SessionEnd(written.state, written.document, ended.snapshot, recorded=True)
    return ended


async def _record_end(
    product_id: str,
    user_id: str,
    session_snapshot: SessionSnapshot,
    storage: AutoplayStorageAdapter,
    *,
    summary: str | None,
    number_at_commit: bool,
) -> SessionEnd:
    """One try at freezing and folding; ``_NumberTaken`` when the snapshot's number is no longer next."""
    session_id = session_snapshot.session_id
    sent = snapshot_document(session_snapshot, user_id)

    def frozen_snapshot(doc: dict[str, Any]) -> SessionSnapshot:
        """The snapshot as stored: written before (a retry, another writer) when it is not ours."""
        if doc is sent:
            return session_snapshot
        frozen = read_snapshot(doc, session_id, user_id)
        frozen.session_id = session_id  # the key names the session, whatever a hand edit says
        return frozen

    captured_now = time.time()
    parsed: list[tuple[dict[str, Any], SessionSnapshot]] = []  # the last frozen document seen, parsed
    attempts: list[tuple[UserAdoptionState, StateDoc | None, SessionSnapshot]] = []

    def fold(frozen_doc: dict[str, Any], doc: StateDoc | None) -> StateDoc | None:
        if parsed and parsed[0][0] is frozen_doc:
            snapshot = parsed[0][1]
        else:
            snapshot = frozen_snapshot(frozen_doc)
            parsed[:] = [(frozen_doc, snapshot)]
        ours = frozen_doc is sent
        state = load_state(doc, user_id)
        if not apply_session_end(state, snapshot, summary, now=captured_now, frozen_before=not ours):
            attempts.append((state, None, snapshot))
            return None
        if number_at_commit and ours and snapshot.session_number != state.sessions.count:
            raise _NumberTaken(state.sessions.count)  # nothing is written: freeze again with this number
        new = state_document(state)
        attempts.append((state, new, snapshot))
        return new

    _frozen, stored = await record_session_end(storage, product_id, user_id, session_id, sent, fold)
    state, written, session_snapshot = attempts[-1]  # the last attempt is what is stored: no second parse
    if stored is None:  # nothing was stored and nothing written: the primary lost it under us
        raise StorageUnavailableError(f"the state of {product_id}/{user_id} vanished during a session end")
    return SessionEnd(state, stored, session_snapshot, recorded=written is not None)


@dataclass
class SummaryWrite:
    """The state after ``apply_summary``, and whether it holds the new text."""

    state: UserAdoptionState
    document: StateDoc
    applied: bool


async def apply_summary(
    product_id: str, user_id: str, text: str, storage: AutoplayStorageAdapter, *, expected: str | None
) -> SummaryWrite | None:
    """Store ``text`` as the summary if the summary is still ``expected`` (what the summarizer started from).

    A compare-and-set on the summary alone: a summary written meanwhile (a
    later session, an edit, a re-run) is newer than this one and wins; a
    retry finding ``text`` stored already counts as applied. ``None`` when the
    user has no state (erased meanwhile): nothing is written.
    """
    seen: list[SummaryWrite] = []

    def mutate(doc: StateDoc | None) -> StateDoc | None:
        if doc is None:
            return None
        state = load_state(doc, user_id)
        current = state.onboarding.summary
        if current != expected or current == text:
            seen[:] = [SummaryWrite(state, {}, applied=current == text)]
            return None
        state.onboarding.summary = text
        state.touch()
        new = state_document(state)
        seen[:] = [SummaryWrite(state, new, applied=True)]
        return new

    stored = await atomic_update(storage, product_id, user_id, mutate)
    if stored is None or not seen:
        return None
    written = seen[-1]
    return SummaryWrite(written.state, stored, written.applied)


async def on_session_end(
    product_id: str,
    user_id: str,
    session_snapshot: SessionSnapshot,
    storage: AutoplayStorageAdapter,
    *,
    summarizer: Summarizer | None = None,
    summary: str | None = None,
) -> UserAdoptionState:
    """Freeze the snapshot and fold it into the state; returns the updated state (see ``end_session``)."""
    ended = await end_session(
        product_id, user_id, session_snapshot, storage, summarizer=summarizer, summary=summary
    )
    return ended.state


def build_agent_context(
    state: UserAdoptionState, onboarding_session: SessionSnapshot | None = None
) -> dict[str, Any]:
    """The small dict the agent consumes (``ProactiveTriggerContext.context_extra``)."""
    context: dict[str, Any] = {
        "user_journey_state": state.journey_state.value,
        "user_mastery_level": state.mastery.level.value,
        "user_mastery_rating": state.mastery.rating,
        "session_count": state.sessions.count,
        "is_returning_user": state.sessions.count > 1,
    }
    if state.onboarding.summary:
        context["onboarding_summary"] = state.onboarding.summary
    if onboarding_session is not None:
        context["onboarding_session_in_progress_workflows"] = list(onboarding_session.in_progress_workflow_ids)
        context["onboarding_session_untouched_workflows"] = list(onboarding_session.untouched_workflow_ids)
    return context
