"""Saved segments: a named filter over one product's users, shared by its link."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models


def new_slug() -> str:
    return secrets.token_urlsafe(9)


class Segment(models.Model):
    """``params``: the filter as a query string (``facts.UserFilter.to_params``): a segment opens as a list URL."""

    slug = models.CharField(max_length=32, unique=True, default=new_slug)
    product_id = models.CharField(max_length=128)
    name = models.CharField(max_length=120)
    params = models.JSONField(default=dict)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["product_id", "name"]
        indexes = [models.Index(fields=["product_id", "name"], name="segment_product")]

    def __str__(self) -> str:
        return f"{self.product_id}: {self.name}"
