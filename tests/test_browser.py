"""The console in a real headless Chromium against a live server on the embedded default primary."""

from __future__ import annotations

import re

import pytest

from autoplay_storage.user_adoption_state import SessionSnapshot
from tests.support.browser import chromium, shot
from tests.support.dashboard import (
    PASSWORD,
    PRODUCT,
    configure_primary,
    grant_products,
    load_demo,
    load_one,
    make_person,
    write_raw,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


async def browser_summarizer(snapshot: SessionSnapshot) -> str:
    return f"Fresh brief for session {snapshot.session_number}: offer help with the next workflow."


@pytest.fixture
def console(settings, live_server) -> str:
    """A live console with demo users, one findable by email, and a lead and a support sign-in."""
    configure_primary("database", settings)
    settings.AUTOPLAY_STORAGE = {
        **settings.AUTOPLAY_STORAGE,
        "SUMMARIZER": "tests.test_browser.browser_summarizer",
    }
    load_demo(30)
    plan = load_one(4, email="ines.okafor@northwind.io", role="manager", name="Ines Okafor")
    grant_products(make_person("lee", "lead"))
    make_person("sam", "support")
    return live_server.url, plan


def sign_in(page, base: str, username: str) -> None:
    page.goto(base + "/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def test_lead_finds_a_user_opens_a_snapshot_and_reruns_the_summary(console) -> None:
    base, plan = console
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(base + "/")
        shot(page, "01-sign-in")
        sign_in(page, base, "lee")
        assert page.locator("td a.strong", has_text=PRODUCT).is_visible()
        shot(page, "02-products")

        page.click(f"text={PRODUCT}")
        page.fill("#q", "INES.OKA")
        page.click("button:has-text('Apply')")
        rows = page.locator("table.users tbody tr")
        assert rows.count() == 1
        assert "ines.okafor@northwind.io" in rows.first.inner_text()
        shot(page, "03-users-search")

        rows.first.locator("a.strong").click()
        page.wait_for_selector(f"h1:has-text('{plan.user_id}')")
        assert page.locator("svg.chart circle.dot.rate").count() == 4
        assert page.locator("button:has-text('Re-run summary')").is_visible()
        shot(page, "04-user")

        second = plan.sessions[1].session_id
        page.click(f"#history a:has-text('{second}')")
        page.wait_for_selector(".badge.frozen")
        assert "frozen" in page.locator(".badge.frozen").inner_text()
        assert second in page.locator("pre.raw").inner_text()
        shot(page, "05-snapshot")

        page.click("button:has-text('Re-run summary from this session')")
        page.wait_for_selector("#summary-new")  # a preview first: nothing is stored yet
        assert second in page.locator(".pagehead").inner_text()
        shot(page, "06-summary-preview")
        page.click("#accept-summary")
        page.wait_for_selector(".alert-success")
        assert "The previewed summary is now the user's summary" in page.locator(".alert-success").inner_text()

        summary = page.locator(".summary-text").inner_text()
        assert summary == "Fresh brief for session 2: offer help with the next workflow."
        assert "re-run from the console, previewed by lee" in page.locator(".provenance").inner_text()
        first_run = page.locator("#runs tbody tr").first.inner_text()
        assert "lee" in first_run and second in first_run and "succeeded" in first_run
        page.locator("#runs").scroll_into_view_if_needed()
        shot(page, "07-user-after-rerun")


def test_support_does_not_see_the_rerun_button(console) -> None:
    base, plan = console
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        sign_in(page, base, "sam")
        page.goto(f"{base}/p/{PRODUCT}/u/{plan.user_id}/")
        assert page.locator(".summary-text").is_visible()
        assert page.locator("button:has-text('Re-run summary')").count() == 0
        assert re.search(r"\bsupport\b", page.locator(".who").inner_text())
        shot(page, "08-user-as-support")
        page.goto(f"{base}/p/{PRODUCT}/u/{plan.user_id}/s/{plan.sessions[0].session_id}/")
        assert page.locator("button:has-text('Re-run summary')").count() == 0


def test_an_unreadable_state_is_shown_with_its_raw_text(console) -> None:
    base, plan = console
    truncated = '{"_v": 1, "user_id": "' + plan.user_id + '", "mastery": {"rating": 7,'
    write_raw("database", None, PRODUCT, plan.user_id, truncated)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        sign_in(page, base, "sam")
        page.goto(f"{base}/p/{PRODUCT}/u/{plan.user_id}/")
        box = page.locator("#unreadable")
        assert "cannot be read" in box.inner_text()
        assert '"mastery": {"rating": 7,' in box.locator("pre.raw").inner_text()
        assert page.locator("#history tbody tr").count() == 4  # the history is still shown
        shot(page, "09-unreadable-state")
