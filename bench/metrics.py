"""What the metrics cost: bench/api.py's start+end pairs with ``/metrics`` off and on, side by side.

Each round starts two servers as ``make run`` does (bench/api.py's ``Stack``):
one without ``AUTOPLAY_METRICS_TOKEN`` (no HTTP metrics, storage metrics in
process memory only) and one with it (every request counted and timed into
the workers' multiprocess files). Rounds alternate the order, so load from
elsewhere on the machine falls on both alike; the figures are the median
requests/s of each side and their ratio. A scrape of ``/metrics`` at the end
of each "on" run checks the counts are there.

    .venv/bin/python bench/metrics.py                    # database primary, 3 rounds
    .venv/bin/python bench/metrics.py --primary redis --rounds 5 --pairs 3000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.api import HOST, PRODUCT, ROOT, Stack, drive

TOKEN = "bench-metrics-token"


def measure(primary: str, metrics: bool, args: argparse.Namespace) -> float:
    """Requests/s of one server's run (after its warm-up)."""
    if metrics:
        os.environ["AUTOPLAY_METRICS_TOKEN"] = TOKEN
    else:
        os.environ.pop("AUTOPLAY_METRICS_TOKEN", None)
    stack = Stack(primary, args.workers)
    try:
        stack.start()
        asyncio.run(drive(stack.port, stack.key, args.warmup, args.connections, args.users, "warm"))
        t0 = time.perf_counter()
        latencies = asyncio.run(drive(stack.port, stack.key, args.pairs, args.connections, args.users, "run"))
        elapsed = time.perf_counter() - t0
        if metrics:
            scrape = urllib.request.Request(
                f"http://{HOST}:{stack.port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
            )
            with urllib.request.urlopen(scrape, timeout=10) as response:
                assert b"autoplay_http_requests_total" in response.read()
    finally:
        stack.stop()
        os.environ.pop("AUTOPLAY_METRICS_TOKEN", None)
    return (len(latencies["start"]) + len(latencies["end"])) / elapsed


DRIVER = """
import asyncio, json, os, sys, time
sys.path.insert(0, os.getcwd())
from bench.api import PRODUCT, SNAPSHOT
from config.asgi import application
key, pairs, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {key}".encode()),
           (b"content-type", b"application/json")]

async def call(path, body):
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [*headers, (b"content-length", str(len(body)).encode())], "http_version": "1.1",
             "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000), "root_path": ""}
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    answer = []
    async def receive():
        if messages:
            return messages.pop()
        await asyncio.Event().wait()
    async def send(message):
        answer.append(message)
    await application(scope, receive, send)
    assert answer[0]["status"] == 200, answer

async def pair(n):
    base = f"/api/v1/products/{PRODUCT}/users/u{n % 500}/sessions/s{n}"
    await call(base + "/start", b"")
    now = time.time()
    snapshot = {**SNAPSHOT, "session_id": f"s{n}", "user_id": f"u{n % 500}", "started_at": now - 600,
                "captured_at": now}
    await call(base + "/end", json.dumps({"snapshot": snapshot}).encode())

async def main():
    for n in range(warm):
        await pair(n)
    t0 = time.process_time()
    for n in range(warm, warm + pairs):
        await pair(n)
    print((time.process_time() - t0) / pairs / 2 * 1e6)

asyncio.run(main())
"""


