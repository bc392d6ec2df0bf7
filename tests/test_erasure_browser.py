"""Erasing a user and downloading all of a user's data, in a real headless Chromium against a live console."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.browser import chromium, shot
from tests.support.dashboard import PASSWORD, PRODUCT, configure_primary, load_demo, load_one, make_person

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def console(settings, live_server):
    configure_primary("database", settings)
    load_demo(5)
    plan = load_one(4, email="ines.okafor@northwind.io", name="Ines Okafor")
    make_person("ada", "admin")
    make_person("lee", "lead")
    make_person("sam", "support")
    from django.contrib.auth.models import Group

    from autoplay_storage.models import ProductGrant

    for role in ("lead", "support"):
        ProductGrant.objects.create(group=Group.objects.get(name=role), product_id=PRODUCT)
    return live_server.url, plan


def sign_in(page, base: str, username: str) -> None:
    page.goto(base + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def test_an_admin_erases_a_user_after_typing_the_id_and_reads_the_receipt(console) -> None:
    base, plan = console
    user = f"{base}/p/{PRODUCT}/u/{plan.user_id}/"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        sign_in(page, base, "ada")
        page.goto(user)
        page.click("#erase-user")
        page.wait_for_selector("#erase-form")
        shot(page, "erase-01-confirm")
        page.fill("#confirm", plan.user_id + "x")
        page.click("#erase-confirm")
        assert "Nothing was erased" in page.locator("#erase-problem").inner_text()
        page.goto(user)
        assert page.locator("#history tbody tr").count() == 4  # still there

        page.click("#erase-user")
        page.fill("#confirm", plan.user_id)
        page.click("#erase-confirm")
        page.wait_for_selector("#receipt")
        assert "/erasures/" in page.url
        assert page.locator("#primary-status").inner_text().startswith("done")
        sinks = page.locator("#sinks").inner_text()
        assert "PostHog" in sinks and "Amplitude" in sinks and "Not configured" in sinks
        shot(page, "erase-02-receipt")
        receipt_url = page.url

        page.goto(user)
        assert page.locator("h1", has_text="No such user").is_visible()
        page.goto(receipt_url)  # the receipt stays
        assert plan.user_id in page.locator("#receipt").inner_text()


def test_a_lead_downloads_all_data_and_cannot_erase(console) -> None:
    base, plan = console
    user = f"{base}/p/{PRODUCT}/u/{plan.user_id}/"
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900}, accept_downloads=True)
        sign_in(page, base, "lee")
        page.goto(user)
        assert page.locator("#erase-user").count() == 0
        shot(page, "erase-03-user-as-lead")
        with page.expect_download() as info:
            page.click("#download-all")
        download = info.value
        assert download.suggested_filename == f"export-{PRODUCT}-{plan.user_id}.json"
        doc = json.loads(Path(download.path()).read_text(encoding="utf-8"))
        assert doc["user_id"] == plan.user_id and doc["state"]["metadata"]["email"] == "ines.okafor@northwind.io"
        assert [s["session_id"] for s in doc["snapshots"]] == [s.session_id for s in plan.sessions]
        assert len(doc["summary_runs"]) == 4
        page.goto(user + "erase")
        assert page.locator("h1", has_text="Not allowed").is_visible()

        page = browser.new_context(viewport={"width": 1360, "height": 900}).new_page()
        sign_in(page, base, "sam")
        page.goto(user)
        assert page.locator("#download-all").count() == 0 and page.locator("#erase-user").count() == 0
