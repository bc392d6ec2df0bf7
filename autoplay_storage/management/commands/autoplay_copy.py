"""Copy every user state and session snapshot from one primary to another (Redis <-> database).

How a team moves between primaries. It walks the source through the
browsing interface every primary offers (products, then users by last
activity ascending, then each user's full session history) and writes through
the target's own adapter, so indexes and browse columns are built as usual.

Idempotent and resumable:

- snapshots are write-once on every primary, so writing one again is a no-op;
- a state is copied only when the target has none or an older one
  (``last_updated_at``), in one atomic update on the target;
- progress is a position (product, users cursor); an interrupted run prints
  ``--resume-from TOKEN`` and re-running from the start is always safe too.
  Users are walked oldest activity first, so one updated during the copy
  moves behind the walk and is visited again.

A corrupt document (not a JSON object) is copied as its raw text when the
target can store raw text (the database adapter), so it stays recoverable
there; otherwise it is listed, and the command exits with an error after
copying everything else. Nothing is dropped silently.

A Redis source is reindexed first (``autoplay_reindex``), so documents other
writers left unindexed (the published SDK) are copied too.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from autoplay_storage import codec
from autoplay_storage.browse import UserQuery
from autoplay_storage.errors import CorruptDocumentError, StorageError
from autoplay_storage.runtime import redis_options, storage_settings

KINDS = ("redis", "database")


def encode_position(product_id: str, cursor: str | None) -> str:
    """A resume token: where the walk of the source stands."""
    return base64.urlsafe_b64encode(json.dumps([product_id, cursor]).encode()).decode()


def decode_position(token: str) -> tuple[str, str | None]:
    try:
        product_id, cursor = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, binascii.Error, UnicodeError) as exc:
        raise CommandError(f"--resume-from: not a token printed by autoplay_copy: {token!r}") from exc
    if not isinstance(product_id, str) or not (cursor is None or isinstance(cursor, str)):
        raise CommandError(f"--resume-from: not a token printed by autoplay_copy: {token!r}")
    return product_id, cursor


def _updated_at(doc: dict[str, Any]) -> float:
    value = doc.get("last_updated_at")
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


@dataclass
class Tally:
    users: int = 0
    states_copied: int = 0
    states_current: int = 0  # the target already had this state or a newer one
    snapshots: int = 0
    raw_copied: int = 0
    problems: list[str] = field(default_factory=list)


class Command(BaseCommand):
    help = "Copy every user state and session snapshot between primaries (resumable, idempotent)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--from", dest="source", choices=KINDS, required=True)
        parser.add_argument("--to", dest="target", choices=KINDS, required=True)
        parser.add_argument("--redis-url", help="the Redis side (default: settings REDIS_URL)")
        parser.add_argument("--database", default="default", help="the Django database alias of the database side")
        parser.add_argument("--resume-from", help="a token printed by an interrupted run")
        parser.add_argument("--batch", type=int, default=200, help="users per page of the source (1..500)")
        parser.add_argument("--concurrency", type=int, default=8, help="users copied at once")
        parser.add_argument(
            "--skip-reindex", action="store_true", help="trust the Redis source's indexes (no reindex first)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["source"] == options["target"]:
            raise CommandError("--from and --to must differ")
        if not 1 <= options["batch"] <= 500:
            raise CommandError("--batch must be between 1 and 500")
        if options["concurrency"] < 1:
            raise CommandError("--concurrency must be at least 1")
        redis_url = options.get("redis_url") or storage_settings().get("REDIS_URL")
        if not redis_url and not storage_settings().get("REDIS_SENTINELS"):
            raise CommandError("no Redis configured: set REDIS_URL (or AUTOPLAY_REDIS_SENTINELS) or pass --redis-url")
        resume = decode_position(options["resume_from"]) if options.get("resume_from") else None
        self.position: str | None = options.get("resume_from")
        try:
            tally = asyncio.run(self._copy(options, redis_url, resume))
        except (StorageError, OSError) as exc:
            raise CommandError(f"{exc}{self._resume_hint()}") from exc
        except KeyboardInterrupt:
            raise CommandError(f"interrupted{self._resume_hint()}") from None
        self.stdout.write(
            f"Copied {options['source']} -> {options['target']}: {tally.users} users, "
            f"{tally.states_copied} states written ({tally.states_current} already current), "
            f"{tally.snapshots} snapshots written once, {tally.raw_copied} corrupt documents copied as raw text."
        )
        if tally.problems:
            for problem in tally.problems:
                self.stderr.write(problem)
            raise CommandError(f"{len(tally.problems)} documents were not copied (listed above); fix them and re-run")

    def _resume_hint(self) -> str:
        return f"; resume with --resume-from {self.position}" if self.position else ""

    def _adapter(self, kind: str, options: dict[str, Any], redis_url: str) -> Any:
        if kind == "database":
            from autoplay_storage.adapters.database import DatabaseStorageAdapter

            return DatabaseStorageAdapter(options["database"])
        from autoplay_storage.adapters.redis import RedisStorageAdapter

        # The copy reads and writes plain documents: no WAIT per session end, no cache worth keeping.
        overrides: dict[str, Any] = {"wait_replicas": 0}
        if redis_url != storage_settings().get("REDIS_URL"):  # --redis-url: this very server
            overrides.update(redis_url=redis_url, sentinels=())
        return RedisStorageAdapter(**redis_options(**overrides))

    async def _copy(self, options: dict[str, Any], redis_url: str, resume: tuple[str, str | None] | None) -> Tally:
        source = self._adapter(options["source"], options, redis_url)
        target = self._adapter(options["target"], options, redis_url)
        tally = Tally()
        try:
            await source.ping()
            await target.ping()
            if options["source"] == "redis" and not options["skip_reindex"]:
                await self._reindex(source)
            products = await source.list_products()
            if resume is not None:
                products = [p for p in products if p.product_id >= resume[0]]
            bar = tqdm(total=sum(p.user_count for p in products), unit="user", desc="copy", file=self.stderr._out)
            gate = asyncio.Semaphore(options["concurrency"])
            try:
                for product in products:
                    cursor = resume[1] if resume is not None and product.product_id == resume[0] else None
                    while True:
                        self.position = encode_position(product.product_id, cursor)
                        page = await source.list_users(
                            product.product_id, UserQuery(order="last_activity"), cursor=cursor, limit=options["batch"]
                        )
                        await asyncio.gather(
                            *(
                                self._copy_user(source, target, product.product_id, row.user_id, tally, gate)
                                for row in page.items
                            )
                        )
                        bar.update(len(page.items))
                        if page.next_cursor is None:
                            break
                        cursor = page.next_cursor
                self.position = None
            finally:
                bar.close()
        finally:
            await source.aclose()
            await target.aclose()
        return tally

    async def _reindex(self, source: Any) -> None:
        bar = tqdm(unit="key", desc="reindex source", file=self.stderr._out)

        def progress(advanced: int, total: int) -> None:
            bar.total = max(total, bar.n + advanced)
            bar.update(advanced)

        try:
            await source.reindex(progress)
        finally:
            bar.close()

    async def _copy_user(
        self, source: Any, target: Any, product_id: str, user_id: str, tally: Tally, gate: asyncio.Semaphore
    ) -> None:
        async with gate:
            # Snapshots first, as a session end does: the state refers to them.
            cursor = None
            while True:
                page = await source.list_sessions(product_id, user_id, cursor=cursor, limit=500, newest_first=False)
                for row in page.items:
                    await self._copy_snapshot(source, target, product_id, user_id, row.session_id, tally)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            await self._copy_state(source, target, product_id, user_id, tally)
            tally.users += 1

    async def _copy_snapshot(
        self, source: Any, target: Any, product_id: str, user_id: str, session_id: str, tally: Tally
    ) -> None:
        raw = await source.get_raw_session_snapshot(product_id, user_id, session_id)
        if raw is None:  # expired since it was listed
            return
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            try:
                await target.save_session_snapshot(product_id, user_id, session_id, doc)
            except ValueError as exc:  # e.g. NaN, which JSON-strict targets refuse
                tally.problems.append(f"snapshot {product_id}/{user_id}/{session_id} refused by the target: {exc}")
                return
            tally.snapshots += 1
        elif hasattr(target, "save_raw_session_snapshot"):
            await target.save_raw_session_snapshot(product_id, user_id, session_id, raw)
            tally.raw_copied += 1
        else:
            tally.problems.append(f"corrupt snapshot {product_id}/{user_id}/{session_id}: {raw[:200]!r}")

    async def _copy_state(self, source: Any, target: Any, product_id: str, user_id: str, tally: Tally) -> None:
        raw = await source.get_raw_user_state(product_id, user_id)
        if raw is None:
            return
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            # Raw text only where nothing is stored yet: never replace a readable state with a corrupt one.
            if hasattr(target, "save_raw_user_state") and await target.get_raw_user_state(product_id, user_id) is None:
                await target.save_raw_user_state(product_id, user_id, raw)
                tally.raw_copied += 1
            elif await target.get_raw_user_state(product_id, user_id) != raw:
                tally.problems.append(f"corrupt user state {product_id}/{user_id}: {raw[:200]!r}")
            return
        written: list[bool] = []

        def newer(current: dict[str, Any] | None) -> dict[str, Any] | None:
            keep = current is not None and _updated_at(current) >= _updated_at(doc)
            written.append(not keep)
            return None if keep else doc

        try:
            codec.dumps_strict(doc)  # NaN/Infinity: refused and reported, never silently nulled
            await target.update_user_state(product_id, user_id, newer)
        except CorruptDocumentError as exc:
            tally.problems.append(f"target user state {product_id}/{user_id} is corrupt, left as it is: {exc}")
            return
        except ValueError as exc:
            tally.problems.append(f"user state {product_id}/{user_id} refused by the target: {exc}")
            return
        if written[-1]:
            tally.states_copied += 1
        else:
            tally.states_current += 1
