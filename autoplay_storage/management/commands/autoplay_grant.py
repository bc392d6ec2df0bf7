"""``autoplay_grant USERNAME PRODUCT [PRODUCT ...]``: which products a console user (or a group) may see.

``--group NAME`` grants to a group instead of a user (then every positional
argument is a product); ``--all`` grants every product; ``--revoke`` takes
the named grants away. Each change is recorded in the audit log.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser

from autoplay_storage.access import change_grants, product_id_problem
from autoplay_storage.audit import Actor


class Command(BaseCommand):
    help = "Grant (or with --revoke take away) products to a console user or, with --group, to a group."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # Options may come between or after the names: `autoplay_grant sam --revoke prod_1`.
        parser.parse_args = parser.parse_intermixed_args  # type: ignore[method-assign]
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("args", nargs="*", metavar="USERNAME PRODUCT", help="a username, then product ids")
        parser.add_argument("--group", help="grant to this group (every positional argument is then a product)")
        parser.add_argument("--all", action="store_true", dest="all_products", help="every product")
        parser.add_argument("--revoke", action="store_true", help="take the named grants away")

    def handle(self, *args: str, **options: Any) -> None:
        names = list(args)
        user = group = None
        if options["group"]:
            group = Group.objects.filter(name=options["group"]).first()
            if group is None:
                raise CommandError(f"no group named {options['group']!r}")
            grantee = f"group {group.name}"
        else:
            if not names:
                raise CommandError("give a USERNAME (or --group NAME) and the products")
            username = names.pop(0)
            user = get_user_model().objects.filter(username=username).first()
            if user is None:
                raise CommandError(f"no user named {username!r}")
            grantee = f"user {username}"
        if options["all_products"] and names:
            raise CommandError("give either product ids or --all, not both")
        if not options["all_products"] and not names:
            raise CommandError("give at least one product id (or --all)")
        problems = [problem for name in names if (problem := product_id_problem(name))]
        if problems:
            raise CommandError("; ".join(problems))
        changed, unchanged = change_grants(
            user=user, group=group, products=names, all_products=options["all_products"],
            revoke=options["revoke"], actor=Actor.system("manage.py autoplay_grant"),
        )
        shown = {"*": "all products"}
        verb = "Revoked" if options["revoke"] else "Granted"
        if changed:
            self.stdout.write(f"{verb} for {grantee}: {', '.join(shown.get(p, p) for p in changed)}")
        if unchanged:
            state = "held no grant for" if options["revoke"] else "already held"
            self.stdout.write(f"{grantee.capitalize()} {state}: {', '.join(shown.get(p, p) for p in unchanged)}")
        if options["revoke"] and not changed:
            raise CommandError(f"nothing to revoke: {grantee} held none of these grants")
