"""Which products a console user may see: resolved once per request, applied by every view.

Admins and superusers hold ``autoplay_storage.access_all_products`` (the
admin role has every permission); everyone else sees the products granted
to them or to one of their groups. A product outside the grants is
answered like one that does not exist, so its existence is not revealed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.db.models import Q

from .audit import Action, Actor, record
from .models import ProductGrant, ProductSettings

ACCESS_ALL = "autoplay_storage.access_all_products"


@dataclass(frozen=True)
class ProductAccess:
    all: bool
    products: frozenset[str] = frozenset()

    def allows(self, product_id: str) -> bool:
        return self.all or product_id in self.products

    def filter(self, product_ids: Iterable[str]) -> list[str]:
        return [product_id for product_id in product_ids if self.allows(product_id)]


NO_ACCESS = ProductAccess(all=False)


def product_access(user: Any) -> ProductAccess:
    """The products ``user`` may see (sync: queries the database)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return NO_ACCESS
    if user.is_superuser or user.has_perm(ACCESS_ALL):
        return ProductAccess(all=True)
    grants = ProductGrant.objects.filter(Q(user=user) | Q(group__in=user.groups.all())).values_list(
        "product_id", "all_products"
    )
    products: set[str] = set()
    for product_id, all_products in grants:
        if all_products:
            return ProductAccess(all=True)
        products.add(product_id)
    return ProductAccess(all=False, products=frozenset(products))


async def aproduct_access(user: Any) -> ProductAccess:
    return await sync_to_async(product_access)(user)


async def aproduct_settings(product_id: str) -> ProductSettings:
    """The product's settings row, or an unsaved one with the defaults."""
    found = await ProductSettings.objects.filter(product_id=product_id).afirst()
    return found if found is not None else ProductSettings(product_id=product_id)


PRODUCT_ID_MAX = 128


def product_id_problem(product_id: str) -> str | None:
    """Why ``product_id`` cannot be granted (``None``: it can). Any id the console can open is allowed."""
    if not product_id or len(product_id) > PRODUCT_ID_MAX:
        return f"a product id has 1 to {PRODUCT_ID_MAX} characters: {product_id!r}"
    if any(not ch.isprintable() or ch.isspace() for ch in product_id):
        return f"a product id has no spaces or control characters: {product_id!r}"
    return None


def describe(grant: ProductGrant) -> dict[str, Any]:
    """A grant as the audit log records it."""
    return {
        "grantee": f"user:{grant.user.get_username()}" if grant.user_id else f"group:{grant.group.name}",
        "product": "*" if grant.all_products else grant.product_id,
    }


def change_grants(
    *, user: Any = None, group: Any = None, products: Iterable[str] = (), all_products: bool = False,
    revoke: bool = False, actor: Actor,
) -> tuple[list[str], list[str]]:
    """Grant (or revoke) products for one user or group; returns (changed, unchanged) product ids.

    ``"*"`` stands for all products in the result. One ``grant.change``
    audit entry records what changed (none when nothing did).
    """
    owner = {"user": user} if user is not None else {"group": group}
    wanted = [("", True)] if all_products else [(p, False) for p in dict.fromkeys(products)]
    changed, unchanged = [], []
    with transaction.atomic():
        for product_id, everything in wanted:
            rows = ProductGrant.objects.filter(**owner, product_id=product_id, all_products=everything)
            label = "*" if everything else product_id
            if revoke:
                removed, _ = rows.delete()
                (changed if removed else unchanged).append(label)
            elif rows.exists():
                unchanged.append(label)
            else:
                ProductGrant.objects.create(
                    **owner, product_id=product_id, all_products=everything, granted_by=actor.name[:255]
                )
                changed.append(label)
    if changed:
        grantee = f"user:{user.get_username()}" if user is not None else f"group:{group.name}"
        record(
            Action.GRANT_CHANGE, actor=actor, product_id=changed[0] if len(changed) == 1 and changed[0] != "*" else "",
            details={"grantee": grantee, "revoked" if revoke else "granted": changed},
        )
    return changed, unchanged
