"""The insight pages in a real headless Chromium against a live server: the product page and its funnel
click-through, a segment saved, shared and opened by someone else, the stuck queue, a CSV download."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from autoplay_storage.lifecycle import load_state
from autoplay_storage.models import ProductGrant
from autoplay_storage.user_adoption_state import WorkflowStatus
from tests.support.browser import chromium, shot
from tests.support.dashboard import PASSWORD, PRODUCT, configure_primary, load_demo, make_person, with_storage

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def console(settings, live_server) -> tuple[str, str]:
    """A live console with demo users, one of them stalled on a workflow for 20 days; two granted sign-ins."""
    configure_primary("database", settings)
    ids = load_demo(20)
    stalled = ids[0]

    async def stall(storage):
        def edit(doc):
            state = load_state(doc, stalled)
            at = time.time() - 20 * 86400
            state.upsert_workflow_progress(
                "export_report",
                status=WorkflowStatus.IN_PROGRESS,
                evidence="opened the report builder, never exported",
                now=at,
            )
            wp = state.onboarding.workflow_progress["export_report"]
            wp.first_detected_at, wp.completed_at, wp.steps = at, None, {}
            return state.to_dict()

        await storage.update_user_state(PRODUCT, stalled, edit)

    with_storage(stall)
    for name, role in (("lee", "lead"), ("sam", "support")):
        ProductGrant.objects.create(user=make_person(name, role), product_id=PRODUCT)
    return live_server.url, stalled


def sign_in(page, base: str, username: str) -> None:
    page.goto(base + "/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def test_product_page_segment_share_stuck_queue_and_csv(console) -> None:
    base, stalled = console
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 1000}, accept_downloads=True)
        sign_in(page, base, "lee")
        page.click("a.insight-link")
        page.wait_for_selector("table.funnel")
        assert page.locator("table.funnel tbody tr").count() >= 5
        assert page.locator("svg.chart.insight").count() == 2
        assert page.locator("table.cohorts tbody tr").count() >= 1
        shot(page, "insight-01-product-page")

        row = page.locator("table.funnel tbody tr", has_text="export_report")
        in_progress = int(row.locator("td").nth(2).locator("a").inner_text())
        row.locator("td").nth(2).locator("a").click()
        page.wait_for_selector("b.total")
        assert int(page.locator("b.total").inner_text()) == in_progress
        assert page.locator("table.users tbody tr").count() == min(in_progress, 50)
        assert stalled in page.locator("table.users").inner_text()
        shot(page, "insight-02-funnel-click-through")

        page.fill("#segment-name", "Stalled on export")
        page.click("#save-segment")
        page.wait_for_selector(".alert-success")
        assert "/segments/" in page.url
        shared = page.url
        assert int(page.locator("b.total").inner_text()) == in_progress
        shot(page, "insight-03-segment")

        with page.expect_download() as got:
            page.click("#csv")
        rows = list(csv.reader(io.StringIO(Path(got.value.path()).read_text(encoding="utf-8"))))
        assert rows[0][0] == "user_id" and len(rows) - 1 == in_progress
        assert stalled in {r[0] for r in rows[1:]}

        other = browser.new_page(viewport={"width": 1360, "height": 1000})
        sign_in(other, base, "sam")
        other.goto(shared)
        assert "Stalled on export" in other.locator("h1").inner_text()
        assert int(other.locator("b.total").inner_text()) == in_progress
        other.goto(f"{base}/p/{PRODUCT}/insight/")
        segment_row = other.locator("table.segments tbody tr", has_text="Stalled on export")
        assert segment_row.locator("td.num").inner_text() == str(in_progress)

        other.click("#stuck-link")
        other.wait_for_selector("table.stuck")
        stuck = other.locator("table.stuck tbody tr", has_text=stalled).filter(has_text="export_report")
        assert "opened the report builder, never exported" in stuck.inner_text()
        assert "20 days" in stuck.inner_text()
        shot(other, "insight-04-stuck-queue")
