"""Rebuild the Redis browsing indexes from the documents themselves.

Data written by another writer (the published SDK, a restore, a hand edit)
has no index entries, so the console cannot list it. This command SCANs the
two wire key patterns and (re)writes every index entry; every write is
idempotent, so it is safe to re-run and to run while agents keep writing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from autoplay_storage.errors import StorageUnavailableError
from autoplay_storage.runtime import storage_settings


class Command(BaseCommand):
    help = "Rebuild the autoplay:idx:* browsing indexes from a SCAN of the state and snapshot keys (safe to re-run)."

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
        url = options.get("redis_url") or cfg.get("REDIS_URL")
        if not url:
            raise CommandError("no Redis configured: set REDIS_URL or pass --redis-url")
        cluster = options["cluster"] if options.get("cluster") is not None else bool(cfg.get("REDIS_CLUSTER"))
        try:
            counts = asyncio.run(self._run(url, cluster))
        except StorageUnavailableError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            "Reindexed {states} user states and {snapshots} snapshots "
            "({corrupt} corrupt, {pruned} stale entries dropped, {keys_scanned} keys scanned).".format(**counts)
        )

    async def _run(self, url: str, cluster: bool) -> dict[str, int]:
        from autoplay_storage.adapters.redis import RedisStorageAdapter

        adapter = RedisStorageAdapter(url, cluster=cluster)
        bar = tqdm(unit="key", desc="reindex", file=self.stderr._out, disable=False)

        def progress(advanced: int, total: int) -> None:
            bar.total = max(total, bar.n + advanced)
            bar.update(advanced)

        try:
            return await adapter.reindex(progress)
        finally:
            bar.close()
            await adapter.aclose()
