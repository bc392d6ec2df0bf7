"""The server ``make run`` starts, as real processes: a dead worker is replaced, slow and broken clients are cut off.

Every server here is started by ``granian_server``, which runs the same
``python -m config.serve`` command line as ``make run`` (checked below), on
its own SQLite file. Workers are found as the children of granian's main
process and killed with SIGKILL, as the OOM killer would.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.api_server import ROOT, ApiServer, granian_server

PRODUCT = "p1"
CATALOG = ["create_project", "invite_team"]
CONCURRENCY = 12  # clients, each with one request in flight at a time
RETRIES = 40  # an agent's bounded retries on a 5xx or a broken connection...
RETRY_DELAY_S = 0.25  # ...spread over 10 s, far more than a respawn takes


def test_make_run_serves_with_the_serve_module() -> None:
    """The tests start the server with the very command ``make run`` ends with."""
    # Under `make test` this make is a sub-make: without this it prints "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry_run = subprocess.run(
        ["make", "--no-print-directory", "-n", "run", "HOST=127.0.0.9", "PORT=8123", "WORKERS=3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert dry_run.stdout.strip().splitlines()[-1].endswith(
        "python -m config.serve --host 127.0.0.9 --port 8123 --workers 3"
    )


# --- a dead worker ------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        return _stat(pid)[0] != "Z"
    except OSError:
        return False


def _stat(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command name: state, ppid, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def worker_pids(main_pid: int) -> set[int]:
    """The live children of granian's main process: its workers."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, ppid = _stat(int(entry.name))[:2]
            except OSError:
                continue
            if int(ppid) == main_pid and state != "Z":
                pids.add(int(entry.name))
    return pids


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def wait_for_workers(main_pid: int, count: int, timeout: float = 60.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while True:
        assert _alive(main_pid), "granian's main process exited"
        pids = worker_pids(main_pid)
        if len(pids) == count:
            return pids
        assert time.monotonic() < deadline, f"{len(pids)} workers, expected {count}"
        time.sleep(0.05)


def wait_for_started(directory: Path, count: int, timeout: float = 60.0) -> None:
    """Until granian has logged ``count`` workers reaching their serving loop (replacements included)."""
    deadline = time.monotonic() + timeout
    while (directory / "granian.log").read_text(errors="replace").count("Started worker-") < count:
        assert time.monotonic() < deadline, f"fewer than {count} workers started"
        time.sleep(0.05)


@dataclass
class Burst:
    failed_attempts: list[str] = field(default_factory=list)  # first tries and retries that failed
    gave_up: list[str] = field(default_factory=list)  # calls that never succeeded
    ended: dict[str, set[str]] = field(default_factory=dict)  # user -> sessions whose end was acknowledged


async def lifecycle_burst(
    server: ApiServer, key: str, lifecycles: int, users: int, tag: str, midway: Callable[[], None] | None = None
) -> Burst:
    """``lifecycles`` start + end pairs from CONCURRENCY clients; ``midway`` runs once half of them have begun."""
    burst = Burst()
    numbers = itertools.count()
    limits = httpx.Limits(max_connections=CONCURRENCY)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30.0, limits=limits) as client:

        async def call(path: str, body: dict | None = None) -> dict | None:
            for _ in range(RETRIES):
                try:
                    response = await client.post(path, json=body)
                except httpx.TransportError as exc:
                    burst.failed_attempts.append(f"{path}: {exc!r}")
                else:
                    if response.status_code == 200:
                        return response.json()
                    assert response.status_code >= 500, f"{path}: {response.status_code} {response.text}"
                    burst.failed_attempts.append(f"{path}: {response.status_code}")
                await asyncio.sleep(RETRY_DELAY_S)
            burst.gave_up.append(path)
            return None

        async def client_loop() -> None:
            for n in numbers:
                if n >= lifecycles:
                    return
                if n == lifecycles // 2 and midway is not None:
                    midway()
                user, session = f"{tag}-u{n % users}", f"{tag}-s{n}"
                base = f"/api/v1/products/{PRODUCT}/users/{user}/sessions/{session}"
                started = await call(f"{base}/start")
                if started is None:
                    continue
                end = {"state": started["state"], "catalog_workflow_ids": CATALOG, "started_at": time.time() - 60}
                if await call(f"{base}/end", end) is not None:
                    burst.ended.setdefault(user, set()).add(session)

        await asyncio.gather(*(client_loop() for _ in range(CONCURRENCY)))
    return burst


def assert_stored(server: ApiServer, key: str, burst: Burst) -> None:
    """Every acknowledged end is in the history, and each user's count agrees with the snapshots stored."""
    with server.client(key) as client:
        for user, sessions in burst.ended.items():
            base = f"/api/v1/products/{PRODUCT}/users/{user}"
            stored = {item["session_id"] for item in client.get(f"{base}/sessions").json()["items"]}
            assert sessions <= stored, f"{user}: acknowledged but not stored: {sessions - stored}"
            assert client.get(f"{base}/state").json()["state"]["sessions"]["count"] == len(stored), user


