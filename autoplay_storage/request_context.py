"""The id of the HTTP request being served, for log lines (no Django: the engine's sinks read it too).

The server sets it per request (``config.logs``); asyncio tasks inherit it.
A sink that delivers on a thread of its own takes it with each queued
message and sets it around the delivery, so the delivery's log lines name
the request that caused the write.
"""

from __future__ import annotations

from contextvars import ContextVar

request_id: ContextVar[str | None] = ContextVar("autoplay_request_id", default=None)
