"""Erase users everywhere, in bulk: ``manage.py autoplay_erase P U [U ...] [--from-file F]``.

Each user is erased as the API's ``DELETE`` does (the primary, the summary
runs, each sink asked), with a receipt per user, recorded in the audit log
as done by this command. Resumable: an erase is idempotent, so re-running
the same list after an interruption finishes the users left and returns the
receipts of those done, without asking the vendors twice.
``--retry`` asks the sinks whose deletions are due again (the background
retries do the same in every server process).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from autoplay_storage import services
from autoplay_storage.audit import Action, Actor, arecord
from autoplay_storage.errors import StorageUnavailableError

ACTOR = "manage.py autoplay_erase"


def read_ids(path: str) -> list[str]:
    """One user id per line; blank lines and ``#`` comments are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc}") from exc
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class Command(BaseCommand):
    help = "Erase users everywhere (the primary, every snapshot, the sinks), with a receipt each; safe to re-run."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("product_id", nargs="?", help="the product")
        parser.add_argument("user_ids", nargs="*", help="user ids to erase")
        parser.add_argument("--from-file", help="a file of user ids, one per line")
        parser.add_argument("--retry", action="store_true", help="only ask the sinks whose deletions are due again")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["retry"]:
            due = asyncio.run(services.retry_sink_erasures())
            self.stdout.write(f"Asked {due} sink deletion(s) that were due.")
            return
        product_id = options.get("product_id")
        users = list(options["user_ids"])
        if options.get("from_file"):
            users += read_ids(options["from_file"])
        users = list(dict.fromkeys(users))
        if not product_id or not users:
            raise CommandError("give a product id and at least one user id (or --from-file)")
        counts = asyncio.run(self._erase(product_id, users))
        self.stdout.write(
            f"Erased {counts['erased']} user(s); {counts['repeated']} already erased (same receipt); "
            f"{counts['failed']} failed (storage unavailable: run the same command again to resume)."
        )
        if counts["failed"]:
            raise CommandError(f"{counts['failed']} user(s) not erased")

    async def _erase(self, product_id: str, users: list[str]) -> dict[str, int]:
        counts = {"erased": 0, "repeated": 0, "failed": 0}
        for user_id in tqdm(users, desc="erasing", unit="user", disable=None):
            try:
                receipt, created = await services.erase_user(product_id, user_id, requested_by=f"system:{ACTOR}")
            except StorageUnavailableError as exc:
                counts["failed"] += 1
                self.stderr.write(f"{user_id}: {exc}")
                continue
            counts["erased" if created else "repeated"] += 1
            await arecord(
                Action.USER_ERASE,
                actor=Actor.system(ACTOR),
                product_id=product_id,
                user_id=user_id,
                details={"erasure": receipt["id"], "repeat": not created},
            )
        return counts
