"""Every request body arrives whole within a deadline, or the request is answered and its connection closed.

granian bounds the time a client takes to send its headers
(``--http1-header-read-timeout``) but not its body: a client that announces
a ``Content-Length`` and stops short, or starts a chunked body and goes
quiet, holds its request (and Django's body reader) until it hangs up. And
when a chunked body is malformed (a chunk size that is not hex), granian
hands the app ``http.disconnect`` in the middle of the body; Django then
returns without a response and granian answers 500.

This wrapper sits in front of the whole project (console and ``/api/``):

* the body must be complete ``AUTOPLAY_BODY_TIMEOUT_S`` after the request
  reached the app (one deadline for the whole body, so a client trickling a
  byte at a time gains nothing), else ``408 request_timeout``;
* a body that ends before it is complete is ``400 incomplete_body``
  (if the client is really gone, nobody reads it);

both with ``Connection: close``, since the rest of the body is unread. An
HTTP/1.x request with neither ``Transfer-Encoding`` nor a ``Content-Length``
other than 0 has no body and skips the timer (a few microseconds per request). Django
reads the whole body before any view runs, so neither can arrive after a
response has started. After the body, ``receive`` passes through untouched:
Django then listens for the client's disconnect for as long as the view runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyRefused(Exception):
    """Raised out of ``receive`` into the app, answered by the wrapper."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def _answer(send: Send, refused: _BodyRefused) -> None:
    body = json.dumps({"code": refused.code, "message": refused.message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": refused.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _may_have_body(scope: Scope) -> bool:
    """False only for an HTTP/1.x request that announces no body (RFC 9112 6.3): no timer needed.

    An HTTP/2 request may send DATA frames without a ``Content-Length``, so it always gets one."""
    if scope.get("http_version") not in ("1.1", "1.0", "1"):  # granian reports HTTP/1.0 as "1"
        return True
    return any(
        name == b"transfer-encoding" or (name == b"content-length" and value != b"0")
        for name, value in scope["headers"]
    )


def with_body_deadline(application: ASGIApp, timeout_s: float) -> ASGIApp:
    """Wrap ``application`` so each HTTP request's body is whole within ``timeout_s`` seconds."""
    timed_out = f"the request body did not arrive within {timeout_s:g} s"
    incomplete = "the request body ended before it was complete (malformed chunked encoding?)"

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await application(scope, receive, send)
            return
        if not _may_have_body(scope):
            await application(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + timeout_s
        complete = False

        async def receive_by_deadline() -> Message:
            nonlocal complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _BodyRefused(408, "request_timeout", timed_out) from None
            if message["type"] == "http.disconnect":
                raise _BodyRefused(400, "incomplete_body", incomplete)
            if not message.get("more_body", False):
                complete = True
            return message

        try:
            await application(scope, receive_by_deadline, send)
        except _BodyRefused as refused:
            await _answer(send, refused)

    return guarded
