"""ASGI entry point, served by ``python -m config.serve`` (granian; see that module)."""

import os

import django
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django.setup(set_prefix=False)  # what get_asgi_application() does, with our handler class below

from django.conf import settings  # noqa: E402

# /api/ (agents, API keys) skips the console's session/CSRF/auth/static middleware: see api/asgi.py.
from api.asgi import RouteInScope, with_lean_api  # noqa: E402  (needs the apps loaded by django.setup)
from config.logs import with_request_id  # noqa: E402
from config.metrics import with_http_metrics  # noqa: E402
from config.request_body import with_body_deadline  # noqa: E402


class ConsoleASGIHandler(RouteInScope, ASGIHandler):
    """Django's handler, telling the HTTP metrics which URL pattern it matched."""


django_application = ConsoleASGIHandler()

# The request id outermost, so every line logged for a request carries it; then the metrics, so a
# request the body deadline cuts off (408) is counted; the body deadline covers the console and the API.
application = with_request_id(
    with_http_metrics(with_body_deadline(with_lean_api(django_application), settings.AUTOPLAY_BODY_TIMEOUT_S))
)
