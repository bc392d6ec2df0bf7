"""An admin adds a webhook destination, copies its secret (shown once) and sends a test event, in Chromium."""

from __future__ import annotations

import pytest

from autoplay_storage.models import SinkDestination, WebhookDelivery
from tests.support.browser import chromium, shot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-test-only-password-3141"


@pytest.fixture
def admin_site(live_server, django_user_model) -> str:
    django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)
    return live_server.url


def test_an_admin_adds_a_webhook_sees_the_secret_once_and_sends_a_test_event(admin_site, webhook_receiver) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(admin_site + "/admin/autoplay_storage/sinkdestination/add/")
        page.fill("#id_username", "root")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_selector("#id_name")

        page.fill("#id_name", "ops hooks")
        page.select_option("#id_kind", "webhook")
        page.fill("#id_host", webhook_receiver.url)
        page.click("input[name=_save]")
        secret = page.locator("#webhook-secret").inner_text().strip()
        assert secret.startswith("whsec_")
        shot(page, "webhook-01-secret")
        webhook_receiver.secret = secret

        page.click("#continue")
        page.wait_for_selector("#send-test-event")
        assert secret not in page.content(), "the secret is shown once, never again"
        page.click("#send-test-event")
        page.wait_for_selector("ul.messagelist li.success")
        message = page.locator("ul.messagelist li.success").inner_text()
        assert message.startswith("Test event to ops hooks: delivered to " + webhook_receiver.url)
        log = page.locator("#delivery-log").inner_text()
        assert "autoplay_sink_test" in log and "delivered" in log
        shot(page, "webhook-02-test-event")

        page.goto(admin_site + "/admin/autoplay_storage/sinkdestination/add/")
        page.fill("#id_name", "bad secret")
        page.select_option("#id_kind", "webhook")
        page.fill("#id_host", webhook_receiver.url)
        page.fill("#id_api_key", "not-a-secret")
        page.click("input[name=_save]")
        page.wait_for_selector(".errorlist")
        assert "whsec_" in page.locator(".errorlist").first.inner_text()

    [received] = webhook_receiver.received
    assert received.verified, received.error
    assert received.body["data"]["sent_by"] == "root"
    destination = SinkDestination.objects.get(name="ops hooks")
    assert destination.resolve_api_key() == secret and secret not in destination.api_key_encrypted
    assert WebhookDelivery.objects.filter(destination=destination, delivered=True).count() == 1
