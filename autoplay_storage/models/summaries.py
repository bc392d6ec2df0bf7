"""Every summary produced for a user: who ran it, on what, how it went."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class SummaryRun(models.Model):
    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        TIMED_OUT = "timed_out", "Timed out"

    class Source(models.TextChoices):
        DASHBOARD = "dashboard", "Re-run from the console"
        SESSION_END = "session_end", "Session end (summarizer)"
        EXPLICIT = "explicit", "Session end (explicit summary)"

    product_id = models.CharField(max_length=128)
    user_id = models.CharField(max_length=128)
    session_id = models.CharField(max_length=128)
    source = models.CharField(max_length=16, choices=Source.choices)
    summarizer = models.CharField(max_length=255)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    started_at = models.DateTimeField()
    duration_ms = models.IntegerField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    error = models.TextField(blank=True)
    previous_summary = models.TextField(null=True, blank=True)
    new_summary = models.TextField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["product_id", "user_id", "-started_at"], name="summary_run_user")]
        permissions = [("rerun_summary", "Can re-run a user's summary")]

    def __str__(self) -> str:
        return f"{self.product_id}/{self.user_id} {self.outcome} at {self.started_at:%Y-%m-%d %H:%M}"
