"""Sign-in lockout by address behind the one trusted proxy (``DJANGO_HTTPS=1``), and without it.

Every request reaches the real server from 127.0.0.1, as they would all
come from one reverse proxy: behind the switch the client is the address
the proxy appended to ``X-Forwarded-For`` (its right-most entry); without
it the header is anyone's to write and only the peer's address counts. The
attempts alternate between two connections served by different granian
workers; the audit entries are read from the server's own database file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.support.api_server import ApiServer, granian_server, manage
from tests.support.workers import Response, WorkerConnection, one_connection_per_worker

PASSWORD = "correct horse battery staple"
WRONG = "not the password"
ATTACKER, COLLEAGUE = "203.0.113.10", "203.0.113.20"  # documentation addresses (RFC 5737)
ADDRESS_LIMIT = 20


def start(request: pytest.FixtureRequest, directory: Path, env: dict[str, str]) -> Iterator[ApiServer]:
    extra = {**env, "REDIS_URL": request.getfixturevalue("redis_url")} if request.param == "redis" else env
    manage(directory, "collectstatic", "--noinput", "-v", "0")
    with granian_server(directory, ["p1"], workers=2, extra_env=extra) as (srv, _key):
        create = "from django.contrib.auth.models import User\n" + "".join(
            f"User.objects.create_user({name!r}, password={PASSWORD!r}, is_staff=True)\n" for name in ("alice", "bob")
        )
        manage(directory, "shell", "-c", create, extra_env=extra)
        yield srv


@pytest.fixture(params=["database", "redis"])
def behind_proxy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ApiServer, Path]]:
    env = {"DJANGO_HTTPS": "1", "AUTOPLAY_ENCRYPTION_KEY": "k" * 40}
    for srv in start(request, tmp_path, env):
        yield srv, tmp_path


@pytest.fixture(params=["database"])  # which store counts is beside the point here: the address is
def direct(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ApiServer, Path]]:
    for srv in start(request, tmp_path, {}):
        yield srv, tmp_path


def sign_in(
    conn: WorkerConnection, origin: str, username: str, password: str, forwarded_for: str, https: bool
) -> Response:
    """The console's sign-in form, as the proxy passes it on (``https``: it says the client used TLS)."""
    headers = {"X-Forwarded-For": forwarded_for, **({"X-Forwarded-Proto": "https"} if https else {})}
    conn.cookies.clear()  # each attempt a new visitor
    page = conn.request("GET", "/accounts/login/", headers=headers)
    assert page.status == 200, (page.status, page.headers)
    token = page.text().split('name="csrfmiddlewaretoken" value="', 1)[1].split('"', 1)[0]
    form = urlencode({"username": username, "password": password, "csrfmiddlewaretoken": token}).encode()
    post = {**headers, "Content-Type": "application/x-www-form-urlencoded", "Origin": origin}
    return conn.request("POST", "/accounts/login/", form, post)


def signed_in(response: Response) -> bool:
    return response.status == 302


def locked(response: Response) -> bool:
    return response.status == 429 and "Sign-in is locked" in response.text()


def addresses(directory: Path, action: str) -> list[tuple[str, str]]:
    query = "SELECT actor, client_address FROM autoplay_storage_auditentry WHERE action = ? ORDER BY id"
    with sqlite3.connect(directory / "db.sqlite3") as db:
        return db.execute(query, (action,)).fetchall()


def test_behind_the_proxy_the_forwarded_address_is_locked_out_and_no_other(behind_proxy) -> None:
    srv, directory = behind_proxy
    origin = "https://" + srv.url.split("://", 1)[1]
    conns = one_connection_per_worker(srv.url, srv.pid)
    try:
        for attempt in range(ADDRESS_LIMIT - 1):
            # What the client wrote on the left changes every time; the proxy's own entry does not.
            forwarded = f"198.51.100.{attempt}, {ATTACKER}" if attempt % 2 else ATTACKER
            answer = sign_in(conns[attempt % 2], origin, f"nobody{attempt % 5}", WRONG, forwarded, https=True)
            assert answer.status == 200 and "do not match" in answer.text(), attempt
        assert locked(sign_in(conns[1], origin, "nobody4", WRONG, ATTACKER, https=True))
        # The attacker's address is locked for every user name, the right password too ...
        assert locked(sign_in(conns[0], origin, "alice", PASSWORD, f"198.51.100.250, {ATTACKER}", https=True))
        # ... while colleagues behind the same proxy still sign in, on either worker.
        assert signed_in(sign_in(conns[0], origin, "alice", PASSWORD, COLLEAGUE, https=True))
        assert signed_in(sign_in(conns[1], origin, "bob", PASSWORD, f"{ATTACKER}, 203.0.113.21", https=True))
    finally:
        for conn in conns:
            conn.close()
    # The audit log names the same addresses the lockout counted.
    failures = addresses(directory, "signin.failure")
    assert len(failures) == ADDRESS_LIMIT + 1 and {address for _, address in failures} == {ATTACKER}
    assert addresses(directory, "signin.lockout") == [("nobody4", ATTACKER)]
    assert addresses(directory, "signin.success") == [("alice", COLLEAGUE), ("bob", "203.0.113.21")]


def test_without_the_switch_a_rotating_forwarded_header_does_not_escape_the_address_limit(direct) -> None:
    srv, directory = direct
    conns = one_connection_per_worker(srv.url, srv.pid)
    try:
        for attempt in range(ADDRESS_LIMIT - 1):
            answer = sign_in(conns[attempt % 2], srv.url, f"nobody{attempt % 5}", WRONG, f"203.0.113.{attempt}", False)
            assert answer.status == 200 and "do not match" in answer.text(), attempt
        assert locked(sign_in(conns[1], srv.url, "nobody4", WRONG, "203.0.113.99", https=False))
        assert locked(sign_in(conns[0], srv.url, "alice", PASSWORD, COLLEAGUE, https=False))
    finally:
        for conn in conns:
            conn.close()
    assert {address for _, address in addresses(directory, "signin.failure")} == {"127.0.0.1"}
    assert addresses(directory, "signin.lockout") == [("nobody4", "127.0.0.1")]
