"""An admin configures a PostHog sink and sends a test event, in Debian's headless Chromium."""

from __future__ import annotations

import pytest

from autoplay_storage.models import SinkDestination
from autoplay_storage.sinks import TEST_EVENT
from tests.support.browser import chromium, shot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SECRET = "phc_browser_secret_42"
PASSWORD = "a-test-only-password-2718"


@pytest.fixture
def admin_site(settings, live_server, django_user_model) -> str:
    django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)
    return live_server.url


def test_an_admin_adds_a_sink_and_sends_a_test_event(admin_site, capture_server) -> None:
    base = admin_site
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(base + "/admin/autoplay_storage/sinkdestination/add/")
        page.fill("#id_username", "root")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_selector("#id_name")

        page.fill("#id_name", "product analytics")
        page.select_option("#id_kind", "posthog")
        page.fill("#id_host", capture_server.url)
        page.fill("#id_property_prefix", "ap")
        page.fill("#id_api_key", SECRET)
        shot(page, "sinks-01-add")
        page.click("input[name=_continue]")
        page.wait_for_selector("text=was added successfully")
        assert page.input_value("#id_api_key") == ""  # write-only: never sent back to the browser
        assert SECRET not in page.content()
        assert page.locator(".field-key_source .readonly").inner_text() == "stored encrypted"

        page.click("#send-test-event")
        page.wait_for_selector("ul.messagelist li.success")
        message = page.locator("ul.messagelist li.success").inner_text()
        assert message.startswith("Test event to product analytics: delivered to " + capture_server.url)
        shot(page, "sinks-02-test-event")

        page.goto(base + "/admin/autoplay_storage/sinkdestination/")
        row = page.locator("#result_list tbody tr").first
        assert "product analytics" in row.inner_text()
        assert row.locator(".field-last_success").inner_text() != "never"
        shot(page, "sinks-03-list")

    [event] = capture_server.posthog_messages()
    assert event["event"] == TEST_EVENT
    assert event["properties"]["sent_by"] == "root"
    sink = SinkDestination.objects.get()
    assert sink.resolve_api_key() == SECRET
    assert sink.last_success_at is not None
