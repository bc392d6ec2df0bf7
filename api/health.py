"""Probes for load balancers: no key needed, nothing about users revealed."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from autoplay_storage import selectors
from autoplay_storage.errors import StorageError


async def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up."""
    return JsonResponse({"status": "ok"})


async def readyz(request: HttpRequest) -> JsonResponse:
    """The primary answers; 503 otherwise, so traffic goes elsewhere."""
    try:
        await selectors.ping()
    except StorageError as exc:
        body = {"status": "unavailable", "code": "storage_unavailable", "message": str(exc)}
        response = JsonResponse(body, status=503)
        response["Retry-After"] = "5"
        return response
    return JsonResponse({"status": "ok"})
