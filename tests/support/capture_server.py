"""A loopback HTTP server standing in for PostHog and Amplitude ingestion.

The real vendor SDKs post to it; it records every request (gzip bodies
decompressed, JSON parsed) and answers according to ``mode``:

- ``ok``: 200 with the body each vendor expects;
- ``500``: a server error (the SDKs retry, then give up);
- ``hang``: holds the request open until ``release()`` or shutdown;
- ``badkey``: Amplitude's 400 "Invalid API key" answer.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.loopback_http import JsonHandler, LoopbackServer


@dataclass
class CapturedRequest:
    path: str
    headers: dict[str, str]
    body: Any


class CaptureServer(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.mode = "ok"
        self.requests: list[CapturedRequest] = []
        self.hanging = 0
        server = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    raw = gzip.decompress(raw)
                body = json.loads(raw) if raw else None
                with server._lock:
                    server.requests.append(CapturedRequest(self.path, dict(self.headers), body))
                    mode = server.mode
                if mode == "hang":
                    with server._lock:
                        server.hanging += 1
                    server._release.wait()
                    mode = "500"
                if mode == "500":
                    self._answer(500, {"code": 500, "error": "capture server failure"})
                elif mode == "badkey":
                    self._answer(400, {"code": 400, "error": "Invalid API key: capture-test"})
                else:
                    events = len(body.get("events") or body.get("batch") or []) if isinstance(body, dict) else 0
                    self._answer(200, {"code": 200, "status": 1, "events_ingested": events})

        self._serve(Handler, "capture-server")
        self.url = f"http://{self.host}:{self.port}"

    # -- reading what arrived --

    def posthog_messages(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m for r in self.requests if isinstance(r.body, dict) for m in r.body.get("batch", [])]

    def amplitude_events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [e for r in self.requests if isinstance(r.body, dict) for e in r.body.get("events", [])]


def wait_until(predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; fail (not hang) when it never becomes so."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def capture_server() -> Iterator[CaptureServer]:
    server = CaptureServer()
    try:
        yield server
    finally:
        server.close()


async def await_until(predicate: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
    """``wait_until`` for async tests: yields to the event loop while polling."""
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
