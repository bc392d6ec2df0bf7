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

Typed memos (``WrittenDocument``, ``StoredState``, ``FrozenDocument``) let a
store that keeps what it wrote hand the lifecycle the typed document back
instead of a dict it would parse again; stores that ignore them lose nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from .browse import Page, ProductSummary, SessionSummary, UserQuery, UserSummary
from .codec import parse_document

StateDoc = dict[str, Any]
StateMutation = Callable[[StateDoc | None], StateDoc | None]
# (the frozen snapshot, the current state) -> the state to store, or None to leave it.
SessionFold = Callable[[dict[str, Any], StateDoc | None], StateDoc | None]


class _MemoDocument(dict[str, Any]):
    """A JSON document (a plain dict to anyone else) that also carries ``memo``, a typed object."""

    __slots__ = ("memo",)

    def __init__(self, doc: dict[str, Any], memo: object) -> None:
        super().__init__(doc)
        self.memo = memo


class WrittenDocument(_MemoDocument):
    """A document a mutation returns with ``memo``: the typed object it was written from.

    Parsing a state back into typed form costs more than the rest of a session
    end, and the process that wrote it usually handles the next session too.
    A store that remembers the bytes it last wrote for a key may keep the memo
    beside them and hand it back with those bytes (``StoredState``). Stores
    that know nothing of it simply write the dict. The memo must be a private
    copy that nothing changes afterwards.
    """

    __slots__ = ()


class FrozenDocument(_MemoDocument):
    """A frozen snapshot as parsed from storage, with ``memo``: the typed snapshot those very bytes were written from.

    Snapshots never change, and a session start reads the user's first one
    every time; a reader clones the memo instead of reading the dict field
    by field. The memo is shared: never change it.
    """

    __slots__ = ()


class StoredState:
    """The stored state as the store knows it: its bytes, and the typed state they were written from.

    Offered instead of the document to a mutation that takes it
    (``takes_memo``), which reads it only through the engine's ``load_state``.
    The memo is handed out once: the first reader owns it; a second read
    parses the bytes. Not a dict on purpose: a mutation that claims
    ``takes_memo`` but reads its argument as a document fails loudly instead
    of seeing an empty state.
    """

    __slots__ = ("_memo", "key", "raw")

    def __init__(self, key: str, raw: bytes, memo: object) -> None:
        self.key = key
        self.raw = raw
        self._memo = memo

    def take_memo(self) -> object:
        memo, self._memo = self._memo, None
        return memo

    def document(self) -> dict[str, Any]:
        """The stored document, parsed (``CorruptDocumentError`` if it is not one)."""
        doc = parse_document(self.key, self.raw)
        assert doc is not None  # bytes are never "no document"
        return doc


def takes_memo(mutate: Callable[..., Any]) -> bool:
    """Whether ``mutate`` accepts a ``StoredState`` in place of the current document."""
    return getattr(mutate, "takes_memo", False)


def memo_taking(fn: Callable[..., Any], like: Callable[..., Any] | None = None) -> Any:
    """Mark ``fn`` as taking a ``StoredState`` (or, with ``like``, as doing so when ``like`` does).

    Wrappers of a mutation pass the mark on, or the store falls back to parsing.
    """
    fn.takes_memo = True if like is None else takes_memo(like)  # type: ignore[attr-defined]
    return fn


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
        A store may pass a ``StoredState`` instead of the document to a
        mutation marked ``takes_memo`` (see ``memo_taking``).
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
