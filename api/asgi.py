"""A lean Django handler for ``/api/``: the agents' hot path skips the console's middleware.

Django runs each classic middleware's hooks through ``sync_to_async`` under
ASGI, one thread hop per hook, and WhiteNoise (sync only) forces another
adaptation: about 2 ms of a ~4 ms session start on a 2-core machine went to
sessions, CSRF, auth, messages, clickjacking and static-file layers an
API-key route never uses. ``/api/`` requests get a handler whose only
middleware is ``SecurityMiddleware``'s pure request/response hooks (HTTPS
redirect, HSTS, nosniff, referrer policy) run inline, plus the host check
and a JSON body for 405; everything else goes to the project's full handler
unchanged.

Oversized bodies are refused here, from ``Content-Length`` before Django
reads (and spools) them, or while they are received when chunked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.http import HttpRequest, HttpResponseBase, HttpResponseNotAllowed
from django.middleware.security import SecurityMiddleware
from django.urls import ResolverMatch

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

API_PREFIX = "/api/"
ROUTE_KEY = "autoplay.route"
"""Where a handler leaves the URL pattern it matched in the ASGI scope (the HTTP metrics' ``route``)."""


class RouteInScope:
    """A Django handler that writes the matched URL pattern into the request's ASGI scope."""

    def resolve_request(self, request: HttpRequest) -> ResolverMatch:
        match = super().resolve_request(request)  # type: ignore[misc]
        request.scope[ROUTE_KEY] = "/" + match.route  # type: ignore[attr-defined]
        return match


class ApiASGIHandler(RouteInScope, ASGIHandler):
    """Django's ASGI handler with the API's own (short) middleware chain."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        view = convert_exception_to_response(self._get_response_async)
        security = SecurityMiddleware(view)

        async def chain(request: HttpRequest) -> HttpResponseBase:
            from .errors import ApiError

            try:
                request.get_host()  # ALLOWED_HOSTS, as CommonMiddleware checks it for the console
            except DisallowedHost:
                return ApiError(400, "disallowed_host", "the Host header is not one this server answers to").response()
            response = security.process_request(request) or await view(request)
            if isinstance(response, HttpResponseNotAllowed):  # ninja answers an unknown method in plain text
                allowed = response["Allow"]
                response = ApiError(
                    405,
                    "method_not_allowed",
                    f"{request.method} is not allowed here; use {allowed}",
                    headers={"Allow": allowed},
                ).response()
            if not response.has_header("Cache-Control"):  # states and snapshots are personal data
                response["Cache-Control"] = "no-store, private"
            return security.process_response(request, response)

        self._middleware_chain = chain


class _BodyTooLarge(Exception):
    """The body grew past the limit while being received (no or a false ``Content-Length``)."""


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def with_lean_api(application: ASGIApp) -> ASGIApp:
    """Route ``/api/`` to the lean handler and everything else to ``application``."""
    from django.conf import settings

    from .errors import body_too_large

    api_handler = ApiASGIHandler()

    async def refuse(send: Any) -> None:
        response = body_too_large().response()
        response["Connection"] = "close"
        await api_handler.send_response(response, send)

    async def dispatch(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await application(scope, receive, send)
            return
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        length = _content_length(scope)
        if length is not None and length > limit:
            await refuse(send)
            return
        received = 0

        async def counted_receive() -> Any:
            # Django reads (and spools) the whole body before any view runs; a
            # chunked body has no Content-Length to refuse it by, so count it.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        try:
            await api_handler(scope, counted_receive, send)
        except _BodyTooLarge:
            await refuse(send)

    return dispatch
