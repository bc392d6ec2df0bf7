"""Analytics sink destinations, configured by admins in the console.

The API key is stored encrypted (``autoplay_storage.crypto``) or named by an
environment variable, and never shown again after saving. The counters are
written by the sinks runtime (``autoplay_storage.sinks``) with ``UPDATE ...
SET n = n + delta``, which leaves ``updated_at`` alone: ``updated_at`` moves
only when an admin changes the configuration, and that is how every worker
notices a change.
"""

from __future__ import annotations

import os
import re

from django.core.exceptions import ValidationError
from django.db import models

PREFIX_PATTERN = re.compile(r"^([A-Za-z]([A-Za-z0-9_]*[A-Za-z0-9])?)?$")
ENV_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SinkConfigError(Exception):
    """A destination cannot be started as configured (missing key, unreadable key ...)."""


class SinkDestination(models.Model):
    class Kind(models.TextChoices):
        POSTHOG = "posthog", "PostHog"
        AMPLITUDE = "amplitude", "Amplitude"
        WEBHOOK = "webhook", "Webhook"

    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    host = models.URLField(blank=True, help_text="API host / server URL; blank for the vendor's default (US cloud).")
    property_prefix = models.CharField(max_length=32, blank=True)
    api_key_encrypted = models.TextField(blank=True, help_text="Encrypted at rest; never shown again.")
    api_key_env = models.CharField(
        max_length=128, blank=True, help_text="Or: the name of an environment variable holding the key."
    )
    erase_host = models.URLField(
        blank=True, help_text="The vendor's API host for deletions; blank: derived from the host (see docs/erasure.md)."
    )
    erase_project_id = models.CharField(max_length=32, blank=True, help_text="PostHog: the project id.")
    erase_key_encrypted = models.TextField(
        blank=True, help_text="PostHog: a personal API key (person:write); Amplitude: the secret key. Encrypted."
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

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if not PREFIX_PATTERN.match(self.property_prefix):
            errors["property_prefix"] = (
                "Letters, digits and underscores, starting with a letter and not ending with an underscore "
                "(\"ap\" gives property names like ap_journey_state)."
            )
        if self.api_key_env and not ENV_NAME_PATTERN.match(self.api_key_env):
            errors["api_key_env"] = "An environment variable name: letters, digits and underscores, e.g. POSTHOG_KEY."
        if self.kind == self.Kind.WEBHOOK and not self.host:
            errors["host"] = "The URL the events are POSTed to."
        if not self.api_key_encrypted and not self.api_key_env:
            errors["api_key_env"] = "Enter the API key, or the name of an environment variable holding it."
        if errors:
            raise ValidationError(errors)

    def set_api_key(self, plaintext: str) -> None:
        """Store a new key (a webhook's signing secret) encrypted (and stop reading one from the environment)."""
        from ..crypto import encrypt

        self.api_key_encrypted = encrypt(plaintext)
        self.api_key_env = ""

    def set_erase_key(self, plaintext: str) -> None:
        """Store the deletion credential encrypted, like the sink key."""
        from ..crypto import encrypt

        self.erase_key_encrypted = encrypt(plaintext)

    def resolve_erase_key(self) -> str:
        """The deletion credential in clear, or ``SinkConfigError`` when none is stored or it cannot be read."""
        if not self.erase_key_encrypted:
            raise SinkConfigError("no deletion key is configured")
        from ..crypto import SecretUnreadableError, decrypt

        try:
            return decrypt(self.erase_key_encrypted)
        except SecretUnreadableError as exc:
            raise SinkConfigError(str(exc)) from None

    @property
    def key_source(self) -> str:
        if self.api_key_env:
            return f"environment variable {self.api_key_env}"
        return "stored encrypted" if self.api_key_encrypted else "none"

    def resolve_api_key(self) -> str:
        """The key in clear, for the SDK only; raises ``SinkConfigError`` saying what to fix."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env, "")
            if not value:
                raise SinkConfigError(f"the environment variable {self.api_key_env} is not set in this process")
            return value
        if not self.api_key_encrypted:
            raise SinkConfigError("no API key is configured")
        from ..crypto import SecretUnreadableError, decrypt

        try:
            return decrypt(self.api_key_encrypted)
        except SecretUnreadableError as exc:
            raise SinkConfigError(str(exc)) from None


class WebhookDelivery(models.Model):
    """One POST of one webhook event: the delivery log admins read (the newest ``LOG_KEEP`` per destination)."""

    LOG_KEEP = 200

    destination = models.ForeignKey(SinkDestination, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=64)
    attempt = models.PositiveSmallIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    error = models.TextField(blank=True)
    delivered = models.BooleanField()
    at = models.DateTimeField()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["destination", "-id"], name="webhook_delivery_recent")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} #{self.attempt}"
