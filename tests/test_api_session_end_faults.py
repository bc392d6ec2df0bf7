"""Session ends over the API under retries, races and a full Redis: nothing lost, counted once, summarized once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.utils import timezone

from autoplay_storage.models import SummaryClaim, SummaryRun
from autoplay_storage.user_adoption_state import SessionSnapshot
from tests.support.api_server import ApiServer
from tests.support.redis_server import start_redis

pytestmark = pytest.mark.django_db(transaction=True)

USER = "/api/v1/products/p1/users/u1"
SNAP = {"session_id": "s1", "started_at": 1_700_000_000, "captured_at": 1_700_000_600, "session_number": 1}

_calls = 0
_calls_lock = threading.Lock()


async def counting_summarizer(snapshot: SessionSnapshot) -> str:
    """A slow summarizer (a paid LLM call) that counts its runs (configured by dotted path)."""
    global _calls
    with _calls_lock:
        _calls += 1
    await asyncio.sleep(0.4)
    return f"brief of {snapshot.session_id}"


@pytest.fixture
def summarizer(settings: Any) -> Iterator[None]:
    global _calls
    _calls = 0
    settings.AUTOPLAY_STORAGE = {
        **settings.AUTOPLAY_STORAGE,
        "SUMMARIZER": f"{__name__}.counting_summarizer",
        "SUMMARIZER_TIMEOUT_S": 1.0,
    }
    yield


@pytest.fixture
def key(make_key, primary: str) -> str:
    return make_key("p1")


Calls = list[tuple[str, dict[str, Any]]]


async def _post_all(api_server: ApiServer, key: str, requests: Calls) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=api_server.url, headers=headers, timeout=60.0) as c:
        return await asyncio.gather(*(c.post(path, json=body) for path, body in requests))


def test_concurrent_retries_of_one_end_run_the_summarizer_once(api_server, key, summarizer) -> None:
    with api_server.client(key) as c:
        assert c.post(f"{USER}/sessions/s1/start").status_code == 200
    end = (f"{USER}/sessions/s1/end", {"snapshot": SNAP, "summarize": True})
    responses = asyncio.run(_post_all(api_server, key, [end] * 5))
    assert [r.status_code for r in responses] == [200] * 5, [r.text for r in responses]
    assert _calls == 1, "one paid call, however many retries race"
    for r in responses:
        state = r.json()["state"]
        assert state["sessions"]["count"] == 1
        assert state["onboarding"]["summary"] == "brief of s1", "each answer waits for the one run"
    runs = list(SummaryRun.objects.filter(user_id="u1"))
    assert [(r.source, r.outcome) for r in runs] == [("session_end", "succeeded")]
    assert SummaryClaim.objects.get(session_id="s1").state == SummaryClaim.State.APPLIED


async def long_summarizer(snapshot: SessionSnapshot) -> str:
    """Runs for several leases: only its heartbeat keeps the others from running it again."""
    global _calls
    with _calls_lock:
        _calls += 1
    await asyncio.sleep(2.5)
    return f"long brief of {snapshot.session_id}"


def test_a_run_longer_than_its_lease_is_kept_by_its_heartbeat(api_server, key, summarizer, settings, monkeypatch):
    from autoplay_storage import summary_runs

    monkeypatch.setattr(summary_runs, "LEASE_S", 1.0)
    monkeypatch.setattr(summary_runs, "HEARTBEAT_S", 0.3)
    settings.AUTOPLAY_STORAGE = {
        **settings.AUTOPLAY_STORAGE,
        "SUMMARIZER": f"{__name__}.long_summarizer",
        "SUMMARIZER_TIMEOUT_S": 5.0,
    }
    end = (f"{USER}/sessions/s1/end", {"snapshot": SNAP, "summarize": True})
    responses = asyncio.run(_post_all(api_server, key, [end] * 3))
    assert [r.status_code for r in responses] == [200] * 3
    assert _calls == 1, "a live run is never taken over, however long it takes"
    assert {r.json()["state"]["onboarding"]["summary"] for r in responses} == {"long brief of s1"}


def _recorded_without_summary(api_server: ApiServer, key: str) -> None:
    """A session end whose worker died while its summarizer ran: recorded, summary missing."""
    with api_server.client(key) as c:
        assert c.post(f"{USER}/sessions/s1/end", json={"snapshot": SNAP}).status_code == 200


def test_a_retry_takes_over_a_run_whose_worker_died(api_server, key, summarizer) -> None:
    _recorded_without_summary(api_server, key)
    dead = SummaryRun.objects.create(
        product_id="p1", user_id="u1", session_id="s1", source="session_end", summarizer="x",
        started_at=timezone.now() - timedelta(minutes=1), outcome=SummaryRun.Outcome.RUNNING,
    )  # fmt: skip
    SummaryClaim.objects.create(
        product_id="p1", user_id="u1", session_id="s1", token="dead", run=dead,
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )  # fmt: skip
    with api_server.client(key) as c:
        again = c.post(f"{USER}/sessions/s1/end", json={"snapshot": SNAP, "summarize": True})
    assert again.status_code == 200, again.text
    assert again.json()["state"]["onboarding"]["summary"] == "brief of s1"
    assert again.json()["state"]["sessions"]["count"] == 1
    assert _calls == 1
    outcomes = sorted(r.outcome for r in SummaryRun.objects.filter(user_id="u1"))
    assert outcomes == ["interrupted", "succeeded"], "every run stays recorded"


def test_a_retry_waits_for_a_live_run_and_never_runs_it_twice(api_server, key, summarizer) -> None:
    _recorded_without_summary(api_server, key)
    claim = SummaryClaim.objects.create(
        product_id="p1", user_id="u1", session_id="s1", token="live",
        lease_expires_at=timezone.now() + timedelta(seconds=30),
    )  # fmt: skip

    def finish_elsewhere() -> None:  # the live worker finishes its run and stores it
        run = SummaryRun.objects.create(
            product_id="p1", user_id="u1", session_id="s1", source="session_end", summarizer="x",
            started_at=timezone.now(), outcome="succeeded", new_summary="from the other worker",
        )  # fmt: skip
        SummaryClaim.objects.filter(pk=claim.pk).update(state=SummaryClaim.State.FINISHED, run=run)

    timer = threading.Timer(0.5, finish_elsewhere)
    timer.start()
    with api_server.client(key) as c:
        again = c.post(f"{USER}/sessions/s1/end", json={"snapshot": SNAP, "summarize": True})
    timer.join()
    assert again.status_code == 200, again.text
    assert again.json()["state"]["onboarding"]["summary"] == "from the other worker"
    assert _calls == 0
    assert SummaryClaim.objects.get(pk=claim.pk).state == SummaryClaim.State.APPLIED


def test_a_finished_run_its_worker_did_not_store_is_stored_by_the_retry(api_server, key, summarizer) -> None:
    _recorded_without_summary(api_server, key)
    run = SummaryRun.objects.create(
        product_id="p1", user_id="u1", session_id="s1", source="session_end", summarizer="x",
        started_at=timezone.now(), outcome="succeeded", new_summary="ran before the crash",
    )  # fmt: skip
    SummaryClaim.objects.create(
        product_id="p1", user_id="u1", session_id="s1", token="dead", run=run, state=SummaryClaim.State.FINISHED,
        lease_expires_at=timezone.now() - timedelta(seconds=1),
    )  # fmt: skip
    with api_server.client(key) as c:
        again = c.post(f"{USER}/sessions/s1/end", json={"snapshot": SNAP, "summarize": True})
    assert again.json()["state"]["onboarding"]["summary"] == "ran before the crash"
    assert _calls == 0, "a finished run is never paid for twice"


def test_fifty_racing_ends_are_numbered_one_to_fifty_in_the_history(api_server, key) -> None:
    with api_server.client(key) as c:
        assert c.post(f"{USER}/sessions/s0/start").status_code == 200
        live = c.get(f"{USER}/state").json()["state"]
    snapshot_form = [
        (f"{USER}/sessions/a{n}/end", {"snapshot": {"session_id": f"a{n}", "started_at": 1, "captured_at": 2 + n}})
        for n in range(25)
    ]
    state_form = [
        (
            f"{USER}/sessions/b{n}/end",
            {"state": live, "catalog_workflow_ids": ["w1"], "started_at": 1_700_000_000 + n},
        )
        for n in range(25)
    ]
    responses = asyncio.run(_post_all(api_server, key, snapshot_form + state_form))
    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses if r.status_code != 200]
    with api_server.client(key) as c:
        rows = c.get(f"{USER}/sessions", params={"limit": 100}).json()["items"]
        state = c.get(f"{USER}/state").json()["state"]
    assert sorted(r["session_number"] for r in rows) == list(range(1, 51)), "each number once"
    index = {e["session_id"]: e["session_number"] for e in state["sessions"]["index"]}
    assert {r["session_id"]: r["session_number"] for r in rows} == index, "the history agrees with the state"


def test_a_late_retry_of_a_session_past_the_inline_index_is_a_noop(api_server, key) -> None:
    with api_server.client(key) as c:
        for n in range(1, 53):
            snap = {"session_id": f"s{n}", "started_at": n, "captured_at": n + 0.5}
            assert c.post(f"{USER}/sessions/s{n}/end", json={"snapshot": snap}).status_code == 200
        before = c.get(f"{USER}/state").json()["state"]["sessions"]
        history = c.get(f"{USER}/sessions", params={"limit": 100}).json()["items"]
        retry = {"snapshot": {"session_id": "s1", "started_at": 1, "captured_at": 9}}
        late = c.post(f"{USER}/sessions/s1/end", json=retry)
        assert late.status_code == 200
        assert late.json()["state"]["sessions"] == before
        assert c.get(f"{USER}/sessions", params={"limit": 100}).json()["items"] == history


@pytest.fixture
def full_redis(tmp_path: Path, settings: Any, transactional_db: None) -> Iterator[Any]:
    """The primary on a redis-server that runs out of memory (maxmemory, noeviction) under the test."""
    server = start_redis(tmp_path, ["--maxmemory-policy", "noeviction"])
    settings.AUTOPLAY_STORAGE = {
        **settings.AUTOPLAY_STORAGE,
        "PRIMARY": "redis",
        "REDIS_URL": server.url,
        "SUMMARIZER": f"{__name__}.counting_summarizer",
        # 200 summaries of 0.4 s run at once on the test server's loop: a deadline that a busy
        # machine (parallel test workers) does not reach, since every retried end must carry its brief.
        "SUMMARIZER_TIMEOUT_S": 10.0,
    }
    try:
        yield server
    finally:
        server.stop()


def _used_memory(server: Any) -> int:
    info = dict(line.split(":", 1) for line in server.cli("INFO", "memory").splitlines() if ":" in line)
    return int(info["used_memory"])


def test_a_full_redis_never_leaves_a_snapshot_its_state_does_not_count(api_server, make_key, full_redis) -> None:
    key = make_key("p1")
    filler = "x" * 4000
    big = {"discovered_features": [f"feature-{i}-{'y' * 50}" for i in range(100)]}  # ~6 KB a snapshot and a state
    ends = [
        (
            f"/api/v1/products/p1/users/u{n}/sessions/s{n}/end",
            {"snapshot": {**big, "session_id": f"s{n}", "started_at": 1, "captured_at": 2}, "summarize": True},
        )
        for n in range(200)
    ]
    starts = [
        (f"/api/v1/products/p1/users/u{n}/sessions/s{n}/start", {"metadata": {"notes": filler}}) for n in range(200)
    ]
    assert {r.status_code for r in asyncio.run(_post_all(api_server, key, starts))} == {200}
    used = _used_memory(full_redis)
    full_redis.cli("CONFIG", "SET", "maxmemory", str(used + 200_000))  # room for some of the ends, not all
    responses = asyncio.run(_post_all(api_server, key, ends))
    statuses = {r.status_code for r in responses}
    assert 503 in statuses, "the server did fill up"
    assert statuses <= {200, 503}, [r.text for r in responses if r.status_code not in (200, 503)]

    def consistent() -> int:
        counted = 0
        with api_server.client(key) as c:
            for n in range(200):
                state = c.get(f"/api/v1/products/p1/users/u{n}/state")
                if state.status_code == 404:
                    continue
                sessions = state.json()["state"]["sessions"]
                history = c.get(f"/api/v1/products/p1/users/u{n}/sessions").json()["items"]
                assert sessions["count"] == len(history), f"u{n}: count {sessions['count']} vs {len(history)} frozen"
                assert [e["session_id"] for e in sessions["index"]] == [r["session_id"] for r in history]
                counted += sessions["count"]
        return counted

    consistent()
    full_redis.cli("CONFIG", "SET", "maxmemory", "0")
    retried = asyncio.run(_post_all(api_server, key, ends))
    assert [r.status_code for r in retried] == [200] * 200
    assert all(r.json()["state"]["onboarding"]["summary"] == f"brief of s{n}" for n, r in enumerate(retried))
    assert consistent() == 200


def test_a_server_killed_while_summaries_run_leaves_nothing_half_written(tmp_path: Path) -> None:
    """granian (two workers) SIGKILLed, main process and workers, while slow summarizers run; then restarted."""
    import os
    import signal
    import sqlite3

    from tests.support.api_server import granian_server

    env = {
        "AUTOPLAY_SUMMARIZER": "tests.support.slow_summarizer.summarize",
        "SLOW_SUMMARIZER_S": "3",
        "AUTOPLAY_SUMMARIZER_TIMEOUT_S": "4",  # a lease of 9 s: the dead runs are taken over after it
    }
    users = [f"u{n}" for n in range(30)]

    def end(user: str) -> tuple[str, dict[str, Any]]:
        snap = {"session_id": f"s-{user}", "started_at": 1, "captured_at": 2}
        return f"/api/v1/products/p1/users/{user}/sessions/s-{user}/end", {"snapshot": snap, "summarize": True}

    async def fire_and_kill(server: ApiServer, key: str) -> None:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30.0) as c:
            calls = [asyncio.create_task(c.post(path, json=body)) for path, body in map(end, users)]
            await asyncio.sleep(1.5)  # every end is recorded by now and waiting on its summarizer
            assert server.pid is not None
            os.killpg(server.pid, signal.SIGKILL)  # granian's main process leads its own process group
            done = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(r, httpx.TransportError) or r.status_code == 200 for r in done)

    with granian_server(tmp_path, ["p1"], extra_env=env) as (server, key):
        asyncio.run(fire_and_kill(server, key))

    with granian_server(tmp_path, ["p1"], extra_env=env) as (server, key):
        with server.client(key) as c:
            for user in users:  # after the crash: every frozen snapshot is counted, every count has its snapshot
                state = c.get(f"/api/v1/products/p1/users/{user}/state")
                history = c.get(f"/api/v1/products/p1/users/{user}/sessions").json()["items"]
                count = state.json()["state"]["sessions"]["count"] if state.status_code == 200 else 0
                assert count == len(history), (user, count, history)
        retried = asyncio.run(_post_all(server, key, [end(user) for user in users]))
        assert [r.status_code for r in retried] == [200] * len(users), [r.text for r in retried]
        for user, r in zip(users, retried, strict=True):
            state = r.json()["state"]
            assert state["sessions"]["count"] == 1, "counted once"
            assert state["onboarding"]["summary"] == f"brief of s-{user}", "the retry completed the summary"
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        outcomes = db.execute(
            "SELECT user_id, group_concat(outcome) FROM autoplay_storage_summaryrun GROUP BY user_id"
        ).fetchall()
    assert len(outcomes) == len(users)
    for user, runs in outcomes:
        assert sorted(runs.split(",")) in (["interrupted", "succeeded"], ["succeeded"]), (user, runs)
