"""The project's ASGI app served over real HTTP for the API tests.

``granian_server`` starts the production server instead (a subprocess, as
``make run`` serves it) for the main flow on the shipped configuration.

``api_server`` runs uvicorn in a thread of the test process on a free
loopback port: requests go through sockets, the ASGI server, Django's ASGI
handler and middleware exactly as in production, while the tests can still
switch settings (the primary) with pytest-django's ``settings`` fixture and
see the same test database (``transactional_db``: the server's threads use
their own connections, so rows must be committed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.redis_server import HOST, free_port


@dataclass
class ApiServer:
    url: str
    pid: int | None = None  # granian's main process, when the server is a subprocess

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


ROOT = Path(__file__).resolve().parents[2]


def server_env(directory: Path, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment ``granian_server`` runs its commands and server in (its own SQLite file under ``directory``)."""
    return {
        **os.environ,
        "AUTOPLAY_VAR_DIR": str(directory),
        "DATABASE_URL": f"sqlite:///{directory / 'db.sqlite3'}",
        "AUTOPLAY_PRIMARY": "",
        "REDIS_URL": "",
        "AUTOPLAY_DEMO": "0",
        "DJANGO_SECRET_KEY": "test-only",
        **(extra_env or {}),
    }


def manage(directory: Path, *args: str, extra_env: dict[str, str] | None = None) -> str:
    """Run ``manage.py`` on the data of the ``granian_server`` started on ``directory``; its stdout."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=server_env(directory, extra_env),
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout


@contextmanager
def granian_server(
    directory: Path, products: list[str], workers: int = 2, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[ApiServer, str]]:
    """``make run``'s server + its own SQLite file (migrated) on a free port; yields the server and a fresh API key.

    ``extra_env`` reaches the server only (``AUTOPLAY_BODY_TIMEOUT_S``, ``REDIS_URL``...), not the
    migrate and key commands before it. Run it again on the same ``directory`` to restart on the same data."""
    env = server_env(directory)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)
    args = [f"--product={p}" for p in products]
    created = subprocess.run(
        [*manage, "autoplay_apikey", "create", "--name", "granian test", *args],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    port = free_port()
    log = (directory / "granian.log").open("ab")  # a restart on the same directory keeps the earlier log
    # The command `make run` execs: the serve module replaces itself with granian's main process.
    process = subprocess.Popen(
        [sys.executable, "-m", "config.serve", "--host", HOST, "--port", str(port), "--workers", str(workers)],
        env={**env, **(extra_env or {})},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a test may kill the whole server (main process and workers) at once
    )
    server = ApiServer(f"http://{HOST}:{port}", pid=process.pid)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("granian did not start:\n" + (directory / "granian.log").read_text(errors="replace"))
            time.sleep(0.1)
        yield server, key
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()