def test_a_killed_worker_is_replaced_and_only_its_requests_fail(tmp_path: Path) -> None:
    with granian_server(tmp_path, [PRODUCT], workers=2) as (server, key):
        assert server.pid is not None
        first = wait_for_workers(server.pid, 2)
        victim, survivor = sorted(first)

        burst = asyncio.run(lifecycle_burst(server, key, 240, 60, "a", midway=lambda: kill(victim)))
        assert not burst.gave_up, f"{len(burst.gave_up)} calls never succeeded: {burst.failed_attempts[-3:]}"
        # Only the requests the dead worker held failed: each client has one in flight at a time.
        assert len(burst.failed_attempts) <= CONCURRENCY, burst.failed_attempts
        assert_stored(server, key, burst)

        replaced = wait_for_workers(server.pid, 2)
        assert victim not in replaced and survivor in replaced
        wait_for_started(tmp_path, 3)

        # With the other original worker killed too, only the replacement is left to answer.
        burst = asyncio.run(lifecycle_burst(server, key, 120, 30, "b", midway=lambda: kill(survivor)))
        assert not burst.gave_up, f"{len(burst.gave_up)} calls never succeeded: {burst.failed_attempts[-3:]}"
        assert len(burst.failed_attempts) <= CONCURRENCY, burst.failed_attempts
        assert_stored(server, key, burst)

        assert not wait_for_workers(server.pid, 2) & first
        wait_for_started(tmp_path, 4)
        burst = asyncio.run(lifecycle_burst(server, key, 120, 30, "c"))
        assert not burst.failed_attempts
        assert_stored(server, key, burst)


# --- slow and broken clients ----------------------------------------------------------

BODY_TIMEOUT_S = 2
API_PATH = f"/api/v1/products/{PRODUCT}/users/u1/sessions/s1/end"
CONSOLE_PATH = "/login/"


@pytest.fixture(scope="module")
def short_deadline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, str]]:
    directory = tmp_path_factory.mktemp("short-deadline")
    with granian_server(directory, [PRODUCT], extra_env={"AUTOPLAY_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}) as served:
        yield served


def open_raw(server: ApiServer, data: bytes) -> socket.socket:
    address = urlsplit(server.url)
    sock = socket.create_connection((address.hostname, address.port))
    sock.sendall(data)
    return sock


def outcome(sock: socket.socket, patience_s: float = 20.0) -> tuple[int | None, bytes]:
    """Read until the server closes: (status or None if it closed without answering, what it sent).

    Raises ``socket.timeout`` if the server neither answers nor closes within ``patience_s``:
    many times the deadline, so only a server that waits for the client forever fails."""
    sock.settimeout(patience_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    status = re.match(rb"HTTP/1\.1 (\d{3}) ", received)
    return (int(status.group(1)) if status else None), received


def request_head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


STALLED = {
    "short content-length": lambda path: request_head(path, "Content-Length: 100") + b'{"snap',
    "content-length, no body": lambda path: request_head(path, "Content-Length: 100"),
    "chunked then silence": lambda path: request_head(path, "Transfer-Encoding: chunked") + b"6\r\n{\"snap\r\n",
}


@pytest.mark.parametrize("path", [API_PATH, CONSOLE_PATH])
@pytest.mark.parametrize("kind", sorted(STALLED))
def test_a_body_that_never_completes_is_cut_off(short_deadline_server, kind: str, path: str) -> None:
    server, _ = short_deadline_server
    status, received = outcome(open_raw(server, STALLED[kind](path)))
    assert status in (408, None), received
    if status == 408:
        assert b'"request_timeout"' in received and b"connection: close" in received.lower()


def test_headers_that_never_complete_are_cut_off(short_deadline_server) -> None:
    server, _ = short_deadline_server
    status, received = outcome(open_raw(server, f"POST {API_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConte".encode()))
    assert status in (408, None), received


@pytest.mark.parametrize("path", [API_PATH, CONSOLE_PATH])
@pytest.mark.parametrize("chunk", [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n", b"-1\r\n{}\r\n0\r\n\r\n"])
def test_a_malformed_chunked_body_is_a_4xx(short_deadline_server, path: str, chunk: bytes) -> None:
    server, _ = short_deadline_server
    status, received = outcome(open_raw(server, request_head(path, "Transfer-Encoding: chunked") + chunk))
    assert status is not None and 400 <= status < 500, received


def test_a_well_formed_chunked_body_is_read(short_deadline_server) -> None:
    server, key = short_deadline_server
    body = b'{"state": {}, "catalog_workflow_ids": [], "started_at": 1790000000}'
    head = request_head(API_PATH, f"Authorization: Bearer {key}", "Transfer-Encoding: chunked", "Connection: close")
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:])) + b"0\r\n\r\n"
    status, received = outcome(open_raw(server, head + chunks))
    assert status == 200, received


def test_fifty_stalled_connections_do_not_stop_other_requests(short_deadline_server) -> None:
    server, key = short_deadline_server
    kinds = sorted(STALLED)
    stalled = [open_raw(server, STALLED[kinds[n % len(kinds)]]((API_PATH, CONSOLE_PATH)[n % 2])) for n in range(50)]
    try:
        burst = asyncio.run(lifecycle_burst(server, key, 60, 20, "beside-stalled"))
        assert not burst.failed_attempts
    finally:
        outcomes = [outcome(sock) for sock in stalled]
    assert all(status in (408, None) for status, _ in outcomes), outcomes
