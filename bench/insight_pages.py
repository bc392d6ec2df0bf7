"""The insight pages' server time, for bench/dashboard.py: product page, a segment's count, a list filtered
by a workflow status, the stuck queue's first page, and a CSV export (rows and seconds).

Pages are timed in-process through Django's AsyncClient with a signed-in
lead, as bench/dashboard.py times the other pages; the count is the
selector alone (what the product page pays per saved segment).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

WORKFLOW = "invite_team"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure_insight(client: Any, product: str, requests: int, export_filter: dict[str, str]) -> None:
    from django.urls import reverse

    from autoplay_storage import selectors

    users = reverse("dashboard:insight_users", args=[product])
    pages = {
        "product page (funnel, cohorts, charts)": reverse("dashboard:insight", args=[product]),
        f"users list, workflow={WORKFLOW} status=completed": f"{users}?workflow={WORKFLOW}&status=completed",
        "stuck queue, first page": reverse("dashboard:stuck", args=[product]),
    }
    timings: dict[str, list[float]] = {}
    for name, url in pages.items():
        response = await client.get(url)  # warm-up
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
        timings[name] = []
        for _ in range(requests):
            t0 = time.perf_counter()
            response = await client.get(url)
            timings[name].append((time.perf_counter() - t0) * 1000)
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
        timings[name] = []
        for _ in range(requests):
            t0 = time.perf_counter()
            await selectors.count_users(product, f)
            timings[name].append((time.perf_counter() - t0) * 1000)
    print(f"  {'insight':<62} {'p50 ms':>8} {'p95 ms':>8}")
    for name, values in timings.items():
        print(f"  {name:<62} {statistics.median(values):8.1f} {percentile(values, 0.95):8.1f}")
    t0 = time.perf_counter()
    response = await client.get(users, {**export_filter, "format": "csv"})
    size = rows = 0
    async for chunk in response.streaming_content:
        size += len(chunk)
        rows += chunk.count(b"\n")
    elapsed = time.perf_counter() - t0
    print(f"  CSV export {export_filter or '(every user)'}: {rows - 1:,} rows, {size / 1e6:.1f} MB in {elapsed:.2f} s")
