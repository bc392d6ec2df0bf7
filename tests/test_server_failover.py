"""A Sentinel failover under the real server: requests during the switch get 503, never 500, and succeed on retry.

The server is ``make run``'s (``python -m config.serve``, two workers) with
Redis found through a sentinel (``AUTOPLAY_REDIS_SENTINELS``,
``AUTOPLAY_REDIS_SENTINEL_MASTER``); the master, its replica and the
sentinel are real servers (``tests/support/redis_server.py``). Agents keep
ending sessions and creating states while ``SENTINEL FAILOVER`` moves the
master; the adapter-level run of the same switch is in
``tests/test_redis_deployments.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.api_server import ApiServer, granian_server
from tests.support.redis_server import HOST, SENTINEL_MASTER, SENTINEL_PASSWORD, SentinelSetup

PRODUCT = "p1"
CATALOG = ["create_project", "invite_team"]
AGENTS = 6  # clients, each with one request in flight at a time
PATIENCE_S = 30.0  # how long one request may keep getting 503s before the test fails
RETRY_DELAY_S = 0.05


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)  # every answer, first tries and retries
    retried_ok: int = 0  # requests that got a 503 first and then succeeded
    unexpected: list[str] = field(default_factory=list)  # anything but 2xx and 503
    ended: set[tuple[str, str]] = field(default_factory=set)  # (user, session) whose end was acknowledged
    created: set[str] = field(default_factory=set)  # users whose PUT (create-only) was acknowledged


async def request(client: httpx.AsyncClient, tally: Tally, method: str, path: str, **kwargs: object) -> dict:
    """One agent request, retried on 503 (``Retry-After``) until it succeeds; any other failure is recorded."""
    deadline = time.monotonic() + PATIENCE_S
    refused = False
    while True:
        response = await client.request(method, path, **kwargs)
        tally.statuses[response.status_code] += 1
        if response.status_code == 503:
            assert response.headers.get("Retry-After"), f"{method} {path}: a 503 without Retry-After"
            refused = True
            assert time.monotonic() < deadline, f"{method} {path}: still 503 after {PATIENCE_S} s: {response.text}"
            await asyncio.sleep(RETRY_DELAY_S)
            continue
        if not 200 <= response.status_code < 300:
            tally.unexpected.append(f"{method} {path}: {response.status_code} {response.text[:300]}")
            return {}
        tally.retried_ok += refused
        return response.json()


async def agent(client: httpx.AsyncClient, tally: Tally, numbers: itertools.count, tag: str, until) -> None:
    """Sessions (start + end, the server freezing the snapshot) and state creations, until ``until()``."""
    while not until():
        n = next(numbers)
        user = f"{tag}-u{n % 5}"  # a few users, so their states are rewritten through the switch
        session = f"{tag}-s{n}"
        base = f"/api/v1/products/{PRODUCT}/users/{user}"
        started = await request(client, tally, "POST", f"{base}/sessions/{session}/start")
        if not started:
            continue
        end = {"state": started["state"], "catalog_workflow_ids": CATALOG, "started_at": time.time() - 60}
        if await request(client, tally, "POST", f"{base}/sessions/{session}/end", json=end):
            tally.ended.add((user, session))
        fresh = f"{tag}-new{n}"
        state = {"user_id": fresh, "metadata": {"plan": "team"}}
        headers = {"If-None-Match": "*"}  # create only: a retry finding its own content stored succeeds
        if await request(
            client, tally, "PUT", f"/api/v1/products/{PRODUCT}/users/{fresh}/state", json=state, headers=headers
        ):
            tally.created.add(fresh)


async def drive(server: ApiServer, key: str, tag: str, until) -> Tally:
    tally = Tally()
    numbers = itertools.count()
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30.0) as client:
        await asyncio.gather(*(agent(client, tally, numbers, tag, until) for _ in range(AGENTS)))
    return tally


def stored_state(setup: SentinelSetup, port: int, user: str) -> dict | None:
    server = next(s for s in (setup.servers.master, setup.servers.replica) if s.port == port)
    raw = server.cli("GET", f"autoplay:user:{PRODUCT}:{user}:state")
    return json.loads(raw) if raw else None


def test_a_failover_under_the_server_is_503s_then_the_new_master(tmp_path: Path, redis_sentinel: SentinelSetup) -> None:
    env = {
        "AUTOPLAY_PRIMARY": "redis",
        "REDIS_URL": "redis:///0",  # with sentinels: only the scheme and database; the master is asked for
        "AUTOPLAY_REDIS_SENTINELS": f"{HOST}:{redis_sentinel.sentinel_port}",
        "AUTOPLAY_REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
        "AUTOPLAY_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD,
    }
    ports = {redis_sentinel.servers.master.port, redis_sentinel.servers.replica.port}
    with granian_server(tmp_path, [PRODUCT], workers=2, extra_env=env) as (server, key):
        before = asyncio.run(_bounded(server, key, "before", lifecycles=20))
        assert not before.unexpected and set(before.statuses) == {200}, before.statuses
        old_port = redis_sentinel.master_port()
        assert stored_state(redis_sentinel, old_port, "before-u0") is not None  # really on the master Sentinel named

        old_port = redis_sentinel.failover()
        (new_port,) = ports - {old_port}
        failed_over_at = time.monotonic()

        old = next(s for s in (redis_sentinel.servers.master, redis_sentinel.servers.replica) if s.port == old_port)
        switched = threading.Event()

        def watch() -> None:
            """Until the sentinel names the new master and the old one replicates from it (off the agents' loop)."""
            while time.monotonic() - failed_over_at < PATIENCE_S:
                if (
                    redis_sentinel.master_port() == new_port
                    and old.cli("ROLE").split()[:1] == ["slave"]
                    and "master_link_status:up" in old.cli("INFO", "replication")
                ):
                    switched.set()
                    return
                time.sleep(0.1)
            switched.set()  # the agents stop; the assertion below says why

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        during = asyncio.run(drive(server, key, "during", until=switched.is_set))
        watcher.join()
        switch_s = time.monotonic() - failed_over_at
        assert switch_s < PATIENCE_S, f"the failover took {switch_s:.1f} s"
        assert not during.unexpected, during.unexpected[:5]
        assert set(during.statuses) <= {200, 503}, during.statuses

        # No restart: the same workers, now on the new master, within seconds.
        followed_at = time.monotonic()
        after = asyncio.run(_bounded(server, key, "after", lifecycles=12))
        assert not after.unexpected, after.unexpected[:5]
        assert set(after.statuses) <= {200, 503}, after.statuses
        assert time.monotonic() - followed_at < 10, "the server did not follow the new master within seconds"
        log = (tmp_path / "granian.log").read_text(errors="replace")
        assert log.count("Started worker-") == 2, "a worker was restarted"
        for user, _session in after.ended:
            assert stored_state(redis_sentinel, new_port, user) is not None, user
        for fresh in after.created:
            assert stored_state(redis_sentinel, new_port, fresh)["metadata"] == {"plan": "team"}
        with server.client(key) as client:
            for user in {u for u, _ in after.ended}:
                stored = client.get(f"/api/v1/products/{PRODUCT}/users/{user}/sessions").json()["items"]
                sessions = [item["session_id"] for item in stored]
                assert len(sessions) == len(set(sessions)), user  # a retried end never counts twice
                assert {s for u, s in after.ended if u == user} <= set(sessions), user
        print(
            f"\nfailover: switch {switch_s:.1f} s; during it {sum(during.statuses.values())} answers"
            f" {dict(during.statuses)}, {during.retried_ok} requests succeeded on a retry after a 503"
        )


async def _bounded(server: ApiServer, key: str, tag: str, *, lifecycles: int) -> Tally:
    """``drive`` for about ``lifecycles`` sessions."""
    done = itertools.count()
    return await drive(server, key, tag, until=lambda: next(done) >= lifecycles)
