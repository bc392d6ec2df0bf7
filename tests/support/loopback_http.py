"""What the loopback test servers (analytics capture, OpenAI-compatible LLM) share."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet handler whose JSON reply tolerates a client that already gave up."""

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    def _answer(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client timed out on a held request
            pass


class LoopbackServer:
    """A threaded HTTP server on a free 127.0.0.1 port, with a gate that held requests wait on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._release = threading.Event()

    def _serve(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.host, self.port = self._httpd.server_address[:2]
        threading.Thread(target=self._httpd.serve_forever, name=name, daemon=True).start()

    def release(self) -> None:
        """Let held requests finish."""
        self._release.set()

    @property
    def released(self) -> bool:
        return self._release.is_set()

    def close(self) -> None:
        self.release()
        self._httpd.shutdown()
        self._httpd.server_close()
