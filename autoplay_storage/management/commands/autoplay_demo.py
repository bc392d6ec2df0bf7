"""Load demo users into a product, through the engine, with a progress bar."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from autoplay_storage.demo import DEMO_PRODUCT, load_users
from autoplay_storage.runtime import get_storage, primary_kind
from autoplay_storage.summary_runs import recorded_summarizer


class Command(BaseCommand):
    help = "Load N realistic demo users (several sessions each) into a product on the configured primary."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, required=True, help="how many users to add")
        parser.add_argument("--product", default=DEMO_PRODUCT, help=f"product id (default {DEMO_PRODUCT})")
        parser.add_argument("--sessions", type=int, default=6, help="most sessions per user (each gets 1..K)")
        parser.add_argument("--seed", type=int, default=None, help="random seed, for a reproducible load")
        parser.add_argument("--concurrency", type=int, default=50, help="users loaded at once")
        parser.add_argument(
            "--direct",
            action="store_true",
            help="write finished documents (fast bulk load) instead of driving each session through the lifecycle",
        )
        parser.add_argument(
            "--no-record-runs", action="store_true", help="do not record a summary run per session (faster)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        users, sessions, concurrency = options["users"], options["sessions"], options["concurrency"]
        if users < 1 or sessions < 1 or concurrency < 1:
            raise CommandError("--users, --sessions and --concurrency must be at least 1")
        if not options["product"].strip():
            raise CommandError("--product cannot be empty")
        mode = "direct" if options["direct"] else "lifecycle"
        self.stdout.write(
            f"Loading {users} users (1-{sessions} sessions each) into {options['product']!r} "
            f"on the {primary_kind()} primary ({mode})"
        )
        started = time.perf_counter()
        asyncio.run(self._load(options))
        elapsed = time.perf_counter() - started
        self.stdout.write(self.style.SUCCESS(f"Loaded {users} users in {elapsed:.1f} s ({users / elapsed:.0f}/s)"))

    async def _load(self, options: dict[str, Any]) -> None:
        storage = get_storage()
        record = not options["direct"] and not options["no_record_runs"]
        try:
            with tqdm(total=options["users"], unit="user", disable=options["verbosity"] == 0) as bar:
                await load_users(
                    storage,
                    options["product"],
                    options["users"],
                    max_sessions=options["sessions"],
                    seed=options["seed"],
                    direct=options["direct"],
                    concurrency=options["concurrency"],
                    summarizer_for=recorded_summarizer if record else None,
                    progress=bar.update,
                )
        finally:
            await storage.aclose()
