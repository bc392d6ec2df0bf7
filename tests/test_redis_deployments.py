"""The Redis adapter on every deployment the transport supports, each a real server the suite starts.

TLS with a certificate the test makes, a Unix socket, an ACL user, Sentinel
(with a failover mid-run) and WAIT for replicas.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from autoplay_storage.adapters.redis import RedisStorageAdapter
from autoplay_storage.browse import UserQuery
from autoplay_storage.errors import StorageUnavailableError
from autoplay_storage.lifecycle import on_session_end, on_session_start
from autoplay_storage.manager import StorageManager
from autoplay_storage.user_adoption_state import SessionSnapshot
from tests.support.redis_server import HOST, SENTINEL_MASTER, SENTINEL_PASSWORD


async def one_session(storage, user_id: str, session_id: str) -> dict:
    """A whole session through the lifecycle; the state document as stored after."""
    state, _ = await on_session_start("p", user_id, session_id, storage, metadata={"email": f"{user_id}@example.com"})
    snapshot = SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=state.sessions.count + 1,
        started_at=state.last_updated_at,
        catalog_workflow_ids=["wf_a"],
    )
    await on_session_end("p", user_id, snapshot, storage)
    doc = await storage.get_user_state("p", user_id)
    assert doc is not None
    return doc


async def sessions_and_listing(adapter: RedisStorageAdapter) -> None:
    storage = StorageManager([adapter])
    for n in range(3):
        doc = await one_session(storage, "u_1", f"s{n}")
    assert doc["sessions"]["count"] == 3
    page = await adapter.list_users("p", UserQuery(search="u_1@"))
    assert [row.user_id for row in page.items] == ["u_1"]
    history = await adapter.list_sessions("p", "u_1")
    assert [row.session_id for row in history.items] == ["s2", "s1", "s0"]


# --- TLS, Unix socket, ACL ---------------------------------------------------------------


async def test_tls_with_the_servers_certificate(redis_tls):
    redis_tls.server.cli("FLUSHALL")
    adapter = RedisStorageAdapter(redis_tls.tls_url)
    try:
        await sessions_and_listing(adapter)
    finally:
        await adapter.aclose()
    assert json.loads(redis_tls.server.cli("GET", "autoplay:user:p:u_1:state"))["sessions"]["count"] == 3


async def test_tls_refuses_a_server_whose_certificate_it_cannot_verify(redis_tls):
    adapter = RedisStorageAdapter(f"rediss://{HOST}:{redis_tls.tls_port}/0")  # the system CAs: not the test's
    try:
        with pytest.raises(StorageUnavailableError, match="certificate"):
            await adapter.get_user_state("p", "u_1")
    finally:
        await adapter.aclose()


async def test_plain_text_to_the_tls_port_is_a_503_not_a_hang(redis_tls):
    adapter = RedisStorageAdapter(f"redis://{HOST}:{redis_tls.tls_port}/0", socket_timeout_s=1.0)
    try:
        with pytest.raises(StorageUnavailableError):
            await adapter.get_user_state("p", "u_1")
    finally:
        await adapter.aclose()


async def test_unix_socket(redis_unix):
    redis_unix.server.cli("FLUSHALL")
    adapter = RedisStorageAdapter(redis_unix.unix_url)
    try:
        await sessions_and_listing(adapter)
        await adapter.reindex()
    finally:
        await adapter.aclose()
    assert json.loads(redis_unix.server.cli("GET", "autoplay:user:p:u_1:state"))["sessions"]["count"] == 3


@pytest.fixture
def acl_user(redis_server):
    """An ACL user limited to the engine's keys, without the dangerous commands (FLUSHALL, CONFIG...)."""
    redis_server.cli("FLUSHALL")
    redis_server.cli("ACL", "SETUSER", "engine", "reset", "on", ">engine-pw", "~autoplay:*", "+@all", "-@dangerous")
    redis_server.cli("ACL", "SETUSER", "stranger", "reset", "on", ">stranger-pw", "~other:*", "+@all")
    yield f"redis://engine:engine-pw@{HOST}:{redis_server.port}/0"
    redis_server.cli("ACL", "DELUSER", "engine", "stranger")


async def test_an_acl_user_limited_to_the_engines_keys_runs_everything(acl_user, redis_server):
    adapter = RedisStorageAdapter(acl_user)
    try:
        await sessions_and_listing(adapter)
        counts = await adapter.reindex()
        assert counts["states"] == 1 and counts["snapshots"] == 3
    finally:
        await adapter.aclose()


