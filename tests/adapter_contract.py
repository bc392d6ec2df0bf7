"""The adapter contract: what every readable primary guarantees, written once.

``AdapterContract`` holds the tests; a test module subclasses it as
``TestAdapterContract`` and provides two fixtures (see tests/test_adapter_contract.py):

- ``backend``: a ``Backend`` — a fresh, empty adapter, and a back door that
  puts raw text under a key the way another writer (or an operator's hand
  edit) would, without going through the adapter;
- ``unreachable``: the same kind of adapter whose server is gone.

``Backend.leftovers(product, user)`` names whatever the store still holds of
one user (keys, index members, rows), read around the adapter: an erasure
must leave it empty. ``Backend.documents(product)`` reads a product's
documents around the adapter too, for a recount of its insight aggregates.

Only the adapters' public methods are used, plus the engine's own entry
points (``manager.record_session_end``, the lifecycle) where the contract is
about what they build on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from autoplay_storage.browse import MAX_PAGE_SIZE, UserQuery
from autoplay_storage.errors import CorruptDocumentError, StorageUnavailableError, UnsupportedVersionError
from autoplay_storage.lifecycle import on_session_end, on_session_start
from autoplay_storage.manager import StorageManager, record_session_end
from autoplay_storage.protocol import (
    AtomicStateStore,
    AutoplayStorageAdapter,
    BrowsableStorage,
    RepairableStateStore,
    SnapshotStore,
)
from autoplay_storage.user_adoption_state import JourneyState, Mastery, SessionSnapshot, UserAdoptionState
from tests.erasure_contract import ErasureContract

P, U = "prod_c", "u_c"
JOURNEYS = ["onboarding", "onboarded"]
LEVELS = ["novice", "beginner", "intermediate", "proficient", "power_user"]


@dataclass
class Backend:
    """An adapter under contract, and its back door for raw text."""

    name: str
    adapter: Any
    put_state: Callable[[str, str, str], Awaitable[None]]  # (product, user, raw text)
    put_snapshot: Callable[[str, str, str, str], Awaitable[None]]  # (product, user, session, raw text)
    leftovers: Callable[[str, str], Awaitable[list[str]]]  # (product, user) -> what the store holds of them
    documents: Callable[[str], Awaitable[tuple[list[dict], list[dict]]]]  # product -> its states, snapshots
    rebuild: Callable[[], Awaitable[Any]] | None = None  # the insight rebuild (autoplay_reindex), if any


def make_state(user_id: str, *, at: float, journey: str = "onboarding", level: str = "novice", **metadata: Any) -> dict:
    state = UserAdoptionState(user_id=user_id, metadata=metadata, first_seen_at=at - 100, last_updated_at=at)
    state.journey_state = JourneyState(journey)
    state.mastery = Mastery.from_dict({"rating": 3, "level": level})
    if journey == "onboarded":
        state.onboarding.onboarding_completed_at = at - 1
    return state.to_dict()


def make_snapshot(session_id: str, user_id: str = U, *, captured: float = 2000.0, number: int = 1) -> SessionSnapshot:
    return SessionSnapshot(
        session_id=session_id, user_id=user_id, session_number=number, started_at=captured - 60, captured_at=captured
    )


def counter(doc: dict | None) -> dict:
    """A pure mutation: one more on the state's counter (creating the state if there is none)."""
    doc = doc or {"_v": 1, "user_id": U, "metadata": {"n": 0}}
    doc["metadata"]["n"] += 1
    return doc


def folding(log: list[str] | None = None) -> Callable[[dict, dict | None], dict | None]:
    """A session fold that records each session once (a retry folds nothing), noting what it saw."""

    def fold(frozen: dict, doc: dict | None) -> dict | None:
        if log is not None:
            log.append(frozen.get("by", "sent"))
        doc = doc or {"_v": 1, "user_id": U, "metadata": {"ended": []}}
        if frozen["session_id"] in doc["metadata"]["ended"]:
            return None
        doc["metadata"]["ended"] = [*doc["metadata"]["ended"], frozen["session_id"]]
        return doc

    return fold


