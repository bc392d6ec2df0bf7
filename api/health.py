"""Probes for load balancers: no key needed, nothing about users or the infrastructure revealed.

An anonymous caller learns only "ready" or "not ready": the primary's error
text names hosts, ports and sometimes paths, which is a map for an attacker.
The reason goes to the log, and to staff signed in to the console (the probe
is served by the full Django handler, so the console's session applies).
"""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse

from autoplay_storage import selectors
from autoplay_storage.errors import StorageError

logger = logging.getLogger("api.health")

RETRY_AFTER_S = 5


async def _is_staff(request: HttpRequest) -> bool:
    """A signed-in staff account; no one when the sessions cannot be read (their database may be what is down)."""
    try:
        user = await request.auser()
    except DatabaseError:
        return False
    return bool(user.is_active and user.is_staff)


async def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up."""
    return JsonResponse({"status": "ok"})


async def readyz(request: HttpRequest) -> JsonResponse:
    """The primary answers; 503 otherwise, so traffic goes elsewhere."""
    try:
        await selectors.ping()
    except StorageError as exc:
        logger.warning("not ready: the storage primary does not answer: %s", exc)
        body: dict[str, str] = {"status": "unavailable"}
        if await _is_staff(request):
            body.update(code="storage_unavailable", message=str(exc))
        response = JsonResponse(body, status=503)
        response["Retry-After"] = str(RETRY_AFTER_S)
        return response
    return JsonResponse({"status": "ok"})
