"""First-run setup used by ``make run``: roles, demo data, sign-ins to use (lead and support granted the demo product).

Safe to run on every start: roles are refreshed (so permissions added by
later migrations reach the admin role), demo data loads only into an empty
store, and sign-ins are created only when there are no accounts at all.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from tqdm import tqdm

from autoplay_storage.access import change_grants
from autoplay_storage.audit import Actor
from autoplay_storage.demo import DEMO_PRODUCT, load_users
from autoplay_storage.runtime import get_storage, primary_kind
from autoplay_storage.summary_runs import recorded_summarizer
from dashboard.roles import ADMIN, LEAD, SUPPORT, sync_roles

DEMO_USERS = 40
BOOTSTRAP = Actor.system("manage.py autoplay_bootstrap")
# (user name, role, environment variable that may hold the password)
SIGN_INS = [
    ("admin", ADMIN, "AUTOPLAY_ADMIN_PASSWORD"),
    ("lead", LEAD, "AUTOPLAY_LEAD_PASSWORD"),
    ("support", SUPPORT, "AUTOPLAY_SUPPORT_PASSWORD"),
]


class Command(BaseCommand):
    help = "Prepare a fresh console: roles, demo data (unless AUTOPLAY_DEMO=0), printed sign-ins."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--demo-users", type=int, default=DEMO_USERS, help="users in the demo product")

    def handle(self, *args: Any, **options: Any) -> None:
        self.quiet = options["verbosity"] == 0
        # The database cache's table (a no-op on Redis); migrate made it, unless Redis was the cache then.
        call_command("createcachetable", verbosity=0)
        counts = sync_roles(Group, Permission)
        self.stdout.write("Roles: " + ", ".join(f"{role} ({n} permissions)" for role, n in counts.items()))
        if primary_kind() == "memory":
            self.stdout.write("Demo data: skipped, the memory primary lives in the server process, not in this command")
        elif settings.AUTOPLAY_STORAGE.get("DEMO", True):
            asyncio.run(self._demo(options["demo_users"]))
        else:
            self.stdout.write("Demo data: off (AUTOPLAY_DEMO=0)")
        self._sign_ins()

    async def _demo(self, users: int) -> None:
        storage = get_storage()
        try:
            if await storage.browser.list_products():
                self.stdout.write("Demo data: skipped, the store already holds products")
                return
            self.stdout.write(f"Demo data: loading {users} users into {DEMO_PRODUCT!r} on the {primary_kind()} primary")
            with tqdm(total=users, unit="user", disable=self.quiet) as bar:
                await load_users(
                    storage, DEMO_PRODUCT, users, max_sessions=7, summarizer_for=recorded_summarizer,
                    progress=bar.update, concurrency=10,
                )
        finally:
            await storage.aclose()

    def _sign_ins(self) -> None:
        url = f"http://{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}/"
        model = get_user_model()
        if model.objects.exists():
            self.stdout.write(
                f"Console: {url}  (sign in with your account; reset one with `python manage.py changepassword NAME`)"
            )
            return
        created = []
        with transaction.atomic():
            for name, role, env in SIGN_INS:
                password = os.environ.get(env) or secrets.token_urlsafe(12)
                user = model.objects.create_user(username=name, password=password, is_staff=role == ADMIN)
                user.groups.add(Group.objects.get(name=role))
                if role != ADMIN:  # the admin role sees every product; the others see what they are granted
                    change_grants(user=user, products=[DEMO_PRODUCT], actor=BOOTSTRAP)
                created.append((name, role, password, bool(os.environ.get(env))))
        bar = "=" * 64
        self.stdout.write(self.style.SUCCESS(bar))
        self.stdout.write(self.style.SUCCESS(f"  Console: {url}"))
        self.stdout.write("  First-run sign-ins (shown once; change with `manage.py changepassword NAME`):")
        for name, role, password, from_env in created:
            shown = "(from the environment)" if from_env else password
            self.stdout.write(f"    {name:<8} role {role:<8} password {shown}")
        self.stdout.write(self.style.SUCCESS(bar))
