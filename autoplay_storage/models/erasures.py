"""Erasures: the receipt of each "forget this user", each sink's deletion request, and the database tombstone.

A receipt keeps ids and outcomes only (counts, vendor job ids, errors),
never the user's data. One receipt per erasure *round*: repeating an erase
of a user who is still gone returns the same receipt; a user who came back
after it (a new session) and is erased again gets the next round.
"""

from __future__ import annotations

import uuid

from django.db import models


class Erasure(models.Model):
    class PrimaryStatus(models.TextChoices):
        PENDING = "pending", "Pending"
        DONE = "done", "Erased"
        FAILED = "failed", "Failed (storage unavailable; retried)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    product_id = models.CharField(max_length=128)
    user_id = models.CharField(max_length=128)
    round = models.PositiveIntegerField(default=1)
    requested_by = models.CharField(max_length=255, help_text="staff:<username>, key:<prefix> <name>, or a command.")
    requested_at = models.DateTimeField(auto_now_add=True)
    primary = models.CharField(max_length=64, help_text="The primary adapter's name.")
    primary_status = models.CharField(max_length=16, choices=PrimaryStatus.choices, default=PrimaryStatus.PENDING)
    primary_removed = models.JSONField(default=dict, help_text="What the primary removed, by kind.")
    summary_rows_removed = models.PositiveIntegerField(default=0)
    primary_error = models.TextField(blank=True)
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        constraints = [models.UniqueConstraint(fields=["product_id", "user_id", "round"], name="uniq_erasure_round")]
        permissions = [
            ("erase_user", "Can erase a user everywhere"),
            ("export_user", "Can download all of a user's data"),
        ]

    def __str__(self) -> str:
        return f"erasure {self.id} of {self.product_id}/{self.user_id}"


class SinkErasure(models.Model):
    """One sink's part of an erasure: asked, retried with backoff, until accepted or given up."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending (retried with backoff)"
        ACCEPTED = "accepted", "Accepted by the vendor"
        FAILED = "failed", "Failed (given up)"
        NOT_CONFIGURED = "not_configured", "Not configured"
        CREDENTIALS_MISSING = "credentials_missing", "Not erased: credentials missing"
        UNSUPPORTED = "unsupported", "Not erased: this sink has no deletion API"

    erasure = models.ForeignKey(Erasure, on_delete=models.CASCADE, related_name="sinks")
    destination = models.CharField(max_length=64, help_text="The sink's name when the erasure was asked.")
    kind = models.CharField(max_length=16)
    status = models.CharField(max_length=24, choices=Status.choices)
    vendor_reference = models.CharField(max_length=255, blank=True, help_text="The vendor's job id or day.")
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["destination"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="sink_erasure_due")]

    def __str__(self) -> str:
        return f"{self.destination}: {self.status}"


class ErasedUser(models.Model):
    """The database primary's tombstone: a session end that started before ``erased_at`` is refused."""

    product_id = models.CharField(max_length=128)
    user_id = models.CharField(max_length=128)
    erased_at = models.FloatField()
    expires_at = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["product_id", "user_id"], name="uniq_erased_user")]

    def __str__(self) -> str:
        return f"{self.product_id}/{self.user_id} erased"
