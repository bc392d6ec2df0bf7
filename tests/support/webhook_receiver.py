"""A loopback webhook receiver that verifies each request with the ``standardwebhooks`` package.

``plan`` is a list of modes answered in turn (then ``mode`` for the rest):
``ok`` (204), ``fail`` (500), ``reject`` (400: not retried), ``hang`` (held until ``release()``), or
``slow`` (answers 200 after ``slow_s``). Every request is recorded with
whether its signature verified under ``secret``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.loopback_http import JsonHandler, LoopbackServer


@dataclass
class Received:
    headers: dict[str, str]
    body: Any
    verified: bool
    error: str

    @property
    def id(self) -> str:
        return self.headers.get("webhook-id", "")


class WebhookReceiver(LoopbackServer):
    def __init__(self) -> None:
        super().__init__()
        self.secret = ""
        self.mode = "ok"
        self.plan: list[str] = []
        self.slow_s = 0.3
        self.received: list[Received] = []
        server = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:
                from standardwebhooks.webhooks import Webhook, WebhookVerificationError

                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified, error = False, ""
                try:
                    Webhook(server.secret).verify(raw, headers)
                    verified = True
                except (WebhookVerificationError, ValueError) as exc:
                    error = str(exc)
                with server._lock:
                    server.received.append(Received(headers, json.loads(raw or b"null"), verified, error))
                    mode = server.plan.pop(0) if server.plan else server.mode
                if mode == "hang":
                    server._release.wait()
                    return
                if mode == "slow":
                    time.sleep(server.slow_s)
                if mode == "fail":
                    self._answer(500, {"error": "receiver failure"})
                elif mode == "reject":
                    self._answer(400, {"error": "receiver refuses the event"})
                else:
                    self._answer(200, {"ok": True})

        self._serve(Handler, "webhook-receiver")
        self.url = f"http://{self.host}:{self.port}/hooks"

    def ids(self) -> list[str]:
        with self._lock:
            return [r.id for r in self.received]


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    try:
        yield server
    finally:
        server.close()
