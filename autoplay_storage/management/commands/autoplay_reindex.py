"""Rebuild the Redis browsing indexes from the documents themselves, and list the ids no URL can address.

Data written by another writer (the published SDK, a restore, a hand edit)
has no index entries, so the console cannot list it. On Redis this command
SCANs the two wire key patterns and (re)writes every index entry; every
write is idempotent, so it is safe to re-run and to run while agents keep
writing. The database primary derives its browse columns on every write, so
there is nothing to rebuild there; on either primary the command lists the
documents filed under an id made only of dots (``autoplay_storage.ids``),
which the agents' API refuses and agents therefore cannot reach.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from autoplay_storage.errors import StorageUnavailableError
from autoplay_storage.runtime import primary_kind, redis_options, storage_settings

Unaddressable = tuple[str, str, str | None]
"""``(product_id, user_id, session_id)``; the session id is ``None`` for a user state."""


class Command(BaseCommand):
    help = (
        "Rebuild the autoplay:idx:* browsing indexes from a SCAN of the state and snapshot keys (safe to re-run); "
        "list documents under ids made only of dots, on Redis or the database primary."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--redis-url", help="Redis to reindex (default: settings REDIS_URL)")
        parser.add_argument(
            "--cluster",
            action="store_true",
            default=None,
            help="hash-tagged cluster keys (default: settings REDIS_CLUSTER)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cfg = storage_settings()
        found: list[Unaddressable] = []
        if options.get("redis_url") or cfg.get("REDIS_URL") or cfg.get("REDIS_SENTINELS"):
            overrides: dict[str, Any] = {}
            if options.get("redis_url"):  # this very server, not the one Sentinel names
                overrides.update(redis_url=options["redis_url"], sentinels=())
            if options.get("cluster") is not None:
                overrides["cluster"] = options["cluster"]
            try:
                counts = asyncio.run(self._run(redis_options(**overrides), found))
            except StorageUnavailableError as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(
                "Reindexed {states} user states and {snapshots} snapshots "
                "({corrupt} corrupt, {pruned} stale entries dropped, {keys_scanned} keys scanned).".format(**counts)
            )
        elif primary_kind() == "database":
            found = database_unaddressable(cfg.get("DATABASE_ALIAS") or "default")
            self.stdout.write(
                "The database primary keeps its browse columns current on every write: nothing to rebuild."
            )
        else:
            raise CommandError(
                "no Redis configured: set REDIS_URL (or AUTOPLAY_REDIS_SENTINELS) or pass --redis-url"
            )
        self._report(found)

    def _report(self, found: list[Unaddressable]) -> None:
        if not found:
            self.stdout.write("No document is filed under an id made only of dots.")
            return
        self.stdout.write(
            f"{len(found)} documents are filed under ids made only of dots, which the agents' API refuses "
            "(HTTP clients rewrite '.' and '..' in a URL path): agents cannot reach them; the console still "
            "opens them. Rename or remove them at the source:"
        )
        for product_id, user_id, session_id in sorted(found, key=lambda f: (f[0], f[1], f[2] or "")):
            where = f"{product_id!r} / {user_id!r}"
            self.stdout.write(f"  snapshot {where} / {session_id!r}" if session_id else f"  state {where}")

    async def _run(self, adapter_options: dict[str, Any], found: list[Unaddressable]) -> dict[str, int]:
        from autoplay_storage.adapters.redis import RedisStorageAdapter

        adapter = RedisStorageAdapter(**adapter_options)
        bar = tqdm(unit="key", desc="reindex", file=self.stderr._out, disable=False)

        def progress(advanced: int, total: int) -> None:
            bar.total = max(total, bar.n + advanced)
            bar.update(advanced)

        try:
            return await adapter.reindex(progress, lambda *ids: found.append(ids))
        finally:
            bar.close()
            await adapter.aclose()


def database_unaddressable(using: str) -> list[Unaddressable]:
    """The states and snapshots of the database primary filed under an id made only of dots."""
    from django.db.models import Q

    from autoplay_storage.models.records import SessionSnapshotRecord, UserStateRecord

    dots = r"^\.+$"
    either = Q(product_id__regex=dots) | Q(user_id__regex=dots)
    states = UserStateRecord.objects.using(using).filter(either).values_list("product_id", "user_id")
    snapshots = (
        SessionSnapshotRecord.objects.using(using)
        .filter(either | Q(session_id__regex=dots))
        .values_list("product_id", "user_id", "session_id")
    )
    return [(p, u, None) for p, u in states] + [(p, u, s) for p, u, s in snapshots]
