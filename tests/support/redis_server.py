"""Real redis-server processes for the test suite (fakeredis is not allowed).

Every server listens on 127.0.0.1 on a free port, lives in its own temp dir,
persists nothing (``--save "" --appendonly no``) and is stopped at the end of
the session, so no test depends on a Redis left running on 6379.

Fixtures (the shared contract):

* ``redis_server`` (session): a standalone server; ``.host``, ``.port``, ``.url``.
* ``redis_url`` (function): ``redis_server.url`` after FLUSHALL.
* ``redis_cluster`` (session): a real 3-master cluster; ``.url`` of one node,
  ``.nodes`` as ``[(host, port), ...]``.
* ``redis_tls`` (session): a server that also speaks TLS with a certificate made
  for the test; ``.tls_url`` trusts its CA, ``.ca_file``.
* ``redis_unix`` (session): a server that also listens on a Unix socket; ``.unix_url``.
* ``redis_replicated`` (function): a master and one replica; ``.master``, ``.replica``.
* ``redis_sentinel`` (function): a master, a replica and a sentinel (with a
  password) watching them as ``mymaster``; ``.sentinel_port``, ``.failover()``.
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

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


def _cli(port: int, *args: str, timeout: float = 10.0, password: str | None = None) -> str:
    auth = ["--no-auth-warning", "-a", password] if password else []
    out = subprocess.run(
        [REDIS_CLI, "-h", HOST, "-p", str(port), *auth, *args],
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
    config: Path | None = None  # a config file to start from (a sentinel's, which it rewrites)
    password: str | None = None  # what the checks below authenticate with

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                *([str(self.config)] if self.config else []),
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
            if _cli(self.port, "PING", password=self.password) == "PONG":
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer PING")

    def cli(self, *args: str) -> str:
        """Run a redis-cli command against this server (for assertions and setup)."""
        return _cli(self.port, *args, password=self.password)

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


def start_redis(directory: Path, extra_args: list[str] | None = None, **options: Any) -> RedisServer:
    """Start a standalone server on a free port (retrying if the port was taken meanwhile)."""
    last: Exception | None = None
    for _ in range(5):
        try:
            return RedisServer(
                port=free_port(), directory=directory, extra_args=list(extra_args or []), **options
            ).start()
        except RuntimeError as exc:
            last = exc
    raise RuntimeError(f"could not start redis-server: {last}")


def wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


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


# --- TLS, Unix sockets ------------------------------------------------------------------


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA of the test's own and a server certificate it signed for 127.0.0.1: (ca, cert, key) files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "autoplay test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


@dataclass
class TlsRedis:
    server: RedisServer
    tls_port: int
    ca_file: Path

    @property
    def tls_url(self) -> str:
        return f"rediss://{HOST}:{self.tls_port}/0?ssl_ca_certs={self.ca_file}"


@pytest.fixture(scope="session")
def redis_tls() -> Iterator[TlsRedis]:
    """A server with a TLS port beside its plain one (the plain one is for the test's own checks)."""
    directory = Path(tempfile.mkdtemp(prefix="autoplay-redis-tls-"))
    ca, cert, key = make_certificates(directory / "tls")
    tls_port = free_port()
    server = start_redis(
        directory,
        ["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
         "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"],
    )
    try:
        yield TlsRedis(server, tls_port, ca)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class UnixRedis:
    server: RedisServer
    socket_path: Path

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket_path}?db=0"


@pytest.fixture(scope="session")
def redis_unix() -> Iterator[UnixRedis]:
    directory = Path(tempfile.mkdtemp(prefix="autoplay-redis-unix-"))
    path = directory / "redis.sock"
    server = start_redis(directory, ["--unixsocket", str(path), "--unixsocketperm", "700"])
    try:
        yield UnixRedis(server, path)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


# --- replication, Sentinel ------------------------------------------------------------------


def _replica_online(master: RedisServer, replica: RedisServer) -> bool:
    info = master.cli("INFO", "replication")
    return f"port={replica.port},state=online" in info


@dataclass
class Replicated:
    master: RedisServer
    replica: RedisServer

    def stop(self) -> None:
        self.replica.stop()
        self.master.stop()


def start_replicated(directory: Path) -> Replicated:
    master = start_redis(directory / "master")
    try:
        replica = start_redis(directory / "replica", ["--replicaof", HOST, str(master.port)])
    except BaseException:
        master.stop()
        raise
    pair = Replicated(master, replica)
    try:
        wait_until(lambda: _replica_online(master, replica), "the replica to sync")
    except BaseException:
        pair.stop()
        raise
    return pair


@pytest.fixture
def redis_replicated() -> Iterator[Replicated]:
    directory = Path(tempfile.mkdtemp(prefix="autoplay-redis-repl-"))
    pair = start_replicated(directory)
    try:
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(directory, ignore_errors=True)


SENTINEL_MASTER = "mymaster"
SENTINEL_PASSWORD = "sentinel-secret"


@dataclass
class SentinelSetup:
    """A master, its replica and one sentinel (quorum 1) watching them."""

    servers: Replicated
    sentinel: RedisServer

    @property
    def sentinel_port(self) -> int:
        return self.sentinel.port

    def master_port(self) -> int:
        """The port of the server the sentinel names master now."""
        out = self.sentinel.cli("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER).split()
        return int(out[-1])

    def failover(self) -> int:
        """``SENTINEL FAILOVER``; returns the port of the master it was (the new one is the other)."""
        old = self.master_port()
        out = self.sentinel.cli("SENTINEL", "FAILOVER", SENTINEL_MASTER)
        if out != "OK":
            raise RuntimeError(f"SENTINEL FAILOVER refused: {out}")
        return old

    def stop(self) -> None:
        self.sentinel.stop()
        self.servers.stop()


def start_sentinel(directory: Path) -> SentinelSetup:
    servers = start_replicated(directory)
    try:
        config = directory / "sentinel.conf"
        config.write_text(
            f"sentinel monitor {SENTINEL_MASTER} {HOST} {servers.master.port} 1\n"
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} 5000\n"
            f"sentinel failover-timeout {SENTINEL_MASTER} 20000\n"
            f"requirepass {SENTINEL_PASSWORD}\n"
        )
        sentinel = start_redis(directory / "sentinel", ["--sentinel"], config=config, password=SENTINEL_PASSWORD)
    except BaseException:
        servers.stop()
        raise
    setup = SentinelSetup(servers, sentinel)
    try:
        # A failover needs a replica the sentinel knows, has asked for INFO, and sees in sync.
        def replica_ready() -> bool:
            lines = sentinel.cli("SENTINEL", "REPLICAS", SENTINEL_MASTER).splitlines()
            fields = dict(zip(lines[::2], lines[1::2], strict=False))
            return (
                fields.get("port") == str(servers.replica.port)
                and fields.get("flags") == "slave"
                and fields.get("role-reported") == "slave"
                and fields.get("master-link-status") == "ok"
            )

        wait_until(replica_ready, "the sentinel to know the replica")
    except BaseException:
        setup.stop()
        raise
    return setup


@pytest.fixture
def redis_sentinel() -> Iterator[SentinelSetup]:
    directory = Path(tempfile.mkdtemp(prefix="autoplay-redis-sentinel-"))
    setup = start_sentinel(directory)
    try:
        yield setup
    finally:
        setup.stop()
        shutil.rmtree(directory, ignore_errors=True)
