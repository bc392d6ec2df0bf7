"""Admins create, list and revoke agents' API keys; a new key is shown once."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers
from django.utils.html import format_html

from autoplay_storage.audit import Action, record_request

from .ids import is_product_id
from .models import DEFAULT_SCOPES, ApiKey, Scope, validate_limit


class ApiKeyCreateForm(forms.ModelForm):
    products_text = forms.CharField(
        label="Products",
        help_text="Product ids this key may use, separated by commas or spaces.",
        widget=forms.TextInput(attrs={"size": 60}),
    )

    scopes = forms.MultipleChoiceField(
        choices=Scope.choices,
        initial=DEFAULT_SCOPES,
        widget=forms.CheckboxSelectMultiple,
        help_text="read: GET routes; write: sessions and state changes; admin: sensitive actions such as erasure.",
    )

    class Meta:
        model = ApiKey
        fields = ["name", "rate", "burst"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        problem = validate_limit(cleaned.get("rate"), cleaned.get("burst"))
        if problem:
            raise forms.ValidationError(problem)
        return cleaned

    def clean_products_text(self) -> list[str]:
        products = [p for p in self.cleaned_data["products_text"].replace(",", " ").split() if p]
        bad = [p for p in products if not is_product_id(p)]
        if bad:
            raise forms.ValidationError(
                f"not a product id: {', '.join(bad)} "
                "(letters, digits and . _ @ + - only, not only dots)"
            )
        if not products:
            raise forms.ValidationError("give at least one product id")
        return products


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name", "key_prefix", "product_list", "scopes", "rate_limit", "created_by", "created_at", "last_used_at",
        "status",
    ]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["name", "prefix"]
    readonly_fields = [
        "name", "key_prefix", "products", "scopes", "rate", "burst", "created_by", "created_at", "last_used_at",
        "revoked_at",
    ]
    actions = ["revoke_keys"]

    @admin.display(description="key")
    def key_prefix(self, obj: ApiKey) -> str:
        return f"ap_{obj.prefix}_…"

    @admin.display(description="products")
    def product_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.products)

    @admin.display(description="rate limit")
    def rate_limit(self, obj: ApiKey) -> str:
        if obj.rate is None:
            return "none"
        return f"{obj.rate:g}/s, burst {obj.burst if obj.burst is not None else 'default'}"

    @admin.display(description="status")
    def status(self, obj: ApiKey) -> str:
        return "active" if obj.is_active else format_html("<strong>revoked</strong> {}", obj.revoked_at)

    def get_form(self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            return ["name", "products_text", "scopes", "rate", "burst"]
        return self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return self.readonly_fields if obj is not None else []

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> Any:
        # Keys are immutable: the page shows one (never its secret); revoke it from the list.
        no_save = {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **no_save})

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # revoke instead: the row keeps who made the key and when it was last used

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool) -> None:
        if change:
            return  # keys are immutable; revoke and create a new one
        data = form.cleaned_data
        row, key = ApiKey.issue(
            obj.name,
            data["products_text"],
            created_by=request.user,
            scopes=data["scopes"],
            rate=data.get("rate"),
            burst=data.get("burst"),
        )
        obj.pk, obj.prefix, obj.created_at = row.pk, row.prefix, row.created_at
        record_request(request, Action.APIKEY_CREATE, details=row.audit_details())
        request._new_api_key = key  # type: ignore[attr-defined]  # for response_add only: never stored

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> Any:
        """Show the new key on the answer to the form itself, once.

        A flash message would sit in the session store (``django_session``) in
        clear until read; this page is the only place the key ever exists
        outside the agent's hands, and it is not cached.
        """
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": self.opts,
            "key_row": obj,
            "key": request._new_api_key,  # type: ignore[attr-defined]
        }
        response = TemplateResponse(request, "admin/api/apikey/created.html", context)
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke selected keys", permissions=["change"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for key in queryset:
            if key.revoke():  # also refuses it in every worker at once
                revoked += 1
                record_request(request, Action.APIKEY_REVOKE, details=key.audit_details())
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
