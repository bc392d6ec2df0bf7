"""The support tooling in headless Chromium against a live server, on both primaries.

Edit and conflict, compare, summary preview and accept, restore, rebuild.
An agent's write "in between" runs in a thread of its own: Playwright's
sync API holds an event loop in the test's thread, where the engine's
``async_to_sync`` may not run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState
from tests.support.browser import chromium, shot
from tests.support.dashboard import (
    PASSWORD,
    PRODUCT,
    configure_primary,
    grant_products,
    load_one,
    make_person,
    with_storage,
    write_raw,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


async def review_summarizer(snapshot: SessionSnapshot) -> str:
    return f"Reviewed brief for session {snapshot.session_number}: help them invite the team next."


@pytest.fixture(params=["database", "redis"])
def console(request: pytest.FixtureRequest, settings, live_server) -> dict[str, Any]:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    configure_primary(request.param, settings, url)
    plan = load_one(3, email="ines.okafor@northwind.io")  # summaries by the demo's template summarizer
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "SUMMARIZER": f"{__name__}.review_summarizer"}
    grant_products(make_person("lee", "lead"))
    grant_products(make_person("ada", "admin"))
    return {"base": live_server.url, "plan": plan, "primary": request.param, "redis_url": url}


def in_thread(fn: Callable[[], Any]) -> Any:
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join()
    return out[0] if out else None


def state_of(user_id: str) -> UserAdoptionState:
    async def go(storage):
        return await storage.get_user_state(PRODUCT, user_id)

    return UserAdoptionState.from_dict(in_thread(lambda: with_storage(go)))


def agent_writes(user_id: str, edit: Callable[[UserAdoptionState], object]) -> None:
    async def go(storage):
        def mutate(doc):
            state = UserAdoptionState.from_dict(doc)
            edit(state)
            return state.to_dict()

        await storage.update_user_state(PRODUCT, user_id, mutate)

    in_thread(lambda: with_storage(go))


def sign_in(page, base: str, username: str) -> None:
    page.goto(base + "/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def open_user(page, console: dict[str, Any], username: str = "lee") -> str:
    base, plan = console["base"], console["plan"]
    sign_in(page, base, username)
    url = f"{base}/p/{PRODUCT}/u/{plan.user_id}/"
    page.goto(url)
    return url


def test_edit_a_state_then_meet_a_conflict_and_reapply(console) -> None:
    plan, name = console["plan"], console["primary"]
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        open_user(page, console)
        page.click("#edit-state")
        page.fill("#mastery_rating", "8")
        page.select_option("#mastery_level", "proficient")
        page.fill("#features_add", "exports")
        page.fill("input[name='md-new-0-key']", "plan")
        page.fill("input[name='md-new-0-value']", "enterprise")
        shot(page, f"support-{name}-01-edit-form")
        page.click("#save-state")
        page.wait_for_selector(".alert-success")
        assert "State updated by hand" in page.locator(".alert-success").inner_text()
        marks = page.locator("#staff-edits").inner_text()
        assert "mastery · rating" in marks and "lee" in marks and "metadata · plan" in marks
        shot(page, f"support-{name}-02-staff-marks")
        state = state_of(plan.user_id)
        assert (state.mastery.rating, state.metadata["plan"]) == (8, "enterprise")
        assert "exports" in state.discovered_features

        page.click("#edit-state")
        page.fill("#mastery_rating", "2")
        agent_writes(plan.user_id, lambda s: s.set_mastery(5, "intermediate", "the agent's own view"))
        page.click("#save-state")
        page.wait_for_selector("#conflict")
        conflict = page.locator("#conflict").inner_text()
        assert "changed since you opened this form" in conflict and "mastery · rating" in conflict
        assert "mastery · level" not in conflict  # only what the editor changed, not the whole mastery
        assert page.locator("#mastery_rating").input_value() == "5"  # the current value, to re-apply onto
        shot(page, f"support-{name}-03-conflict")
        assert state_of(plan.user_id).mastery.rating == 5
        page.fill("#mastery_rating", "2")
        page.click("#save-state")
        page.wait_for_selector(".alert-success")
        assert state_of(plan.user_id).mastery.rating == 2


def test_compare_two_sessions_and_a_session_with_the_live_state(console) -> None:
    plan, name = console["plan"], console["primary"]
    first, _second, third = (s.session_id for s in plan.sessions)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        open_user(page, console)
        page.click(f"#history a:has-text('{third}')")
        page.wait_for_selector("#changes")
        assert "Changes in this session" in page.locator("#changes").inner_text()
        shot(page, f"support-{name}-04-session-changes")
        page.click(".crumbs a:has-text('" + plan.user_id + "')")
        page.click("#compare-sessions")
        page.select_option("#compare-a", first)
        page.select_option("#compare-b", third)
        page.click("button:has-text('Compare')")
        page.wait_for_selector("#diff")
        assert f"session {first} → session {third}" in page.locator(".diff-sides").inner_text()
        shot(page, f"support-{name}-05-compare")
        page.select_option("#compare-a", third)
        page.select_option("#compare-b", "state")
        page.click("button:has-text('Compare')")
        page.wait_for_selector("#diff")
        assert "the live state" in page.locator(".diff-sides").inner_text()


def test_preview_a_rerun_and_accept_it(console) -> None:
    plan, name = console["plan"], console["primary"]
    before = state_of(plan.user_id).onboarding.summary
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        open_user(page, console)
        page.click("button:has-text('Re-run summary')")
        page.wait_for_selector("#summary-new")
        assert page.locator("#summary-new").inner_text().startswith("Reviewed brief for session 3")
        assert page.locator("#summary-new .w-ins").count() >= 1  # the differences are marked
        shot(page, f"support-{name}-06-preview")
        assert state_of(plan.user_id).onboarding.summary == before  # nothing stored yet
        page.click("#accept-summary")
        page.wait_for_selector(".alert-success")
        assert page.locator(".summary-text").inner_text().startswith("Reviewed brief for session 3")
        assert "previewed by lee" in page.locator(".provenance").inner_text()
        assert "previewed · session" in page.locator("#summary-history tbody tr").first.inner_text()
        shot(page, f"support-{name}-07-accepted")

        page.click("button:has-text('Re-run summary')")
        page.wait_for_selector("#summary-new")
        agent_writes(plan.user_id, lambda s: s.merge_metadata({"agent": "was here"}))
        page.click("#accept-summary")
        page.wait_for_selector("#summary-conflict")
        shot(page, f"support-{name}-08-accept-conflict")


def test_restore_an_earlier_summary(console) -> None:
    plan, name = console["plan"], console["primary"]
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        open_user(page, console)
        rows = page.locator("#summary-history tbody tr")
        assert rows.count() >= 3
        oldest = rows.last
        text = oldest.locator("td.text").inner_text()
        oldest.locator("button.restore").click()
        page.wait_for_selector(".alert-success")
        assert page.locator(".summary-text").inner_text() == text
        assert "restored from version" in page.locator("#summary-history tbody tr").first.inner_text()
        shot(page, f"support-{name}-09-restored")
        assert state_of(plan.user_id).onboarding.summary == text


def test_an_admin_rebuilds_an_unreadable_state(console) -> None:
    plan, name = console["plan"], console["primary"]
    truncated = '{"_v": 1, "user_id": "' + plan.user_id + '", "mastery": {"rating": 7,'
    write_raw(console["primary"], console["redis_url"], PRODUCT, plan.user_id, truncated)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 1000})
        open_user(page, console, "ada")
        assert "cannot be read" in page.locator("#unreadable").inner_text()
        page.click("#rebuild-state")
        page.wait_for_selector("#rebuild-preview")
        assert page.locator("#rebuild-count").inner_text() == "3"
        assert '"mastery": {"rating": 7,' in page.locator("#rebuild-raw").inner_text()
        shot(page, f"support-{name}-10-rebuild-preview")
        page.click("#confirm-rebuild")
        page.wait_for_selector(".alert-success")
        assert "State rebuilt from 3 sessions" in page.locator(".alert-success").inner_text()
        assert page.locator("#unreadable").count() == 0
        assert page.locator("#quarantined a:has-text('Download')").count() == 1
        shot(page, f"support-{name}-11-rebuilt")
    assert state_of(plan.user_id).sessions.count == 3
