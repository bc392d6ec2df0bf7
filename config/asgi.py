"""ASGI entry point: ``granian --interface asgi config.asgi:application``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

django_application = get_asgi_application()

# /api/ (agents, API keys) skips the console's session/CSRF/auth/static middleware: see api/asgi.py.
from api.asgi import with_lean_api  # noqa: E402  (needs the apps loaded by get_asgi_application)

application = with_lean_api(django_application)
