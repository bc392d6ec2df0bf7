"""Per-key rate limits on the real server with two workers, on the database and on Redis.

The load comes from two connections, each known to be served by a different
granian worker, so a limit kept per process would let through about twice
the rate.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api_server import ApiServer, granian_server, manage
from tests.support.workers import WorkerConnection, one_connection_per_worker

RATE, BURST, SECONDS = 20, 5, 4.0
USER = "/api/v1/products/p1/users/u1"


@pytest.fixture(params=["database", "redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ApiServer, str, Path, dict[str, str]]]:
    extra = {"REDIS_URL": request.getfixturevalue("redis_url")} if request.param == "redis" else {}
    with granian_server(tmp_path, ["p1"], workers=2, extra_env=extra) as (srv, key):
        yield srv, key, tmp_path, extra


def limited_key(directory: Path, extra: dict[str, str], rate: float, burst: int) -> str:
    out = manage(
        directory,
        *("autoplay_apikey", "create", "--name", "limited", "--product", "p1"),
        *("--rate", str(rate), "--burst", str(burst)),
        extra_env=extra,
    )
    return out.strip().splitlines()[-1]


def bearer(key: str, **more: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **more}


def test_the_limit_holds_across_workers_and_a_refusal_says_when_to_retry(server) -> None:
    srv, _key, directory, extra = server
    key = limited_key(directory, extra, RATE, BURST)
    conns = one_connection_per_worker(srv.url, srv.pid)
    accepted = {c.pid: 0 for c in conns}
    refused: list[tuple[int, dict]] = []
    stop_at = time.monotonic() + SECONDS
    started: list[float] = []
    last: list[float] = []

    def hammer(conn: WorkerConnection) -> None:
        while time.monotonic() < stop_at:
            started.append(time.monotonic())
            answer = conn.request("GET", f"{USER}/state", headers=bearer(key))
            last.append(time.monotonic())
            if answer.status == 429:
                refused.append((int(answer.headers["retry-after"]), json.loads(answer.body)))
            else:
                assert answer.status == 404, answer.text()  # accepted: no such user yet
                accepted[conn.pid] += 1

    threads = [threading.Thread(target=hammer, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    elapsed = max(last) - min(started)
    expected = RATE * elapsed + BURST
    total = sum(accepted.values())
    assert all(n > 0 for n in accepted.values()), accepted  # both workers admitted some
    assert abs(total - expected) <= 0.1 * expected, (total, expected, accepted)
    assert len(refused) > total, "the load was well over the limit"
    retry_after, body = refused[0]
    assert retry_after >= 1 and body["code"] == "rate_limited"
    assert body["details"] == {"rate": RATE, "burst": BURST, "retry_after_s": retry_after}


def test_a_refused_write_does_nothing(server) -> None:
    srv, key, directory, extra = server
    limited = limited_key(directory, extra, 0.2, 2)  # two requests, then one every 5 s
    with srv.client(key) as free:
        assert free.post(f"{USER}/sessions/s1/start").status_code == 200
        before = free.get(f"{USER}/state").json()
    with srv.client(limited) as c:
        for _ in range(2):
            assert c.get(f"{USER}/state").status_code == 200
        state = {**before["state"], "metadata": {"plan": "changed by a refused request"}}
        refused = c.put(f"{USER}/state", json=state, headers={"If-Match": f'"{before["etag"]}"'})
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 5
    with srv.client(key) as free:
        after = free.get(f"{USER}/state").json()
    assert after["etag"] == before["etag"] and after["state"]["metadata"] == before["state"]["metadata"]


@pytest.fixture(params=["default", pytest.param("postgres", marks=pytest.mark.postgres)])
def alias(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("postgres_alias") if request.param == "postgres" else "default"


@pytest.mark.django_db(transaction=True)
def test_the_database_store_never_spends_a_token_twice(alias: str) -> None:
    """Eight threads, each with its own connection, race for a burst of 50: exactly 50 get through."""
    from django.db import connections
    from pyrate_limiter import GCRA

    from api.ratelimit import DatabaseStateStore, Limit

    rates = Limit(0.001, 50).rates()  # one request per 1000 s after the burst: none refills during the test
    admitted: list[int] = []
    waits: list[int] = []

    def race() -> None:
        try:
            store = DatabaseStateStore("race", using=alias)
            for _ in range(25):
                decision = store.check(GCRA(), rates, time.time_ns() // 1_000_000, 1)
                (admitted if decision.allowed else waits).append(decision.retry_after_ms or 0)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 50 and len(waits) == 150
    assert min(waits) > 900_000  # the next token is ~1000 s away


@pytest.mark.django_db
def test_the_command_and_the_admin_form_set_a_limit_and_refuse_a_bad_one(client, admin_user) -> None:
    from django.core.management import CommandError, call_command

    from api.models import ApiKey

    call_command("autoplay_apikey", "create", "--name", "a", "--product", "p1", "--rate", "2.5", "--burst", "10")
    assert ApiKey.objects.values_list("rate", "burst").get(name="a") == (2.5, 10)
    for args in (["--rate", "0"], ["--rate", "-3"], ["--burst", "4"], ["--rate", "5", "--burst", "0"]):
        with pytest.raises(CommandError, match="--rate/--burst"):
            call_command("autoplay_apikey", "create", "--name", "x", "--product", "p1", *args)
    client.force_login(admin_user)
    form = {"name": "web", "products_text": "p1", "scopes": ["read"], "rate": "3", "burst": "6"}
    assert client.post("/admin/api/apikey/add/", form).status_code == 200
    assert ApiKey.objects.values_list("rate", "burst").get(name="web") == (3.0, 6)
    bad = client.post("/admin/api/apikey/add/", {**form, "name": "bad", "rate": "", "burst": "6"})
    assert "a burst needs a rate" in bad.content.decode()
    assert not ApiKey.objects.filter(name="bad").exists()


def test_several_clients_on_both_workers_get_the_rate_and_the_burst_within_10_percent(server) -> None:
    """Eight keep-alive clients, four on each worker, hammer a key of 50/s (burst 10) for 3 s."""
    srv, _key, directory, extra = server
    rate, burst, seconds = 50, 10, 3.0
    key = limited_key(directory, extra, rate, burst)
    conns = [c for _ in range(4) for c in one_connection_per_worker(srv.url, srv.pid)]
    accepted: dict[int, int] = {c.pid: 0 for c in conns}
    statuses: list[int] = []
    unexpected: list[str] = []
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()
    begin = threading.Barrier(len(conns))

    def hammer(conn: WorkerConnection) -> None:
        begin.wait()
        stop_at = time.monotonic() + seconds
        while time.monotonic() < stop_at:
            t0 = time.monotonic()
            answer = conn.request("GET", f"{USER}/state", headers=bearer(key))
            with lock:
                spans.append((t0, time.monotonic()))
                statuses.append(answer.status)
                if answer.status == 404:  # accepted: no such user yet
                    accepted[conn.pid] += 1
                elif answer.status != 429 or int(answer.headers["retry-after"]) < 1:
                    unexpected.append(f"{answer.status} {answer.text()[:200]}")

    threads = [threading.Thread(target=hammer, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in conns:
        c.close()
    elapsed = max(end for _, end in spans) - min(start for start, _ in spans)
    expected = rate * elapsed + burst
    total = sum(accepted.values())
    assert unexpected == []
    assert all(n > 0 for n in accepted.values()), accepted
    assert statuses.count(429) > total, "the load was well over the limit"
    assert abs(total - expected) <= 0.1 * expected, (total, expected, accepted)


@pytest.mark.django_db(transaction=True)
async def test_checks_from_many_requests_share_one_connection() -> None:
    """Django runs each ASGI request's thread-sensitive calls in a thread of its own; checks must not follow."""
    from asgiref.sync import ThreadSensitiveContext
    from django.db.backends.signals import connection_created

    from api.errors import ApiError
    from api.ratelimit import Limit, check

    opened: list[object] = []

    def created(sender: object, connection: object, **_: object) -> None:
        opened.append(connection)

    limit = Limit(100_000, 1)  # a lease of one request (burst 1): every check reads the shared state
    await check("conn-test", limit)
    connection_created.connect(created)
    try:
        for _ in range(5):
            async with ThreadSensitiveContext():  # what Django's ASGI handler wraps every request in
                # A check within the millisecond of the last one is refused (burst 1, a millisecond
                # clock): refused or not, it read the shared state, which is what is counted here.
                with contextlib.suppress(ApiError):
                    await check("conn-test", limit)
    finally:
        connection_created.disconnect(created)
    assert opened == []
