"""The adapter interface (wire for custom adapters) and the engine's extensions.

``AutoplayStorageAdapter`` is the four-method Protocol of the published SDK:
plain JSON dicts at the boundary, no inheritance. The two extra protocols are
optional capabilities a primary may offer; the manager and the lifecycle use
them when present:

- ``AtomicStateStore``: read-modify-write of one user's state without lost
  updates (Redis WATCH/MULTI, a row lock, an asyncio lock).
- ``SnapshotStore``: a write-once save that says what is stored (no read-back).
- ``SessionEndStore``: a session end (freeze the snapshot, fold it into the
  state) as one atomic step, one round trip where the store can.
- ``BrowsableStorage``: listings for the console (products, users, history).
- ``RawHistoryStore``: the history with each snapshot's stored text, a page
  per round trip (the export; without it, a read per snapshot).
- ``ErasableStorage``: remove everything of one user, leaving a tombstone
  that the session end checks (``autoplay_storage.tombstones``).
- ``RepairableStateStore``: replace a state only while its stored text is
  exactly what the caller saw (the repair of an unreadable state, which no
  ``mutate`` can parse).

``WrittenDocument`` and ``TypedDocument`` let a store that keeps what it
wrote hand the lifecycle the typed object back with the document, instead of
a dict it would parse again; stores that ignore them lose nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .browse import Page, ProductSummary, SessionSummary, UserQuery, UserSummary

StateDoc = dict[str, Any]
StateMutation = Callable[[StateDoc | None], StateDoc | None]
# (the frozen snapshot, the current state) -> the state to store, or None to leave it.
SessionFold = Callable[[dict[str, Any], StateDoc | None], StateDoc | None]


class _DocumentWithTyped(dict[str, Any]):
    """A complete JSON document (a plain dict to anyone else) that also carries the engine's typed object for it."""

    __slots__ = ("typed",)

    def __init__(self, doc: dict[str, Any], typed: object) -> None:
        super().__init__(doc)
        self.typed = typed

    def take(self) -> object:
        """The typed object, handed over once (a second taker gets ``None`` and reads the dict)."""
        typed, self.typed = self.typed, None
        return typed


class WrittenDocument(_DocumentWithTyped):
    """A document a writer offers a store, with ``typed``: a private copy of the object it was written from.

    Parsing a state back into typed form costs more than the rest of a session
    end, and the process that wrote a state usually handles that user's next
    session too. A store that remembers the bytes it wrote may keep ``typed``
    beside them and hand it back with those very bytes (``TypedDocument``).
    Readers never trust a ``WrittenDocument`` itself: whoever holds it may
    have edited the dict since.
    """

    __slots__ = ()


class TypedDocument(_DocumentWithTyped):
    """A document a store read, with the typed object those very bytes were written from.

    The dict is always the whole document: a wrapper that passes it on, or
    builds a new dict from it, loses at most the speed-up, never correctness.
    A typed state is taken once (its reader changes it); a typed snapshot is
    shared with the store (snapshots never change), so its reader copies it.
    """

    __slots__ = ()


@runtime_checkable
class AutoplayStorageAdapter(Protocol):
    """Any object with these four async methods is a storage adapter."""

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None: ...

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None: ...

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        """Write-once: a second write of the same session changes nothing."""
        ...

    async def get_session_snapshot(
        self, product_id: str, user_id: str, session_id: str
    ) -> dict[str, Any] | None: ...


@runtime_checkable
class AtomicStateStore(Protocol):
    async def update_user_state(
        self, product_id: str, user_id: str, mutate: StateMutation
    ) -> StateDoc | None:
        """Atomically apply ``mutate`` to the stored state and return what is stored after.

        ``mutate`` gets the current document (``None`` if there is none) and
        returns the document to store, or ``None`` to leave it as it is. It
        may be called more than once (on a write conflict), so it must be a
        pure function of its argument. It may raise; nothing is written then.
        The document may be a ``TypedDocument``; it is the whole document either way.
        """
        ...


@runtime_checkable
class SnapshotStore(Protocol):
    async def create_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> dict[str, Any]:
        """Write-once, and return the snapshot stored now: ``snapshot`` if this call wrote it,
        else the one written before (a retried end must fold what is frozen, not what it sent).

        The store learns which from its own write (``SET NX``, ``ON CONFLICT``), so
        no read-back is needed in the usual case. Raises ``CorruptDocumentError``
        if the earlier one cannot be read.
        """
        ...


@runtime_checkable
class SessionEndStore(Protocol):
    async def record_session_end(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any], fold: SessionFold
    ) -> tuple[dict[str, Any], StateDoc | None]:
        """Freeze ``snapshot`` (write-once) and store ``fold(frozen, current_state)``, as one atomic step.

        ``frozen`` is ``snapshot`` when this call wrote it, else the one written
        before. Returns ``(frozen, state stored after)``. ``fold`` follows the
        rules of ``AtomicStateStore``'s ``mutate``: pure, may run more than
        once, may raise (nothing of the state is written then).
        """
        ...


@runtime_checkable
class RepairableStateStore(Protocol):
    async def replace_state_if_raw(self, product_id: str, user_id: str, expected_raw: str, state: StateDoc) -> bool:
        """Store ``state`` only if the stored state's text is exactly ``expected_raw``; whether it was written.

        A compare-and-set on the stored text (as ``get_raw_user_state`` gives
        it), not on a parsed document: it is how a state that cannot be
        parsed is replaced without losing a repair made meanwhile. ``False``
        (nothing written) when the text changed or is gone.
        """
        ...


@runtime_checkable
class BrowsableStorage(Protocol):
    async def ping(self) -> None:
        """Return if the store answers; raise ``StorageUnavailableError`` if not."""
        ...

    async def list_products(self) -> list[ProductSummary]: ...

    async def list_users(
        self, product_id: str, query: UserQuery | None = None, *, cursor: str | None = None, limit: int = 50
    ) -> Page[UserSummary]: ...

    async def list_sessions(
        self,
        product_id: str,
        user_id: str,
        *,
        cursor: str | None = None,
        limit: int = 50,
        newest_first: bool = True,
    ) -> Page[SessionSummary]:
        """The full session history (beyond the 50 inline), from the snapshots."""
        ...

    async def get_raw_user_state(self, product_id: str, user_id: str) -> str | None:
        """The stored text as it is, for showing a corrupt document."""
        ...

    async def get_raw_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> str | None: ...


@runtime_checkable
class ErasableStorage(Protocol):
    async def erase_user(self, product_id: str, user_id: str, *, tombstone_s: int) -> dict[str, int]:
        """Remove the user's state, every snapshot, the history and every index entry; leave a tombstone.

        The tombstone (kept ``tombstone_s``) is written before anything is
        removed, so a session end racing the erasure is refused rather than
        half-kept (``SessionEndStore.record_session_end`` raises
        ``UserErasedError`` for a session that started before it). Safe to
        repeat: a second call removes nothing and moves the erasure time on.
        Returns what was removed, by kind (keys, rows, index entries).
        """
        ...


@runtime_checkable
class RawHistoryStore(Protocol):
    async def list_raw_sessions(
        self, product_id: str, user_id: str, *, cursor: str | None = None, limit: int = 50
    ) -> Page[tuple[str, str]]:
        """The full history oldest first, as ``(session_id, the snapshot's stored text)``, with keyset cursors."""
        ...