# Users of product "pa" for browsing: ties on last activity in groups of four.
def population() -> dict[str, dict[str, Any]]:
    users = {}
    for i in range(37):
        users[f"user_{i:02d}"] = {
            "at": 1000.0 + i // 4,
            "journey": JOURNEYS[i % 2],
            "level": LEVELS[i % 5],
            "email": f"{'ann' if i % 3 == 0 else 'bob'}{i}@Example.com",
            "role": "Admin" if i % 7 == 0 else "member",
        }
    return users


def expected_users(users: dict[str, dict[str, Any]], query: UserQuery) -> list[str]:
    """The user ids a query lists, worked out from the population's own attributes."""
    needle = (query.search or "").strip().lower()
    picked = []
    for user_id, u in users.items():
        terms = {user_id.lower(), u["email"].lower(), u["role"].lower()}
        if query.journey_state and u["journey"] != query.journey_state:
            continue
        if query.mastery_level and u["level"] != query.mastery_level:
            continue
        if query.onboarded is not None and (u["journey"] == "onboarded") != query.onboarded:
            continue
        if needle and not any(t.startswith(needle) for t in terms):
            continue
        picked.append(user_id)
    return sorted(picked, key=lambda uid: (users[uid]["at"], uid), reverse=query.order == "-last_activity")


async def every_page(list_page: Callable[..., Awaitable[Any]], limit: int) -> list:
    rows, cursor = [], None
    while True:
        page = await list_page(cursor=cursor, limit=limit)
        rows.extend(page.items)
        if page.next_cursor is None:
            return rows
        cursor = page.next_cursor


QUERIES = [
    UserQuery(),
    UserQuery(order="last_activity"),
    UserQuery(journey_state="onboarded"),
    UserQuery(mastery_level="beginner", order="last_activity"),
    UserQuery(onboarded=False),
    UserQuery(onboarded=True, mastery_level="power_user"),
    UserQuery(search="ANN"),
    UserQuery(search="  user_1 "),
    UserQuery(search="admin", journey_state="onboarding"),
    UserQuery(search="bob1", order="last_activity"),
    UserQuery(search="nobody"),
    UserQuery(search="   "),
]

# Stored values no reader can use: not JSON, not an object, a version this engine does not know.
UNREADABLE_STATES = ["{not json", "[1, 2]", '"a string"', '{"_v": 99, "user_id": "u_c"}']


