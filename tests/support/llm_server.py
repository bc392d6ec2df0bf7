"""A loopback OpenAI-compatible chat endpoint for the LLM summarizer's tests.

``POST /v1/chat/completions`` is recorded and answered according to ``mode``:

- ``ok``: a chat completion whose content names the session it was asked about;
- ``slow``: holds the request until ``release()`` or shutdown;
- ``fail``: HTTP 500 with an OpenAI-style error body;
- ``garbage``: HTTP 200 that is not a chat completion.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class LLMServer:
    def __init__(self) -> None:
        self.mode = "ok"
        self.requests: list[dict[str, Any]] = []
        self.waiting = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"null")
                with server._lock:
                    server.requests.append(
                        {"path": self.path, "authorization": self.headers.get("Authorization"), "body": body}
                    )
                    mode = server.mode
                if self.path != "/v1/chat/completions":
                    return self._answer(404, {"error": {"message": f"no route {self.path}"}})
                if mode == "slow":
                    with server._lock:
                        server.waiting += 1
                    server._release.wait()
                if mode == "fail":
                    return self._answer(500, {"error": {"message": "the model is overloaded", "type": "server_error"}})
                if mode == "garbage":
                    return self._answer(200, {"result": "not a chat completion"})
                prompt = body["messages"][0]["content"]
                number = re.search(r"Session number: (\d+)", prompt)
                content = f"  You are picking up after session {number.group(1) if number else '?'}.  "
                return self._answer(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "model": body.get("model"),
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
                    },
                )

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the summarizer gave up waiting
                    pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        threading.Thread(target=self._httpd.serve_forever, name="llm-server", daemon=True).start()

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self.release()
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def llm_server() -> Iterator[LLMServer]:
    server = LLMServer()
    try:
        yield server
    finally:
        server.close()
