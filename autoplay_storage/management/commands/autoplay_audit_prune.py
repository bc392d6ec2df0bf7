"""``autoplay_audit_prune --older-than DAYS``: the one way entries leave the audit log.

Deletes in batches (short transactions on a large table) with a progress
bar, then records an ``audit.prune`` entry with the cutoff and the count,
so the log always says when and how far it was cut.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from autoplay_storage.audit import Action, Actor, record
from autoplay_storage.models import AuditEntry

BATCH = 5000


class Command(BaseCommand):
    help = "Delete audit entries older than DAYS days (at least 1); the prune itself is recorded."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=int, required=True, metavar="DAYS", dest="days")

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if days < 1:
            raise CommandError(f"--older-than must be at least 1 day (got {days})")
        cutoff = timezone.now() - timedelta(days=days)
        old = AuditEntry.objects.filter(at__lt=cutoff)
        removed = 0
        with tqdm(total=old.count(), unit="entry", disable=options["verbosity"] == 0, file=self.stderr._out) as bar:
            while batch := old.prune_before(cutoff, batch=BATCH, most=BATCH):
                removed += batch
                bar.update(batch)
        record(
            Action.AUDIT_PRUNE, actor=Actor.system("manage.py autoplay_audit_prune"),
            details={"older_than_days": days, "cutoff": cutoff.isoformat(), "removed": removed},
        )
        self.stdout.write(f"Removed {removed} audit entries older than {cutoff:%Y-%m-%d %H:%M:%S} UTC.")
