"""Fault drills against the server as `make run` serves it: a worker killed, Redis frozen or restarted.

For each primary (the embedded default, SQLite through the database adapter,
and Redis on a private redis-server) this starts ``python -m config.serve``
(the command ``make run`` execs: granian, ``--workers`` of them) on a free
loopback port and runs a burst of session lifecycles (``start`` then ``end``
with the live state, through the HTTP API with an API key) from concurrent
clients that behave like agents: a connection error or a 5xx is retried
(``--attempts``, honouring ``Retry-After``), and ends are idempotent. Each drill gets
a fresh server:

* ``kill``: SIGKILL one worker once half the lifecycles have begun;
* ``kill+summarize``: the same with ``summarize: true`` and a summarizer
  that takes ``--summarizer-delay`` seconds, so the kill lands while
  summaries run;
* ``redis frozen`` / ``redis restart`` (Redis only): SIGSTOP redis-server
  for ``--outage`` seconds, or shut it down (saving) and start it again on
  the same port that much later.

After each burst every user is audited through the API: a session whose end
a client got a 200 for must be in ``GET .../sessions`` (else it is *lost*),
and the state's ``sessions.count`` must equal the snapshots stored (else the
user is *miscounted*).

    .venv/bin/python bench/faults.py                        # both primaries, every drill
    .venv/bin/python bench/faults.py --primary redis --lifecycles 200 --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
PRODUCT = "bench"
CATALOG = ["create_project", "invite_team", "configure_columns", "set_up_automation"]
DELAY_ENV = "BENCH_FAULTS_SUMMARIZER_DELAY_S"


async def slow_summarizer(snapshot: Any) -> str:
    """The template summary after a wait: an LLM call's latency without an LLM (loaded by dotted path)."""
    from autoplay_storage.summarizers import template_summarizer

    await asyncio.sleep(float(os.environ.get(DELAY_ENV, "1")))
    return await template_summarizer(snapshot)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:g} s")
        time.sleep(0.02)


class Redis:
    """A private redis-server that can be frozen, or shut down and started again with its data."""

    def __init__(self, directory: Path) -> None:
        self.directory, self.port = directory, free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def cli(self, *args: str) -> str:
        command = [shutil.which("redis-cli") or "/usr/bin/redis-cli", "-h", HOST, "-p", str(self.port), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False).stdout.strip()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(self.port), "--bind", HOST,
             "--dir", str(self.directory), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        wait_until(lambda: self.cli("PING") == "PONG", 15, "redis-server did not answer")

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def shut_down(self) -> None:
        """SHUTDOWN SAVE: every acknowledged write is in the dump the restart loads."""
        assert self.process is not None
        self.cli("SHUTDOWN", "SAVE")
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.thaw()
            self.process.terminate()
            self.process.wait(timeout=15)


@dataclass
class Server:
    """``python -m config.serve`` (granian's main process once it has exec'd) and its log."""

    env: dict[str, str]
    workers: int
    log: Path
    process: subprocess.Popen | None = None
    url: str = ""

    def start(self) -> None:
        port = free_port()
        self.url = f"http://{HOST}:{port}"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "config.serve", "--host", HOST, "--port", str(port),
                 "--workers", str(self.workers), "--no-access-log"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: self.started_workers() >= self.workers, 60, f"granian did not start: see {self.log}")

    def started_workers(self) -> int:
        """Workers that reached their serving loop so far (granian logs one line each)."""
        return self.log.read_text(errors="replace").count("Started worker-")

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    state, ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                except OSError:
                    continue
                if int(ppid) == self.process.pid and state != "Z":
                    pids.append(int(entry.name))
        return sorted(pids)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Attempt:
    sent: float
    done: float
    status: int | None  # None: the connection failed


@dataclass
class Burst:
    attempts: list[Attempt] = field(default_factory=list)
    gave_up: int = 0
    users: set[str] = field(default_factory=set)
    acknowledged: dict[str, set[str]] = field(default_factory=dict)


