"""A loopback server standing in for the vendors' deletion endpoints (PostHog persons bulk_delete, Amplitude deletions).

It checks what a real endpoint would: the method, the path, the credentials
and the body, and answers as the vendor does, or fails: ``mode`` is ``ok``,
``500``, ``401`` or ``hang`` (held until ``release()``; the client times out).
A request it refuses (wrong method, path, auth or body) gets a 400 naming
the problem and is kept in ``refused``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.loopback_http import JsonHandler, LoopbackServer

POSTHOG_PROJECT = "4242"
POSTHOG_PERSONAL_KEY = "phx_personal_test_key"
AMPLITUDE_API_KEY = "amp_api_key_test"
AMPLITUDE_SECRET = "amp_secret_test"
AMPLITUDE_DAY = "2031-05-06"


@dataclass
class DeletionRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class DeletionServer(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.mode = "ok"
        self.requests: list[DeletionRequest] = []
        self.refused: list[str] = []
        server = self

        class Handler(JsonHandler):
            def _handle(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                request = DeletionRequest(self.command, self.path, dict(self.headers), body)
                with server._lock:
                    server.requests.append(request)
                    mode = server.mode
                problem = server.problem(request)
                if problem:
                    with server._lock:
                        server.refused.append(problem)
                    return self._answer(400, {"error": problem})
                if mode == "hang":
                    server._release.wait()
                    return None
                if mode == "500":
                    return self._answer(500, {"error": "deletion server failure"})
                if mode == "401":
                    return self._answer(401, {"error": "invalid credentials"})
                if request.path.startswith("/api/projects/"):
                    return self._answer(202, {})
                data = json.dumps([{"day": AMPLITUDE_DAY, "amplitude_ids": [{"amplitude_id": 1}], "status": "staging"}])
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data.encode())
                return None

            do_POST = do_GET = do_DELETE = do_PUT = _handle

        self._serve(Handler, "deletion-server")
        self.url = f"http://{self.host}:{self.port}"

    @staticmethod
    def problem(request: DeletionRequest) -> str:
        """What a real endpoint would refuse in ``request`` ('' if nothing)."""
        if request.method != "POST":
            return f"method {request.method}"
        body = request.body if isinstance(request.body, dict) else {}
        if request.path == f"/api/projects/{POSTHOG_PROJECT}/persons/bulk_delete/":
            if request.headers.get("Authorization") != f"Bearer {POSTHOG_PERSONAL_KEY}":
                return "posthog: bad personal API key"
            if not body.get("distinct_ids") or body.get("delete_events") is not True:
                return f"posthog: bad body {body!r}"
            return ""
        if request.path == "/api/2/deletions/users":
            expected = base64.b64encode(f"{AMPLITUDE_API_KEY}:{AMPLITUDE_SECRET}".encode()).decode()
            if request.headers.get("Authorization") != f"Basic {expected}":
                return "amplitude: bad basic auth"
            if not body.get("user_ids") or not body.get("requester"):
                return f"amplitude: bad body {body!r}"
            return ""
        return f"path {request.path}"

    def accepted_for(self, kind_path: str) -> list[DeletionRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(kind_path)]


@pytest.fixture
def deletion_server() -> Iterator[DeletionServer]:
    server = DeletionServer()
    try:
        yield server
    finally:
        server.close()