async def test_an_acl_user_without_the_keys_gets_503s_never_not_found(acl_user, redis_server):
    adapter = RedisStorageAdapter(f"redis://stranger:stranger-pw@{HOST}:{redis_server.port}/0")
    try:
        with pytest.raises(StorageUnavailableError, match=r"NoPermission|NOPERM|permission"):
            await adapter.get_user_state("p", "u_1")
        with pytest.raises(StorageUnavailableError):
            await one_session(StorageManager([adapter]), "u_1", "s0")
    finally:
        await adapter.aclose()


# --- WAIT for replicas ----------------------------------------------------------------------


async def test_wait_for_a_replica_acknowledges_each_session_end(redis_replicated):
    adapter = RedisStorageAdapter(redis_replicated.master.url, wait_replicas=1)
    try:
        doc = await one_session(StorageManager([adapter]), "u_w", "s0")
        # Acknowledged: the replica holds the session end the moment the call returns.
        on_replica = json.loads(redis_replicated.replica.cli("GET", "autoplay:user:p:u_w:state"))
        assert on_replica["sessions"]["count"] == doc["sessions"]["count"] == 1
        assert redis_replicated.replica.cli("EXISTS", "autoplay:user:p:u_w:session:s0") == "1"
    finally:
        await adapter.aclose()


async def test_too_few_replicas_is_a_503_and_the_retry_is_acknowledged_once(redis_replicated):
    """Written on the master but not acknowledged: the caller sees 503; a retry records nothing twice."""
    # WAIT blocks its whole timeout here (a second replica never comes): long enough that the one
    # replica's acknowledgement arrives within it on a loaded machine, so the count it reports is 1.
    strict = RedisStorageAdapter(redis_replicated.master.url, wait_replicas=2, wait_timeout_ms=2000)
    enough = RedisStorageAdapter(redis_replicated.master.url, wait_replicas=1)
    try:
        state, _ = await on_session_start("p", "u_w", "s0", StorageManager([strict]))
        snapshot = SessionSnapshot.from_adoption_state(
            state, session_id="s0", session_number=1, started_at=state.last_updated_at, catalog_workflow_ids=[]
        )
        for _ in range(2):  # one replica exists, two are asked for: never acknowledged
            with pytest.raises(StorageUnavailableError, match="1 of 2 replicas"):
                await on_session_end("p", "u_w", snapshot, StorageManager([strict]))
        ended = await on_session_end("p", "u_w", snapshot, StorageManager([enough]))  # the retry that succeeds
        assert ended.sessions.count == 1
        on_replica = json.loads(redis_replicated.replica.cli("GET", "autoplay:user:p:u_w:state"))
        assert on_replica["sessions"]["count"] == 1
    finally:
        await strict.aclose()
        await enough.aclose()


async def test_wait_on_the_watch_multi_path_too(redis_replicated):
    adapter = RedisStorageAdapter(redis_replicated.master.url, scripts=False, wait_replicas=1)
    strict = RedisStorageAdapter(redis_replicated.master.url, scripts=False, wait_replicas=2, wait_timeout_ms=100)
    try:
        await one_session(StorageManager([adapter]), "u_w", "s0")
        assert json.loads(redis_replicated.replica.cli("GET", "autoplay:user:p:u_w:state"))["sessions"]["count"] == 1
        with pytest.raises(StorageUnavailableError, match="replicas"):
            await one_session(StorageManager([strict]), "u_w", "s1")
    finally:
        await adapter.aclose()
        await strict.aclose()


def test_wait_is_refused_in_cluster_mode():
    with pytest.raises(ValueError, match="cluster"):
        RedisStorageAdapter(f"redis://{HOST}:1/0", cluster=True, wait_replicas=1)


# --- Sentinel ---------------------------------------------------------------------------------


def sentinel_adapter(setup, **options) -> RedisStorageAdapter:
    return RedisStorageAdapter(
        "redis:///0",
        sentinels=[(HOST, setup.sentinel_port)],
        sentinel_master=SENTINEL_MASTER,
        sentinel_password=SENTINEL_PASSWORD,
        socket_timeout_s=1.0,
        connect_timeout_s=1.0,
        **options,
    )


async def test_sentinel_finds_the_master(redis_sentinel):
    adapter = sentinel_adapter(redis_sentinel)
    try:
        await sessions_and_listing(adapter)
    finally:
        await adapter.aclose()
    master = redis_sentinel.servers.master
    assert json.loads(master.cli("GET", "autoplay:user:p:u_1:state"))["sessions"]["count"] == 3


async def test_a_wrong_sentinel_password_is_a_503(redis_sentinel):
    adapter = RedisStorageAdapter(
        "redis:///0",
        sentinels=[(HOST, redis_sentinel.sentinel_port)],
        sentinel_master=SENTINEL_MASTER,
        sentinel_password="wrong",
    )
    try:
        with pytest.raises(StorageUnavailableError):
            await adapter.get_user_state("p", "u_1")
    finally:
        await adapter.aclose()


