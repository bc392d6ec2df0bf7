"""Agent API throughput: session start + end pairs against the server as `make run` serves it.

For each primary (the embedded default, SQLite through the database adapter,
and Redis) this starts the server as ``make run`` does (``python -m
config.serve``: granian, one worker per core) on a free loopback port with
its own temp SQLite file (migrated first) and, for Redis, its own
redis-server; creates an API key with the management
command; then drives ``POST .../sessions/S/start`` + ``POST .../sessions/S/end``
pairs (a realistic snapshot: four catalog workflows, three tracked) from a
pool of keep-alive connections and prints requests/s and p50/p99 latency,
then the floor: requests that pass the key check and stop at validation.
``--rate-limit R`` measures a second key, limited to R requests/s (high
enough never to refuse), on the same server right after the first: the cost
of the limiter's check, side by side with a key without a limit. Several
rates (``--rate-limit 1000,1000000``) measure one key each: a rate near the
load takes its requests from the shared state a few at a time (2% of the
rate per round trip), a very high one almost never goes back to it.
The load generator is a small raw HTTP/1.1 client on asyncio, so the
figures measure the server rather than a client library.

    .venv/bin/python bench/api.py                      # both primaries, defaults
    .venv/bin/python bench/api.py --primary redis --pairs 5000 --connections 64
    .venv/bin/python bench/api.py --rate-limit 1000000   # a key without a limit, then one with
    .venv/bin/python bench/api.py --rate-limit 1000,1000000 --rounds 4   # two limits, alternating with none
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stats import percentile  # noqa: E402

HOST = "127.0.0.1"
PRODUCT = "bench"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g} s")


@dataclass
class Stack:
    """redis-server (optional) and granian, each a child process we stop ourselves."""

    primary: str
    workers: int
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="autoplay-bench-api-")))
    processes: list[subprocess.Popen] = field(default_factory=list)
    port: int = 0
    key: str = ""
    redis_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_SECRET_KEY": "bench-only-not-a-secret",
            "AUTOPLAY_VAR_DIR": str(self.directory),
            "DATABASE_URL": f"sqlite:///{self.directory / 'db.sqlite3'}",
            "AUTOPLAY_PRIMARY": self.primary,
            "AUTOPLAY_DEMO": "0",
            "DJANGO_LOG_LEVEL": "WARNING",
        }
        env.pop("REDIS_URL", None)
        return env

    def start(self) -> None:
        env = self.env()
        if self.primary == "redis":
            redis_port = free_port()
            self.processes.append(
                subprocess.Popen(
                    [
                        shutil.which("redis-server") or "/usr/bin/redis-server",
                        "--port",
                        str(redis_port),
                        "--bind",
                        HOST,
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(self.directory),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
            env["REDIS_URL"] = f"redis://{HOST}:{redis_port}/0"
        self.redis_env = {"REDIS_URL": env["REDIS_URL"]} if "REDIS_URL" in env else {}
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)
        self.key = self.create_key()
        self.port = free_port()
        self.processes.append(
            subprocess.Popen(
                # `make run`'s command line (config/serve.py), with this run's port and workers
                [sys.executable, "-m", "config.serve", "--host", HOST, "--port", str(self.port),
                 "--workers", str(self.workers), "--no-access-log"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=(self.directory / "granian.log").open("wb"),
            )
        )
        try:
            wait_for(f"http://{HOST}:{self.port}/readyz")
        except RuntimeError:
            sys.stderr.write((self.directory / "granian.log").read_text(errors="replace")[-4000:])
            raise

    def create_key(self, *options: str) -> str:
        """A new API key for the bench product (``options``: ``--rate``, ``--burst``)."""
        command = ["autoplay_apikey", "create", "--name", "bench", "--product", PRODUCT, *options]
        created = subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *command],
            env={**self.env(), **self.redis_env},
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        return created.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


class Connection:
    """One keep-alive HTTP/1.1 connection; enough protocol for this API's JSON answers."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, key: str) -> None:
        self.reader, self.writer = reader, writer
        self.prefix = f"Host: {host}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"

    @classmethod
    async def open(cls, port: int, key: str) -> Connection:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer, f"{HOST}:{port}", key)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = f"POST {path} HTTP/1.1\r\n{self.prefix}Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = None
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"{path}: response without Content-Length")
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def drive(port: int, key: str, pairs: int, connections: int, users: int, tag: str) -> dict[str, list[float]]:
    """Run ``pairs`` start+end pairs over ``connections`` connections; latencies per route."""
    latencies: dict[str, list[float]] = {"start": [], "end": []}
    counter = iter(range(pairs))
    errors: list[str] = []

    async def worker(conn: Connection) -> None:
        for n in counter:
            user = f"u{n % users}"
            session = f"{tag}-{n}"
            base = f"/api/v1/products/{PRODUCT}/users/{user}/sessions/{session}"
            t0 = time.perf_counter()
            status, body = await conn.post(base + "/start", b"")
            t1 = time.perf_counter()
            if status != 200:
                errors.append(f"start {status} {body[:200]!r}")
                return
            now = time.time()
            snapshot = {**SNAPSHOT, "session_id": session, "user_id": user, "started_at": now - 600, "captured_at": now}
            status, body = await conn.post(base + "/end", json.dumps({"snapshot": snapshot}).encode())
            t2 = time.perf_counter()
            if status != 200:
                errors.append(f"end {status} {body[:200]!r}")
                return
            latencies["start"].append(t1 - t0)
            latencies["end"].append(t2 - t1)

    conns = [await Connection.open(port, key) for _ in range(connections)]
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, first: {errors[0]}")
    return latencies


