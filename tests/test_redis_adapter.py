"""RedisStorageAdapter against a real redis-server the suite starts (tests/support/redis_server.py)."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from autoplay_storage.adapters.redis import (
    RedisStorageAdapter,
)
from autoplay_storage.errors import CorruptDocumentError, StorageUnavailableError
from autoplay_storage.keys import session_key, user_state_key
from autoplay_storage.lifecycle import on_session_end, on_session_start
from autoplay_storage.manager import StorageManager
from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState, WorkflowStatus


@pytest.fixture
async def adapter(redis_url: str):
    a = RedisStorageAdapter(redis_url)
    yield a
    await a.aclose()


@pytest.fixture(params=[True, False], ids=["compare-and-set", "watch-multi"])
async def either(redis_url: str, request):
    """The adapter on each of its atomic paths: the script, and WATCH/MULTI (cluster mode, older servers)."""
    a = RedisStorageAdapter(redis_url, scripts=request.param)
    yield a
    await a.aclose()


@pytest.fixture
def raw(redis_url: str):
    """A plain synchronous client for looking at what is really stored."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def compact(doc: dict) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def snapshot_for(state: UserAdoptionState, session_id: str, *, started_at: float, now: float) -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=state.sessions.count + 1,
        started_at=started_at,
        catalog_workflow_ids=["wf_a", "wf_b"],
        now=now,
    )


# --- wire format ---------------------------------------------------------------


async def test_lifecycle_writes_exactly_the_two_wire_keys_as_compact_json(adapter, raw):
    storage = StorageManager([adapter])
    state, onboarding = await on_session_start("prod_1", "u_123", "sess_abc", storage)
    assert onboarding is None
    snap = snapshot_for(state, "sess_abc", started_at=state.first_seen_at, now=state.first_seen_at + 60)
    await on_session_end("prod_1", "u_123", snap, storage)

    state_raw = raw.get("autoplay:user:prod_1:u_123:state")
    snap_raw = raw.get("autoplay:user:prod_1:u_123:session:sess_abc")
    assert state_raw is not None and snap_raw is not None
    for text in (state_raw, snap_raw):
        doc = json.loads(text)
        assert text.decode() == compact(doc)  # compact JSON, no envelope
    assert json.loads(snap_raw) == snap.to_dict()
    stored = json.loads(state_raw)
    assert stored["sessions"]["count"] == 1
    assert stored["sessions"]["index"][0]["session_id"] == "sess_abc"
    assert stored == UserAdoptionState.from_dict(stored).to_dict()
    # Nothing else under the wire patterns: our own keys are elsewhere under autoplay:
    wire = sorted(k.decode() for k in raw.scan_iter("autoplay:user:*") if k.endswith((b":state", b":sess_abc")))
    assert wire == ["autoplay:user:prod_1:u_123:session:sess_abc", "autoplay:user:prod_1:u_123:state"]


async def test_what_we_write_is_byte_compatible_with_the_fixtures(adapter, raw, sdk_fixtures):
    for stem, doc in sdk_fixtures.items():
        kind, product_id, user_id, *rest = stem.split("__")
        if kind == "state":
            await adapter.save_user_state(product_id, user_id, doc)
            text = raw.get(user_state_key(product_id, user_id))
        else:
            await adapter.save_session_snapshot(product_id, user_id, rest[0], doc)
            text = raw.get(session_key(product_id, user_id, rest[0]))
        assert json.loads(text) == doc
        assert text.decode() == compact(doc)


async def test_ttl_applies_to_user_keys(redis_url, raw):
    a = RedisStorageAdapter(redis_url, ttl_s=3600)
    try:
        storage = StorageManager([a])
        state, _ = await on_session_start("p", "u", "s1", storage)
        await on_session_end("p", "u", snapshot_for(state, "s1", started_at=1.0, now=2.0), storage)
    finally:
        await a.aclose()
    for key in ("autoplay:user:p:u:state", "autoplay:user:p:u:session:s1", "autoplay:user:p:u:sessions"):
        assert 0 < raw.ttl(key) <= 3600


# --- errors are not "not found" ----------------------------------------------------


