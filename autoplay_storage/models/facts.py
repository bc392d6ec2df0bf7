"""Insight records of the database adapter: per-user workflow and metadata facts, per-product counters.

Rewritten from the documents as a diff in the transaction of every state
write (``adapters/database_facts.py``); ``autoplay_reindex`` rebuilds them.
The filters on journey, mastery, onboarding, activity, first seen and
session count run on ``UserStateRecord``'s columns; these add what a
document holds in lists and maps.
"""

from __future__ import annotations

from django.db import models

from .records import UserStateRecord


class UserWorkflowFact(models.Model):
    """A workflow a user has in progress or completed (never touched: no row)."""

    state = models.ForeignKey(UserStateRecord, on_delete=models.CASCADE, related_name="workflow_facts")
    product_id = models.CharField(max_length=128)
    user_id = models.CharField(max_length=128)
    workflow_id = models.CharField(max_length=128)
    status = models.CharField(max_length=16)
    last_progress_at = models.FloatField(default=0.0)
    evidence = models.TextField(default="", blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["state", "workflow_id"], name="uniq_workflow_fact")]
        indexes = [
            models.Index(fields=["product_id", "workflow_id", "status", "state"], name="wf_fact_status"),
            models.Index(fields=["product_id", "status", "last_progress_at"], name="wf_fact_stuck"),
        ]

    def __str__(self) -> str:
        return f"{self.product_id}/{self.user_id}: {self.workflow_id} {self.status}"


class UserMetadataFact(models.Model):
    """One string metadata pair of a user, for the key = value filter."""

    state = models.ForeignKey(UserStateRecord, on_delete=models.CASCADE, related_name="metadata_facts")
    product_id = models.CharField(max_length=128)
    key = models.CharField(max_length=64)
    value = models.CharField(max_length=100)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["state", "key"], name="uniq_metadata_fact")]
        indexes = [models.Index(fields=["product_id", "key", "value", "state"], name="meta_fact_value")]

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


class ProductCounter(models.Model):
    """A product's number (users, a workflow's status, a cohort, a day's sessions), split over shards.

    Writers of different users add to different shards, so session ends do
    not queue on one hot row; a reader sums the shards.
    """

    product_id = models.CharField(max_length=128)
    name = models.CharField(max_length=200)
    shard = models.SmallIntegerField(default=0)
    value = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["product_id", "name", "shard"], name="uniq_product_counter")]

    def __str__(self) -> str:
        return f"{self.product_id} {self.name}[{self.shard}] = {self.value}"