def cpu_per_request(stack: Stack, metrics: bool, pairs: int) -> float:
    """CPU microseconds per request of the whole application in one process (no HTTP server, no neighbours' waits)."""
    env = stack.env()
    env.pop("AUTOPLAY_METRICS_TOKEN", None)
    if metrics:
        directory = stack.directory / f"metrics-{time.monotonic_ns()}"
        directory.mkdir()
        env.update(AUTOPLAY_METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(directory))
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, stack.key, str(pairs), "200"],
        env=env, cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def instructions(args: argparse.Namespace) -> None:
    """Instructions per request under ``valgrind --tool=callgrind``, which a busy machine does not change.

    Four runs, each on a fresh copy of one migrated database so the workloads are the same: metrics
    off and on, each with 0 and ``--pairs`` measured pairs after 50 warm-up pairs; the difference of
    the two runs' totals, divided by the requests, is the cost of a request without the start-up.
    """
    template = Path(tempfile.mkdtemp(prefix="autoplay-bench-instructions-"))
    stack = Stack("database", 1, directory=template)
    try:
        key = _prepare(stack)
        counts: dict[tuple[bool, int], int] = {}
        for metrics in (False, True):
            for pairs in (0, args.pairs):
                run = template / f"run-{int(metrics)}-{pairs}"
                run.mkdir()
                shutil.copy(template / "db.sqlite3", run / "db.sqlite3")
                env = {**stack.env(), "AUTOPLAY_VAR_DIR": str(run), "DATABASE_URL": f"sqlite:///{run / 'db.sqlite3'}"}
                if metrics:
                    (run / "metrics").mkdir()
                    env.update(AUTOPLAY_METRICS_TOKEN=TOKEN, PROMETHEUS_MULTIPROC_DIR=str(run / "metrics"))
                done = subprocess.run(
                    ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                     sys.executable, "-c", DRIVER, key, str(pairs), "50"],
                    env=env, cwd=ROOT, check=True, capture_output=True, text=True,
                )  # fmt: skip
                counts[metrics, pairs] = int(re.search(r"Collected : (\d+)", done.stderr)[1])
                side = "on " if metrics else "off"
                print(f"   metrics {side}  {pairs:4d} pairs  {counts[metrics, pairs]:,} instructions", flush=True)
    finally:
        shutil.rmtree(template, ignore_errors=True)
    per = {m: (counts[m, args.pairs] - counts[m, 0]) / (2 * args.pairs) for m in (False, True)}
    print(
        f"-- instructions per request: off {per[False]:,.0f}, on {per[True]:,.0f};"
        f" on/off = {per[True] / per[False]:.3f} ({(per[True] / per[False] - 1) * 100:+.1f} %)"
    )


def _prepare(stack: Stack) -> str:
    """Migrate the stack's database and create an API key for the bench product."""
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], env=stack.env(), cwd=ROOT, check=True)
    created = subprocess.run(
        [*manage, "autoplay_apikey", "create", "--name", "bench", "--product", PRODUCT],
        env=stack.env(), cwd=ROOT, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return created.stdout.strip().splitlines()[-1]


def in_process(args: argparse.Namespace) -> None:
    """The CPU cost side by side: the same pairs through the ASGI application, metrics off and on."""
    stack = Stack("database", 1)
    try:
        stack.key = _prepare(stack)
        costs: dict[bool, list[float]] = {False: [], True: []}
        for n in range(args.rounds):
            for metrics in (False, True) if n % 2 == 0 else (True, False):
                cost = cpu_per_request(stack, metrics, args.pairs)
                costs[metrics].append(cost)
                print(
                    f"   round {n + 1}  metrics {'on ' if metrics else 'off'}  {cost:7.0f} us CPU/request", flush=True
                )
    finally:
        shutil.rmtree(stack.directory, ignore_errors=True)
    off, on = statistics.median(costs[False]), statistics.median(costs[True])
    print(
        f"-- median CPU/request: off {off:.0f} us, on {on:.0f} us;"
        f" on/off = {on / off:.3f} ({(on / off - 1) * 100:+.1f} %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--primary", choices=["database", "redis"], default="database")
    parser.add_argument("--rounds", type=int, default=3, help="off/on pairs of runs (default 3)")
    parser.add_argument("--pairs", type=int, default=2000, help="start+end pairs measured per run (default 2000)")
    parser.add_argument("--warmup", type=int, default=200, help="pairs before measuring (default 200)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    parser.add_argument("--users", type=int, default=500, help="distinct users the sessions spread over (default 500)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="granian workers (default: cores)")
    parser.add_argument(
        "--in-process", action="store_true", help="CPU per request through the ASGI app in one process (SQLite)"
    )
    parser.add_argument(
        "--instructions", action="store_true", help="instructions per request under valgrind (SQLite, in process)"
    )
    args = parser.parse_args()
    if args.instructions:
        print(f"bench/metrics.py --instructions: {args.pairs} pairs measured, SQLite primary")
        instructions(args)
        return
    if args.in_process:
        print(f"bench/metrics.py --in-process: {args.pairs} pairs per run, SQLite primary")
        in_process(args)
        return
    print(f"bench/metrics.py: {os.cpu_count()} cores, {args.primary} primary, granian x{args.workers}")
    rates: dict[bool, list[float]] = {False: [], True: []}
    for n in range(args.rounds):
        for metrics in (False, True) if n % 2 == 0 else (True, False):
            rate = measure(args.primary, metrics, args)
            rates[metrics].append(rate)
            print(f"   round {n + 1}  metrics {'on ' if metrics else 'off'}  {rate:7.0f} requests/s", flush=True)
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"-- median requests/s: off {off:.0f}, on {on:.0f}; on/off = {on / off:.3f} ({(on / off - 1) * 100:+.1f} %)")


if __name__ == "__main__":
    main()