async def test_server_error_is_unavailable_not_missing(adapter, raw):
    raw.config_set("maxmemory", "1")  # every write now fails with OOM
    try:
        with pytest.raises(StorageUnavailableError):
            await adapter.save_user_state("p", "u", UserAdoptionState(user_id="u").to_dict())
    finally:
        raw.config_set("maxmemory", "0")
    assert raw.get("autoplay:user:p:u:state") is None


async def test_a_full_server_refuses_a_whole_session_end_not_half_of_it(either, raw):
    storage = StorageManager([either])
    state, _ = await on_session_start("p", "u", "s1", storage)
    before = raw.get("autoplay:user:p:u:state")
    raw.config_set("maxmemory", "1")
    try:
        with pytest.raises(StorageUnavailableError):
            await on_session_end("p", "u", snapshot_for(state, "s1", started_at=1.0, now=2.0), storage)
    finally:
        raw.config_set("maxmemory", "0")
    assert raw.get("autoplay:user:p:u:state") == before
    assert raw.exists("autoplay:user:p:u:session:s1", "autoplay:user:p:u:sessions") == 0


async def test_a_stalled_server_times_out_as_unavailable(redis_url, raw):
    a = RedisStorageAdapter(redis_url, socket_timeout_s=0.3)
    try:
        await a.save_user_state("p", "u", UserAdoptionState(user_id="u").to_dict())  # warm the pool
        raw.client_pause(1500)  # the server stops answering every client for 1.5 s
        with pytest.raises(StorageUnavailableError):
            await a.get_user_state("p", "u")
        with pytest.raises(StorageUnavailableError):
            await a.list_users("p")
        raw.client_unpause()
        # The timed-out connections were dropped, not handed out again with stale replies.
        assert (await a.get_user_state("p", "u"))["user_id"] == "u"
        assert [r.user_id for r in (await a.list_users("p")).items] == ["u"]
    finally:
        raw.client_unpause()
        await a.aclose()


async def test_a_caller_cancelling_is_not_a_timeout_and_leaves_nothing_behind(redis_url, raw):
    """The caller's own deadline cancels the request: that cancellation reaches it, and the pool stays usable."""
    a = RedisStorageAdapter(redis_url, socket_timeout_s=0.3, max_connections=1)
    try:
        await a.save_user_state("p", "u", UserAdoptionState(user_id="u").to_dict())
        raw.client_pause(500)
        with pytest.raises(TimeoutError):  # the caller's wait_for, not the adapter's 503
            await asyncio.wait_for(a.get_user_state("p", "u"), 0.05)
        with pytest.raises(StorageUnavailableError, match="no answer within"):
            await a.get_user_state("p", "u")  # the adapter's own deadline
        raw.client_unpause()
        assert (await a.get_user_state("p", "u"))["user_id"] == "u"
    finally:
        raw.client_unpause()
        await a.aclose()


def test_the_fast_path_holds_on_uvloop(redis_url, raw):
    """granian serves the API on uvloop (a dependency): the transport must hold there too.

    Racing ends, a killed connection and a stalled server, on uvloop's transports.
    """
    import uvloop

    async def scenario() -> None:
        a = RedisStorageAdapter(redis_url, socket_timeout_s=0.3, max_connections=8)
        storage = StorageManager([a])
        try:
            state, _ = await on_session_start("p", "u", "s_first", storage)

            async def end(i: int) -> None:
                snap = snapshot_for(state, f"s_{i:02d}", started_at=1000.0 + i, now=2000.0 + i)
                await on_session_end("p", "u", snap, storage)

            await asyncio.gather(*(end(i) for i in range(20)))
            assert (await a.get_user_state("p", "u"))["sessions"]["count"] == 20
            raw.client_kill_filter(_type="normal", skipme=True)  # every pooled connection dies while idle
            await asyncio.sleep(0.05)
            await end(20)  # replaced on checkout
            raw.client_pause(1000)
            try:
                with pytest.raises(StorageUnavailableError):
                    await a.get_user_state("p", "u")
            finally:
                raw.client_unpause()
            assert (await a.get_user_state("p", "u"))["sessions"]["count"] == 21
        finally:
            await a.aclose()

    uvloop.run(scenario())


