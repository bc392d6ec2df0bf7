"""The Django admin for sink destinations and summary runs, over Django's test client.

"Send test event" goes through the real vendor SDK to the loopback capture server.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone

from autoplay_storage.models import SinkDestination, SummaryRun
from autoplay_storage.models.sinks import SinkConfigError
from autoplay_storage.sinks import TEST_DISTINCT_ID, TEST_EVENT
from tests.support.capture_server import wait_until

pytestmark = pytest.mark.django_db

SECRET = "phc_live_secret_0123456789"
ADD_URL = reverse("admin:autoplay_storage_sinkdestination_add")


def change_url(pk: int) -> str:
    return reverse("admin:autoplay_storage_sinkdestination_change", args=[pk])


def send_url(pk: int) -> str:
    return reverse("admin:autoplay_storage_sinkdestination_send_test_event", args=[pk])


def form(**overrides: str) -> dict[str, str]:
    data = {
        "name": "product-analytics",
        "kind": "posthog",
        "enabled": "on",
        "host": "",
        "property_prefix": "ap",
        "api_key": SECRET,
        "api_key_env": "",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


@pytest.fixture
def admin_client_(client, django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@example.com", "a-test-only-password")
    client.force_login(user)
    return client


def staff_user(*codenames: str) -> User:
    user = User.objects.create_user("staff", "staff@example.com", "a-test-only-password", is_staff=True)
    perms = Permission.objects.filter(content_type__app_label="autoplay_storage", codename__in=codenames)
    user.user_permissions.set(perms)
    return user


def test_the_key_is_stored_encrypted_and_never_shown_again(admin_client_):
    response = admin_client_.post(ADD_URL, form())
    assert response.status_code == 302, response.content.decode()[:2000]
    sink = SinkDestination.objects.get(name="product-analytics")
    assert sink.api_key_encrypted and SECRET not in sink.api_key_encrypted
    assert sink.resolve_api_key() == SECRET
    page = admin_client_.get(change_url(sink.pk)).content.decode()
    assert SECRET not in page
    assert sink.api_key_encrypted not in page
    assert "stored encrypted" in page

    # Saving without typing the key keeps the stored one.
    response = admin_client_.post(change_url(sink.pk), form(api_key="", property_prefix="xy"))
    assert response.status_code == 302
    sink.refresh_from_db()
    assert (sink.property_prefix, sink.resolve_api_key()) == ("xy", SECRET)


def test_the_deletion_credentials_are_optional_and_stored_encrypted(admin_client_):
    assert admin_client_.post(ADD_URL, form()).status_code == 302
    sink = SinkDestination.objects.get()
    assert sink.erase_key_encrypted == ""
    personal = "phx_personal_0123456789"
    edited = form(api_key="", erase_project_id="4242", erase_key=personal, erase_host="https://eu.posthog.com")
    assert admin_client_.post(change_url(sink.pk), edited).status_code == 302
    sink.refresh_from_db()
    assert personal not in sink.erase_key_encrypted and sink.resolve_erase_key() == personal
    assert (sink.erase_project_id, sink.erase_host) == ("4242", "https://eu.posthog.com")
    page = admin_client_.get(change_url(sink.pk)).content.decode()
    assert personal not in page and sink.erase_key_encrypted not in page and "Deletion key" in page
    # Saving without typing it keeps the stored one.
    assert admin_client_.post(change_url(sink.pk), form(api_key="", erase_project_id="4242")).status_code == 302
    sink.refresh_from_db()
    assert sink.resolve_erase_key() == personal


def test_a_key_can_come_from_an_environment_variable(admin_client_, monkeypatch):
    response = admin_client_.post(ADD_URL, form(api_key="", api_key_env="POSTHOG_PROJECT_KEY"))
    assert response.status_code == 302
    sink = SinkDestination.objects.get()
    assert sink.api_key_encrypted == ""
    assert sink.key_source == "environment variable POSTHOG_PROJECT_KEY"
    monkeypatch.setenv("POSTHOG_PROJECT_KEY", "phc_from_env")
    assert sink.resolve_api_key() == "phc_from_env"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"api_key": ""}, "Enter the API key, or the name of an environment variable holding it."),
        ({"api_key_env": "POSTHOG_KEY"}, "Give either the API key or an environment variable name, not both."),
        ({"api_key": "", "api_key_env": "not a name"}, "An environment variable name"),
        ({"property_prefix": "ap_"}, "not ending with an underscore"),
        ({"host": "not-a-url"}, "Enter a valid URL."),
    ],
)
def test_bad_configuration_is_refused_with_a_message(admin_client_, overrides, message):
    response = admin_client_.post(ADD_URL, form(**overrides))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not SinkDestination.objects.exists()


@pytest.mark.parametrize(("kind", "path"), [("posthog", ""), ("amplitude", "/2/httpapi")])
def test_send_test_event_delivers_through_the_sdk(admin_client_, capture_server, kind, path):
    sink = SinkDestination(name="t", kind=kind, host=capture_server.url + path)
    sink.set_api_key("key_for_test")
    sink.save()
    response = admin_client_.post(send_url(sink.pk), follow=True)
    page = response.content.decode()
    assert response.redirect_chain[-1][0] == change_url(sink.pk)
    assert "Test event to t: delivered to" in page
    sent = capture_server.posthog_messages() if kind == "posthog" else capture_server.amplitude_events()
    [event] = sent
    assert (event.get("event") or event.get("event_type")) == TEST_EVENT
    assert (event.get("distinct_id") or event.get("user_id")) == TEST_DISTINCT_ID
    assert capture_server.requests[0].body["api_key"] == "key_for_test"
    sink.refresh_from_db()
    assert sink.last_success_at is not None
    assert (sink.sent_count, sink.failed_count) == (1, 0)


def test_send_test_event_reports_a_failure(admin_client_, capture_server):
    capture_server.mode = "500"
    sink = SinkDestination(name="down", kind="amplitude", host=capture_server.url + "/2/httpapi")
    sink.set_api_key("key_for_test")
    sink.save()
    page = admin_client_.post(send_url(sink.pk), follow=True).content.decode()
    assert "Test event to down: failed: HTTP 500" in page
    sink.refresh_from_db()
    assert sink.last_error.startswith("test event failed: HTTP 500")
    assert (sink.sent_count, sink.failed_count) == (0, 1)
    assert sink.last_error_at is not None


def test_send_test_event_reports_a_missing_environment_key(admin_client_, monkeypatch):
    monkeypatch.delenv("UNSET_SINK_KEY", raising=False)
    sink = SinkDestination.objects.create(name="env", kind="posthog", api_key_env="UNSET_SINK_KEY")
    page = admin_client_.post(send_url(sink.pk), follow=True).content.decode()
    assert "Test event to env: not sent: the environment variable UNSET_SINK_KEY is not set" in page


def test_the_admin_action_sends_to_each_selected_destination(admin_client_, capture_server):
    for name in ("one", "two"):
        sink = SinkDestination(name=name, kind="posthog", host=capture_server.url)
        sink.set_api_key(f"key_{name}")
        sink.save()
    changelist = reverse("admin:autoplay_storage_sinkdestination_changelist")
    ids = [str(pk) for pk in SinkDestination.objects.values_list("pk", flat=True)]
    page = admin_client_.post(
        changelist, {"action": "send_test_events", "_selected_action": ids}, follow=True
    ).content.decode()
    assert "Test event to one: delivered" in page and "Test event to two: delivered" in page
    wait_until(lambda: len(capture_server.posthog_messages()) == 2, what="two test events")
    assert sorted(r.body["api_key"] for r in capture_server.requests) == ["key_one", "key_two"]


def test_send_test_event_needs_its_permission(client, capture_server):
    sink = SinkDestination(name="guarded", kind="posthog", host=capture_server.url)
    sink.set_api_key("key")
    sink.save()
    user = staff_user("view_sinkdestination", "change_sinkdestination")
    staff = client
    staff.force_login(user)
    assert staff.post(send_url(sink.pk)).status_code == 403
    page = staff.get(change_url(sink.pk)).content.decode()
    assert "send-test-event" not in page
    changelist = staff.get(reverse("admin:autoplay_storage_sinkdestination_changelist")).content.decode()
    assert "send_test_events" not in changelist
    assert capture_server.requests == []

    user.user_permissions.add(Permission.objects.get(codename="send_test_event"))
    assert 'id="send-test-event"' in staff.get(change_url(sink.pk)).content.decode()
    assert staff.get(send_url(sink.pk)).status_code == 405  # a side effect needs POST


def test_the_list_shows_delivery_counters(admin_client_):
    SinkDestination.objects.create(
        name="counted",
        kind="amplitude",
        api_key_env="AMPLITUDE_KEY",
        sent_count=41,
        failed_count=2,
        last_error="save_session_snapshot: SinkQueueFullError: dropped",
        last_error_at=timezone.now(),
    )
    page = admin_client_.get(reverse("admin:autoplay_storage_sinkdestination_changelist")).content.decode()
    assert "counted" in page and ">41<" in page and ">2<" in page
    assert "save_session_snapshot: SinkQueueFullError: dropped" in page
    assert "never" in page  # no success yet


def test_summary_runs_are_read_only(admin_client_):
    run = SummaryRun.objects.create(
        product_id="prod_1",
        user_id="u_1",
        session_id="sess_1",
        source=SummaryRun.Source.DASHBOARD,
        summarizer="autoplay_storage.summarizers.llm_summarizer",
        started_at=timezone.now(),
        duration_ms=12,
        outcome=SummaryRun.Outcome.FAILED,
        error="SummarizerError: HTTP 500",
    )
    listing = admin_client_.get(reverse("admin:autoplay_storage_summaryrun_changelist")).content.decode()
    assert "u_1" in listing
    detail = admin_client_.get(reverse("admin:autoplay_storage_summaryrun_change", args=[run.pk])).content.decode()
    assert "SummarizerError: HTTP 500" in detail
    assert 'name="_save"' not in detail
    assert admin_client_.get(reverse("admin:autoplay_storage_summaryrun_add")).status_code == 403
    assert admin_client_.post(reverse("admin:autoplay_storage_summaryrun_delete", args=[run.pk])).status_code == 403


def test_keys_survive_introducing_an_encryption_key_and_a_changed_secret_is_reported(settings, monkeypatch):
    monkeypatch.delenv("AUTOPLAY_ENCRYPTION_KEY", raising=False)
    old = SinkDestination(name="old", kind="posthog")
    old.set_api_key("phc_before")
    monkeypatch.setenv("AUTOPLAY_ENCRYPTION_KEY", "a-dedicated-encryption-secret")
    new = SinkDestination(name="new", kind="posthog")
    new.set_api_key("phc_after")
    assert old.resolve_api_key() == "phc_before"  # written under SECRET_KEY, still readable
    assert new.resolve_api_key() == "phc_after"

    monkeypatch.setenv("AUTOPLAY_ENCRYPTION_KEY", "someone-changed-it")
    with pytest.raises(SinkConfigError, match="enter the key again"):
        new.resolve_api_key()
    settings.SECRET_KEY = "and-the-secret-key-too"
    with pytest.raises(SinkConfigError, match="cannot be decrypted"):
        old.resolve_api_key()
