"""Probes at the root (no key), the agent API under /api/, JSON 404s for the rest of /api/."""

from django.http import HttpRequest, HttpResponse
from django.urls import path, re_path

from . import health
from .api import api
from .errors import ApiError


async def api_not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Agents get JSON even for a mistyped path, never the console's HTML 404."""
    return ApiError(404, "not_found", f"no API route {request.path!r}; see /api/docs").response()


urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("api/", api.urls),
    re_path(r"^api/(?P<rest>.*)$", api_not_found),
]
