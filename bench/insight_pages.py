"""The insight pages' server time, for bench/dashboard.py: product page, a segment's count, a list filtered
by a workflow status, the stuck queue's first page, and a CSV export (rows and seconds).

Pages are timed in-process through Django's AsyncClient with a signed-in
lead, as bench/dashboard.py times the other pages; the count is the
selector alone (what the product page pays per saved segment). Each figure
comes with this process's CPU time, and with the primary's (the mean per
request, ``srv cpu``; the export's total) when ``server_cpu`` reads it (Redis:
``INFO cpu``): on a busy machine wall-clock time measures the neighbours as well.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.stats import percentile

WORKFLOW = "invite_team"


async def measure_insight(
    client: Any,
    product: str,
    requests: int,
    export_filter: dict[str, str],
    server_cpu: Callable[[], float] | None = None,
) -> None:
    from django.urls import reverse

    from autoplay_storage import selectors

    users = reverse("dashboard:insight_users", args=[product])
    pages = {
        "product page (funnel, cohorts, charts)": reverse("dashboard:insight", args=[product]),
        f"users list, workflow={WORKFLOW} status=completed": f"{users}?workflow={WORKFLOW}&status=completed",
        "stuck queue, first page": reverse("dashboard:stuck", args=[product]),
    }
    timings: dict[str, tuple[list[float], list[float]]] = {}
    primary: dict[str, float | None] = {}  # the primary's CPU ms per request (Redis: INFO cpu), else None
    for name, url in pages.items():
        response = await client.get(url)  # warm-up
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
        timings[name] = ([], [])
        s0 = server_cpu() if server_cpu else 0.0
        for _ in range(requests):
            t0, c0 = time.perf_counter(), time.process_time()
            response = await client.get(url)
            timings[name][0].append((time.perf_counter() - t0) * 1000)
            timings[name][1].append((time.process_time() - c0) * 1000)
        primary[name] = (server_cpu() - s0) * 1000 / requests if server_cpu else None
    segments = {
        f"segment count: {WORKFLOW} in progress": {"workflow": WORKFLOW, "status": "in_progress"},
        "segment count: + mastery beginner,intermediate + 2-5 sessions": {
            "workflow": WORKFLOW, "status": "in_progress", "mastery": "beginner,intermediate",
            "sessions_min": "2", "sessions_max": "5",
        },
    }  # fmt: skip
    for name, params in segments.items():
        f, problems = selectors.parse_filter(params)
        assert not problems, problems
        await selectors.count_users(product, f)
        timings[name] = ([], [])
        s0 = server_cpu() if server_cpu else 0.0
        for _ in range(requests):
            t0, c0 = time.perf_counter(), time.process_time()
            await selectors.count_users(product, f)
            timings[name][0].append((time.perf_counter() - t0) * 1000)
            timings[name][1].append((time.process_time() - c0) * 1000)
        primary[name] = (server_cpu() - s0) * 1000 / requests if server_cpu else None
    print(f"  {'insight':<62} {'p50 ms':>8} {'p95 ms':>8} {'cpu p50':>8} {'cpu p95':>8} {'srv cpu':>8}")
    for name, (values, cpu) in timings.items():
        srv = f"{primary[name]:8.1f}" if primary[name] is not None else f"{'-':>8}"
        print(f"  {name:<62} {statistics.median(values):8.1f} {percentile(values, 0.95):8.1f} "
              f"{statistics.median(cpu):8.1f} {percentile(cpu, 0.95):8.1f} {srv}")
    s0 = server_cpu() if server_cpu else 0.0
    t0, c0 = time.perf_counter(), time.process_time()
    response = await client.get(users, {**export_filter, "format": "csv"})
    size = rows = 0
    async for chunk in response.streaming_content:
        size += len(chunk)
        rows += chunk.count(b"\n")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    server = f", primary CPU {server_cpu() - s0:.2f} s" if server_cpu else ""
    print(f"  CSV export {export_filter or '(every user)'}: {rows - 1:,} rows, {size / 1e6:.1f} MB in {elapsed:.2f} s"
          f" (process CPU {cpu:.2f} s{server})")
