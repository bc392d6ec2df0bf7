"""Sink benchmark: what PostHog + Amplitude sinks add to a session lifecycle, healthy and not.

One lifecycle = ``on_session_start`` + ``on_session_end`` through
``StorageManager([memory primary, *sinks])``, the real vendor SDKs posting to
a loopback capture server. For each scenario it prints sessions/s and p50/p99
lifecycle latency (serial), sessions/s with ``--concurrency`` tasks, what the
SDKs reported (delivered / failed / dropped at hand-off) and how long
``aclose()`` took. Scenarios: no sinks; sinks with the destination answering
200; answering 500; hanging.

    .venv/bin/python bench/sinks.py
    .venv/bin/python bench/sinks.py --serial 2000 --concurrent-sessions 5000 --concurrency 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoplay_storage import InMemoryStorageAdapter, StorageManager, on_session_end, on_session_start
from autoplay_storage.adapters.amplitude import AmplitudeStorageAdapter
from autoplay_storage.adapters.posthog import PostHogStorageAdapter
from autoplay_storage.user_adoption_state import SessionSnapshot
from tests.support.capture_server import CaptureServer

CATALOG = ["create_project", "invite_team", "configure_columns"]


async def lifecycle(storage: StorageManager, user_id: str, session_id: str) -> None:
    state, _ = await on_session_start("bench", user_id, session_id, storage)
    state.upsert_workflow_progress("create_project", status="completed")
    snapshot = SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=state.sessions.count + 1,
        started_at=time.time() - 60,
        catalog_workflow_ids=CATALOG,
    )
    await on_session_end("bench", user_id, snapshot, storage)


def build(mode: str | None, server: CaptureServer) -> StorageManager:
    if mode is None:
        return StorageManager([InMemoryStorageAdapter()])
    server.mode = mode
    return StorageManager(
        [
            InMemoryStorageAdapter(),
            PostHogStorageAdapter("phc_bench", host=server.url, property_prefix="ap", close_timeout_s=2.0),
            AmplitudeStorageAdapter(
                "amp_bench", property_prefix="ap", server_url=f"{server.url}/2/httpapi", close_timeout_s=2.0
            ),
        ]
    )


async def scenario(name: str, mode: str | None, args: argparse.Namespace) -> None:
    server = CaptureServer()
    storage = build(mode, server)
    latencies = []
    t0 = time.perf_counter()
    for n in range(args.serial):
        start = time.perf_counter()
        await lifecycle(storage, f"u_{n % 50}", f"serial_{n}")
        latencies.append(time.perf_counter() - start)
    serial_rate = args.serial / (time.perf_counter() - t0)
    quantiles = statistics.quantiles(latencies, n=100)

    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(args.concurrent_sessions):
        queue.put_nowait(n)

    async def worker() -> None:
        while not queue.empty():
            n = queue.get_nowait()
            await lifecycle(storage, f"c_{n % args.concurrency}", f"conc_{n}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    concurrent_rate = args.concurrent_sessions / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    await storage.aclose()
    close_s = time.perf_counter() - t0
    print(f"== {name}")
    print(
        f"  serial:     {serial_rate:8.0f} sessions/s   p50 {quantiles[49] * 1000:6.2f} ms   "
        f"p99 {quantiles[98] * 1000:6.2f} ms"
    )
    print(f"  concurrent: {concurrent_rate:8.0f} sessions/s   ({args.concurrency} tasks)")
    for sink in storage.secondaries:
        stats = sink.delivery_stats()
        dropped = storage.sink_stats.get(sink.name)
        print(
            f"  {sink.name:10s} delivered {stats.delivered:6d}   failed {stats.failed:6d}   "
            f"dropped at hand-off {dropped.failed if dropped else 0:6d}"
        )
    if storage.secondaries:
        print(f"  aclose():   {close_s:.2f} s   requests seen by the capture server: {len(server.requests)}")
    server.close()


async def main(args: argparse.Namespace) -> None:
    await scenario("memory primary, no sinks", None, args)
    await scenario("+ PostHog + Amplitude, destination answers 200", "ok", args)
    await scenario("+ PostHog + Amplitude, destination answers 500", "500", args)
    await scenario("+ PostHog + Amplitude, destination hangs", "hang", args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serial", type=int, default=300, help="lifecycles run one at a time")
    parser.add_argument("--concurrent-sessions", type=int, default=1000, help="lifecycles run concurrently")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent tasks")
    asyncio.run(main(parser.parse_args()))
