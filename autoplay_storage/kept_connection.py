"""One thread that keeps its database connection, for the small ORM calls async code makes per request.

Django runs each ASGI request's thread-sensitive calls (``sync_to_async``'s
default) in a thread of that request alone, and a connection belongs to its
thread, so a call made there opens a connection per request (on SQLite the
schema is read again; on PostgreSQL a login). The audit log's writes and the
rate limiter's checks run here instead. Each call first checks the kept
connection as Django checks a request's (its age, an error it saw).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import connections

T = TypeVar("T")


class KeptConnectionThread:
    def __init__(self, name: str) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, alias: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread, on its connection to ``alias``; the caller's context goes with it."""
        call = contextvars.copy_context().run
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, _checked, alias, fn, *args)


def _checked(alias: str, fn: Callable[..., T], *args: Any) -> T:
    connections[alias].close_if_unusable_or_obsolete()
    return fn(*args)
