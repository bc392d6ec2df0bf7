"""Per-product access, the reason for access and the audit page in a real headless Chromium against a live server."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from autoplay_storage.models import AuditEntry, ProductSettings
from tests.support.browser import chromium, shot
from tests.support.dashboard import PASSWORD, configure_primary, load_demo, load_one, make_person

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

A, B = "prod-a", "prod-b"


@pytest.fixture
def console(settings, live_server):
    """Two products; ``sam`` (support) is granted A only, ``ada`` is an admin."""
    configure_primary("database", settings)
    load_demo(3, product=A, seed=1)
    load_demo(3, product=B, seed=2)
    plans = {A: load_one(2, product=A, seed=5), B: load_one(2, product=B, seed=6)}
    make_person("sam", "support", products=[A])
    make_person("ada", "admin", products=[])
    return live_server.url, plans


def sign_in(page, base: str, username: str) -> None:
    page.goto(base + "/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def test_a_support_user_cannot_reach_an_ungranted_product(console) -> None:
    base, plans = console
    other = plans[B]
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        sign_in(page, base, "sam")
        products = page.locator("td a.strong")
        assert products.all_inner_texts() == [A]
        shot(page, "access-01-products-granted-only")
        # typed URLs of product B: its list, a user, a snapshot, the download
        user_path = f"/p/{B}/u/{other.user_id}/"
        for path in (f"/p/{B}/", user_path, f"{user_path}s/{other.sessions[0].session_id}/"):
            response = page.goto(base + path)
            assert response.status == 404, path
            assert page.locator("h1").inner_text() in ("No such product", "No such user", "No such session")
            assert "Back to products" in page.content()
        shot(page, "access-02-ungranted-is-404")
        # a link to B planted on a page of A (as a pasted link would be) leads to the same 404
        page.goto(f"{base}/p/{A}/")
        page.evaluate(f"document.querySelector('h1').innerHTML = '<a id=\"planted\" href=\"{user_path}\">x</a>'")
        with page.expect_navigation() as navigation:
            page.click("#planted")
        assert navigation.value.status == 404
        assert page.locator("h1").inner_text() == "No such user"
        assert other.user_id not in page.locator("main").inner_text().replace(f"'{other.user_id}'", "")
    denied = AuditEntry.objects.filter(action="permission.denied", actor="sam")
    assert denied.count() == 4 and set(denied.values_list("product_id", flat=True)) == {B}


def test_a_reason_is_asked_and_recorded(console) -> None:
    base, plans = console
    ProductSettings.objects.create(product_id=A, require_access_reason=True)
    plan = plans[A]
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        sign_in(page, base, "sam")
        page.click(f"text={A}")
        page.click(f"a.strong:has-text('{plan.user_id}')")
        page.wait_for_selector("#reason-form")
        assert "/reason?next=" in page.url
        shot(page, "access-03-reason-asked")
        page.fill("#reason", "TICKET-812 cannot finish setup")
        page.click("#reason-form button[type=submit]")
        page.wait_for_selector(f"h1:has-text('{plan.user_id}')")
        assert page.url == f"{base}/p/{A}/u/{plan.user_id}/"
        page.click(f"#history a:has-text('{plan.sessions[0].session_id}')")
        page.wait_for_selector(".badge.frozen")  # no second question within 30 minutes
        shot(page, "access-04-after-reason")
    views = AuditEntry.objects.filter(actor="sam", user_id=plan.user_id).order_by("id")
    assert [(e.action, e.details) for e in views] == [
        ("user.view", {"reason": "TICKET-812 cannot finish setup"}),
        ("snapshot.view", {"reason": "TICKET-812 cannot finish setup"}),
    ]


# The live server is WSGI, which drains the CSV's async iterator through a thread; `make run` serves ASGI.
@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators")
def test_the_audit_page_filters_and_downloads(console) -> None:
    base, plans = console
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
        page = context.new_page()
        sign_in(page, base, "sam")
        page.goto(f"{base}/p/{A}/u/{plans[A].user_id}/")
        page.goto(f"{base}/p/{B}/")  # refused: a permission.denied entry
        page.click("text=Sign out")
        sign_in(page, base, "ada")
        page.click("nav.mainnav a:has-text('Audit')")
        page.wait_for_selector("#audit-filter")
        page.fill("#actor", "sam")
        page.select_option("#action", "user.view")
        page.click("#audit-filter button[type=submit]")
        rows = page.locator("table.audit tbody tr")
        assert rows.count() == 1
        assert "user.view" in rows.first.inner_text() and plans[A].user_id in rows.first.inner_text()
        shot(page, "access-05-audit-filtered")
        with page.expect_download() as download:
            page.click("#audit-csv")
        text = Path(download.value.path()).read_text(encoding="utf-8")
        context.close()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["actor"], r["action"], r["product_id"]) for r in rows] == [("sam", "user.view", A)]
    assert AuditEntry.objects.filter(action="audit.export", actor="ada").count() == 1