@pytest.mark.parametrize("bad", [b"\xff\xfe", b"{\"_v\": 1, \"user_id\": \"\xc3\"}"])
async def test_bytes_that_are_not_utf8_are_a_corrupt_state_left_untouched(adapter, raw, bad):
    """Only Redis can hold them (the contract checks the text cases on every primary)."""
    key = "autoplay:user:p:u:state"
    raw.set(key, bad)
    with pytest.raises(CorruptDocumentError) as info:
        await adapter.get_user_state("p", "u")
    assert info.value.key == key
    assert info.value.raw == bad.decode("utf-8", errors="replace")
    storage = StorageManager([adapter])
    with pytest.raises(CorruptDocumentError):
        await on_session_start("p", "u", "s1", storage)
    with pytest.raises(CorruptDocumentError):
        await adapter.update_user_state("p", "u", lambda doc: {"_v": 1, "user_id": "u"})
    assert raw.get(key) == bad
    assert await adapter.get_raw_user_state("p", "u") == bad.decode("utf-8", errors="replace")


# --- atomic, idempotent, bursts --------------------------------------------------------


async def test_update_retries_mutate_on_conflict(either, raw):
    """Another writer changes the key while mutate runs: the write is refused and mutate reruns on its document.

    On both atomic paths: the script's compare-and-set, and WATCH/MULTI (EXEC fails).
    """
    adapter = either
    await adapter.save_user_state("p", "u", {"_v": 1, "user_id": "u", "n": 0})
    seen: list[int] = []

    def mutate(doc):
        seen.append(doc["n"])
        if len(seen) == 1:  # the concurrent writer sneaks in after our read, before our write
            raw.set("autoplay:user:p:u:state", compact({"_v": 1, "user_id": "u", "n": 10}))
        return {**doc, "n": doc["n"] + 1}

    assert (await adapter.update_user_state("p", "u", mutate))["n"] == 11
    assert seen == [0, 10]
    assert (await adapter.get_user_state("p", "u"))["n"] == 11


async def test_a_stale_guess_is_refused_and_mutate_reruns_on_what_is_stored(adapter, raw):
    """The adapter computes from the state it last saw; another writer's change makes the script refuse it."""
    await adapter.save_user_state("p", "u", {"_v": 1, "user_id": "u", "n": 0})
    raw.set("autoplay:user:p:u:state", compact({"_v": 1, "user_id": "u", "n": 10}))  # another process, the SDK...
    seen: list[int] = []

    def mutate(doc):
        seen.append(doc["n"])
        return {**doc, "n": doc["n"] + 1}

    assert (await adapter.update_user_state("p", "u", mutate))["n"] == 11
    assert seen == [0, 10]  # the guess was refused without a write, then the stored state was used
    assert json.loads(raw.get("autoplay:user:p:u:state"))["n"] == 11


