"""System checks ``manage.py check --deploy`` shows before a production start."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.checks import Tags, Warning, register


@register(Tags.security, deploy=True)
def encryption_key_check(app_configs: Any, **kwargs: Any) -> list[Warning]:
    """Sink credentials are encrypted under ``AUTOPLAY_ENCRYPTION_KEY``; without it, under a key
    derived from ``SECRET_KEY``, so rotating the secret key would make them unreadable."""
    if settings.DEBUG or os.environ.get("AUTOPLAY_ENCRYPTION_KEY"):
        return []
    return [
        Warning(
            "AUTOPLAY_ENCRYPTION_KEY is not set: stored sink credentials are encrypted under a key "
            "derived from SECRET_KEY.",
            hint="Set AUTOPLAY_ENCRYPTION_KEY to a long random secret kept apart from SECRET_KEY.",
            id="autoplay_storage.W001",
        )
    ]
