"""Sign-in lockouts on the real server with two workers: 5 failures per user name, 20 per address, 15 minutes.

Every test alternates its attempts between two connections known to be
served by different granian workers, so a counter kept in one process
would not lock anyone out in time. The audit entries are read from the
server's own database file.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api_server import ApiServer, granian_server, manage
from tests.support.workers import Response, WorkerConnection, one_connection_per_worker

PASSWORD = "correct horse battery staple"
WRONG = "not the password"
CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture(params=["database", "redis"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ApiServer, Path, dict[str, str]]]:
    """Two workers; counters in axes' table (database) or in Django's cache on Redis."""
    extra = {"REDIS_URL": request.getfixturevalue("redis_url")} if request.param == "redis" else {}
    manage(tmp_path, "collectstatic", "--noinput", "-v", "0")  # console pages name the hashed static files
    with granian_server(tmp_path, ["p1"], workers=2, extra_env=extra) as (srv, _key):
        users = ", ".join(f"'{name}'" for name in ("alice", "bob", *(f"user{i}" for i in range(6))))
        manage(
            tmp_path,
            "shell",
            "-c",
            "from django.contrib.auth.models import User\n"
            f"for name in [{users}]: User.objects.create_user(name, password={PASSWORD!r}, is_staff=True)",
            extra_env=extra,
        )
        yield srv, tmp_path, extra


def sign_in(conn: WorkerConnection, username: str, password: str, path: str = "/accounts/login/") -> Response:
    page = conn.request("GET", path)
    token = CSRF_RE.search(page.text())
    assert token, page.text()[:500]
    return conn.post_form(path, {"username": username, "password": password, "csrfmiddlewaretoken": token.group(1)})


def signed_in(response: Response) -> bool:
    return response.status == 302


def locked(response: Response) -> bool:
    return response.status == 429 and "Sign-in is locked" in response.text()


def audit_actions(directory: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(directory / "db.sqlite3") as db:
        return db.execute("SELECT action, actor FROM autoplay_storage_auditentry ORDER BY id").fetchall()


def test_five_failures_for_one_user_name_lock_it_out_across_workers(server) -> None:
    srv, directory, _ = server
    conns = one_connection_per_worker(srv.url, srv.pid)
    try:
        for attempt in range(4):
            answer = sign_in(conns[attempt % 2], "alice", WRONG)
            assert answer.status == 200 and "do not match" in answer.text(), attempt
        fifth = sign_in(conns[0], "alice", WRONG)
        assert locked(fifth), fifth.status
        assert "15 minutes" in fifth.text() and "even with the right password" in fifth.text()
        assert int(fifth.headers["retry-after"]) == 15 * 60
        assert "content-security-policy" in fifth.headers and "<style" not in fifth.text()
        for conn in conns:  # the right password, on either worker
            assert locked(sign_in(conn, "alice", PASSWORD))
        # The admin's sign-in is the same lock.
        assert locked(sign_in(conns[1], "alice", PASSWORD, "/admin/login/"))
        # Another user from the same address is not locked out (4 + 1 address failures < 20).
        assert signed_in(sign_in(conns[1], "bob", PASSWORD))
    finally:
        for conn in conns:
            conn.close()
    actions = audit_actions(directory)
    assert actions.count(("signin.failure", "alice")) == 8  # 5 wrong passwords, then 3 refused attempts
    assert actions.count(("signin.lockout", "alice")) == 1
    query = "SELECT details FROM autoplay_storage_auditentry WHERE action = 'signin.failure' ORDER BY id"
    with sqlite3.connect(directory / "db.sqlite3") as db:
        details = [json.loads(row[0]) for row in db.execute(query)]
    assert [d["refused_while_locked_out"] for d in details] == [False] * 5 + [True] * 3
    assert ("signin.success", "bob") in actions


def test_the_admin_sign_in_counts_too(server) -> None:
    srv, _directory, _ = server
    conns = one_connection_per_worker(srv.url, srv.pid)
    try:
        for attempt in range(4):
            assert not locked(sign_in(conns[attempt % 2], "alice", WRONG, "/admin/login/"))
        assert locked(sign_in(conns[1], "alice", WRONG, "/admin/login/"))
        assert locked(sign_in(conns[0], "alice", PASSWORD))
    finally:
        for conn in conns:
            conn.close()


def test_twenty_failures_from_one_address_lock_every_user_name_out(server) -> None:
    srv, directory, _ = server
    conns = one_connection_per_worker(srv.url, srv.pid)
    try:
        for attempt in range(19):  # spread over user names so none reaches its own limit of 5
            answer = sign_in(conns[attempt % 2], f"user{attempt % 5}", WRONG)
            assert answer.status == 200, attempt
        assert locked(sign_in(conns[1], "user4", WRONG))
        # bob never failed, but the address is locked out: his right password is refused too.
        assert locked(sign_in(conns[0], "bob", PASSWORD))
    finally:
        for conn in conns:
            conn.close()
    assert ("signin.lockout", "user4") in audit_actions(directory)
