"""``autoplay_apikey create|list|revoke``: API keys for agents from the shell.

``create`` prints the new key alone on its last line, so scripts can take it
with ``| tail -n 1``; it is never shown again (only its hash is stored).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from api.ids import is_product_id
from api.models import ApiKey, Scope, validate_limit
from autoplay_storage.audit import Action, Actor, record

COMMAND = Actor.system("manage.py autoplay_apikey")


def _limit_text(row: ApiKey) -> str:
    if row.rate is None:
        return "no rate limit"
    return f"rate {row.rate:g}/s burst {row.burst if row.burst is not None else 'default'}"


class Command(BaseCommand):
    help = "Create, list or revoke API keys for the agent API."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create a key and print it (shown once)")
        create.add_argument("--name", required=True, help="who or what uses the key")
        create.add_argument(
            "--product", action="append", required=True, dest="products", help="a product id (repeat for several)"
        )
        create.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            choices=Scope.values,
            help="what the key may do (repeat for several; default: read and write)",
        )
        create.add_argument(
            "--rate", type=float, help="requests per second the key may make, all workers together (default: no limit)"
        )
        create.add_argument(
            "--burst", type=int, help="requests it may make at once after a quiet spell (default: the rate, rounded up)"
        )
        sub.add_parser("list", help="list keys (prefix, products, status, last use)")
        revoke = sub.add_parser("revoke", help="revoke a key by its prefix (the 8 characters after 'ap_')")
        revoke.add_argument("prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "create":
            self._create(options["name"], options["products"], options["scopes"], options["rate"], options["burst"])
        elif action == "list":
            self._list()
        else:
            self._revoke(options["prefix"])

    def _create(
        self, name: str, products: list[str], scopes: list[str] | None, rate: float | None, burst: int | None
    ) -> None:
        if not name.strip():
            raise CommandError("--name must not be blank")
        bad = [p for p in products if not is_product_id(p)]
        if bad:
            raise CommandError(
                f"not a product id: {', '.join(bad)} "
                "(letters, digits and . _ @ + - only, not only dots)"
            )
        problem = validate_limit(rate, burst)
        if problem:
            raise CommandError(f"--rate/--burst: {problem}")
        row, key = ApiKey.issue(name.strip(), products, scopes=scopes, rate=rate, burst=burst)
        record(Action.APIKEY_CREATE, actor=COMMAND, details=row.audit_details())
        self.stderr.write(
            f"Created key {row.name!r} (ap_{row.prefix}_…) for {', '.join(row.products)}, "
            f"scopes {', '.join(row.scopes)}, {_limit_text(row)}; shown once:"
        )
        self.stdout.write(key)

    def _list(self) -> None:
        for row in ApiKey.objects.order_by("-created_at"):
            status = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
            used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
            products, scopes = ", ".join(row.products), ", ".join(row.scopes)
            line = (
                f"ap_{row.prefix}_…  {row.name}  [{products}]  scopes {scopes}  {_limit_text(row)}  {status}"
                f"  last used {used}"
            )
            self.stdout.write(line)

    def _revoke(self, prefix: str) -> None:
        prefix = prefix.removeprefix("ap_").split("_", 1)[0]
        row = ApiKey.objects.filter(prefix=prefix).first()
        if row is None:
            raise CommandError(f"no key with prefix {prefix!r}")
        if not row.revoke():
            raise CommandError(f"key ap_{prefix}_… was already revoked")
        record(Action.APIKEY_REVOKE, actor=COMMAND, details=row.audit_details())
        self.stdout.write(f"Revoked ap_{prefix}_… ({row.name}).")
