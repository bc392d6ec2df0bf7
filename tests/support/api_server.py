"""The project's ASGI app served over real HTTP for the API tests.

``api_server`` runs uvicorn in a thread of the test process on a free
loopback port: requests go through sockets, the ASGI server, Django's ASGI
handler and middleware exactly as in production, while the tests can still
switch settings (the primary) with pytest-django's ``settings`` fixture and
see the same test database (``transactional_db``: the server's threads use
their own connections, so rows must be committed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.redis_server import HOST, free_port


@dataclass
class ApiServer:
    url: str

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kwargs)


@pytest.fixture(scope="session")
def api_server() -> Iterator[ApiServer]:
    import uvicorn

    from config.asgi import application

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(application, host=HOST, port=port, lifespan="off", log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="api-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API test server did not start")
        time.sleep(0.02)
    try:
        yield ApiServer(f"http://{HOST}:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(params=["database", "redis"])
def primary(request: pytest.FixtureRequest, settings: Any, transactional_db: None) -> str:
    """Each API test runs once on the embedded default (database) and once on Redis."""
    config = {**settings.AUTOPLAY_STORAGE, "PRIMARY": request.param, "REDIS_URL": ""}
    if request.param == "redis":
        config["REDIS_URL"] = request.getfixturevalue("redis_url")
    settings.AUTOPLAY_STORAGE = config
    return request.param


@pytest.fixture
def make_key(transactional_db: None) -> Iterator[Callable[..., str]]:
    """Issue a real API key (committed, so the server thread sees it)."""
    from api import auth
    from api.models import ApiKey

    def make(*products: str, name: str = "test agent") -> str:
        return ApiKey.issue(name, list(products or ("p1",)))[1]

    auth.forget()
    yield make
    auth.forget()
