"""API keys for agents: shown once, stored hashed, scoped to products, revocable.

A key reads ``ap_<prefix>_<secret>``. The prefix is stored in clear and
indexed so a lookup is one row by a unique column; the whole key is stored
only as its SHA-256 (keys are 256-bit random strings, so a slow password hash
would add latency without adding safety).
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

KEY_SCHEME = "ap"


class Scope(models.TextChoices):
    """What a key may do: ``read`` the GET routes, ``write`` the others, ``admin`` the sensitive ones (erasure)."""

    READ = "read", "Read states, history and context"
    WRITE = "write", "Start and end sessions, change states"
    ADMIN = "admin", "Sensitive actions such as erasing a user"


DEFAULT_SCOPES = [Scope.READ.value, Scope.WRITE.value]


def default_scopes() -> list[str]:
    return list(DEFAULT_SCOPES)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def validate_limit(rate: float | None, burst: int | None) -> str | None:
    """What is wrong with a rate limit, or ``None``."""
    if rate is None:
        return "a burst needs a rate" if burst is not None else None
    if not 0 < rate <= 1_000_000:
        return "the rate must be more than 0 and at most 1000000 requests per second"
    if burst is not None and not 1 <= burst <= 1_000_000:
        return "the burst must be 1 to 1000000 requests"
    return None


def split_key(key: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of a well-formed key, else ``None``."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != 8 or not parts[2]:
        return None
    return parts[1], parts[2]


class ApiKey(models.Model):
    name = models.CharField(max_length=100, help_text="Who or what uses this key, e.g. 'support agent (prod)'.")
    prefix = models.CharField(max_length=8, unique=True, editable=False, help_text="Shown to tell keys apart.")
    key_hash = models.CharField(max_length=64, editable=False)
    products = models.JSONField(default=list, help_text="Product ids this key may use.")
    scopes = models.JSONField(default=default_scopes, help_text="What the key may do: read, write, admin.")
    rate = models.FloatField(
        null=True,
        blank=True,
        help_text="Requests per second this key may make (all workers together); empty: no limit.",
    )
    burst = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests it may make at once after a quiet spell; empty: one second's worth of the rate.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} (ap_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def allows(self, product_id: str) -> bool:
        return product_id in self.products

    @classmethod
    def issue(
        cls,
        name: str,
        products: list[str],
        created_by: object = None,
        scopes: list[str] | None = None,
        rate: float | None = None,
        burst: int | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; returns the row and the full key, which is never available again."""
        while True:
            prefix = secrets.token_hex(4)
            if not cls.objects.filter(prefix=prefix).exists():
                break
        key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
        row = cls.objects.create(
            name=name,
            prefix=prefix,
            key_hash=hash_key(key),
            products=sorted(set(products)),
            scopes=sorted(set(DEFAULT_SCOPES if scopes is None else scopes)),
            rate=rate,
            burst=burst,
            created_by=created_by if getattr(created_by, "is_authenticated", False) else None,
        )
        return row, key

    def audit_details(self) -> dict[str, object]:
        """What the audit log records of a key: never the key, only its prefix."""
        return {"key": f"{KEY_SCHEME}_{self.prefix}_…", "name": self.name, "products": self.products,
                "scopes": self.scopes, "rate": self.rate, "burst": self.burst}

    def revoke(self) -> bool:
        """Revoke once; returns whether this call revoked it.

        Every worker refuses the key once this returns (``api.auth.forget``:
        a new revocation generation in the shared cache, then a 0.5 s wait).
        """
        from .auth import forget

        if self.revoked_at is not None:
            forget(self.key_hash)
            return False
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])
        forget(self.key_hash)
        return True


class RateLimitState(models.Model):
    """The rate limiter's state of one key when the database is the primary (api/ratelimit.py)."""

    key = models.CharField(max_length=64, primary_key=True)
    state = models.JSONField(default=list)

    class Meta:
        verbose_name = "rate limit state"
