"""StorageManager: fan-out writes, first-hit reads.

The first adapter is the readable primary; its failures are raised, because a
lost write or a read turned into "not found" is how history gets destroyed.
Every other adapter is a secondary (usually a write-only analytics sink): its
failures are logged, counted and never raised, and each call is bounded by
``sink_timeout_s`` so a slow sink cannot stall a session end.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import NotBrowsableError, StorageUnavailableError
from .metrics import StorageOperation
from .protocol import (
    AtomicStateStore,
    AutoplayStorageAdapter,
    BrowsableStorage,
    RepairableStateStore,
    SessionEndStore,
    SessionFold,
    SnapshotStore,
    StateDoc,
    StateMutation,
)

logger = logging.getLogger("autoplay_storage.manager")

_TRANSPORT_ERRORS = (OSError, ConnectionError, TimeoutError, asyncio.TimeoutError)


def adapter_name(adapter: object) -> str:
    return str(getattr(adapter, "name", None) or type(adapter).__name__)


@dataclass
class SinkStats:
    """Per-secondary counters shown to admins."""

    sent: int = 0
    failed: int = 0
    last_success_at: float | None = None
    last_error_at: float | None = None
    last_error: str | None = None


SinkResultHook = Callable[[object, str, BaseException | None], None]


class StorageManager:
    """Satisfies ``AutoplayStorageAdapter`` itself, plus the atomic update and browsing."""

    def __init__(
        self,
        adapters: Sequence[AutoplayStorageAdapter],
        *,
        sink_timeout_s: float = 1.0,
        on_sink_result: SinkResultHook | None = None,
    ) -> None:
        if not adapters:
            raise ValueError(
                "StorageManager needs at least one adapter: put the readable primary "
                "(for example RedisStorageAdapter) first, then any write-only sinks"
            )
        self.primary: AutoplayStorageAdapter = adapters[0]
        self.secondaries: list[AutoplayStorageAdapter] = list(adapters[1:])
        self.sink_timeout_s = sink_timeout_s
        self.on_sink_result = on_sink_result
        self.sink_stats: dict[str, SinkStats] = {}
        self._operations: dict[str, StorageOperation] = {}

    @property
    def adapters(self) -> list[AutoplayStorageAdapter]:
        return [self.primary, *self.secondaries]

    def set_secondaries(self, adapters: Sequence[AutoplayStorageAdapter]) -> None:
        """Swap the sinks at run time (admins reconfigure them without a restart)."""
        self.secondaries = list(adapters)

    # -- the four wire methods --

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        await self._primary_call("save_user_state", self.primary.save_user_state(product_id, user_id, state))
        await self._fan_out("save_user_state", product_id, user_id, state)

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        doc = await self._primary_call("get_user_state", self.primary.get_user_state(product_id, user_id))
        if doc is not None:
            return doc
        return await self._secondary_read("get_user_state", product_id, user_id)

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        await self._primary_call(
            "save_session_snapshot", self.primary.save_session_snapshot(product_id, user_id, session_id, snapshot)
        )
        await self._fan_out("save_session_snapshot", product_id, user_id, session_id, snapshot)

    async def get_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> dict[str, Any] | None:
        doc = await self._primary_call(
            "get_session_snapshot", self.primary.get_session_snapshot(product_id, user_id, session_id)
        )
        if doc is not None:
            return doc
        return await self._secondary_read("get_session_snapshot", product_id, user_id, session_id)

    # -- extensions --

    async def update_user_state(self, product_id: str, user_id: str, mutate: StateMutation) -> StateDoc | None:
        """Atomic read-modify-write on the primary, then the result fans out to the sinks."""
        wrote: list[bool] = []

        def tracked(doc: StateDoc | None) -> StateDoc | None:
            result = mutate(doc)
            wrote.append(result is not None)
            return result

        doc = await self._primary_call("update_user_state", atomic_update(self.primary, product_id, user_id, tracked))
        self._count_retries("update_user_state", wrote)
        if wrote and wrote[-1] and doc is not None:
            await self._fan_out("save_user_state", product_id, user_id, doc)
        return doc

    async def create_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> dict[str, Any]:
        """Write-once on the primary (returning what it stores), then fan out to the sinks."""
        stored = await self._primary_call(
            "create_session_snapshot", create_snapshot(self.primary, product_id, user_id, session_id, snapshot)
        )
        await self._fan_out("save_session_snapshot", product_id, user_id, session_id, stored)
        return stored

    async def record_session_end(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any], fold: SessionFold
    ) -> tuple[dict[str, Any], StateDoc | None]:
        """The primary's atomic session end, then the frozen snapshot and any new state fan out."""
        wrote: list[bool] = []

        def tracked(frozen: dict[str, Any], doc: StateDoc | None) -> StateDoc | None:
            result = fold(frozen, doc)
            wrote.append(result is not None)
            return result

        frozen, doc = await self._primary_call(
            "record_session_end", record_session_end(self.primary, product_id, user_id, session_id, snapshot, tracked)
        )
        self._count_retries("record_session_end", wrote)
        await self._fan_out("save_session_snapshot", product_id, user_id, session_id, frozen)
        if wrote and wrote[-1] and doc is not None:
            await self._fan_out("save_user_state", product_id, user_id, doc)
        return frozen, doc

    async def replace_state_if_raw(self, product_id: str, user_id: str, expected_raw: str, state: StateDoc) -> bool:
        """The primary's compare-and-set on the stored text; a written state fans out to the sinks.

        ``NotBrowsableError`` when the primary cannot do it (a custom adapter
        without ``RepairableStateStore``): a get-then-save would lose a repair
        made in between.
        """
        if not _supports(self.primary, RepairableStateStore):
            raise NotBrowsableError(f"the primary {adapter_name(self.primary)} cannot replace a state by its text")
        written = await self._primary_call(
            "replace_state_if_raw",
            self.primary.replace_state_if_raw(product_id, user_id, expected_raw, state)  # type: ignore[attr-defined]
        )
        if written:
            await self._fan_out("save_user_state", product_id, user_id, state)
        return bool(written)

    @property
    def browser(self) -> BrowsableStorage:
        if isinstance(self.primary, BrowsableStorage):
            return self.primary
        raise NotBrowsableError(f"the primary {adapter_name(self.primary)} cannot list users or history")

    async def ping(self) -> None:
        ping = getattr(self.primary, "ping", None)
        if ping is not None:
            await self._primary_call("ping", ping())

    async def aclose(self) -> None:
        """Flush and close every adapter that can be closed (sinks flush their queues)."""
        for adapter in self.adapters:
            close = getattr(adapter, "aclose", None)
            if close is None:
                continue
            try:
                await close()
            except Exception:  # closing one must not keep the others open
                logger.exception("closing adapter failed", extra={"adapter": adapter_name(adapter)})

    # -- internals --

    def _operation(self, name: str) -> StorageOperation:
        operation = self._operations.get(name)
        if operation is None:
            operation = self._operations[name] = StorageOperation(type(self.primary).__name__, name)
        return operation

    async def _primary_call(self, name: str, awaitable: Any) -> Any:
        """Await a call to the primary, timed and counted (the one place storage metrics are taken)."""
        operation = self._operation(name)
        started = time.perf_counter()
        try:
            return await awaitable
        except _TRANSPORT_ERRORS as exc:
            operation.failed(exc)
            raise StorageUnavailableError(f"{adapter_name(self.primary)}: {exc}") from exc
        except Exception as exc:
            operation.failed(exc)
            raise
        finally:
            operation.seconds.observe(time.perf_counter() - started)

    def _count_retries(self, name: str, attempts: list[bool]) -> None:
        """The mutation runs once per compare-and-set attempt: every run after the first is a retry."""
        if len(attempts) > 1:
            self._operation(name).retries.inc(len(attempts) - 1)

    async def _secondary_read(self, method: str, *args: str) -> dict[str, Any] | None:
        for adapter in self.secondaries:
            try:
                doc = await asyncio.wait_for(getattr(adapter, method)(*args), self.sink_timeout_s)
            except Exception as exc:
                self._record(adapter, method, exc, product_id=args[0], user_id=args[1])
                continue
            if doc is not None:
                return doc
        return None

    async def _fan_out(self, method: str, *args: Any) -> None:
        if not self.secondaries:
            return
        await asyncio.gather(*(self._send(adapter, method, args) for adapter in self.secondaries))

    async def _send(self, adapter: AutoplayStorageAdapter, method: str, args: tuple[Any, ...]) -> None:
        try:
            await asyncio.wait_for(getattr(adapter, method)(*args), self.sink_timeout_s)
        except Exception as exc:
            self._record(adapter, method, exc, product_id=args[0], user_id=args[1])
        else:
            self._record(adapter, method, None)

    def _record(self, adapter: object, method: str, exc: BaseException | None, **context: Any) -> None:
        stats = self.sink_stats.setdefault(adapter_name(adapter), SinkStats())
        now = time.time()
        if exc is None:
            stats.sent += 1
            stats.last_success_at = now
        else:
            stats.failed += 1
            stats.last_error_at = now
            stats.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            logger.warning(
                "sink %s failed in %s: %s",
                adapter_name(adapter),
                method,
                stats.last_error,
                extra={"sink": adapter_name(adapter), "operation": method, "error": stats.last_error, **context},
            )
        if self.on_sink_result is not None:
            try:
                self.on_sink_result(adapter, method, exc)
            except Exception:
                logger.exception("sink result hook failed")