async def run_burst(
    url: str, key: str, args: argparse.Namespace, tag: str, summarize: bool, midway: Callable[[], None]
) -> Burst:
    """``args.lifecycles`` start + end pairs from ``args.clients`` agents; ``midway`` once half have begun."""
    burst = Burst()
    numbers = iter(range(args.lifecycles))
    limits = httpx.Limits(max_connections=args.clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0, limits=limits) as client:

        async def call(path: str, body: dict | None = None) -> dict | None:
            for _ in range(args.attempts):
                sent = time.monotonic()
                try:
                    response = await client.post(path, json=body)
                except httpx.TransportError:
                    burst.attempts.append(Attempt(sent, time.monotonic(), None))
                    await asyncio.sleep(0.25)
                    continue
                burst.attempts.append(Attempt(sent, time.monotonic(), response.status_code))
                if response.status_code == 200:
                    return response.json()
                if response.status_code < 500:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
                await asyncio.sleep(min(float(response.headers.get("Retry-After", 0.25)), 2.0))
            burst.gave_up += 1
            return None

        async def agent() -> None:
            for n in numbers:
                if n == args.lifecycles // 2:
                    midway()
                user, session = f"{tag}-u{n % args.users}", f"{tag}-s{n}"
                burst.users.add(user)
                base = f"/api/v1/products/{PRODUCT}/users/{user}/sessions/{session}"
                started = await call(f"{base}/start")
                if started is None:
                    continue
                end = {"state": started["state"], "catalog_workflow_ids": CATALOG,
                       "started_at": time.time() - 600, "summarize": summarize}
                if await call(f"{base}/end", end) is not None:
                    burst.acknowledged.setdefault(user, set()).add(session)

        await asyncio.gather(*(agent() for _ in range(args.clients)))
    return burst


def audit(url: str, key: str, burst: Burst) -> tuple[int, int]:
    """(sessions acknowledged but not stored, users whose count disagrees with their stored snapshots)."""
    lost = miscounted = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30.0) as client:
        for user in sorted(burst.users):
            base = f"/api/v1/products/{PRODUCT}/users/{user}"
            stored: set[str] = set()
            cursor = ""
            while True:
                page = client.get(f"{base}/sessions", params={"limit": 100, "cursor": cursor})
                if page.status_code == 404:  # no start ever succeeded for this user
                    break
                page.raise_for_status()
                stored |= {item["session_id"] for item in page.json()["items"]}
                cursor = page.json()["next_cursor"]
                if not cursor:
                    break
            state = client.get(f"{base}/state")
            if state.status_code != 404:
                state.raise_for_status()
            count = state.json()["state"]["sessions"]["count"] if state.status_code == 200 else 0
            lost += len(burst.acknowledged.get(user, set()) - stored)
            miscounted += count != len(stored)
    return lost, miscounted


@dataclass
class Row:
    primary: str
    drill: str
    burst: Burst
    lost: int
    miscounted: int
    wall_s: float
    event_at: float | None  # when the worker was killed or Redis came back
    respawn_s: float | None = None

    def cells(self) -> list[str]:
        statuses = Counter(a.status for a in self.burst.attempts)
        conn = statuses.pop(None, 0)
        ok = statuses.pop(200, 0)
        s503 = statuses.pop(503, 0)
        other = sum(n for status, n in statuses.items() if status is not None and status >= 500)
        failed = [a for a in self.burst.attempts if a.status != 200]
        recovery = "-"
        if self.drill.startswith("redis") and self.event_at is not None:
            after = [a.done - self.event_at for a in failed if a.done >= self.event_at]
            recovery = f"{max(after):.2f}" if after else "0"
        return [
            self.primary, self.drill, str(len(self.burst.attempts)), str(ok), str(conn), str(s503), str(other),
            str(self.burst.gave_up), str(self.lost), str(self.miscounted),
            "-" if self.respawn_s is None else f"{self.respawn_s:.2f}", recovery,
            f"{max((a.done - a.sent for a in self.burst.attempts), default=0):.2f}", f"{self.wall_s:.1f}",
        ]


HEADERS = ["primary", "drill", "requests", "200", "conn err", "503", "other 5xx",
           "gave up", "lost", "miscounted", "respawn s", "recovery s", "slowest s", "wall s"]


