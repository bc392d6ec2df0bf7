"""Django admin for the storage app: analytics sink destinations and the summary-run log.

The sink form takes the API key write-only: it is encrypted on save and never
rendered again (leave the field blank to keep the stored one). "Send test
event" (permission ``autoplay_storage.send_test_event``) sends one real event
through the vendor SDK and reports what happened.

A webhook destination signs with a ``whsec_`` secret: left blank, one is
generated and shown once, on a page of its own, right after the save (never
in a message, which would keep it in the session); its change page lists
the newest delivery attempts.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin, messages
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.core.exceptions import PermissionDenied
from django.db.models import F, QuerySet
from django.http import HttpRequest, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from . import admin_access  # noqa: F401  registers the grants and product settings admin
from .adapters.webhook import check_secret, new_secret
from .audit import SECRET_MASK, Action, masked, record_request
from .models import AuditEntry, QuarantinedState, Segment, SinkDestination, SummaryRun, WebhookDelivery
from .sinks import send_test_event


class SinkDestinationForm(forms.ModelForm):
    host = forms.URLField(
        required=False,
        assume_scheme="https",
        help_text=(
            "PostHog: blank for US cloud, https://eu.i.posthog.com for EU, or your self-hosted URL. "
            "Amplitude: blank for the US endpoint, https://api.eu.amplitude.com/2/httpapi for EU, "
            "or a proxy's full URL. Webhook: the URL the signed events are POSTed to."
        ),
    )
    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again. Leave blank to keep the stored key. "
        "Webhook: the signing secret (whsec_...); left blank on a new webhook, one is generated and shown once.",
    )
    erase_host = forms.URLField(
        label="Deletion API host",
        required=False,
        assume_scheme="https",
        help_text="Blank: PostHog's app host for the sink's host (us.posthog.com, eu.posthog.com, or the "
        "self-hosted URL); Amplitude's https://amplitude.com (https://analytics.eu.amplitude.com for EU).",
    )
    erase_key = forms.CharField(
        label="Deletion key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Optional, for erasing users (docs/erasure.md). PostHog: a personal API key with person:write; "
        "Amplitude: the project's secret key. Stored encrypted and never shown again; blank keeps the stored one.",
    )
    generated_secret: str | None = None

    class Meta:
        model = SinkDestination
        fields = [
            "name", "kind", "enabled", "host", "property_prefix", "api_key", "api_key_env",
            "erase_host", "erase_project_id", "erase_key",
        ]  # fmt: skip
        labels = {
            "api_key_env": "API key environment variable",
            "erase_project_id": "PostHog project id",
        }
        help_texts = {
            "property_prefix": 'Prefix for user properties: "ap" sends ap_journey_state. Event properties are not '
            "prefixed.",
            "api_key_env": "Instead of a stored key: the name of an environment variable every worker has.",
        }

    def clean(self) -> dict[str, Any]:
        """Apply a new key before model validation (``_post_clean``) checks that a key source exists."""
        data = super().clean()
        key, env = data.get("api_key"), data.get("api_key_env")
        if key and env:
            raise forms.ValidationError("Give either the API key or an environment variable name, not both.")
        if key and data.get("kind") == SinkDestination.Kind.WEBHOOK:
            try:
                check_secret(key)
            except ValueError as exc:
                raise forms.ValidationError({"api_key": str(exc)}) from None
        if data.get("erase_key"):
            self.instance.set_erase_key(data["erase_key"])
        if key:
            self.instance.set_api_key(key)
        elif env:
            self.instance.api_key_encrypted = ""
        elif data.get("kind") == SinkDestination.Kind.WEBHOOK and not self.instance.api_key_encrypted:
            self.generated_secret = new_secret()
            self.instance.set_api_key(self.generated_secret)
        return data


SINK_CONFIG = ["name", "kind", "enabled", "host", "property_prefix", "api_key_env"]


def sink_config(destination: SinkDestination) -> dict[str, Any]:
    """A destination's configuration for the audit log: the stored key only as set or not, never its value."""
    values = {name: getattr(destination, name) for name in SINK_CONFIG}
    return {**values, **masked({"api_key": destination.api_key_encrypted}, {"api_key"})}


