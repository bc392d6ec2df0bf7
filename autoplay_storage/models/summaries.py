"""Every summary produced for a user: who ran it, on what, how it went, and whether it became the summary.

A run whose text was stored as the user's summary has ``applied_at``: those
rows, newest first, are the user's summary history (every text the user
ever had from this console or its API, with where it came from).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class SummaryRun(models.Model):
    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        TIMED_OUT = "timed_out", "Timed out"
        INTERRUPTED = "interrupted", "Interrupted (its worker stopped)"

    class Source(models.TextChoices):
        DASHBOARD = "dashboard", "Re-run from the console"
        SESSION_END = "session_end", "Session end (summarizer)"
        EXPLICIT = "explicit", "Session end (explicit summary)"
        PREVIEW = "preview", "Re-run from the console, previewed"
        MANUAL = "manual", "Written by hand"
        RESTORED = "restored", "Restored from an earlier version"

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
    actor_label = models.CharField(max_length=200, blank=True, help_text="who, when not a console user (an API key)")
    applied_at = models.DateTimeField(null=True, blank=True, help_text="when the text became the user's summary")
    applied_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    restored_from = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["product_id", "user_id", "-started_at"], name="summary_run_user")]
        permissions = [("rerun_summary", "Can re-run a user's summary")]

    def __str__(self) -> str:
        return f"{self.product_id}/{self.user_id} {self.outcome} at {self.started_at:%Y-%m-%d %H:%M}"


class SummaryClaim(models.Model):
    """The summary one session end asked for, claimed by one worker at a time.

    A session's summary is a paid LLM call: concurrent retries of the same
    end must not each run it. The first claims the session (the unique
    constraint decides) for a lease as long as the summarizer may take; the
    others wait for its outcome. A lease that ran out while ``running`` means
    its worker died: the next retry takes it over and runs again.
    """

    class State(models.TextChoices):
        RUNNING = "running", "Running"
        FINISHED = "finished", "Finished, not yet stored"
        APPLIED = "applied", "Stored as the user's summary"
        SUPERSEDED = "superseded", "Not stored: the summary changed meanwhile"
        FAILED = "failed", "The summarizer failed"

    product_id = models.CharField(max_length=128)
    user_id = models.CharField(max_length=128)
    session_id = models.CharField(max_length=128)
    state = models.CharField(max_length=16, choices=State.choices, default=State.RUNNING)
    token = models.CharField(max_length=32)
    lease_expires_at = models.DateTimeField()
    run = models.ForeignKey(SummaryRun, null=True, blank=True, on_delete=models.SET_NULL)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product_id", "user_id", "session_id"], name="summary_claim_session")
        ]

    def __str__(self) -> str:
        return f"{self.product_id}/{self.user_id}/{self.session_id} {self.state}"
