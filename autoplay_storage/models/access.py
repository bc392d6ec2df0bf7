"""Which staff may see which product, and the per-product console settings.

A grant names a user or a group (exactly one) and a product id, or "all
products". Admins and superusers see everything through the
``access_all_products`` permission (the admin role holds every permission);
everyone else sees the union of their own and their groups' grants.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from django.db.models import Q


class ProductGrant(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="product_grants"
    )
    group = models.ForeignKey(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="product_grants")
    product_id = models.CharField(max_length=128, blank=True, help_text="Leave blank with “all products” ticked.")
    all_products = models.BooleanField(default=False)
    granted_at = models.DateTimeField(auto_now_add=True)
    granted_by = models.CharField(max_length=255, blank=True)

    class Meta:
        permissions = [("access_all_products", "Can see every product in the console")]
        constraints = [
            models.CheckConstraint(
                condition=(Q(user__isnull=False) & Q(group__isnull=True))
                | (Q(user__isnull=True) & Q(group__isnull=False)),
                name="grant_user_xor_group",
            ),
            models.CheckConstraint(
                condition=(Q(all_products=True) & Q(product_id="")) | (Q(all_products=False) & ~Q(product_id="")),
                name="grant_product_or_all",
            ),
            models.UniqueConstraint(
                fields=["user", "product_id", "all_products"], condition=Q(user__isnull=False), name="grant_user_once"
            ),
            models.UniqueConstraint(
                fields=["group", "product_id", "all_products"],
                condition=Q(group__isnull=False),
                name="grant_group_once",
            ),
        ]

    def __str__(self) -> str:
        who = f"user {self.user}" if self.user_id else f"group {self.group}"
        return f"{who}: {'all products' if self.all_products else self.product_id}"


class ProductSettings(models.Model):
    """Console settings of one product (a product without a row has the defaults)."""

    product_id = models.CharField(max_length=128, unique=True)
    require_access_reason = models.BooleanField(
        default=False, help_text="Ask staff for a reason (a ticket id, free text) before opening a user page."
    )
    stuck_after_days = models.PositiveSmallIntegerField(
        default=7, help_text="A workflow in progress with no progress for this many days counts as stuck."
    )

    class Meta:
        verbose_name_plural = "product settings"

    def __str__(self) -> str:
        return self.product_id
