"""What writing the audit entry adds to an audited request: the same request with the write swapped for a no-op.

``bench/dashboard.py --audit-off-too`` times the two user pages (a
``user.view`` entry each) and an audited API call (``PATCH .../state`` with
an API key, a ``state.patch`` entry), in-process through Django's
AsyncClient, in alternating rounds: one as served, one inside
``audit_off()``, which replaces ``arecord_request`` where these views call
it, so the actor, the address, the details' JSON round-trip, the thread hop
and the INSERT are all skipped. Rounds alternate their order (on, off; off,
on; ...) so a drift in the machine's load hits both alike. Only for
measuring: entries are not written while it holds.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from bench.stats import percentile


async def _not_recorded(*_args: Any, **_kwargs: Any) -> None:
    return None


@contextlib.contextmanager
def audit_off() -> Iterator[None]:
    """``arecord_request`` a no-op in the user page's and the state routes' modules while inside."""
    import api.api
    import dashboard.views

    saved = [(module, module.arecord_request) for module in (dashboard.views, api.api)]
    for module, _ in saved:
        module.arecord_request = _not_recorded
    try:
        yield
    finally:
        for module, original in saved:
            module.arecord_request = original


Call = Callable[[], Awaitable[int]]


async def compare(calls: dict[str, Call], rounds: int, requests: int, queries: Callable[[], int]) -> None:
    """Time each call ``rounds`` x ``requests`` times with the audit write and as many without; print both."""
    from asgiref.sync import sync_to_async

    from autoplay_storage.models import AuditEntry

    entries = sync_to_async(AuditEntry.objects.count)
    print(f"  audit entry written vs not: {rounds} alternating rounds of {requests} requests each way")
    print(f"  {'request':<34} {'audit':<5} {'p50 ms':>7} {'p95 ms':>7} {'cpu p50':>7} {'cpu p95':>7}"
          f" {'queries':>7} {'entries':>7}")
    for name, call in calls.items():
        for on in (True, False):  # warm-up, each way
            with contextlib.nullcontext() if on else audit_off():
                await call()
        got: dict[bool, tuple[list[float], list[float], int, int]] = {True: ([], [], 0, 0), False: ([], [], 0, 0)}
        for round_ in range(rounds):
            for on in (True, False) if round_ % 2 == 0 else (False, True):
                wall, cpu, counted, written = got[on]
                e0 = await entries()
                q0 = queries()
                with contextlib.nullcontext() if on else audit_off():
                    for _ in range(requests):
                        t0, c0 = time.perf_counter(), time.process_time()
                        status = await call()
                        wall.append((time.perf_counter() - t0) * 1000)
                        cpu.append((time.process_time() - c0) * 1000)
                        if status != 200:
                            raise RuntimeError(f"{name} answered {status}")
                q1 = queries()  # before the count below, which is a query too
                got[on] = (wall, cpu, counted + q1 - q0, written + await entries() - e0)
        for on in (True, False):
            wall, cpu, counted, written = got[on]
            print(f"  {name:<34} {'on' if on else 'off':<5} {statistics.median(wall):7.2f}"
                  f" {percentile(wall, 0.95):7.2f} {statistics.median(cpu):7.2f} {percentile(cpu, 0.95):7.2f}"
                  f" {counted / len(wall):7.1f} {written:7d}")
        (on_wall, on_cpu, *_), (off_wall, off_cpu, *_) = got[True], got[False]
        print(f"  {name:<34} {'on/off':<6}{statistics.median(on_wall) / statistics.median(off_wall):7.3f}"
              f" {percentile(on_wall, 0.95) / percentile(off_wall, 0.95):7.3f}"
              f" {statistics.median(on_cpu) / statistics.median(off_cpu):7.3f}"
              f" {percentile(on_cpu, 0.95) / percentile(off_cpu, 0.95):7.3f}")


async def measure_audit(
    pages: dict[str, str], product: str, user_id: str, rounds: int, requests: int, queries: Callable[[], int]
) -> None:
    """The user pages as a signed-in lead, and ``PATCH`` of ``user_id``'s state with a fresh API key."""
    from asgiref.sync import sync_to_async
    from django.contrib.auth.models import User
    from django.db import connections
    from django.test import AsyncClient

    from api.models import ApiKey
    from autoplay_storage.runtime import get_storage

    await sync_to_async(connections.close_all)()
    await get_storage().aclose()
    console = AsyncClient()
    await console.aforce_login(await User.objects.aget(username="bench-lead"))
    _, key = await sync_to_async(ApiKey.issue)("bench agent", [product])
    agent, authorization = AsyncClient(), {"Authorization": f"Bearer {key}"}
    calls: dict[str, Call] = {}
    for name, url in pages.items():
        async def page(url: str = url) -> int:
            return (await console.get(url)).status_code
        calls[name] = page
    count = iter(range(10**9))

    async def patch() -> int:
        body = {"ops": [{"op": "metadata", "values": {"bench_n": next(count)}}]}
        url = f"/api/v1/products/{product}/users/{user_id}/state"
        return (await agent.patch(url, body, content_type="application/json", headers=authorization)).status_code

    calls["API PATCH state (state.patch)"] = patch
    await compare(calls, rounds, requests, queries)
    await get_storage().aclose()