@admin.register(SinkDestination)
class SinkDestinationAdmin(admin.ModelAdmin):
    form = SinkDestinationForm
    change_form_template = "admin/autoplay_storage/sinkdestination/change_form.html"
    list_display = ["name", "kind", "enabled", "destination", "sent", "failed", "last_success", "last_error_summary"]
    search_fields = ["name", "host"]
    actions = ["send_test_events"]
    readonly_fields = [
        "key_source",
        "erase_key_source",
        "sent_count",
        "failed_count",
        "last_success_at",
        "last_error_at",
        "last_error",
        "created_at",
        "updated_at",
        "recent_deliveries",
    ]
    fieldsets = [
        (None, {"fields": ["name", "kind", "enabled", "host", "property_prefix"]}),
        ("API key", {"fields": ["key_source", "api_key", "api_key_env"]}),
        (
            "Erasure",
            {
                "description": "Optional: the credentials a user's erasure needs to delete the person at the vendor. "
                "Without them the receipt says “not erased: credentials missing”.",
                "fields": ["erase_key_source", "erase_host", "erase_project_id", "erase_key"],
            },
        ),
        (
            "Delivery",
            {
                "description": "Sent: delivered to the vendor (test events included). Failed: dropped at "
                "hand-off or given up on after the SDK's retries. Saved every few seconds by each worker.",
                "fields": ["sent_count", "failed_count", "last_success_at", "last_error_at", "last_error"],
            },
        ),
        (
            "Delivery log",
            {
                "description": "Webhooks: the newest POST attempts (retries re-send the same event id).",
                "fields": ["recent_deliveries"],
            },
        ),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description="Recent attempts")
    def recent_deliveries(self, obj: SinkDestination) -> str:
        if obj.pk is None or obj.kind != SinkDestination.Kind.WEBHOOK:
            return "-"
        rows = WebhookDelivery.objects.filter(destination=obj).order_by("-id")[:20]
        if not rows:
            return "no attempts yet"
        body = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td><td>{}</td></tr>",
            (
                (
                    naturaltime(r.at),
                    r.event_type,
                    r.event_id,
                    r.attempt,
                    r.status_code or "-",
                    r.latency_ms,
                    "delivered" if r.delivered else r.error,
                )
                for r in rows
            ),
        )
        head = (
            "<tr><th>When</th><th>Event</th><th>Id</th><th>Try</th><th>Status</th><th>Latency</th><th>Result</th></tr>"
        )
        return format_html('<table id="delivery-log">{}{}</table>', mark_safe(head), body)

    def save_model(self, request: HttpRequest, obj: SinkDestination, form: Any, change: bool) -> None:
        stored = SinkDestination.objects.filter(pk=obj.pk).first() if change else None
        before = sink_config(stored) if stored is not None else None
        super().save_model(request, obj, form, change)
        request.generated_secret = getattr(form, "generated_secret", None)  # type: ignore[attr-defined]
        after = sink_config(obj)
        if stored is not None and obj.api_key_encrypted != stored.api_key_encrypted:
            after["api_key"] = f"{SECRET_MASK} (changed)" if obj.api_key_encrypted else ""
        record_request(request, Action.SINK_CHANGE, details={"sink": obj.name, "before": before, "after": after})

    def delete_model(self, request: HttpRequest, obj: SinkDestination) -> None:
        before = sink_config(obj)
        super().delete_model(request, obj)
        record_request(request, Action.SINK_CHANGE, details={"sink": obj.name, "before": before, "after": None})

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[SinkDestination]) -> None:
        for destination in queryset:
            self.delete_model(request, destination)

    def response_add(self, request: HttpRequest, obj: SinkDestination, post_url_continue: str | None = None) -> Any:
        secret = getattr(request, "generated_secret", None)
        if not secret:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": "Webhook signing secret",
            "destination": obj,
            "secret": secret,
            "change_url": reverse("admin:autoplay_storage_sinkdestination_change", args=[obj.pk]),
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/autoplay_storage/sinkdestination/secret.html", context)

    @admin.display(description="Host")
    def destination(self, obj: SinkDestination) -> str:
        return obj.host or "vendor default (US)"

    @admin.display(description="Key")
    def key_source(self, obj: SinkDestination) -> str:
        return obj.key_source

    @admin.display(description="Deletion key")
    def erase_key_source(self, obj: SinkDestination) -> str:
        return "stored encrypted" if obj.erase_key_encrypted else "none"

    @admin.display(description="Sent", ordering="sent_count")
    def sent(self, obj: SinkDestination) -> int:
        return obj.sent_count

    @admin.display(description="Failed", ordering="failed_count")
    def failed(self, obj: SinkDestination) -> int:
        return obj.failed_count

    @admin.display(description="Last success", ordering="last_success_at")
    def last_success(self, obj: SinkDestination) -> str:
        return naturaltime(obj.last_success_at) if obj.last_success_at else "never"

    @admin.display(description="Last error", ordering="last_error_at")
    def last_error_summary(self, obj: SinkDestination) -> str:
        if not obj.last_error:
            return "-"
        when = f"{naturaltime(obj.last_error_at)}: " if obj.last_error_at else ""
        return when + Truncator(obj.last_error).chars(90)

    # -- send test event --

    def has_send_test_event_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("autoplay_storage.send_test_event")

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.send_test_event_view)
        return [
            path("<int:object_id>/send-test-event/", view, name="autoplay_storage_sinkdestination_send_test_event"),
            *super().get_urls(),
        ]

    def render_change_form(self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        context["can_send_test_event"] = self.has_send_test_event_permission(request)
        return super().render_change_form(request, context, *args, **kwargs)

    def send_test_event_view(self, request: HttpRequest, object_id: int) -> Any:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_send_test_event_permission(request):
            raise PermissionDenied
        destination = get_object_or_404(SinkDestination, pk=object_id)
        self._send_and_report(request, destination)
        return HttpResponseRedirect(reverse("admin:autoplay_storage_sinkdestination_change", args=[destination.pk]))

    @admin.action(description="Send a test event", permissions=["send_test_event"])
    def send_test_events(self, request: HttpRequest, queryset: QuerySet[SinkDestination]) -> None:
        for destination in queryset:
            self._send_and_report(request, destination)

    def _send_and_report(self, request: HttpRequest, destination: SinkDestination) -> None:
        result = async_to_sync(send_test_event)(destination, sent_by=request.user.get_username())
        now = timezone.now()
        text = f"Test event to {destination.name}: {result.message}."
        row = SinkDestination.objects.filter(pk=destination.pk)
        if result.ok:
            row.update(sent_count=F("sent_count") + 1, last_success_at=now)
            self.message_user(request, text, messages.SUCCESS)
        else:
            row.update(failed_count=F("failed_count") + 1, last_error=f"test event {result.message}", last_error_at=now)
            self.message_user(request, text, messages.ERROR)


@admin.register(SummaryRun)
class SummaryRunAdmin(admin.ModelAdmin):
    """A log: readable by whoever may view it, never edited."""

    list_display = ["started_at", "product_id", "user_id", "session_id", "source", "outcome", "duration_ms", "actor"]
    list_filter = ["outcome", "source"]
    search_fields = ["product_id", "user_id", "session_id", "summarizer"]
    date_hierarchy = "started_at"
    list_select_related = ["actor"]

    def get_readonly_fields(self, request: HttpRequest, obj: SummaryRun | None = None) -> list[str]:
        return [f.name for f in SummaryRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SummaryRun | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: SummaryRun | None = None) -> bool:
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only for everyone, superusers included: entries leave only through ``autoplay_audit_prune``."""

    list_display = ("at", "actor", "action", "product_id", "user_id", "session_id", "client_address")
    list_filter = ("action", "actor_kind")
    search_fields = ("actor", "product_id", "user_id", "session_id")
    date_hierarchy = "at"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    """Saved segments (docs/insight.md): rename or remove them; the console creates them."""

    list_display = ("name", "product_id", "created_by", "created_at", "slug")
    list_filter = ("product_id",)
    search_fields = ("name", "product_id", "slug")
    readonly_fields = ("slug", "created_by", "created_at")


@admin.register(QuarantinedState)
class QuarantinedStateAdmin(admin.ModelAdmin):
    """Unreadable state texts kept by a rebuild: evidence, never edited (downloadable from the user page)."""

    list_display = ("at", "product_id", "user_id", "outcome", "sessions_replayed", "actor_name")
    list_filter = ("outcome",)
    search_fields = ("product_id", "user_id")
    date_hierarchy = "at"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in QuarantinedState._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
