"""Log lines as operators collect them: a request id on every request, JSON lines on demand.

``AUTOPLAY_LOG_FORMAT=json`` formats every log record as one JSON object per
line with ``python-json-logger``: a thin formatter on the standard
``logging`` module, so every library's records (Django's, granian's, the
vendor SDKs') come out the same way with no change to how they log, and the
``extra={...}`` fields the project already passes become JSON keys. structlog
would ask the code to log through its own API to be worth having.

Each HTTP request gets an id: the caller's ``X-Request-ID`` when it is a
sane one (1 to 128 of ``A-Z a-z 0-9 . _ : + / = -``), else a new one. It is
returned in the response's ``X-Request-ID`` and set in a context variable
that every log record of the request carries as ``request_id``
(``RequestIdFilter``), including the storage engine's and the sinks'.
"""

from __future__ import annotations

import logging
import logging.config
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from autoplay_storage.request_context import request_id

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

HEADER = b"x-request-id"
_VALID = re.compile(rb"[A-Za-z0-9._:+/=-]{1,128}")

JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


class RequestIdFilter(logging.Filter):
    """Stamp each record with the id of the request it was logged for (``None`` outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def json_formatter() -> dict[str, Any]:
    """The dictConfig entry of the JSON formatter (the project's and granian's own lines)."""
    return {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": JSON_FIELDS, "rename_fields": JSON_RENAMES}


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """Django's ``LOGGING``: one stream handler on the root logger, plain text or JSON."""
    loggers: dict[str, Any] = {"django.request": {"level": "ERROR"}}
    if log_format == "json":
        formatter = json_formatter()
        # Django's defaults give these loggers text handlers of their own (warnings, DEBUG's console):
        # in JSON mode every line goes through the root's handler instead.
        loggers.update(
            {name: {"handlers": [], "propagate": True} for name in ("py.warnings", "django", "django.server")}
        )
    else:
        formatter = {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"main": formatter},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "main", "filters": ["request_id"]}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": loggers,
    }


def configure(config: dict[str, Any]) -> None:
    """Django's ``LOGGING_CONFIG``: ``dictConfig``, and in JSON mode the ``warnings`` module's lines too."""
    from django.conf import settings

    logging.config.dictConfig(config)
    if settings.AUTOPLAY_LOG_FORMAT == "json":
        logging.captureWarnings(True)  # else a warning is two lines of text on stderr


def granian_logging_config() -> dict[str, Any]:
    """Granian's own lines (startup, workers, access log) as JSON too, on stderr with the project's."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "formatters": {"json": json_formatter()},
        "handlers": {"console": handler, "access": handler},
        "loggers": {
            "_granian": {"handlers": ["console"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


def _given_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == HEADER:
            return value.decode("ascii") if _VALID.fullmatch(value) else None
    return None


def with_request_id(application: ASGIApp) -> ASGIApp:
    """Take or make the request's id, log under it, and return it in ``X-Request-ID``."""

    async def identified(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await application(scope, receive, send)
            return
        rid = _given_id(scope) or uuid.uuid4().hex
        header = (HEADER, rid.encode("ascii"))

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = request_id.set(rid)
        try:
            await application(scope, receive, send_with_id)
        finally:
            request_id.reset(token)

    return identified
