"""The adapter contract (tests/adapter_contract.py) run over every readable primary.

Memory; Redis on its compare-and-set scripts and on WATCH/MULTI
(``AUTOPLAY_REDIS_SCRIPTS=0``); Redis Cluster (3 nodes); SQLite; PostgreSQL
(fails instead of skipping when ``CI`` is set). Servers are the suite's own,
started once per session (tests/support/); each test gets an emptied store.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from autoplay_storage.adapters.memory import InMemoryStorageAdapter
from autoplay_storage.keys import session_key, user_state_key
from tests.adapter_contract import AdapterContract, Backend
from tests.support.insight_recount import db_documents, redis_documents
from tests.support.redis_server import RedisServer, free_port, start_redis

database = pytest.mark.django_db(transaction=True)  # the adapter works from its own threads

PRIMARIES = [
    "memory",
    "redis",
    "redis_watch_multi",
    pytest.param("redis_cluster", marks=pytest.mark.cluster),
    pytest.param("sqlite", marks=database),
    pytest.param("postgres", marks=[pytest.mark.postgres, database]),
]


class TestAdapterContract(AdapterContract):
    pass


# -- the adapters, each with its back door --


@pytest.fixture(params=PRIMARIES)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    kind = request.param
    if kind == "memory":
        yield _memory()
    elif kind.startswith("redis"):
        async for backend in _redis(request, kind):
            yield backend
    else:
        alias = request.getfixturevalue("postgres_alias") if kind == "postgres" else "default"
        async for backend in _database(kind, alias):
            yield backend


def _memory() -> Backend:
    adapter = InMemoryStorageAdapter()

    async def put_state(product_id: str, user_id: str, raw: str) -> None:
        adapter.states[(product_id, user_id)] = raw

    async def put_snapshot(product_id: str, user_id: str, session_id: str, raw: str) -> None:
        adapter.snapshots[(product_id, user_id, session_id)] = raw  # replaced, as a hand edit would

    async def leftovers(product_id: str, user_id: str) -> list[str]:
        keys = [*adapter.states, *adapter.snapshots]
        return [repr(key) for key in keys if key[:2] == (product_id, user_id)]

    async def documents(product_id: str) -> tuple[list[dict], list[dict]]:
        states = [json.loads(raw) for key, raw in adapter.states.items() if key[0] == product_id]
        return states, [json.loads(raw) for key, raw in adapter.snapshots.items() if key[0] == product_id]

    return Backend("memory", adapter, put_state, put_snapshot, leftovers, documents)


async def _redis(request: pytest.FixtureRequest, kind: str) -> AsyncIterator[Backend]:
    import redis
    from redis.cluster import RedisCluster

    from autoplay_storage.adapters.redis import RedisStorageAdapter

    cluster = kind == "redis_cluster"
    if cluster:
        nodes = request.getfixturevalue("redis_cluster")
        raw: Any = RedisCluster(host=nodes.nodes[0][0], port=nodes.nodes[0][1])
        raw.flushall(target_nodes=RedisCluster.PRIMARIES)
        url = nodes.url
        adapter = RedisStorageAdapter(url, cluster=True, max_connections=16)
    else:
        url = request.getfixturevalue("redis_url")  # emptied for this test
        raw = redis.Redis.from_url(url)
        adapter = RedisStorageAdapter(url, scripts=kind == "redis")

    async def put_state(product_id: str, user_id: str, text: str) -> None:
        raw.set(user_state_key(product_id, user_id, cluster=cluster), text)

    async def put_snapshot(product_id: str, user_id: str, session_id: str, text: str) -> None:
        raw.set(session_key(product_id, user_id, session_id, cluster=cluster), text)

    async def leftovers(product_id: str, user_id: str) -> list[str]:
        """Every key of the user (but the tombstone) and every index member naming them."""
        scan = raw.scan_iter(count=1000, target_nodes=RedisCluster.PRIMARIES) if cluster else raw.scan_iter(count=1000)
        keys = [k.decode() for k in scan]
        user_part = f"{{{product_id}:{user_id}}}" if cluster else f"{product_id}:{user_id}"
        found = [k for k in keys if k.startswith(f"autoplay:user:{user_part}:")]
        for key in keys:
            if key.startswith(f"autoplay:idx:{{{product_id}}}:") and raw.type(key) == b"zset":
                members = [m.decode() for m in raw.zrange(key, 0, -1)]
                found += [f"{key} {m!r}" for m in members if m == user_id or m.endswith("\x00" + user_id)]
        return found

    async def documents(product_id: str) -> tuple[list[dict], list[dict]]:
        return await asyncio.to_thread(redis_documents, url, product_id, cluster)

    try:
        yield Backend(kind, adapter, put_state, put_snapshot, leftovers, documents, adapter.reindex)
    finally:
        await adapter.aclose()
        raw.close()


async def _database(kind: str, alias: str) -> AsyncIterator[Backend]:
    from django.db import connections

    from autoplay_storage.adapters.database import DatabaseStorageAdapter
    from autoplay_storage.models.facts import UserMetadataFact, UserWorkflowFact
    from autoplay_storage.models.records import SessionSnapshotRecord, UserSearchTerm, UserStateRecord

    adapter = DatabaseStorageAdapter(alias)

    def write(model: Any, raw: str, **key: str) -> None:
        try:  # the table as an operator's UPDATE leaves it: the derived columns stay as they were
            model.objects.using(alias).update_or_create(**key, defaults={"document": raw})
        finally:
            connections.close_all()

    async def put_state(product_id: str, user_id: str, raw: str) -> None:
        await sync_to_async(write, thread_sensitive=False)(UserStateRecord, raw, product_id=product_id, user_id=user_id)

    async def put_snapshot(product_id: str, user_id: str, session_id: str, raw: str) -> None:
        key = {"product_id": product_id, "user_id": user_id, "session_id": session_id}
        await sync_to_async(write, thread_sensitive=False)(SessionSnapshotRecord, raw, **key)

    def rows(product_id: str, user_id: str) -> list[str]:
        try:
            mine = {"product_id": product_id, "user_id": user_id}
            found = [repr(r) for r in UserStateRecord.objects.using(alias).filter(**mine).values_list("id", "user_id")]
            found += list(
                SessionSnapshotRecord.objects.using(alias).filter(**mine).values_list("session_id", flat=True)
            )
            theirs = {"state__product_id": product_id, "state__user_id": user_id}
            found += list(UserSearchTerm.objects.using(alias).filter(**theirs).values_list("term", flat=True))
            found += [repr(w) for w in UserWorkflowFact.objects.using(alias).filter(**mine)]
            found += [repr(w) for w in UserWorkflowFact.objects.using(alias).filter(**theirs)]
            return found + [repr(m) for m in UserMetadataFact.objects.using(alias).filter(**theirs)]
        finally:
            connections.close_all()

    async def leftovers(product_id: str, user_id: str) -> list[str]:
        return await sync_to_async(rows, thread_sensitive=False)(product_id, user_id)

    def read_documents(product_id: str) -> tuple[list[dict], list[dict]]:
        try:
            return db_documents(alias, product_id)
        finally:
            connections.close_all()

    async def documents(product_id: str) -> tuple[list[dict], list[dict]]:
        return await sync_to_async(read_documents, thread_sensitive=False)(product_id)

    try:
        yield Backend(kind, adapter, put_state, put_snapshot, leftovers, documents, adapter.rebuild_insight)
    finally:
        await adapter.aclose()


# -- the same adapters, their server gone --


# The memory store is in-process: it has no server to lose, so it has no case here.
@pytest.fixture(params=PRIMARIES[1:])
async def unreachable(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    kind = request.param
    if kind.startswith("redis"):
        async for adapter in _stopped_redis(kind, tmp_path):
            yield adapter
    else:
        for alias in _unreachable_database(kind, tmp_path, request):
            from autoplay_storage.adapters.database import DatabaseStorageAdapter

            adapter = DatabaseStorageAdapter(alias)
            yield adapter
            await adapter.aclose()


async def _stopped_redis(kind: str, directory: Path) -> AsyncIterator[Any]:
    """An adapter that worked, then its redis-server stopped (a crash, a restart in progress)."""
    from autoplay_storage.adapters.redis import RedisStorageAdapter

    cluster = kind == "redis_cluster"
    server = _single_node_cluster(directory) if cluster else start_redis(directory)
    adapter = RedisStorageAdapter(
        server.url, cluster=cluster, scripts=kind == "redis", connect_timeout_s=1.0, socket_timeout_s=1.0
    )
    try:
        await adapter.save_user_state("p", "warm", {"_v": 1, "user_id": "warm"})  # connections open
        server.stop()
        yield adapter
    finally:
        server.stop()
        await adapter.aclose()


def _single_node_cluster(directory: Path) -> RedisServer:
    """A cluster-mode server holding every slot: the cheapest real cluster to lose."""
    server = start_redis(
        directory, ["--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf")]
    )
    server.cli("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
    deadline = time.monotonic() + 15
    while "cluster_state:ok" not in server.cli("CLUSTER", "INFO"):
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("the single-node cluster did not reach cluster_state:ok")
        time.sleep(0.05)
    return server


def _unreachable_database(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """An alias whose database cannot be reached: a SQLite file in a missing directory, a closed PostgreSQL port."""
    from django.db import connections

    name = f"unreachable_{uuid.uuid4().hex[:8]}"
    if kind == "sqlite":
        cfg: dict[str, Any] = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "gone" / "db.sqlite3")}
    else:
        cfg = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "nothing",
            "HOST": "127.0.0.1",
            "PORT": free_port(),
            "USER": "postgres",
            "OPTIONS": {"connect_timeout": 2},
        }
    connections.settings[name] = cfg
    connections.configure_settings(connections.settings)
    with request.getfixturevalue("django_db_blocker").unblock():  # no test database: the point is there is none
        yield name
    del connections.settings[name]
