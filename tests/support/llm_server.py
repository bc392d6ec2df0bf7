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
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.loopback_http import JsonHandler, LoopbackServer


class LLMServer(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.mode = "ok"
        self.requests: list[dict[str, Any]] = []
        self.waiting = 0
        server = self

        class Handler(JsonHandler):
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

        self._serve(Handler, "llm-server")
        self.url = f"http://{self.host}:{self.port}/v1"


@pytest.fixture
def llm_server() -> Iterator[LLMServer]:
    server = LLMServer()
    try:
        yield server
    finally:
        server.close()