async def test_a_user_this_process_never_saw_is_guessed_new_but_never_overwritten(redis_url, raw, monkeypatch):
    """The first write for an unseen user guesses "no state"; a stored state refuses the guess, history kept."""
    other = RedisStorageAdapter(redis_url)  # another worker: it ran three sessions for this user
    ours = RedisStorageAdapter(redis_url)
    try:
        theirs = StorageManager([other])
        for n in range(3):
            state, _ = await on_session_start("p", "u", f"s{n}", theirs)
            await on_session_end("p", "u", snapshot_for(state, f"s{n}", started_at=n, now=n + 0.5), theirs)
        sends = _count_sends(monkeypatch)
        state, onboarding = await on_session_start("p", "u", "s3", StorageManager([ours]))
        assert len(sends) == 2  # the refused guess (nothing written), then the write on the stored state
        assert state.sessions.count == 3 and onboarding is not None and onboarding.session_id == "s0"
        doc = json.loads(raw.get("autoplay:user:p:u:state"))
        assert doc["sessions"]["count"] == 3 and doc["sessions"]["current_session_id"] == "s3"

        # A mutate that needs an existing user (an edit) is never told "no such user" by a guess.
        seen: list[object] = []

        def edit(doc):
            seen.append(doc if doc is None else doc["sessions"]["count"])
            if doc is None:
                raise LookupError("no such user")
            return {**doc, "journey_state": "onboarded"}

        fresh, reader = RedisStorageAdapter(redis_url), RedisStorageAdapter(redis_url)
        uncached = RedisStorageAdapter(redis_url, state_cache_size=0)
        try:
            sends.clear()
            assert (await fresh.update_user_state("p", "u", edit))["journey_state"] == "onboarded"
            assert seen == [None, 3] and len(sends) == 2  # asked Redis (GET), then wrote
            # Without a cache nothing is guessed: a refused guess could not be remembered.
            sends.clear()
            await on_session_start("p", "u", "s4", StorageManager([uncached]))
            assert len(sends) == 2  # GET, then the script
            # One that writes nothing for "no state" is not guessed either: it is read first.
            assert (await reader.update_user_state("p", "u", lambda d: None))["user_id"] == "u"
        finally:
            await fresh.aclose()
            await reader.aclose()
            await uncached.aclose()
        # A truly new user: one round trip, and the edit's refusal is the real answer.
        sends.clear()
        state, onboarding = await on_session_start("p", "new", "s0", StorageManager([ours]))
        assert len(sends) == 1 and onboarding is None and state.sessions.count == 0
        with pytest.raises(LookupError):
            await ours.update_user_state("p", "nobody", edit)
    finally:
        await other.aclose()
        await ours.aclose()


async def test_a_stale_guess_never_writes_over_a_deleted_or_expired_state(adapter, raw):
    await adapter.save_user_state("p", "u", {"_v": 1, "user_id": "u", "n": 3})
    raw.delete("autoplay:user:p:u:state")
    seen: list[object] = []

    def mutate(doc):
        seen.append(doc if doc is None else doc["n"])
        return {"_v": 1, "user_id": "u", "n": 0 if doc is None else doc["n"] + 1}

    assert (await adapter.update_user_state("p", "u", mutate))["n"] == 0
    assert seen == [3, None]


async def test_the_script_is_sent_again_after_a_script_flush(adapter, raw):
    await adapter.save_user_state("p", "u", {"_v": 1, "user_id": "u", "n": 0})
    raw.script_flush()  # a restarted or failed-over server has an empty script cache
    await adapter.update_user_state("p", "u", lambda doc: {**doc, "n": 1})
    assert json.loads(raw.get("autoplay:user:p:u:state"))["n"] == 1


async def test_the_last_seen_states_are_bounded(redis_url):
    a = RedisStorageAdapter(redis_url, state_cache_size=3)
    try:
        for i in range(10):
            await a.save_user_state("p", f"u{i}", {"_v": 1, "user_id": f"u{i}"})
        assert len(a._seen) == 3
    finally:
        await a.aclose()


async def test_an_unreadable_guess_is_dropped_so_a_repaired_key_is_read_again(adapter, raw):
    await adapter.save_user_state("p", "u", {"_v": 1, "user_id": "u", "n": 0})
    raw.set("autoplay:user:p:u:state", "{broken")
    with pytest.raises(CorruptDocumentError):
        await adapter.update_user_state("p", "u", lambda doc: {**doc, "n": 1})
    assert raw.get("autoplay:user:p:u:state") == b"{broken"
    raw.set("autoplay:user:p:u:state", compact({"_v": 1, "user_id": "u", "n": 7}))  # repaired by hand
    assert (await adapter.update_user_state("p", "u", lambda doc: {**doc, "n": doc["n"] + 1}))["n"] == 8


async def test_a_session_end_writes_snapshot_and_state_together_or_not_at_all(adapter, raw):
    """One script: when the fold fails, not even the snapshot is frozen (the agent's retry starts clean)."""
    await adapter.save_user_state("p", "u", {"_v": 1, "user_id": "u"})

    def boom(frozen, doc):
        raise RuntimeError("fold failed")

    with pytest.raises(RuntimeError):
        await adapter.record_session_end("p", "u", "s1", {"session_id": "s1", "captured_at": 2.0}, boom)
    assert raw.exists("autoplay:user:p:u:session:s1") == 0
    assert raw.zcard("autoplay:user:p:u:sessions") == 0


