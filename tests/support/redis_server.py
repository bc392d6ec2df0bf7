"""Real redis-server processes for the test suite (fakeredis is not allowed).

Every server listens on 127.0.0.1 on a free port, lives in its own temp dir,
persists nothing (``--save "" --appendonly no``) and is stopped at the end of
the session, so no test depends on a Redis left running on 6379.

Fixtures (the shared contract):

* ``redis_server`` (session): a standalone server; ``.host``, ``.port``, ``.url``.
* ``redis_url`` (function): ``redis_server.url`` after FLUSHALL.
* ``redis_cluster`` (session): a real 3-master cluster; ``.url`` of one node,
  ``.nodes`` as ``[(host, port), ...]``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HOST = "127.0.0.1"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def free_port() -> int:
    """A loopback port nobody is listening on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port with nothing behind it (for "Redis is down" tests)."""
    return free_port()


def _cli(port: int, *args: str, timeout: float = 10.0) -> str:
    out = subprocess.run(
        [REDIS_CLI, "-h", HOST, "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout.strip()


@dataclass
class RedisServer:
    """One redis-server child process."""

    port: int
    directory: Path
    extra_args: list[str] = field(default_factory=list)
    host: str = HOST
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", HOST,
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "yes",
                "--maxclients", "10000",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited with {self.process.returncode}")
            if _cli(self.port, "PING") == "PONG":
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING")

    def cli(self, *args: str) -> str:
        """Run a redis-cli command against this server (for assertions and setup)."""
        return _cli(self.port, *args)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None


def start_redis(directory: Path, extra_args: list[str] | None = None) -> RedisServer:
    """Start a standalone server on a free port (retrying if the port was taken meanwhile)."""
    last: Exception | None = None
    for _ in range(5):
        try:
            return RedisServer(port=free_port(), directory=directory, extra_args=list(extra_args or [])).start()
        except RuntimeError as exc:
            last = exc
    raise RuntimeError(f"could not start redis-server: {last}")


@dataclass
class RedisCluster:
    """Three cluster-enabled masters joined with ``redis-cli --cluster create``."""

    servers: list[RedisServer]

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [(s.host, s.port) for s in self.servers]

    @property
    def url(self) -> str:
        return self.servers[0].url

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def start_cluster(directory: Path, size: int = 3) -> RedisCluster:
    """Start ``size`` masters, create the cluster, wait for ``cluster_state:ok`` on every node."""
    servers: list[RedisServer] = []
    try:
        for i in range(size):
            node_dir = directory / f"node{i}"
            servers.append(
                start_redis(
                    node_dir,
                    ["--cluster-enabled", "yes", "--cluster-config-file", str(node_dir / "nodes.conf"),
                     "--cluster-node-timeout", "5000"],
                )
            )
        created = subprocess.run(
            [REDIS_CLI, "--cluster", "create", *[f"{s.host}:{s.port}" for s in servers],
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout}{created.stderr}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in s.cli("CLUSTER", "INFO") for s in servers):
                return RedisCluster(servers)
            time.sleep(0.1)
        raise RuntimeError("redis cluster did not reach cluster_state:ok")
    except BaseException:
        for server in servers:
            server.stop()
        raise


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private standalone redis-server for the whole test session."""
    directory = Path(tempfile.mkdtemp(prefix="autoplay-redis-"))
    server = start_redis(directory)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the session server, emptied (FLUSHALL) for this test."""
    if redis_server.cli("FLUSHALL") != "OK":
        raise RuntimeError("FLUSHALL failed on the test redis-server")
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A private 3-node Redis Cluster on loopback for the whole test session."""
    directory = Path(tempfile.mkdtemp(prefix="autoplay-redis-cluster-"))
    cluster = start_cluster(directory)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