@pytest.mark.parametrize(
    ("options", "acknowledged"),
    [({}, False), ({"scripts": False}, False), ({"wait_replicas": 1, "wait_timeout_ms": 500}, True)],
    ids=["compare-and-set", "watch-multi", "wait-for-a-replica"],
)
async def test_a_failover_mid_run_is_followed_without_a_restart(redis_sentinel, options, acknowledged):
    """Requests during the switch fail as StorageUnavailableError (a 503), and succeed on retry on the new master.

    Replication is asynchronous: session ends the old master took after the
    promotion are lost with it, unless each end waited for a replica (WAIT):
    then every session end that returned is on the new master.
    """
    adapter = sentinel_adapter(redis_sentinel, **options)
    storage = StorageManager([adapter])
    servers = {redis_sentinel.servers.master.port: redis_sentinel.servers.master,
               redis_sentinel.servers.replica.port: redis_sentinel.servers.replica}
    unavailable = 0
    ended: list[str] = []

    async def session_until_it_succeeds(user_id: str, session_id: str) -> None:
        nonlocal unavailable
        deadline = time.monotonic() + 30
        while True:
            try:
                await one_session(storage, user_id, session_id)
                ended.append(session_id)
                return
            except StorageUnavailableError:  # anything else fails the test: never a 500
                unavailable += 1
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    try:
        for n in range(5):
            await session_until_it_succeeds("u_f", f"before{n}")
        old_port = redis_sentinel.failover()
        new_port = next(port for port in servers if port != old_port)

        def switched() -> bool:  # the sentinel names the new master and the old one follows it
            return (
                redis_sentinel.master_port() == new_port
                and servers[old_port].cli("ROLE").split()[:1] == ["slave"]
                and "master_link_status:up" in servers[old_port].cli("INFO", "replication")
            )

        n, switched_at = 0, time.monotonic()
        while not switched():  # the agent keeps working through the switch
            await session_until_it_succeeds("u_f", f"during{n}")
            n += 1
            assert time.monotonic() - switched_at < 30, "the failover did not complete"
        for k in range(3):  # and, with no restart, it works on the new master
            await session_until_it_succeeds("u_f", f"after{k}")
        assert time.monotonic() - switched_at < 30
        doc = json.loads(servers[new_port].cli("GET", "autoplay:user:p:u_f:state"))
        ids = [entry["session_id"] for entry in doc["sessions"]["index"]]
        assert len(ids) == len(set(ids))  # a retried end never counts twice
        assert ids[-3:] == ["after0", "after1", "after2"]
        numbers = [entry["session_number"] for entry in doc["sessions"]["index"]]
        assert numbers == list(range(doc["sessions"]["count"] - len(ids) + 1, doc["sessions"]["count"] + 1))
        if acknowledged:
            assert doc["sessions"]["count"] == len(ended)  # no acknowledged session end was lost
        else:
            assert doc["sessions"]["count"] <= len(ended)
    finally:
        await adapter.aclose()


# --- settings ---------------------------------------------------------------------------------


def test_sentinel_addresses_from_the_environment(monkeypatch):
    from config.settings import env_addresses

    monkeypatch.setenv("AUTOPLAY_REDIS_SENTINELS", "10.0.0.1:26379, sentinel-b:26380,[::1]:26381")
    assert env_addresses("AUTOPLAY_REDIS_SENTINELS") == [("10.0.0.1", 26379), ("sentinel-b", 26380), ("::1", 26381)]
    monkeypatch.setenv("AUTOPLAY_REDIS_SENTINELS", "10.0.0.1")
    with pytest.raises(ValueError, match="AUTOPLAY_REDIS_SENTINELS"):
        env_addresses("AUTOPLAY_REDIS_SENTINELS")


async def test_the_settings_build_a_sentinel_primary(settings, redis_sentinel):
    from autoplay_storage.runtime import build_primary, primary_kind

    settings.AUTOPLAY_STORAGE = {
        **settings.AUTOPLAY_STORAGE,
        "PRIMARY": "",
        "REDIS_URL": "",
        "REDIS_SENTINELS": [(HOST, redis_sentinel.sentinel_port)],
        "REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
        "REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
        "REDIS_WAIT_REPLICAS": 1,
    }
    assert primary_kind() == "redis"
    adapter = build_primary()
    try:
        assert "sentinel master mymaster" in repr(adapter)
        await one_session(StorageManager([adapter]), "u_s", "s0")  # and it waits for the replica
        replica = redis_sentinel.servers.replica
        assert json.loads(replica.cli("GET", "autoplay:user:p:u_s:state"))["sessions"]["count"] == 1
    finally:
        await adapter.aclose()
