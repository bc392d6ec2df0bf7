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
from autoplay_storage.runtime import redis_options, storage_settings


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
        if not (options.get("redis_url") or cfg.get("REDIS_URL") or cfg.get("REDIS_SENTINELS")):
            raise CommandError("no Redis configured: set REDIS_URL (or AUTOPLAY_REDIS_SENTINELS) or pass --redis-url")
        overrides: dict[str, Any] = {}
        if options.get("redis_url"):  # this very server, not the one Sentinel names
            overrides.update(redis_url=options["redis_url"], sentinels=())
        if options.get("cluster") is not None:
            overrides["cluster"] = options["cluster"]
        try:
            counts = asyncio.run(self._run(redis_options(**overrides)))
        except StorageUnavailableError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            "Reindexed {states} user states and {snapshots} snapshots "
            "({corrupt} corrupt, {pruned} stale entries dropped, {keys_scanned} keys scanned).".format(**counts)
        )

    async def _run(self, adapter_options: dict[str, Any]) -> dict[str, int]:
        from autoplay_storage.adapters.redis import RedisStorageAdapter

        adapter = RedisStorageAdapter(**adapter_options)
        bar = tqdm(unit="key", desc="reindex", file=self.stderr._out, disable=False)

        def progress(advanced: int, total: int) -> None:
            bar.total = max(total, bar.n + advanced)
            bar.update(advanced)

        try:
            return await adapter.reindex(progress)
        finally:
            bar.close()
            await adapter.aclose()
