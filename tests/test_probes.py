"""The readiness probe over real HTTP against a real redis-server that the test stops.

An anonymous caller (a load balancer, or anyone who can reach the port) gets
only ready / not ready; the reason goes to the log and to signed-in staff.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings as django_settings
from django.test import Client

from tests.support.api_server import ApiServer
from tests.support.dashboard import make_person
from tests.support.redis_server import start_redis

pytestmark = pytest.mark.django_db(transaction=True)


def session_cookie(username: str, *, staff: bool) -> dict[str, str]:
    """A console session for a new sign-in, as the browser would hold it after signing in."""
    client = Client()
    client.force_login(make_person(username, "support", staff=staff))
    return {django_settings.SESSION_COOKIE_NAME: client.cookies[django_settings.SESSION_COOKIE_NAME].value}


def test_readyz_tells_anonymous_callers_only_ready_or_not(
    api_server: ApiServer, settings: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_redis(tmp_path / "redis")
    host_port = f"{server.host}:{server.port}"
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "PRIMARY": "redis", "REDIS_URL": server.url}
    staff = session_cookie("sta", staff=True)
    not_staff = session_cookie("sam", staff=False)
    try:
        with httpx.Client(base_url=api_server.url, timeout=30) as anonymous:
            ready = anonymous.get("/readyz")
            assert ready.status_code == 200 and ready.json() == {"status": "ok"}
            server.stop()

            with caplog.at_level(logging.WARNING, logger="api.health"):
                down = anonymous.get("/readyz")
            assert down.status_code == 503
            assert int(down.headers["Retry-After"]) > 0
            assert down.json() == {"status": "unavailable"}
            assert str(server.port) not in down.text and server.host not in down.text
            assert "redis" not in down.text.lower() and "error" not in down.text.lower()
            # Once the pooled connection is gone, the error names the address it tried.
            assert anonymous.get("/readyz").json() == {"status": "unavailable"}
            logged = [r.getMessage() for r in caplog.records if r.name == "api.health"]
            assert any(host_port in m for m in logged), logged

        with httpx.Client(base_url=api_server.url, timeout=30, cookies=not_staff) as signed_in:
            assert signed_in.get("/readyz").json() == {"status": "unavailable"}

        with httpx.Client(base_url=api_server.url, timeout=30, cookies=staff) as staff_client:
            detailed = staff_client.get("/readyz")
            assert detailed.status_code == 503
            body = detailed.json()
            assert body["status"] == "unavailable" and body["code"] == "storage_unavailable"
            assert host_port in body["message"], body
    finally:
        server.stop()