# Locks for adapters without an atomic update of their own: safe within one
# process only. An entry lives only while someone holds or waits for it.
_fallback_locks: dict[tuple[int, str, str], tuple[asyncio.Lock, list[int]]] = {}


_capabilities: dict[tuple[type, type], bool] = {}


def _supports(adapter: object, protocol: type) -> bool:
    """``isinstance(adapter, protocol)``, cached per class: a Protocol check is slow on a hot path."""
    key = (type(adapter), protocol)
    known = _capabilities.get(key)
    if known is None:
        known = _capabilities[key] = isinstance(adapter, protocol)
    return known


async def create_snapshot(
    adapter: AutoplayStorageAdapter, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
) -> dict[str, Any]:
    """The adapter's own write-once-and-tell, or a save followed by a read-back."""
    if _supports(adapter, SnapshotStore):
        return await adapter.create_session_snapshot(product_id, user_id, session_id, snapshot)  # type: ignore[attr-defined]
    await adapter.save_session_snapshot(product_id, user_id, session_id, snapshot)
    stored = await adapter.get_session_snapshot(product_id, user_id, session_id)
    return snapshot if stored is None else stored


async def record_session_end(
    adapter: AutoplayStorageAdapter,
    product_id: str,
    user_id: str,
    session_id: str,
    snapshot: dict[str, Any],
    fold: SessionFold,
) -> tuple[dict[str, Any], StateDoc | None]:
    """The adapter's one-step session end, or a write-once snapshot followed by an atomic update."""
    if _supports(adapter, SessionEndStore):
        return await adapter.record_session_end(product_id, user_id, session_id, snapshot, fold)  # type: ignore[attr-defined]
    frozen = await create_snapshot(adapter, product_id, user_id, session_id, snapshot)
    return frozen, await atomic_update(adapter, product_id, user_id, lambda doc: fold(frozen, doc))


async def atomic_update(
    adapter: AutoplayStorageAdapter, product_id: str, user_id: str, mutate: StateMutation
) -> StateDoc | None:
    """Use the adapter's own atomic update, or get+save under a per-user lock."""
    if _supports(adapter, AtomicStateStore):
        return await adapter.update_user_state(product_id, user_id, mutate)  # type: ignore[attr-defined]
    key = (id(adapter), product_id, user_id)
    lock, users = _fallback_locks.setdefault(key, (asyncio.Lock(), [0]))
    users[0] += 1
    try:
        async with lock:
            current = await adapter.get_user_state(product_id, user_id)
            new = mutate(current)
            if new is None:
                return current
            await adapter.save_user_state(product_id, user_id, new)
            return new
    finally:
        users[0] -= 1
        if users[0] == 0:
            del _fallback_locks[key]
