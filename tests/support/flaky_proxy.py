"""A loopback reverse proxy in front of the live API that answers the first requests with errors.

``failures`` is a list of ``(status, headers)`` or ``(status, headers, code)``
answered in turn with a JSON error body (the API's own code for 503 and 429
unless ``code`` says otherwise); once it is empty, requests go through to the real
server. Every request is counted, so tests see how often a client retried.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.support.loopback_http import JsonHandler, LoopbackServer

ERROR_BODIES = {
    503: {"code": "storage_unavailable", "message": "the storage primary cannot be reached; nothing was changed"},
    429: {"code": "rate_limited", "message": "slow down"},
}


class FlakyProxy(LoopbackServer):
    def __init__(self, target: str) -> None:
        super().__init__()
        self.failures: list[tuple[Any, ...]] = []
        self.requests: list[str] = []
        upstream = httpx.Client(base_url=target, timeout=30.0)
        server = self

        class Handler(JsonHandler):
            def _handle(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server._lock:
                    server.requests.append(f"{self.command} {self.path}")
                    failure = server.failures.pop(0) if server.failures else None
                if failure is not None:
                    status, headers = failure[:2]
                    body = dict(ERROR_BODIES.get(status, {"code": "http_error", "message": "failure"}))
                    if len(failure) > 2:
                        body["code"] = failure[2]
                    data = json.dumps(body).encode()
                    self.send_response(status)
                    for name, value in {**headers, "Content-Type": "application/json"}.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                skip = {"host", "content-length", "connection"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                answer = upstream.request(self.command, self.path, content=raw, headers=headers)
                self.send_response(answer.status_code)
                for name, value in answer.headers.items():
                    if name.lower() not in {"content-length", "transfer-encoding", "connection", "content-encoding"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_PATCH = _handle

        self._serve(Handler, "flaky-proxy")
        self.url = f"http://{self.host}:{self.port}"
        self._upstream = upstream

    def close(self) -> None:
        super().close()
        self._upstream.close()