def print_table(rows: list[Row]) -> None:
    table = [HEADERS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    for n, line in enumerate(table):
        print("  ".join(cell.rjust(width) if i > 1 else cell.ljust(width) for i, (cell, width) in
                        enumerate(zip(line, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * width for width in widths))


class Stack:
    """One primary's var dir, database, API key and (for Redis) redis-server; a fresh server per drill."""

    def __init__(self, primary: str, args: argparse.Namespace) -> None:
        self.primary, self.args = primary, args
        self.directory = Path(tempfile.mkdtemp(prefix="autoplay-bench-faults-"))
        self.redis: Redis | None = None
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DJANGO_SECRET_KEY": "bench-only-not-a-secret",
            "AUTOPLAY_VAR_DIR": str(self.directory),
            "DATABASE_URL": f"sqlite:///{self.directory / 'db.sqlite3'}",
            "AUTOPLAY_PRIMARY": primary,
            "AUTOPLAY_DEMO": "0",
            "DJANGO_LOG_LEVEL": "WARNING",
            "AUTOPLAY_SUMMARIZER": "faults.slow_summarizer",
            DELAY_ENV: str(args.summarizer_delay),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH", "")])),
        }
        self.env.pop("REDIS_URL", None)

    def __enter__(self) -> Stack:
        if self.primary == "redis":
            self.redis = Redis(self.directory)
            self.redis.start()
            self.env["REDIS_URL"] = self.redis.url
        manage = [sys.executable, str(ROOT / "manage.py")]
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=self.env, cwd=ROOT, check=True)
        created = subprocess.run(
            [*manage, "autoplay_apikey", "create", "--name", "bench", "--product", PRODUCT],
            env=self.env, cwd=ROOT, check=True, capture_output=True, text=True,
        )
        self.key = created.stdout.strip().splitlines()[-1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self.redis is not None:
            self.redis.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def drill(self, name: str) -> Row:
        server = Server(self.env, self.args.workers, self.directory / f"granian-{name.replace(' ', '-')}.log")
        server.start()
        try:
            return self._drill(server, name)
        finally:
            server.stop()

    def _drill(self, server: Server, name: str) -> Row:
        events: dict[str, float] = {}

        def kill_a_worker() -> None:
            before = server.started_workers()
            os.kill(server.worker_pids()[0], signal.SIGKILL)
            events["at"] = time.monotonic()
            # The replacement serves once granian logs that it started.
            wait_until(lambda: server.started_workers() > before, 60, "no worker replaced the killed one")
            events["respawn"] = time.monotonic() - events["at"]

        def outage(stop: Callable[[], None], back: Callable[[], None]) -> Callable[[], None]:
            def run() -> None:
                stop()
                time.sleep(self.args.outage)
                back()
                events["at"] = time.monotonic()

            return run

        actions: dict[str, Callable[[], None]] = {"kill": kill_a_worker, "kill+summarize": kill_a_worker}
        if self.redis is not None:
            actions["redis frozen"] = outage(self.redis.freeze, self.redis.thaw)
            actions["redis restart"] = outage(self.redis.shut_down, self.redis.start)
        # Off the event loop, so the agents keep running while the fault is under way.
        fault = threading.Thread(target=actions[name], daemon=True)
        t0 = time.monotonic()
        burst = asyncio.run(
            run_burst(server.url, self.key, self.args, name.replace(" ", "-"), name == "kill+summarize", fault.start)
        )
        wall = time.monotonic() - t0
        fault.join()
        lost, miscounted = audit(server.url, self.key, burst)
        return Row(self.primary, name, burst, lost, miscounted, wall, events.get("at"), events.get("respawn"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--primary", choices=["database", "redis", "both"], default="both")
    parser.add_argument("--lifecycles", type=int, default=500, help="start+end pairs per drill (default 500)")
    parser.add_argument("--users", type=int, default=300, help="users the sessions spread over (default 300)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent agents (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="granian workers (default 2)")
    parser.add_argument("--attempts", type=int, default=20,
                        help="tries per call, first included (default 20; 1: agents that never retry)")
    parser.add_argument("--summarizer-delay", type=float, default=1.0, help="seconds per summary (default 1)")
    parser.add_argument("--outage", type=float, default=4.0, help="seconds Redis is down (default 4)")
    parser.add_argument("--drills", default="kill,kill+summarize,redis frozen,redis restart",
                        help="comma-separated subset of the drills")
    args = parser.parse_args()
    drills = [d.strip() for d in args.drills.split(",") if d.strip()]
    print(f"bench/faults.py: {os.cpu_count()} cores; {args.lifecycles} lifecycles per drill over {args.users} users,"
          f" {args.clients} agents, granian x{args.workers}; summarizer {args.summarizer_delay:g} s;"
          f" Redis outage {args.outage:g} s")
    rows: list[Row] = []
    for primary in ("database", "redis") if args.primary == "both" else (args.primary,):
        with Stack(primary, args) as stack:
            for name in drills:
                if name.startswith("redis") and primary != "redis":
                    continue
                rows.append(stack.drill(name))
                print(f"   done: {primary} / {name} ({rows[-1].wall_s:.1f} s)", flush=True)
    print()
    print_table(rows)
    print()
    print("requests: every attempt, retries included; conn err: the connection failed (the killed worker's);")
    print(f"gave up: calls still failing after {args.attempts} attempts;"
          " lost: ends answered 200 but not in GET .../sessions;")
    print("miscounted: users whose state sessions.count differs from their stored snapshots;")
    print("respawn s: SIGKILL -> the replacement worker serving; recovery s: Redis back -> the last failed answer")
    print("(0: none after it); slowest s: the longest single request.")


if __name__ == "__main__":
    main()