class AdapterContract(ErasureContract):
    """What every readable primary guarantees (needs the ``backend`` and ``unreachable`` fixtures).

    Its erasure part (``erase_user``, tombstones) is in tests/erasure_contract.py.
    """

    # -- the wire --

    async def test_offers_every_capability_the_engine_uses(self, backend: Backend) -> None:
        for protocol in (
            AutoplayStorageAdapter,
            AtomicStateStore,
            SnapshotStore,
            BrowsableStorage,
            RepairableStateStore,
        ):
            assert isinstance(backend.adapter, protocol), protocol.__name__
        assert await backend.adapter.ping() is None

    async def test_sdk_documents_round_trip(self, backend: Backend, sdk_fixtures: dict[str, dict]) -> None:
        adapter = backend.adapter
        assert sdk_fixtures
        for name, doc in sdk_fixtures.items():
            kind, product_id, user_id, *rest = name.split("__")
            if kind == "state":
                await adapter.save_user_state(product_id, user_id, doc)
                assert await adapter.get_user_state(product_id, user_id) == doc, name
                assert json.loads(await adapter.get_raw_user_state(product_id, user_id)) == doc
            else:
                await adapter.save_session_snapshot(product_id, user_id, rest[0], doc)
                assert await adapter.get_session_snapshot(product_id, user_id, rest[0]) == doc, name
                assert json.loads(await adapter.get_raw_session_snapshot(product_id, user_id, rest[0])) == doc

    async def test_documents_another_writer_stored_read_back(self, backend: Backend, sdk_fixtures) -> None:
        for name, doc in sdk_fixtures.items():
            kind, product_id, user_id, *rest = name.split("__")
            text = json.dumps(doc, indent=2)  # as another writer might format it
            if kind == "state":
                await backend.put_state(product_id, user_id, text)
                assert await backend.adapter.get_user_state(product_id, user_id) == doc, name
            else:
                await backend.put_snapshot(product_id, user_id, rest[0], text)
                assert await backend.adapter.get_session_snapshot(product_id, user_id, rest[0]) == doc, name

    async def test_missing_documents_are_none(self, backend: Backend) -> None:
        adapter = backend.adapter
        assert await adapter.get_user_state(P, "nobody") is None
        assert await adapter.get_session_snapshot(P, "nobody", "s") is None
        assert await adapter.get_raw_user_state(P, "nobody") is None
        assert await adapter.get_raw_session_snapshot(P, "nobody", "s") is None

    async def test_a_saved_state_replaces_the_last(self, backend: Backend) -> None:
        await backend.adapter.save_user_state(P, U, make_state(U, at=1.0, n=1))
        await backend.adapter.save_user_state(P, U, make_state(U, at=2.0, n=2))
        assert (await backend.adapter.get_user_state(P, U))["metadata"] == {"n": 2}

    # -- atomic update --

    async def test_update_creates_leaves_and_returns_what_is_stored(self, backend: Backend) -> None:
        adapter = backend.adapter
        assert await adapter.update_user_state(P, U, lambda doc: None) is None
        assert await adapter.get_raw_user_state(P, U) is None  # "leave it" wrote nothing
        created = await adapter.update_user_state(P, U, lambda doc: make_state(U, at=10.0, n=1))
        assert created == await adapter.get_user_state(P, U) and created["metadata"] == {"n": 1}
        before = await adapter.get_raw_user_state(P, U)
        assert await adapter.update_user_state(P, U, lambda doc: None) == created

        def scribble_and_leave(doc: dict | None) -> None:
            assert doc is not None
            doc["metadata"]["n"] = 99  # its own copy: "leave it" returns what is stored, not this

        assert await adapter.update_user_state(P, U, scribble_and_leave) == created
        assert await adapter.get_raw_user_state(P, U) == before

    async def test_a_mutation_that_raises_writes_nothing(self, backend: Backend) -> None:
        adapter = backend.adapter
        await adapter.save_user_state(P, U, make_state(U, at=10.0, n=1))
        before = await adapter.get_raw_user_state(P, U)

        def vandal(doc: dict | None) -> dict:
            assert doc is not None
            doc["metadata"]["n"] = 99  # scribbles on its argument, then fails
            raise RuntimeError("mutation failed")

        with pytest.raises(RuntimeError, match="mutation failed"):
            await adapter.update_user_state(P, U, vandal)
        assert await adapter.get_raw_user_state(P, U) == before
        assert (await adapter.get_user_state(P, U))["metadata"] == {"n": 1}
        # And the adapter is usable at once (no lock or transaction left behind).
        assert (await adapter.update_user_state(P, U, counter))["metadata"]["n"] == 2

    async def test_fifty_concurrent_increments_lose_nothing(self, backend: Backend) -> None:
        calls: list[int] = []

        def increment(doc: dict | None) -> dict:
            calls.append(1)  # may run more than once per update, on a write conflict
            return counter(doc)

        for user_id in ("new_user", U):  # a state created by the race, and one that exists
            if user_id == U:
                await backend.adapter.save_user_state(P, U, {"_v": 1, "user_id": U, "metadata": {"n": 0}})
            calls.clear()
            await asyncio.gather(*(backend.adapter.update_user_state(P, user_id, increment) for _ in range(50)))
            assert (await backend.adapter.get_user_state(P, user_id))["metadata"]["n"] == 50
            assert len(calls) >= 50

    # -- session end --

    async def test_a_session_end_freezes_the_snapshot_and_folds_it(self, backend: Backend) -> None:
        adapter = backend.adapter
        sent = make_snapshot("s1").to_dict()
        frozen, state = await record_session_end(adapter, P, U, "s1", sent, folding())
        assert frozen == sent and state["metadata"]["ended"] == ["s1"]
        assert await adapter.get_session_snapshot(P, U, "s1") == sent
        assert await adapter.get_user_state(P, U) == state

    async def test_a_retried_session_end_is_a_no_op(self, backend: Backend) -> None:
        adapter = backend.adapter
        first = make_snapshot("s1", captured=700.0).to_dict()
        await record_session_end(adapter, P, U, "s1", first, folding())
        before = await adapter.get_raw_user_state(P, U)
        rebuilt = make_snapshot("s1", captured=950.0).to_dict()  # the agent rebuilt it for the retry
        seen: list[str] = []
        frozen, state = await record_session_end(adapter, P, U, "s1", rebuilt, folding(seen))
        assert frozen == first and state["metadata"]["ended"] == ["s1"]
        assert await adapter.get_raw_user_state(P, U) == before
        assert await adapter.get_session_snapshot(P, U, "s1") == first

    async def test_a_fold_that_raises_writes_no_state_and_the_retry_records_once(self, backend: Backend) -> None:
        adapter = backend.adapter
        await adapter.save_user_state(P, U, {"_v": 1, "user_id": U, "metadata": {"ended": []}})
        before = await adapter.get_raw_user_state(P, U)

        def broken(frozen: dict, doc: dict | None) -> dict:
            raise RuntimeError("fold failed")

        with pytest.raises(RuntimeError, match="fold failed"):
            await record_session_end(adapter, P, U, "s1", make_snapshot("s1").to_dict(), broken)
        assert await adapter.get_raw_user_state(P, U) == before
        for _ in range(2):
            _, state = await record_session_end(adapter, P, U, "s1", make_snapshot("s1").to_dict(), folding())
        assert state["metadata"]["ended"] == ["s1"]

    async def test_a_session_end_folds_the_snapshot_frozen_before(self, backend: Backend) -> None:
        """Another writer froze this session first: nothing is overwritten, and the state folds theirs."""
        theirs = {**make_snapshot("s1", captured=5.0).to_dict(), "by": "another writer"}
        await backend.put_snapshot(P, U, "s1", json.dumps(theirs))
        seen: list[str] = []
        frozen, state = await record_session_end(
            backend.adapter, P, U, "s1", make_snapshot("s1", captured=9.0).to_dict(), folding(seen)
        )
        assert frozen == theirs, frozen
        assert seen[-1] == "another writer"  # what is stored folded theirs (a first guess may have folded ours)
        assert state["metadata"]["ended"] == ["s1"]
        assert await backend.adapter.get_session_snapshot(P, U, "s1") == theirs

    async def test_fifty_racing_session_ends_are_all_recorded(self, backend: Backend) -> None:
        storage = StorageManager([backend.adapter])
        await on_session_start(P, U, "s_start", storage)
        snapshots = [make_snapshot(f"s{i:02d}", captured=2000.0 + i) for i in range(50)]
        await asyncio.gather(*(on_session_end(P, U, snap, storage) for snap in snapshots))
        state = UserAdoptionState.from_dict(await backend.adapter.get_user_state(P, U))
        assert state.sessions.count == 50
        assert {e.session_id for e in state.sessions.index} == {s.session_id for s in snapshots}
        assert sorted(e.session_number for e in state.sessions.index) == list(range(1, 51))
        history = await backend.adapter.list_sessions(P, U, limit=MAX_PAGE_SIZE)
        assert len(history.items) == 50 and history.next_cursor is None

    async def test_the_same_end_sent_five_times_is_recorded_once(self, backend: Backend) -> None:
        storage = StorageManager([backend.adapter])
        snap = make_snapshot("s_retry", captured=3000.0)
        await asyncio.gather(*(on_session_end(P, U, snap, storage) for _ in range(3)))
        for _ in range(2):
            await on_session_end(P, U, snap, storage)
        state = UserAdoptionState.from_dict(await backend.adapter.get_user_state(P, U))
        assert state.sessions.count == 1
        assert [e.session_id for e in state.sessions.index] == ["s_retry"]
        assert [r.session_id for r in (await backend.adapter.list_sessions(P, U)).items] == ["s_retry"]

    # -- write-once snapshots --

    async def test_create_returns_what_it_wrote_and_a_retry_gets_the_frozen_one(self, backend, sdk_fixtures) -> None:
        adapter = backend.adapter
        first = sdk_fixtures["snapshot__prod_1__u_123__sess_a"]
        assert await adapter.create_session_snapshot(P, U, "sess_a", first) is first  # written by this call
        rebuilt = {**first, "captured_at": first["captured_at"] + 60, "duration_s": first["duration_s"] + 60}
        again = await adapter.create_session_snapshot(P, U, "sess_a", rebuilt)
        assert again == first and again is not rebuilt
        assert await adapter.get_session_snapshot(P, U, "sess_a") == first

    async def test_a_second_save_changes_nothing(self, backend: Backend) -> None:
        adapter = backend.adapter
        first = make_snapshot("s1", captured=1000.0).to_dict()
        second = {**first, "session_number": 7, "captured_at": 5000.0}
        await adapter.save_session_snapshot(P, U, "s1", first)
        await adapter.save_session_snapshot(P, U, "s1", second)  # no error, no overwrite
        await asyncio.gather(*(adapter.save_session_snapshot(P, U, "s1", second) for _ in range(5)))
        assert await adapter.get_session_snapshot(P, U, "s1") == first
        (row,) = (await adapter.list_sessions(P, U)).items
        assert (row.session_id, row.captured_at, row.session_number) == ("s1", 1000.0, 1)

    # -- browsing --

    async def _load_population(self, backend: Backend) -> dict[str, dict[str, Any]]:
        users = population()
        for user_id, u in users.items():
            doc = make_state(
                user_id, at=u["at"], journey=u["journey"], level=u["level"], email=u["email"], role=u["role"]
            )
            await backend.adapter.save_user_state("pa", user_id, doc)
        for i in range(5):
            doc = make_state(f"b_{i}", at=500.0 + i, level="power_user")
            await backend.adapter.save_user_state("pb", f"b_{i}", doc)
        return users

    async def test_products_are_counted_by_journey_and_mastery(self, backend: Backend) -> None:
        await self._load_population(backend)
        a, b = await backend.adapter.list_products()
        assert (a.product_id, a.user_count) == ("pa", 37)
        assert a.journey_states == {"onboarding": 19, "onboarded": 18}
        assert a.mastery_levels == {"novice": 8, "beginner": 8, "intermediate": 7, "proficient": 7, "power_user": 7}
        assert (b.product_id, b.user_count, b.journey_states, b.mastery_levels) == (
            "pb", 5, {"onboarding": 5}, {"power_user": 5}
        )

    async def test_users_list_by_each_filter_and_search_on_every_page(self, backend: Backend) -> None:
        users = await self._load_population(backend)
        for query in QUERIES:
            expected = expected_users(users, query)
            for limit in (1, 7, 50):
                rows = await every_page(lambda **kw: backend.adapter.list_users("pa", query, **kw), limit)  # noqa: B023
                assert [r.user_id for r in rows] == expected, (query, limit)
        rows = (await backend.adapter.list_users("pa", UserQuery(search="user_07"))).items
        assert [(r.user_id, r.journey_state, r.mastery_level, r.onboarded, r.last_activity_at) for r in rows] == [
            ("user_07", "onboarded", "intermediate", True, 1001.0)
        ]
        assert rows[0].metadata == {"email": "bob7@Example.com", "role": "Admin"}
        assert (await backend.adapter.list_users("p_none")).items == []

    async def test_paging_serves_each_unmoved_user_once_while_others_move(self, backend: Backend) -> None:
        """Keyset cursors: between pages users become active and new ones arrive; no one repeats or goes missing."""
        adapter = backend.adapter
        for i in range(20):
            await adapter.save_user_state("pm", f"m{i:02d}", make_state(f"m{i:02d}", at=100.0 + i // 3))
        served: list[str] = []
        moved: set[str] = set()
        cursor = None
        for turn in range(100):
            page = await adapter.list_users("pm", cursor=cursor, limit=3)
            served.extend(r.user_id for r in page.items)
            # One served user and one not yet served become the most recent; a new user signs up.
            waiting = sorted({f"m{i:02d}" for i in range(20)} - set(served) - moved)
            for user_id in [r.user_id for r in page.items[:1]] + waiting[:1]:
                moved.add(user_id)
                await adapter.save_user_state("pm", user_id, make_state(user_id, at=1000.0 + turn))
            await adapter.save_user_state("pm", f"new{turn}", make_state(f"new{turn}", at=2000.0 + turn))
            if (cursor := page.next_cursor) is None:
                break
        assert len(served) == len(set(served)), "a user was listed twice"
        unmoved = [f"m{i:02d}" for i in range(20) if f"m{i:02d}" not in moved]
        assert [u for u in served if u in unmoved] == sorted(unmoved, key=lambda u: (int(u[1:]) // 3, u), reverse=True)

    async def test_the_page_size_is_clamped(self, backend: Backend) -> None:
        adapter = backend.adapter
        await asyncio.gather(
            *(adapter.save_user_state("pl", f"l{i:03d}", make_state(f"l{i:03d}", at=float(i))) for i in range(501))
        )
        one = await adapter.list_users("pl", limit=0)
        assert [r.user_id for r in one.items] == ["l500"] and one.next_cursor
        assert len((await adapter.list_users("pl", limit=-3)).items) == 1
        big = await adapter.list_users("pl", limit=10_000)
        assert len(big.items) == MAX_PAGE_SIZE and big.next_cursor
        rest = await adapter.list_users("pl", cursor=big.next_cursor, limit=10_000)
        assert [r.user_id for r in rest.items] == ["l000"] and rest.next_cursor is None

    async def test_a_cursor_we_did_not_make_is_a_value_error(self, backend: Backend) -> None:
        for cursor in ("not-base64!", "bm90IGpzb24=", "WzEsIDJd", "WyJhIiwgImIiXQ=="):  # garbage, text, [1,2], [a,b]
            with pytest.raises(ValueError, match="invalid cursor"):
                await backend.adapter.list_users(P, cursor=cursor)
            with pytest.raises(ValueError, match="invalid cursor"):
                await backend.adapter.list_sessions(P, U, cursor=cursor)

    async def test_sessions_page_the_whole_history_both_ways(self, backend: Backend) -> None:
        adapter = backend.adapter
        for i in range(60):  # beyond the 50 a state keeps inline; ties on capture time
            snap = make_snapshot(f"s{i:02d}", captured=100.0 + i // 3, number=i + 1).to_dict()
            await adapter.save_session_snapshot(P, U, f"s{i:02d}", snap)
        await adapter.save_session_snapshot(P, "other", "s_other", make_snapshot("s_other", "other").to_dict())
        oldest_first = sorted((f"s{i:02d}" for i in range(60)), key=lambda s: (100.0 + int(s[1:]) // 3, s))
        for newest_first in (True, False):
            expected = oldest_first[::-1] if newest_first else oldest_first
            for limit in (7, 50):
                rows = await every_page(
                    lambda **kw: adapter.list_sessions(P, U, newest_first=newest_first, **kw), limit  # noqa: B023
                )
                assert [r.session_id for r in rows] == expected, (newest_first, limit)
        (row,) = (await adapter.list_sessions(P, U, limit=1, newest_first=False)).items
        assert (row.session_id, row.session_number, row.started_at, row.captured_at) == ("s00", 1, 40.0, 100.0)

    # -- corrupt rows --

    async def test_an_unreadable_state_is_reported_listed_and_never_overwritten(self, backend: Backend) -> None:
        adapter = backend.adapter
        storage = StorageManager([adapter])
        await adapter.save_user_state(P, U, make_state(U, at=50.0, journey="onboarded"))
        for raw in UNREADABLE_STATES:
            await backend.put_state(P, U, raw)
            unsupported = '"_v": 99' in raw
            if unsupported:  # a JSON object: the store hands it over; the engine refuses to read it
                assert await adapter.get_user_state(P, U) == json.loads(raw)
            else:
                with pytest.raises(CorruptDocumentError) as caught:
                    await adapter.get_user_state(P, U)
                assert caught.value.raw == raw
                with pytest.raises(CorruptDocumentError):
                    await adapter.update_user_state(P, U, lambda doc: make_state(U, at=60.0))
            refusal = UnsupportedVersionError if unsupported else CorruptDocumentError
            with pytest.raises(refusal):
                await on_session_start(P, U, "s1", storage)
            with pytest.raises(refusal):
                await on_session_end(P, U, make_snapshot("s_end"), storage)
            assert await adapter.get_raw_user_state(P, U) == raw, "overwritten"
            (row,) = (await adapter.list_users(P)).items
            assert (row.user_id, row.corrupt) == (U, True), raw

    async def test_an_unreadable_state_is_replaced_only_while_its_text_is_unchanged(self, backend: Backend) -> None:
        adapter = backend.adapter
        fresh = make_state(U, at=70.0, journey="onboarded", level="proficient", email="ines@x.io")
        assert await adapter.replace_state_if_raw(P, U, "{not json", fresh) is False  # nothing stored: not written
        assert await adapter.get_raw_user_state(P, U) is None
        for raw in UNREADABLE_STATES:
            await backend.put_state(P, U, raw)
            assert await adapter.replace_state_if_raw(P, U, raw + " ", fresh) is False, raw
            assert await adapter.get_raw_user_state(P, U) == raw, "written against other text"
            assert await adapter.replace_state_if_raw(P, U, raw, fresh) is True, raw
            assert await adapter.get_user_state(P, U) == fresh
            (row,) = (await adapter.list_users(P, UserQuery(journey_state="onboarded"))).items
            assert (row.user_id, row.corrupt, row.mastery_level) == (U, False, "proficient"), raw
            assert (await adapter.list_users(P, UserQuery(search="ines@"))).items, raw
            # A second repair that saw the unreadable text loses to the first: nothing is overwritten.
            assert await adapter.replace_state_if_raw(P, U, raw, make_state(U, at=80.0)) is False
            assert await adapter.get_user_state(P, U) == fresh

    async def test_racing_repairs_of_one_unreadable_state_write_once(self, backend: Backend) -> None:
        adapter = backend.adapter
        await backend.put_state(P, U, "{not json")
        docs = [make_state(U, at=100.0 + i, n=i) for i in range(8)]
        won = await asyncio.gather(*(adapter.replace_state_if_raw(P, U, "{not json", d) for d in docs))
        assert sum(won) == 1
        assert await adapter.get_user_state(P, U) == docs[won.index(True)]

    async def test_an_unreadable_snapshot_is_reported_listed_and_never_replaced(self, backend: Backend) -> None:
        adapter = backend.adapter
        await adapter.save_session_snapshot(P, U, "s_bad", make_snapshot("s_bad", captured=10.0).to_dict())
        await backend.put_snapshot(P, U, "s_bad", "truncated{")
        with pytest.raises(CorruptDocumentError) as caught:
            await adapter.get_session_snapshot(P, U, "s_bad")
        assert caught.value.raw == "truncated{"
        with pytest.raises(CorruptDocumentError):
            await adapter.create_session_snapshot(P, U, "s_bad", make_snapshot("s_bad").to_dict())
        with pytest.raises(CorruptDocumentError):
            await on_session_end(P, U, make_snapshot("s_bad"), StorageManager([adapter]))
        assert await adapter.get_raw_session_snapshot(P, U, "s_bad") == "truncated{"
        (row,) = (await adapter.list_sessions(P, U)).items
        assert (row.session_id, row.corrupt) == ("s_bad", True)

    # -- a primary that cannot be reached --

    async def test_an_unreachable_primary_raises_and_never_answers_not_found(self, unreachable: Any) -> None:
        adapter = unreachable
        state = make_state(U, at=1.0)
        snapshot = make_snapshot("s1").to_dict()
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: adapter.get_user_state(P, U),
            lambda: adapter.get_session_snapshot(P, U, "s1"),
            lambda: adapter.get_raw_user_state(P, U),
            lambda: adapter.save_user_state(P, U, state),
            lambda: adapter.save_session_snapshot(P, U, "s1", snapshot),
            lambda: adapter.create_session_snapshot(P, U, "s1", snapshot),
            lambda: adapter.update_user_state(P, U, counter),
            lambda: record_session_end(adapter, P, U, "s1", snapshot, folding()),
            lambda: adapter.ping(),
            lambda: adapter.list_products(),
            lambda: adapter.list_users(P),
            lambda: adapter.list_sessions(P, U),
            lambda: on_session_start(P, U, "s1", StorageManager([adapter])),  # the SDK saved a blank state here
        ]
        answered = []
        for i, call in enumerate(calls):
            try:
                result = await call()
            except StorageUnavailableError:
                continue
            answered.append((i, result))
        assert answered == [], "calls (by position) that answered instead of raising StorageUnavailableError"