async def test_a_session_end_folds_the_snapshot_frozen_before(adapter, raw):
    """Written before by another writer: nothing is overwritten, and the state folds the frozen one."""
    await adapter.save_user_state("p", "u", {"_v": 1, "user_id": "u", "folded": []})
    frozen = {"session_id": "s1", "captured_at": 5.0, "by": "sdk"}
    raw.set("autoplay:user:p:u:session:s1", compact(frozen))

    def fold(snapshot, doc):
        return {**doc, "folded": [*doc["folded"], snapshot.get("by", "us")]}

    got, state = await adapter.record_session_end("p", "u", "s1", {"session_id": "s1", "captured_at": 9.0}, fold)
    assert got == frozen and state["folded"] == ["sdk"]
    assert json.loads(raw.get("autoplay:user:p:u:session:s1")) == frozen
    assert raw.zscore("autoplay:user:p:u:sessions", "s1") == 5.0


def _count_sends(monkeypatch) -> list[int]:
    """One entry per request written to Redis (every connection is redis-py's)."""
    from redis.asyncio.connection import AbstractConnection

    sends: list[int] = []
    original = AbstractConnection.send_packed_command

    async def counted(conn, command, check_health=True):
        sends.append(1)
        await original(conn, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    return sends


@pytest.mark.parametrize(
    ("options", "warm", "cold"),
    [({}, [2, 2, 2], 4), ({"scripts": False}, [4, 4, 4], 4)],
    ids=["compare-and-set", "watch-multi"],
)
async def test_round_trips_per_lifecycle(redis_url, monkeypatch, options, warm, cold):
    """Two round trips for a whole session while the adapter saw the user last, four when another process did.

    A new user's first session too: its first write guesses "no state". (The SDK
    needs five or six, without atomicity.) The WATCH/MULTI path needs four: two a step.
    """
    sends = _count_sends(monkeypatch)
    a = RedisStorageAdapter(redis_url, **options)
    raw = redis.Redis.from_url(redis_url)
    try:
        storage = StorageManager([a])
        await a.get_user_state("p", "nobody")  # open the (one) pooled connection: its handshake is not counted
        await a.ping()  # and the client's, which the WATCH/MULTI path uses
        if a.scripts:
            await a.update_user_state("p", "nobody", lambda doc: None)  # load the script once
        for n, session_id in enumerate(["s1", "s2", "s3"]):
            sends.clear()
            state, onboarding = await on_session_start("p", "u", session_id, storage)
            assert (onboarding is None) == (n == 0)
            if onboarding is not None:
                assert onboarding.session_id == "s1"
            snapshot = snapshot_for(state, session_id, started_at=10.0 * n, now=10.0 * n + 5)
            await on_session_end("p", "u", snapshot, storage)
            assert len(sends) == warm[n], (session_id, len(sends))
        # Another process wrote this user last, before the start and again before the end:
        # each step's first try is refused, and the refusal carries the state to retry on.
        key = "autoplay:user:p:u:state"
        raw.set(key, raw.get(key).replace(b'"welcomed":false', b'"welcomed":true'))
        sends.clear()
        state, _ = await on_session_start("p", "u", "s4", storage)
        raw.set(key, raw.get(key).replace(b'"welcomed":true', b'"welcomed":false'))
        await on_session_end("p", "u", snapshot_for(state, "s4", started_at=40.0, now=45.0), storage)
        assert len(sends) == cold
        doc = await a.get_user_state("p", "u")
        assert doc["sessions"]["count"] == 4 and doc["sessions"]["current_session_id"] is None
    finally:
        raw.close()
        await a.aclose()


async def test_burst_of_2000_lifecycles_through_one_adapter(redis_url, raw):
    # The 32 connections are opened while 2000 coroutines share this loop: a connect deadline
    # above the 2 s default, so a busy machine (parallel test workers) is not a connect timeout.
    a = RedisStorageAdapter(redis_url, max_connections=32, connect_timeout_s=10.0)
    storage = StorageManager([a])

    async def lifecycle(i: int) -> None:
        state, _ = await on_session_start("burst", f"u{i}", f"s{i}", storage)
        await on_session_end("burst", f"u{i}", snapshot_for(state, f"s{i}", started_at=1.0, now=2.0), storage)

    try:
        await asyncio.gather(*(lifecycle(i) for i in range(2000)))
        products = {p.product_id: p for p in await a.list_products()}
    finally:
        await a.aclose()
    assert products["burst"].user_count == 2000
    stored = raw.mget([f"autoplay:user:burst:u{i}:state" for i in range(2000)])
    counts = [json.loads(v)["sessions"]["count"] for v in stored]
    assert counts == [1] * 2000
    assert len(list(raw.scan_iter("autoplay:user:burst:*:session:*", count=1000))) == 2000



async def test_urls_with_a_user_password_and_database_are_honoured(redis_url, raw):
    raw.execute_command("ACL", "SETUSER", "console_test", "on", ">s3cret", "~*", "+@all")
    base = redis_url.rsplit("/", 1)[0].replace("redis://", "redis://console_test:s3cret@")
    a = RedisStorageAdapter(f"{base}/5")
    try:
        await a.save_user_state("p", "u", {"_v": 1, "user_id": "u"})
        db5 = redis.Redis.from_url(f"{redis_url.rsplit('/', 1)[0]}/5")
        assert db5.exists("autoplay:user:p:u:state") == 1 and raw.exists("autoplay:user:p:u:state") == 0
        db5.flushdb()
        db5.close()
        wrong = RedisStorageAdapter(base.replace("s3cret", "wrong") + "/0")
        with pytest.raises(StorageUnavailableError):
            await wrong.get_user_state("p", "u")
        await wrong.aclose()
    finally:
        await a.aclose()
        raw.execute_command("ACL", "DELUSER", "console_test")


async def test_connections_the_server_closed_while_idle_are_replaced(adapter, raw):
    await adapter.save_user_state("p", "u", {"_v": 1, "user_id": "u", "n": 0})
    raw.client_kill_filter(_type="normal", skipme=True)  # a restart, an idle timeout...
    await asyncio.sleep(0.05)  # the adapter's loop sees the close
    assert (await adapter.get_user_state("p", "u"))["n"] == 0
    await adapter.update_user_state("p", "u", lambda doc: {**doc, "n": 1})
    assert json.loads(raw.get("autoplay:user:p:u:state"))["n"] == 1


async def test_a_burst_waits_for_a_connection_and_a_pool_timeout_is_a_503(redis_url):
    """The pool is bounded: callers queue for a connection instead of failing, up to ``pool_timeout_s``."""
    a = RedisStorageAdapter(redis_url, max_connections=1, pool_timeout_s=0.3)
    try:
        results = await asyncio.gather(*(a.get_user_state("p", f"u{i}") for i in range(20)))
        assert results == [None] * 20  # one connection, twenty callers: each waited its turn
        held = asyncio.ensure_future(a.transport.call(a.transport.client.blpop(["nothing"], timeout=1)))
        await asyncio.sleep(0.05)  # the only connection is busy for a second
        with pytest.raises(StorageUnavailableError, match="No connection available"):
            await a.get_user_state("p", "u")  # every slot busy past pool_timeout_s
        await held
        assert await a.get_user_state("p", "u") is None  # the connection came back
    finally:
        await a.aclose()


async def test_lone_surrogates_in_a_document_reach_the_indexes_as_escape_text(adapter, raw) -> None:
    """JSON can carry a lone surrogate; no UTF-8 can: the insight members get its escape text, the write succeeds."""
    state = UserAdoptionState(user_id="u_s")
    state.upsert_workflow_progress("wf_\ud87c", status=WorkflowStatus.IN_PROGRESS, now=1_700_000_001.0)
    state.metadata["email"] = "a\ud800@example.com"
    doc = state.to_dict()
    await adapter.update_user_state("p", "u_s", lambda current: doc)
    assert json.loads(raw.get(user_state_key("p", "u_s")))["metadata"]["email"] == "a\ud800@example.com"
    assert b"autoplay:idx:{p}:f:wf:wf_\\ud87c:in_progress_at" in set(raw.scan_iter("autoplay:idx:*"))
