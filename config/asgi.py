"""ASGI entry point, served by ``python -m config.serve`` (granian; see that module)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_asgi_application()

from django.conf import settings  # noqa: E402

# /api/ (agents, API keys) skips the console's session/CSRF/auth/static middleware: see api/asgi.py.
from api.asgi import with_lean_api  # noqa: E402  (needs the apps loaded by get_asgi_application)
from config.request_body import with_body_deadline  # noqa: E402

# Outermost, so the console's requests get the same body deadline as the API's.
application = with_body_deadline(with_lean_api(django_application), settings.AUTOPLAY_BODY_TIMEOUT_S)
