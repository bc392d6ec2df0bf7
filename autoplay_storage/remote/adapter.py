"""``ConsoleStorageAdapter``: a primary whose storage is the console, reached over its API.

A process with no Redis or database credentials keeps its agent's memory in
the console: ``StorageManager([ConsoleStorageAdapter(url, key)])``.

The API owns what only session starts and ends may write (the session
history, ``first_seen_at``, the completion stamp), so the adapter does not
write documents blindly; it says what a new document *means* in the API's
terms and sends that:

- a document that marks another session current is that session's **start**
  (``POST .../start``, with the metadata that changed);
- everything else an agent may change goes in a conditional **replace**
  (``PUT`` with the etag just read); a stale etag (409) re-reads and re-applies
  the mutation, which is what an atomic update over HTTP is;
- a snapshot is frozen by the session's **end** (``POST .../end``): the server
  freezes it write-once and folds it into the state with the engine's own
  fold, in one atomic step on its primary. Saving a snapshot therefore ends
  the session; the API has no half-recorded session.

``record_session_end`` receives a ``fold`` it cannot ship to the server. The
server's end *is* the engine's fold; what the caller's fold decides beyond it
(the summary it resolved) travels as the end's ``summary``. The fold is run
on the state read before the end (to learn that summary) and on the state
the server answers (so the lifecycle reads back what is stored).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autoplay_storage.protocol import SessionFold, StateDoc, StateMutation

from . import calls
from .calls import RetryPolicy, VersionedState
from .client import DEFAULT_TIMEOUT, ConsoleClient, Timeout
from .errors import ConsoleUnavailableError, NotFoundError, StateConflictError, StateExistsError

# Fields the API keeps from the stored state on a replace: comparing them would only say "changed" forever.
_SERVER_OWNED = ("sessions", "first_seen_at", "last_updated_at")


def _editable(doc: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` as a replace could change it, given what is ``stored``."""
    view = {k: v for k, v in doc.items() if k not in _SERVER_OWNED}
    stamp = (stored.get("onboarding") or {}).get("onboarding_completed_at")
    if stamp is not None and isinstance(view.get("onboarding"), dict):
        view["onboarding"] = {**view["onboarding"], "onboarding_completed_at": stamp}
    return view


def _current_session(doc: Mapping[str, Any] | None) -> str | None:
    sessions = (doc or {}).get("sessions")
    return sessions.get("current_session_id") if isinstance(sessions, dict) else None


def _recorded(doc: Mapping[str, Any], session_id: str) -> Mapping[str, Any] | None:
    sessions = doc.get("sessions")
    index = sessions.get("index") if isinstance(sessions, dict) else None
    return next((e for e in index or () if isinstance(e, dict) and e.get("session_id") == session_id), None)


def _metadata_delta(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """What a start's metadata merge needs to turn ``old`` into ``new`` (``None`` removes a key)."""
    delta: dict[str, Any] = {k: v for k, v in new.items() if old.get(k, object()) != v}
    delta.update({k: None for k in old if k not in new})
    return delta


def _summary(doc: Mapping[str, Any] | None) -> Any:
    return ((doc or {}).get("onboarding") or {}).get("summary")


class ConsoleStorageAdapter:
    """The four-method adapter protocol plus the atomic update and session end, over the console API."""

    name = "console"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        summarize: bool = False,
        max_conflicts: int = 10,
        client: ConsoleClient | None = None,
    ) -> None:
        """``summarize``: every end asks the server to run its configured summarizer.

        ``max_conflicts`` bounds the re-reads of an update that keeps losing
        the race to other writers (then ``StateConflictError``).
        """
        self.client = client or ConsoleClient(base_url, api_key, timeout=timeout, retry=retry)
        self.summarize = summarize
        self.max_conflicts = max_conflicts

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- the four wire methods --

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        current = await self._read(product_id, user_id)
        return current.document if current else None

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        """Store ``state`` as far as the API lets an agent write it (see the module docstring)."""
        await self.update_user_state(product_id, user_id, lambda _current: state)

    async def get_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> dict[str, Any] | None:
        try:
            return await self.client._run(calls.session_call(product_id, user_id, session_id), _snapshot_doc)
        except NotFoundError:
            return None

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        """Freeze the snapshot by ending its session on the server (write-once, idempotent)."""
        await self._end(product_id, user_id, session_id, snapshot, None)

    # -- the engine's extensions --

    async def update_user_state(self, product_id: str, user_id: str, mutate: StateMutation) -> StateDoc | None:
        """Read with the etag, mutate, write conditionally; on a conflict read again and re-apply."""
        for _ in range(self.max_conflicts):
            current = await self._read(product_id, user_id)
            new = mutate(current.document if current else None)
            if new is None:
                return current.document if current else None
            try:
                return (await self._write(product_id, user_id, current, new)).document
            except (StateConflictError, StateExistsError):
                continue  # another writer won: the mutation is pure, apply it to what is stored now
        raise StateConflictError(409, "state_conflict", f"gave up after {self.max_conflicts} conflicting writes")

    async def record_session_end(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any], fold: SessionFold
    ) -> tuple[dict[str, Any], StateDoc | None]:
        """The server's atomic end, carrying the summary ``fold`` resolves (see the module docstring)."""
        current = await self._read(product_id, user_id)
        before = current.document if current else None
        intended = fold(snapshot, before)  # may raise: then nothing is sent
        summary = _summary(intended) if intended is not None else None
        if summary is not None and summary == _summary(before):
            summary = None
        ended = await self._end(product_id, user_id, session_id, snapshot, summary)
        frozen = snapshot if self._froze(ended.document, session_id, snapshot) else None
        if frozen is None:
            frozen = await self.get_session_snapshot(product_id, user_id, session_id)
            if frozen is None:
                raise ConsoleUnavailableError(None, "snapshot_missing", f"session {session_id!r} ended but not found")
        fold(frozen, ended.document)  # the last fold sees what is stored: the caller's result is the server's
        return frozen, ended.document

    # -- internals --

    async def _read(self, product_id: str, user_id: str) -> VersionedState | None:
        try:
            return await self.client.get_state(product_id, user_id)
        except NotFoundError:
            return None

    async def _end(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any], summary: str | None
    ) -> VersionedState:
        doc = {**snapshot, "session_id": session_id}
        return await self.client.end_session(product_id, user_id, doc, summary=summary, summarize=self.summarize)

    @staticmethod
    def _froze(state: Mapping[str, Any], session_id: str, snapshot: Mapping[str, Any]) -> bool:
        """Whether the snapshot the server folded is the one sent (its index entry shows its times)."""
        entry = _recorded(state, session_id)
        return entry is not None and (entry.get("started_at"), entry.get("captured_at")) == (
            snapshot.get("started_at"),
            snapshot.get("captured_at"),
        )

    async def _write(
        self, product_id: str, user_id: str, current: VersionedState | None, new: dict[str, Any]
    ) -> VersionedState:
        if current is None:
            return await self.client.replace_state(product_id, user_id, new, create_only=True)
        stored = current
        starting = _current_session(new)
        if (
            starting is not None
            and starting != _current_session(current.document)
            and not _recorded(current.document, starting)
        ):
            delta = _metadata_delta(current.document.get("metadata") or {}, new.get("metadata") or {})
            stored = await self.client.start_session(product_id, user_id, starting, metadata=delta)
        if _editable(new, stored.document) != _editable(stored.document, stored.document):
            stored = await self.client.replace_state(product_id, user_id, new, if_match=stored.etag)
        return stored


def _snapshot_doc(body: dict[str, Any]) -> dict[str, Any]:
    return body["snapshot"]
