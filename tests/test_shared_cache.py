"""Django's cache is shared by the workers: a revoked key is refused at once by each; no cache key is a wire key."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.api_server import ApiServer, granian_server, manage
from tests.support.workers import one_connection_per_worker

USER = "/api/v1/products/p1/users/u1"
WIRE_PATTERNS = ("autoplay:user:*:state", "autoplay:user:*:session:*")


@pytest.fixture(params=["database", "redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ApiServer, str, Path, dict[str, str]]]:
    extra = {"REDIS_URL": request.getfixturevalue("redis_url")} if request.param == "redis" else {}
    # The header read timeout also bounds a keep-alive connection's idle wait for its next request:
    # granian's longest, so the connections outlive the `manage` revoke between two requests on a busy machine.
    idle = {"AUTOPLAY_BODY_TIMEOUT_S": "60"}
    with granian_server(tmp_path, ["p1"], workers=2, extra_env={**extra, **idle}) as (srv, key):
        yield srv, key, tmp_path, extra


def test_a_revoked_key_is_refused_at_once_by_every_worker(server) -> None:
    srv, key, directory, extra = server
    conns = one_connection_per_worker(srv.url, srv.pid)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        for conn in conns:  # each worker has verified (and cached) the key
            for _ in range(3):
                assert conn.request("GET", f"{USER}/state", headers=headers).status == 404
        manage(directory, "autoplay_apikey", "revoke", key.split("_")[1], extra_env=extra)
        for conn in conns:
            answer = conn.request("GET", f"{USER}/state", headers=headers)
            assert answer.status == 401 and b"invalid_api_key" in answer.body, conn.pid
    finally:
        for conn in conns:
            conn.close()


def test_cache_keys_never_collide_with_the_wire_keys(tmp_path: Path, redis_url: str) -> None:
    """Revocations, rate limits and sign-in counters sit under ``autoplay-cache:``, apart from ``autoplay:``."""
    extra = {"REDIS_URL": redis_url}
    client = redis.Redis.from_url(redis_url)
    manage(tmp_path, "collectstatic", "--noinput", "-v", "0")  # the sign-in page names the hashed static files
    with granian_server(tmp_path, ["p1"], workers=2, extra_env=extra) as (srv, key):
        limited = manage(
            tmp_path, "autoplay_apikey", "create", "--name", "l", "--product", "p1", "--rate", "50", extra_env=extra
        ).split()[-1]
        with srv.client(key) as c:
            assert c.post(f"{USER}/sessions/s1/start").status_code == 200
        with srv.client(limited) as c:
            assert c.get(f"{USER}/state").status_code == 200
        keys = {k.decode() for k in client.scan_iter(count=1000)}  # a rate limit's state expires once drained
        with srv.client() as c:  # one failed sign-in: an axes counter
            page = c.get("/accounts/login/")
            token = page.text.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
            c.post("/accounts/login/", data={"username": "x", "password": "y", "csrfmiddlewaretoken": token})
        manage(tmp_path, "autoplay_apikey", "revoke", limited.split("_")[1], extra_env=extra)  # the generation
    keys |= {k.decode() for k in client.scan_iter(count=1000)}
    cache_keys = [k for k in keys if k.startswith("autoplay-cache:")]
    assert "autoplay-cache:1:apikey:revocation-generation" in cache_keys, keys
    assert any(k.startswith("autoplay-cache:ratelimit:") for k in cache_keys), keys
    assert any(":axes-" in k for k in cache_keys), keys
    assert any(fnmatch.fnmatchcase(k, WIRE_PATTERNS[0]) for k in keys)  # the state itself is on the wire key
    for k in cache_keys:
        assert not any(fnmatch.fnmatchcase(k, p) for p in WIRE_PATTERNS) and not k.startswith("autoplay:"), k
    assert all(k.startswith(("autoplay:", "autoplay-cache:")) for k in keys), keys
