"""Support tooling's records: values staff set by hand, and unreadable states kept aside when rebuilt."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class StaffEdit(models.Model):
    """The value staff last set at one field of a user's state, so the console can mark it.

    Kept beside the state, not in it: the wire document is the published
    SDK's, read and written by agents that know nothing of staff, and a mark
    inside it would travel to every agent and analytics sink. A mark holds
    only while the state still has that very value: once the agent writes
    another, the page no longer calls it staff-set.
    """

    product_id = models.CharField(max_length=128)
    user_id = models.CharField(max_length=128)
    path = models.CharField(max_length=512, help_text="e.g. mastery.rating, workflow.<id>.status, metadata.<key>")
    value = models.JSONField(null=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150)
    at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["product_id", "user_id", "path"], name="staff_edit_path")]
        permissions = [("edit_state", "Can edit a user's state by hand")]

    def __str__(self) -> str:
        return f"{self.product_id}/{self.user_id} {self.path} by {self.actor_name}"


class QuarantinedState(models.Model):
    """The exact text of a state that could not be read, kept when the state is rebuilt (downloadable)."""

    class Outcome(models.TextChoices):
        REBUILT = "rebuilt", "Rebuilt from the snapshots"
        SUPERSEDED = "superseded", "Not rebuilt: the stored state changed meanwhile"

    product_id = models.CharField(max_length=128)
    user_id = models.CharField(max_length=128)
    raw = models.TextField()
    reason = models.TextField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    sessions_replayed = models.IntegerField(default=0)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150)
    at = models.DateTimeField()

    class Meta:
        ordering = ["-at"]
        indexes = [models.Index(fields=["product_id", "user_id", "-at"], name="quarantine_user")]
        permissions = [("rebuild_state", "Can rebuild an unreadable user state")]

    def __str__(self) -> str:
        return f"{self.product_id}/{self.user_id} quarantined {self.at:%Y-%m-%d %H:%M}"
