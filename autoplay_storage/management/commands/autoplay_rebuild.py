"""Rebuild user states that cannot be read (not JSON, not an object, an unknown ``_v``) from their snapshots.

``autoplay_rebuild P U`` or ``autoplay_rebuild --all-unreadable [--product P]``.
For each user: the snapshots are replayed (progress bar), the rebuilt state
is previewed and the command asks before writing (``--yes`` skips the
question). The unreadable text is kept (``QuarantinedState``, downloadable
from the user page), the write is a compare-and-set against that very text
(a repair made meanwhile wins), and each rebuild is in the audit log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from autoplay_storage.audit import Action, Actor, arecord
from autoplay_storage.errors import StorageError
from autoplay_storage.runtime import get_storage
from autoplay_storage.support import rebuild
from autoplay_storage.user_adoption_state import WorkflowStatus

ACTOR = "manage.py autoplay_rebuild"


class Command(BaseCommand):
    help = "Rebuild unreadable user states from their frozen snapshots (preview, confirm, compare-and-set)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("product_id", nargs="?")
        parser.add_argument("user_id", nargs="?")
        parser.add_argument("--all-unreadable", action="store_true", help="every user whose state cannot be read")
        parser.add_argument("--product", help="with --all-unreadable: only this product")
        parser.add_argument("--yes", action="store_true", help="write without asking")

    def handle(self, *args: Any, **options: Any) -> None:
        one = options["product_id"] is not None and options["user_id"] is not None
        if one == options["all_unreadable"]:
            raise CommandError("name one user (PRODUCT USER) or pass --all-unreadable")
        try:
            counts = asyncio.run(self._run(options, one))
        except StorageError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write("Rebuilt {rebuilt}, skipped {skipped}, superseded {superseded}.".format(**counts))

    async def _run(self, options: dict[str, Any], one: bool) -> dict[str, int]:
        counts = {"rebuilt": 0, "skipped": 0, "superseded": 0}
        try:
            if one:
                users = [(options["product_id"], options["user_id"])]
            else:
                users = [u async for u in rebuild.unreadable_users(options.get("product"))]
                self.stdout.write(f"{len(users)} unreadable user state{'s' if len(users) != 1 else ''} found.")
            for product_id, user_id in users:
                outcome = await self._one(product_id, user_id, options["yes"])
                counts[outcome] += 1
        finally:
            await get_storage().aclose()
        return counts

    async def _one(self, product_id: str, user_id: str, yes: bool) -> str:
        bar = tqdm(desc=f"{product_id}/{user_id}: replaying snapshots", unit="session", disable=None)
        try:
            plan = await rebuild.plan_rebuild(product_id, user_id, progress=lambda _sid: bar.update(1))
        except rebuild.NothingToRebuild as exc:
            self.stdout.write(f"Nothing to rebuild: {exc}.")
            return "skipped"
        finally:
            bar.close()
        self._preview(plan)
        if not yes and not await asyncio.to_thread(self._confirm, input):
            self.stdout.write("Not written.")
            return "skipped"
        outcome = await rebuild.rebuild(plan, actor=ACTOR)
        await arecord(
            Action.STATE_REBUILD,
            actor=Actor.system(ACTOR),
            product_id=product_id,
            user_id=user_id,
            details={
                "written": outcome.written,
                "quarantine_id": outcome.quarantine.pk,
                "reason": plan.reason,
                "sessions_replayed": len(plan.replayed),
                "sessions_skipped": sorted(plan.skipped),
            },
        )
        if not outcome.written:
            self.stdout.write(
                self.style.WARNING(
                    f"Not rebuilt: the stored state of {user_id} changed meanwhile (a repair won); "
                    f"the unreadable text is kept as quarantine #{outcome.quarantine.pk}."
                )
            )
            return "superseded"
        self.stdout.write(
            self.style.SUCCESS(
                f"Rebuilt {product_id}/{user_id}; unreadable text kept as quarantine #{outcome.quarantine.pk}."
            )
        )
        return "rebuilt"

    def _preview(self, plan: rebuild.RebuildPlan) -> None:
        state = plan.state
        raw = plan.raw if len(plan.raw) <= 200 else plan.raw[:200] + "…"
        done = state.workflow_ids_with_status(WorkflowStatus.COMPLETED)
        lines = [
            f"{plan.product_id}/{plan.user_id}: unreadable ({plan.reason})",
            f"  stored text: {raw!r}",
            f"  rebuilt from {len(plan.replayed)} session(s)"
            + (f"; skipped unreadable: {', '.join(sorted(plan.skipped))}" if plan.skipped else ""),
            f"  journey {state.journey_state.value}, mastery {state.mastery.level.value} {state.mastery.rating}/10, "
            f"completion {state.onboarding.completion_rate:.0%}, completed workflows: {', '.join(done) or 'none'}",
            f"  features: {', '.join(state.discovered_features) or 'none'}",
            f"  summary: {state.onboarding.summary or 'none'}"
            + (f" ({plan.summary_from})" if plan.summary_from else ""),
        ]
        self.stdout.write("\n".join(lines))

    def _confirm(self, ask: Callable[[str], str]) -> bool:
        return ask("Write this state? [y/N] ").strip().lower() in {"y", "yes"}
