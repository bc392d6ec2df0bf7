"""StorageManager: fan-out writes, first-hit reads, sinks that fail or hang, a primary that fails."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from typing import Any

import pytest

from autoplay_storage import (
    AtomicStateStore,
    AutoplayStorageAdapter,
    BrowsableStorage,
    InMemoryStorageAdapter,
    NotBrowsableError,
    StorageManager,
    StorageUnavailableError,
)
from autoplay_storage import manager as manager_module
from autoplay_storage.manager import atomic_update

P, U = "prod_1", "u_1"
DOC = {"_v": 1, "user_id": U, "journey_state": "onboarding"}
SNAP = {"_v": 1, "_frozen": True, "session_id": "s1", "user_id": U}


class Recording:
    """A write-only sink that writes down every call it gets, in a shared journal."""

    def __init__(self, name: str, journal: list[tuple[str, str, tuple]] | None = None) -> None:
        self.name = name
        self.journal = journal if journal is not None else []
        self.closed = False

    async def save_user_state(self, product_id: str, user_id: str, state: dict[str, Any]) -> None:
        self.journal.append((self.name, "save_user_state", (product_id, user_id, json.dumps(state))))

    async def get_user_state(self, product_id: str, user_id: str) -> dict[str, Any] | None:
        self.journal.append((self.name, "get_user_state", (product_id, user_id)))
        return None

    async def save_session_snapshot(
        self, product_id: str, user_id: str, session_id: str, snapshot: dict[str, Any]
    ) -> None:
        self.journal.append((self.name, "save_session_snapshot", (product_id, user_id, session_id)))

    async def get_session_snapshot(self, product_id: str, user_id: str, session_id: str) -> dict[str, Any] | None:
        self.journal.append((self.name, "get_session_snapshot", (product_id, user_id, session_id)))
        return None

    async def aclose(self) -> None:
        self.closed = True

    def calls(self, method: str | None = None) -> list[tuple]:
        return [c for c in self.journal if c[0] == self.name and (method is None or c[1] == method)]


class RecordingPrimary(InMemoryStorageAdapter):
    """The in-memory primary, journaling its wire writes next to the sinks."""

    name = "primary"

    def __init__(self, journal: list) -> None:
        super().__init__()
        self.journal = journal

    async def save_user_state(self, product_id, user_id, state):
        self.journal.append(("primary", "save_user_state", (product_id, user_id, json.dumps(state))))
        await super().save_user_state(product_id, user_id, state)

    async def save_session_snapshot(self, product_id, user_id, session_id, snapshot):
        self.journal.append(("primary", "save_session_snapshot", (product_id, user_id, session_id)))
        await super().save_session_snapshot(product_id, user_id, session_id, snapshot)


class Failing(Recording):
    """A sink whose destination is down."""

    async def save_user_state(self, product_id, user_id, state):
        raise RuntimeError("destination answered 500")

    async def save_session_snapshot(self, product_id, user_id, session_id, snapshot):
        raise OSError("connection refused")

    async def get_user_state(self, product_id, user_id):
        raise RuntimeError("read failed")

    async def aclose(self) -> None:
        raise RuntimeError("flush failed")


class Hanging(Recording):
    """A sink that never answers; it notes that it was cancelled."""

    def __init__(self, name: str, journal: list | None = None) -> None:
        super().__init__(name, journal)
        self.cancelled = 0

    async def _hang(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def save_user_state(self, product_id, user_id, state):
        await self._hang()

    async def save_session_snapshot(self, product_id, user_id, session_id, snapshot):
        await self._hang()


class Readable(Recording):
    """A secondary that can answer reads."""

    def __init__(self, name: str, state: dict | None = None, snapshot: dict | None = None) -> None:
        super().__init__(name)
        self.state, self.snapshot = state, snapshot

    async def get_user_state(self, product_id, user_id):
        return self.state

    async def get_session_snapshot(self, product_id, user_id, session_id):
        return self.snapshot


class DownPrimary(InMemoryStorageAdapter):
    """A primary that cannot be reached."""

    name = "down"

    async def save_user_state(self, product_id, user_id, state):
        raise ConnectionRefusedError("connection refused")

    async def get_user_state(self, product_id, user_id):
        raise TimeoutError("timed out")

    async def save_session_snapshot(self, product_id, user_id, session_id, snapshot):
        raise OSError("network unreachable")

    async def get_session_snapshot(self, product_id, user_id, session_id):
        raise ConnectionResetError("reset")

    async def update_user_state(self, product_id, user_id, mutate):
        raise ConnectionError("gone")


async def bounded(awaitable):
    """Guard against a hang turning into a stuck test run; never a timing assertion."""
    return await asyncio.wait_for(awaitable, 60)


def test_an_empty_list_is_a_clear_error():
    with pytest.raises(ValueError, match="primary") as excinfo:
        StorageManager([])
    assert "first" in str(excinfo.value)


def test_the_manager_satisfies_the_protocols():
    manager = StorageManager([InMemoryStorageAdapter()])
    assert isinstance(manager, AutoplayStorageAdapter)
    assert isinstance(manager, AtomicStateStore)
    assert isinstance(manager.browser, BrowsableStorage)
    assert isinstance(Recording("r"), AutoplayStorageAdapter)


async def test_writes_fan_out_in_order_after_the_primary():
    journal: list = []
    primary = RecordingPrimary(journal)
    sinks = [Recording("a", journal), Recording("b", journal), Recording("c", journal)]
    manager = StorageManager([primary, *sinks])
    assert manager.adapters == [primary, *sinks]
    await manager.save_user_state(P, U, DOC)
    await manager.save_session_snapshot(P, U, "s1", SNAP)
    assert [(who, what) for who, what, _ in journal] == [
        ("primary", "save_user_state"),
        ("a", "save_user_state"),
        ("b", "save_user_state"),
        ("c", "save_user_state"),
        ("primary", "save_session_snapshot"),
        ("a", "save_session_snapshot"),
        ("b", "save_session_snapshot"),
        ("c", "save_session_snapshot"),
    ]
    assert all(args == (P, U, json.dumps(DOC)) for _, what, args in journal if what == "save_user_state")
    assert manager.sink_stats["a"].sent == 2 and manager.sink_stats["a"].failed == 0


async def test_reads_return_the_first_answer():
    primary = InMemoryStorageAdapter()
    second = Readable("second", state={"from": "second"}, snapshot={"from": "second"})
    third = Readable("third", state={"from": "third"})
    manager = StorageManager([primary, Recording("write_only"), second, third])
    assert await manager.get_user_state(P, U) == {"from": "second"}
    assert await manager.get_session_snapshot(P, U, "s1") == {"from": "second"}
    await primary.save_user_state(P, U, DOC)
    await primary.save_session_snapshot(P, U, "s1", SNAP)
    assert await manager.get_user_state(P, U) == DOC
    assert await manager.get_session_snapshot(P, U, "s1") == SNAP
    assert await StorageManager([InMemoryStorageAdapter(), Recording("w")]).get_user_state(P, U) is None


async def test_a_failing_sink_is_logged_counted_and_never_raised(caplog):
    journal: list = []
    primary = RecordingPrimary(journal)
    good = Recording("good", journal)
    manager = StorageManager([primary, Failing("broken", journal), good])
    with caplog.at_level(logging.WARNING, logger="autoplay_storage.manager"):
        await manager.save_user_state(P, U, DOC)
        await manager.save_session_snapshot(P, U, "s1", SNAP)
    assert await primary.get_user_state(P, U) == DOC
    assert await primary.get_session_snapshot(P, U, "s1") == SNAP
    assert len(good.calls("save_user_state")) == 1 and len(good.calls("save_session_snapshot")) == 1
    stats = manager.sink_stats["broken"]
    assert (stats.failed, stats.sent) == (2, 0)
    assert stats.last_error == "OSError: connection refused"
    records = [r for r in caplog.records if getattr(r, "sink", None) == "broken"]
    assert [r.operation for r in records] == ["save_user_state", "save_session_snapshot"]
    assert all((r.product_id, r.user_id) == (P, U) for r in records)
    assert records[0].error == "RuntimeError: destination answered 500"
    assert records[0].levelno == logging.WARNING


async def test_a_hanging_sink_is_cut_off_and_does_not_hold_back_the_others(caplog):
    journal: list = []
    primary = RecordingPrimary(journal)
    hanging, after = Hanging("hanging", journal), Recording("after", journal)
    manager = StorageManager([primary, hanging, after], sink_timeout_s=0.05)
    with caplog.at_level(logging.WARNING, logger="autoplay_storage.manager"):
        await bounded(manager.save_user_state(P, U, DOC))
        await bounded(manager.save_session_snapshot(P, U, "s1", SNAP))
    assert await primary.get_user_state(P, U) == DOC
    assert len(after.calls()) == 2
    assert hanging.cancelled == 2, "the hung call is cancelled, not left running"
    assert manager.sink_stats["hanging"].failed == 2
    assert manager.sink_stats["hanging"].last_error == "TimeoutError"
    assert [r.operation for r in caplog.records if getattr(r, "sink", None) == "hanging"] == [
        "save_user_state",
        "save_session_snapshot",
    ]


async def test_a_failing_secondary_read_is_counted_logged_and_skipped(caplog):
    manager = StorageManager([InMemoryStorageAdapter(), Failing("broken"), Readable("ok", state=DOC)])
    with caplog.at_level(logging.WARNING, logger="autoplay_storage.manager"):
        assert await manager.get_user_state(P, U) == DOC
    assert manager.sink_stats["broken"].failed == 1
    (record,) = [r for r in caplog.records if getattr(r, "sink", None) == "broken"]
    assert (record.operation, record.product_id, record.user_id) == ("get_user_state", P, U)


async def test_a_failing_primary_raises_and_nothing_fans_out():
    sink = Recording("sink")
    manager = StorageManager([DownPrimary(), sink])
    for call in (
        manager.save_user_state(P, U, DOC),
        manager.get_user_state(P, U),
        manager.save_session_snapshot(P, U, "s1", SNAP),
        manager.get_session_snapshot(P, U, "s1"),
        manager.update_user_state(P, U, lambda doc: DOC),
    ):
        with pytest.raises(StorageUnavailableError, match="down"):
            await call
    assert sink.journal == [], "a failed primary is never papered over by a sink"


async def test_other_primary_errors_pass_through_unchanged():
    class Buggy(InMemoryStorageAdapter):
        async def get_user_state(self, product_id, user_id):
            raise KeyError("a bug, not an outage")

    with pytest.raises(KeyError):
        await StorageManager([Buggy()]).get_user_state(P, U)


async def test_update_fans_out_only_what_was_written():
    primary, sink = InMemoryStorageAdapter(), Recording("sink")
    manager = StorageManager([primary, sink])
    assert await manager.update_user_state(P, U, lambda doc: None) is None
    assert sink.journal == []
    written = await manager.update_user_state(P, U, lambda doc: {**DOC, "n": 1})
    assert written == {**DOC, "n": 1}
    assert [json.loads(c[2][2]) for c in sink.calls("save_user_state")] == [written]
    unchanged = await manager.update_user_state(P, U, lambda doc: None)
    assert unchanged == written
    assert len(sink.calls("save_user_state")) == 1, "no write, no fan-out"


async def test_update_through_a_manager_is_atomic_per_user():
    manager = StorageManager([InMemoryStorageAdapter(), Recording("sink")])

    def increment(doc):
        doc = doc or {"n": 0}
        return {"n": doc["n"] + 1}

    await asyncio.gather(*(manager.update_user_state(P, U, increment) for _ in range(50)))
    assert await manager.get_user_state(P, U) == {"n": 50}


async def test_aclose_closes_every_adapter_even_when_one_fails(caplog):
    first, last = Recording("first"), Recording("last")
    manager = StorageManager([InMemoryStorageAdapter(), first, Failing("broken"), last])
    with caplog.at_level(logging.ERROR, logger="autoplay_storage.manager"):
        await manager.aclose()
    assert first.closed and last.closed
    assert any(getattr(r, "adapter", None) == "broken" for r in caplog.records)


async def test_sink_result_hook_sees_every_outcome_and_cannot_break_a_write():
    seen: list[tuple[str, str, str | None]] = []

    def hook(adapter, method, exc):
        seen.append((adapter.name, method, type(exc).__name__ if exc else None))
        raise RuntimeError("hook bug")

    manager = StorageManager([InMemoryStorageAdapter(), Recording("ok"), Failing("bad")], on_sink_result=hook)
    await manager.save_user_state(P, U, DOC)
    assert sorted(seen) == [("bad", "save_user_state", "RuntimeError"), ("ok", "save_user_state", None)]


async def test_secondaries_can_be_swapped_at_run_time():
    old, new = Recording("old"), Recording("new")
    manager = StorageManager([InMemoryStorageAdapter(), old])
    manager.set_secondaries([new])
    await manager.save_user_state(P, U, DOC)
    assert old.journal == [] and len(new.calls("save_user_state")) == 1


def test_a_primary_without_listings_is_not_browsable():
    with pytest.raises(NotBrowsableError):
        _ = StorageManager([Recording("plain")]).browser


async def test_ping_reaches_the_primary():
    class Unreachable(InMemoryStorageAdapter):
        async def ping(self):
            raise ConnectionRefusedError("refused")

    await StorageManager([InMemoryStorageAdapter()]).ping()
    await StorageManager([Recording("no ping")]).ping()
    with pytest.raises(StorageUnavailableError):
        await StorageManager([Unreachable()]).ping()


# --- the fallback lock for adapters without an atomic update ------------------


class SlowPlainStore(Recording):
    """Four wire methods only; every call yields, so unsynchronised updates would interleave."""

    def __init__(self) -> None:
        super().__init__("plain")
        self.docs: dict[tuple[str, str], str] = {}
        self.gate = asyncio.Event()
        self.gate.set()

    async def save_user_state(self, product_id, user_id, state):
        await self.gate.wait()
        self.docs[(product_id, user_id)] = json.dumps(state)

    async def get_user_state(self, product_id, user_id):
        await asyncio.sleep(0)
        raw = self.docs.get((product_id, user_id))
        return None if raw is None else json.loads(raw)


def increment(doc):
    return {"n": (doc or {"n": 0})["n"] + 1}


async def test_fallback_lock_serialises_updates_and_is_released():
    store = SlowPlainStore()
    await asyncio.gather(*(atomic_update(store, P, U, increment) for _ in range(50)))
    assert await store.get_user_state(P, U) == {"n": 50}
    assert manager_module._fallback_locks == {}, "no lock outlives its users"


async def test_fallback_lock_survives_cancelled_holders_and_waiters():
    store = SlowPlainStore()
    store.gate.clear()  # the first update holds the lock, stuck in its save
    holder = asyncio.ensure_future(atomic_update(store, P, U, increment))
    waiters = [asyncio.ensure_future(atomic_update(store, P, U, increment)) for _ in range(3)]
    for _ in range(5):
        await asyncio.sleep(0)
    waiters[1].cancel()
    holder.cancel()
    for task in (holder, waiters[1]):
        with pytest.raises(asyncio.CancelledError):
            await task
    store.gate.set()
    await bounded(asyncio.gather(waiters[0], waiters[2]))
    assert await store.get_user_state(P, U) == {"n": 2}, "only the two surviving updates landed"
    assert manager_module._fallback_locks == {}
    await bounded(atomic_update(store, P, U, increment))
    assert await store.get_user_state(P, U) == {"n": 3}


async def test_fallback_update_that_raises_writes_nothing_and_releases():
    store = SlowPlainStore()

    def broken(doc):
        raise ValueError("bad edit")

    with pytest.raises(ValueError):
        await atomic_update(store, P, U, broken)
    assert store.docs == {} and manager_module._fallback_locks == {}
    assert await atomic_update(store, P, U, lambda doc: None) is None


# --- the in-memory reference store -----------------------------------------


async def test_memory_store_refuses_nan():
    """JSON cannot hold NaN: the reference store refuses it as a real one would (write-once etc.: the contract)."""
    store = InMemoryStorageAdapter()
    with pytest.raises(ValueError):
        await store.save_user_state(P, U, {**DOC, "bad": math.nan})
    with pytest.raises(ValueError):
        await store.save_session_snapshot(P, U, "s2", {**SNAP, "duration_s": math.inf})
    assert await store.get_raw_user_state(P, U) is None
    assert await store.get_raw_session_snapshot(P, U, "s2") is None
