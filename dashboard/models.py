"""The console keeps no data of its own; this model only carries its permission."""

from __future__ import annotations

from django.db import models


class Console(models.Model):
    """No table (``managed = False``): a home for ``dashboard.view_console``, granted by roles."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_console", "Can browse the support console")]
