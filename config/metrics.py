"""``/metrics`` in the Prometheus text format, and the HTTP request metrics.

Off unless ``AUTOPLAY_METRICS_TOKEN`` is set: then ``/metrics`` answers to
``Authorization: Bearer <token>`` (compared in constant time; 401 otherwise)
and every request is counted by route, method and status with its latency.
The route is the URL pattern Django matched (``/api/v1/products/<product_id>/...``),
never the raw path, so the number of series stays bounded; a request no
pattern matched is ``unmatched``, a static file ``static``.

Every worker counts into its own files under ``PROMETHEUS_MULTIPROC_DIR``
(``config.serve`` makes a fresh directory per server start), and whichever
worker answers a scrape sums them all with ``MultiProcessCollector``:
counters of a worker that died stay counted, and its live gauges (the sinks'
queues) are dropped with ``mark_process_dead`` at the next scrape.
"""

from __future__ import annotations

import hmac
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from api.asgi import ROUTE_KEY

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

HTTP_REQUESTS = Counter(
    "autoplay_http_requests", "HTTP requests answered, by route (URL pattern), method and status.",
    ["route", "method", "status"],
)  # fmt: skip
HTTP_SECONDS = Histogram(
    "autoplay_http_request_seconds",
    "Time from the request's arrival to the end of its response, by route and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


def enabled() -> bool:
    return bool(settings.AUTOPLAY_METRICS_TOKEN)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def forget_dead_workers(path: str) -> set[int]:
    """``mark_process_dead`` for every worker whose live gauges are on disk but which is gone."""
    dead = set()
    for entry in os.scandir(path):
        match = _LIVE_GAUGE_FILE.fullmatch(entry.name)
        if match and not _alive(int(match[1])):
            dead.add(int(match[1]))
    for pid in dead:
        mark_process_dead(pid, path)
    return dead


def exposition() -> bytes:
    """Every worker's metrics, summed (this process's own when not in multiprocess mode)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path or not Path(path).is_dir():
        return generate_latest(REGISTRY)
    forget_dead_workers(path)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)
    return generate_latest(registry)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """The scrape endpoint: 404 when metrics are off, 401 without the bearer token (sync: it reads files)."""
    token = settings.AUTOPLAY_METRICS_TOKEN
    if not token:
        raise Http404("metrics are off (AUTOPLAY_METRICS_TOKEN is not set)")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        response = HttpResponse("metrics need Authorization: Bearer <AUTOPLAY_METRICS_TOKEN>\n", status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)


def with_http_metrics(application: ASGIApp) -> ASGIApp:
    """Count and time every HTTP request (when metrics are on; otherwise ``application`` as it is)."""
    if not enabled():
        return application
    static_prefix = "/" + settings.STATIC_URL.lstrip("/")
    counters: dict[tuple[str, str, int], Any] = {}
    timers: dict[tuple[str, str], Any] = {}

    async def metered(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await application(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # a response that never started: the client saw the connection fail

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await application(scope, receive, send_status)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get(ROUTE_KEY) or ("static" if scope["path"].startswith(static_prefix) else "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            key = (route, method, status)
            counter = counters.get(key)
            if counter is None:
                counter = counters[key] = HTTP_REQUESTS.labels(route, method, str(status))
            timer = timers.get(key[:2])
            if timer is None:
                timer = timers[key[:2]] = HTTP_SECONDS.labels(route, method)
            counter.inc()
            timer.observe(elapsed)

    return metered
