"""Console pages carry end users' data: no browser or proxy may keep a copy."""

from __future__ import annotations

from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import add_never_cache_headers, patch_cache_control


def _mark(response: HttpResponseBase) -> HttpResponseBase:
    if not response.has_header("Cache-Control"):
        add_never_cache_headers(response)
        patch_cache_control(response, no_store=True, private=True)
    return response


def no_store(get_response: Any) -> Any:
    """``Cache-Control: no-store`` on every page and download the project serves (static files excepted).

    User pages, snapshots, downloads and exports hold personal data; so do the
    users lists and the admin. A response that sets its own caching keeps it.
    """
    if iscoroutinefunction(get_response):

        async def middleware(request: HttpRequest) -> HttpResponseBase:
            return _mark(await get_response(request))

        return markcoroutinefunction(middleware)

    def sync_middleware(request: HttpRequest) -> HttpResponseBase:
        return _mark(get_response(request))

    return sync_middleware


no_store.async_capable = True  # type: ignore[attr-defined]
no_store.sync_capable = True  # type: ignore[attr-defined]