def _snapshot_template() -> dict:
    """A realistic end body: what the SDK's from_adoption_state gives mid-onboarding (4 workflows, 3 tracked)."""
    from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState

    state = UserAdoptionState(user_id="u", metadata={"role": "admin", "plan": "pro"})
    state.set_mastery(4, "beginner", "finished a first project")
    state.record_discovered_features(["projects", "boards", "invites", "filters"])
    state.upsert_workflow_progress("create_project", status="completed", confidence=0.9, source="activity")
    state.upsert_step_progress("invite_team", "open_dialog", status="completed")
    state.upsert_workflow_progress("configure_columns", status="in_progress", confidence=0.4, source="judge")
    catalog = ["create_project", "invite_team", "configure_columns", "set_up_automation"]
    return SessionSnapshot.from_adoption_state(
        state, session_id="s", session_number=1, started_at=0.0, catalog_workflow_ids=catalog
    ).to_dict()


SNAPSHOT = _snapshot_template()


async def floor(port: int, key: str, requests: int, connections: int) -> tuple[list[float], float]:
    """Requests that stop at validation (auth done, no storage): the HTTP + Django + ninja floor."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker(conn: Connection) -> None:
        for _ in counter:
            t0 = time.perf_counter()
            status, body = await conn.post(f"/api/v1/products/{PRODUCT}/users/u/sessions/s/end", b"{}")
            latencies.append(time.perf_counter() - t0)
            if status != 422:
                raise RuntimeError(f"floor request: {status} {body[:200]!r}")

    conns = [await Connection.open(port, key) for _ in range(connections)]
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return latencies, time.perf_counter() - t0


def server_cpu_s(stack: Stack) -> float:
    """CPU seconds used so far by the server side: granian's processes (main and workers) and redis-server.

    Throughput on a machine shared with other work moves with their load; the
    CPU a request costs the server moves much less, so both are printed.
    """
    granian = stack.processes[-1].pid
    pids = [p.pid for p in stack.processes]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == granian:
                    pids.append(int(entry.name))
            except OSError:
                continue
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Figures:
    latencies: dict[str, list[float]]
    elapsed: float
    cpu_s: float
    floor_latencies: list[float]
    floor_elapsed: float

    def __add__(self, other: Figures) -> Figures:
        return Figures(
            {route: self.latencies[route] + other.latencies[route] for route in self.latencies},
            self.elapsed + other.elapsed,
            self.cpu_s + other.cpu_s,
            self.floor_latencies + other.floor_latencies,
            self.floor_elapsed + other.floor_elapsed,
        )


def measure(stack: Stack, key: str, args: argparse.Namespace, tag: str) -> Figures:
    asyncio.run(drive(stack.port, key, args.warmup, args.connections, args.users, f"warm-{tag}"))
    cpu0, t0 = server_cpu_s(stack), time.perf_counter()
    latencies = asyncio.run(drive(stack.port, key, args.pairs, args.connections, args.users, f"run-{tag}"))
    elapsed, cpu_s = time.perf_counter() - t0, server_cpu_s(stack) - cpu0
    floor_latencies, floor_elapsed = asyncio.run(floor(stack.port, key, args.pairs, args.connections))
    return Figures(latencies, elapsed, cpu_s, floor_latencies, floor_elapsed)


def report(label: str, args: argparse.Namespace, figures: Figures) -> None:
    latencies, elapsed = figures.latencies, figures.elapsed
    every = latencies["start"] + latencies["end"]
    pairs = args.pairs * args.rounds
    print(f"-- {label}: {pairs} start+end pairs, {args.connections} connections, granian x{args.workers}")
    print(f"   requests/s       {len(every) / elapsed:9.0f}   ({len(every)} requests in {elapsed:.2f} s)")
    print(f"   pairs/s          {pairs / elapsed:9.0f}")
    print(f"   server CPU       {figures.cpu_s / len(every) * 1000:9.2f} ms per request (granian and redis-server)")
    for name, values in (("all", every), ("start", latencies["start"]), ("end", latencies["end"])):
        print(
            f"   {name:<6} latency  p50 {percentile(values, 0.5) * 1000:7.2f} ms   "
            f"p99 {percentile(values, 0.99) * 1000:7.2f} ms   mean {statistics.fmean(values) * 1000:7.2f} ms"
        )
    floor_latencies, floor_elapsed = figures.floor_latencies, figures.floor_elapsed
    print(
        f"   floor (key checked, body refused by validation, no storage): {len(floor_latencies) / floor_elapsed:.0f}"
        f" requests/s, p50 {percentile(floor_latencies, 0.5) * 1000:.2f} ms,"
        f" p99 {percentile(floor_latencies, 0.99) * 1000:.2f} ms"
    )


def run(primary: str, args: argparse.Namespace) -> None:
    stack = Stack(primary, args.workers)
    label = {"database": "embedded default (SQLite, database adapter)", "redis": "Redis"}[primary]
    try:
        stack.start()
        keys = {label: stack.key}
        for limit in args.rate_limit:
            rate, burst = f"{limit:.15g}", str(max(1, math.ceil(limit)))
            keys[f"{label}, key limited to {rate}/s"] = stack.create_key("--rate", rate, "--burst", burst)
        results: dict[str, Figures] = {}
        for round_ in range(args.rounds):  # alternating, so a drift in the machine's load hits both keys alike
            order = list(keys.items()) if round_ % 2 == 0 else list(reversed(keys.items()))
            for name, key in order:
                got = measure(stack, key, args, f"{round_}-{list(keys).index(name)}")
                results[name] = results[name] + got if name in results else got
    finally:
        stack.stop()
    for name, figures in results.items():
        report(name, args, figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--primary", choices=["database", "redis", "both"], default="both")
    parser.add_argument("--pairs", type=int, default=2000, help="start+end pairs measured (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="pairs before measuring (default 200)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    parser.add_argument("--users", type=int, default=500, help="distinct users the sessions spread over (default 500)")
    parser.add_argument(
        "--rate-limit", type=lambda text: [float(r) for r in text.split(",") if r.strip()], default=[],
        help="also measure a key limited to this many requests/s (burst alike); several: comma-separated",
    )
    parser.add_argument("--rounds", type=int, default=1, help="measurements per key, alternating keys (default 1)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="granian workers (default: cores)")
    args = parser.parse_args()
    print(f"bench/api.py: {os.cpu_count()} cores; load generator in this process")
    for primary in ("database", "redis") if args.primary == "both" else (args.primary,):
        run(primary, args)


if __name__ == "__main__":
    main()
