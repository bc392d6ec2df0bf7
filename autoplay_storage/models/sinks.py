"""Analytics sink destinations, configured by admins in the console."""

from __future__ import annotations

from django.db import models


class SinkDestination(models.Model):
    class Kind(models.TextChoices):
        POSTHOG = "posthog", "PostHog"
        AMPLITUDE = "amplitude", "Amplitude"

    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    host = models.URLField(blank=True, help_text="API host / server URL; blank for the vendor's default (US cloud).")
    property_prefix = models.CharField(max_length=32, blank=True)
    api_key_encrypted = models.TextField(blank=True, help_text="Encrypted at rest; never shown again.")
    api_key_env = models.CharField(
        max_length=128, blank=True, help_text="Or: the name of an environment variable holding the key."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_count = models.BigIntegerField(default=0)
    failed_count = models.BigIntegerField(default=0)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]
        permissions = [("send_test_event", "Can send a test event to a sink")]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"
