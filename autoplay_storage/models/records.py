"""Records of the database adapter.

The wire JSON document is the truth (``document``); the other columns are
copies kept for browsing (filters, sorts, counts) and are rewritten from the
document on every save.
"""

from __future__ import annotations

from django.db import models


class UserStateRecord(models.Model):
    product_id = models.CharField(max_length=128)
    user_id = models.CharField(max_length=128)
    document = models.TextField(help_text="The UserAdoptionState wire JSON, as stored.")
    version = models.BigIntegerField(default=1, help_text="Bumped on every write.")
    journey_state = models.CharField(max_length=32, default="onboarding")
    mastery_level = models.CharField(max_length=32, default="novice")
    mastery_rating = models.SmallIntegerField(default=0)
    completion_rate = models.FloatField(default=0.0)
    onboarded = models.BooleanField(default=False)
    sessions_count = models.IntegerField(default=0)
    first_seen_at = models.FloatField(default=0.0)
    last_activity_at = models.FloatField(default=0.0)
    search_text = models.TextField(default="", blank=True, help_text="Lower-cased search terms, one per line.")
    corrupt = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["product_id", "user_id"], name="uniq_user_state")]
        indexes = [
            models.Index(fields=["product_id", "-last_activity_at"], name="state_activity"),
            models.Index(fields=["product_id", "journey_state", "-last_activity_at"], name="state_journey"),
            models.Index(fields=["product_id", "mastery_level", "-last_activity_at"], name="state_mastery"),
            models.Index(fields=["product_id", "onboarded", "-last_activity_at"], name="state_onboarded"),
        ]

    def __str__(self) -> str:
        return f"{self.product_id}/{self.user_id}"


class SessionSnapshotRecord(models.Model):
    product_id = models.CharField(max_length=128)
    user_id = models.CharField(max_length=128)
    session_id = models.CharField(max_length=128)
    document = models.TextField(help_text="The SessionSnapshot wire JSON, frozen.")
    session_number = models.IntegerField(default=0)
    started_at = models.FloatField(default=0.0)
    captured_at = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Write-once is enforced by the database, not by a read before the write.
            models.UniqueConstraint(fields=["product_id", "user_id", "session_id"], name="uniq_session_snapshot")
        ]
        indexes = [models.Index(fields=["product_id", "user_id", "-captured_at"], name="snapshot_history")]

    def __str__(self) -> str:
        return f"{self.product_id}/{self.user_id}/{self.session_id}"
