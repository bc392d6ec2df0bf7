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
from django.db.models import Q

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
