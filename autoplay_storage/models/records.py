"""Records of the database adapter.

The wire JSON document is the truth (``document``); the other columns are
copies kept for browsing (filters, sorts, counts) and are rewritten from the
document on every save. Every browse index ends in the keyset columns
(``last_activity_at, user_id`` / ``captured_at, session_id``), so a page is
one index range scan however deep the cursor is.
"""

from __future__ import annotations

from django.db import models

# PostgreSQL only (other backends ignore opclasses): lets ``LIKE 'prefix%'``
# use the index whatever the database collation is.
_PATTERN_OPS = ["varchar_pattern_ops", "varchar_pattern_ops"]


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
    search_text = models.TextField(
        default="", blank=True, help_text="The search terms held in UserSearchTerm, sorted, one per line."
    )
    corrupt = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["product_id", "user_id"], name="uniq_user_state")]
        indexes = [
            models.Index(fields=["product_id", "last_activity_at", "user_id"], name="state_activity_k"),
            models.Index(fields=["product_id", "journey_state", "last_activity_at", "user_id"], name="state_journey_k"),
            models.Index(fields=["product_id", "mastery_level", "last_activity_at", "user_id"], name="state_mastery_k"),
            models.Index(fields=["product_id", "onboarded", "last_activity_at", "user_id"], name="state_onboarded_k"),
        ]

    def __str__(self) -> str:
        return f"{self.product_id}/{self.user_id}"


class UserSearchTerm(models.Model):
    """One lower-cased value a user is found by (the user id, a metadata string): prefix search by index."""

    state = models.ForeignKey(UserStateRecord, on_delete=models.CASCADE, related_name="search_terms")
    product_id = models.CharField(max_length=128)
    term = models.CharField(max_length=200)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["state", "term"], name="uniq_search_term")]
        indexes = [models.Index(fields=["product_id", "term"], name="search_term_prefix", opclasses=_PATTERN_OPS)]

    def __str__(self) -> str:
        return self.term


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
        indexes = [
            models.Index(fields=["product_id", "user_id", "captured_at", "session_id"], name="snapshot_history_k")
        ]

    def __str__(self) -> str:
        return f"{self.product_id}/{self.user_id}/{self.session_id}"
