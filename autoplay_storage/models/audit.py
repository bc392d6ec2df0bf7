"""The audit log: an append-only record of who looked at or changed what.

Entries are never edited or deleted through the ORM: the queryset refuses
``update()`` and ``delete()``, the model refuses a second ``save()`` and
``delete()``, and the admin is read-only for everyone, superusers included.
The one way out is ``manage.py autoplay_audit_prune``, which removes rows
older than a cutoff through ``AuditEntryQuerySet.prune_before`` and records
that it did.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone


class AuditImmutableError(Exception):
    """An attempt to change or delete an audit entry."""


class AuditEntryQuerySet(models.QuerySet):
    def update(self, **kwargs: Any) -> int:
        raise AuditImmutableError("audit entries cannot be changed")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditImmutableError("audit entries cannot be deleted; use manage.py autoplay_audit_prune")

    def prune_before(self, cutoff: datetime, batch: int = 5000, most: int | None = None) -> int:
        """Remove entries older than ``cutoff`` in batches (at most ``most``: a progress bar); returns how many.

        Batches keep each transaction short on a large table; the raw delete
        skips the queryset's refusal on purpose (this is the prune command's path).
        """
        removed = 0
        while most is None or removed < most:
            ids = list(self.filter(at__lt=cutoff).order_by("id").values_list("id", flat=True)[:batch])
            if not ids:
                return removed
            query = models.QuerySet(self.model, using=self.db).filter(id__in=ids)
            removed += query._raw_delete(query.db)
        return removed


class AuditEntry(models.Model):
    class ActorKind(models.TextChoices):
        STAFF = "staff", "Console user"
        API_KEY = "api_key", "API key"
        SYSTEM = "system", "Command or system"
        ANONYMOUS = "anonymous", "Not signed in"

    at = models.DateTimeField(default=timezone.now)
    actor_kind = models.CharField(max_length=16, choices=ActorKind.choices)
    # The username, "<key prefix> <key name>", or the command: kept as text so
    # the entry outlives the account or key it names.
    actor = models.CharField(max_length=255)
    action = models.CharField(max_length=64)
    product_id = models.CharField(max_length=128, blank=True)
    user_id = models.CharField(max_length=128, blank=True)
    session_id = models.CharField(max_length=128, blank=True)
    client_address = models.GenericIPAddressField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        default_permissions = ("view",)
        permissions = [("view_recent_access", "Can see which staff opened or changed a user lately")]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["at"], name="audit_at"),
            models.Index(fields=["product_id", "user_id", "-id"], name="audit_subject"),
            models.Index(fields=["actor", "-id"], name="audit_actor"),
            models.Index(fields=["action", "-id"], name="audit_action"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditImmutableError("audit entries cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AuditImmutableError("audit entries cannot be deleted; use manage.py autoplay_audit_prune")
