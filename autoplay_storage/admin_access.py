"""Django admin for product grants and per-product console settings; every change is recorded in the audit log."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from .access import describe
from .audit import Action, record_request
from .models import ProductGrant, ProductSettings


@admin.register(ProductGrant)
class ProductGrantAdmin(admin.ModelAdmin):
    list_display = ["grantee", "product", "granted_by", "granted_at"]
    list_filter = ["all_products", "group"]
    search_fields = ["user__username", "group__name", "product_id"]
    list_select_related = ["user", "group"]
    fields = ["user", "group", "product_id", "all_products", "granted_by", "granted_at"]
    readonly_fields = ["granted_by", "granted_at"]

    @admin.display(description="user or group")
    def grantee(self, obj: ProductGrant) -> str:
        return describe(obj)["grantee"]

    @admin.display(description="product")
    def product(self, obj: ProductGrant) -> str:
        return "all products" if obj.all_products else obj.product_id

    def save_model(self, request: HttpRequest, obj: ProductGrant, form: ModelForm, change: bool) -> None:
        before = describe(ProductGrant.objects.get(pk=obj.pk)) if change else None
        if not change:
            obj.granted_by = request.user.get_username()
        super().save_model(request, obj, form, change)
        after = describe(obj)
        record_request(
            request, Action.GRANT_CHANGE, product_id=obj.product_id, details={"before": before, "after": after}
        )

    def delete_model(self, request: HttpRequest, obj: ProductGrant) -> None:
        before = describe(obj)
        super().delete_model(request, obj)
        details = {"before": before, "after": None}
        record_request(request, Action.GRANT_CHANGE, product_id=obj.product_id, details=details)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ProductGrant]) -> None:
        for grant in queryset.select_related("user", "group"):
            self.delete_model(request, grant)


SETTINGS_FIELDS = ["require_access_reason", "stuck_after_days"]


@admin.register(ProductSettings)
class ProductSettingsAdmin(admin.ModelAdmin):
    list_display = ["product_id", *SETTINGS_FIELDS]
    search_fields = ["product_id"]

    def save_model(self, request: HttpRequest, obj: ProductSettings, form: ModelForm, change: bool) -> None:
        old = ProductSettings.objects.filter(pk=obj.pk).values(*SETTINGS_FIELDS).first() if change else None
        super().save_model(request, obj, form, change)
        after: dict[str, Any] = {name: getattr(obj, name) for name in SETTINGS_FIELDS}
        record_request(
            request, Action.PRODUCT_SETTINGS_CHANGE, product_id=obj.product_id, details={"before": old, "after": after}
        )

    def delete_model(self, request: HttpRequest, obj: ProductSettings) -> None:
        before = {name: getattr(obj, name) for name in SETTINGS_FIELDS}
        super().delete_model(request, obj)
        details = {"before": before, "after": None}
        record_request(request, Action.PRODUCT_SETTINGS_CHANGE, product_id=obj.product_id, details=details)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ProductSettings]) -> None:
        for row in queryset:
            self.delete_model(request, row)
