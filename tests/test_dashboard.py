"""The console's pages through Django's test client, on the database and Redis primaries.

Data is written through the engine (demo loader, lifecycle), read back by the
views through the engine: no page test pokes the ORM records or Redis keys,
except to plant a corrupt document the engine itself would never write.
"""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from autoplay_storage.models import SummaryRun
from autoplay_storage.user_adoption_state import SessionSnapshot
from tests.support.dashboard import (
    PASSWORD,
    PRODUCT,
    configure_primary,
    grant_products,
    load_demo,
    load_one,
    load_one_direct,
    make_person,
    with_storage,
    write_raw,
)
from tests.support.redis_server import closed_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["database", "redis"])
def primary(request: pytest.FixtureRequest, settings) -> str:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    configure_primary(request.param, settings, url)
    request.node.redis_url = url
    return request.param


@pytest.fixture
def support(db) -> Client:
    client = Client()
    client.force_login(make_person("sam", "support"))
    return client


@pytest.fixture
def lead(db) -> Client:
    client = Client()
    client.force_login(grant_products(make_person("lee", "lead")))
    return client


@pytest.fixture
def admin(db) -> Client:
    client = Client()
    client.force_login(make_person("ada", "admin", staff=True))
    return client


def state_of(user_id: str) -> dict:
    async def go(storage):
        return await storage.get_user_state(PRODUCT, user_id)

    return with_storage(go)


def text(response) -> str:
    return response.content.decode()


# -- sign-in and permissions ----------------------------------------------------


def test_every_page_needs_a_sign_in(primary) -> None:
    plan = load_one(2)
    sid = plan.sessions[0].session_id
    client = Client()
    pages = [
        reverse("dashboard:products"),
        reverse("dashboard:users", args=[PRODUCT]),
        reverse("dashboard:user", args=[PRODUCT, plan.user_id]),
        reverse("dashboard:snapshot", args=[PRODUCT, plan.user_id, sid]),
        reverse("dashboard:snapshot_json", args=[PRODUCT, plan.user_id, sid]),
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next=")
    response = client.post(reverse("dashboard:rerun_summary", args=[PRODUCT, plan.user_id]))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert not SummaryRun.objects.filter(source=SummaryRun.Source.PREVIEW).exists()


def test_sign_in_form_signs_in_and_out(primary) -> None:
    make_person("sam", "support")
    client = Client()
    page = client.get(reverse("login"))
    assert page.status_code == 200 and 'name="password"' in text(page)
    bad = client.post(reverse("login"), {"username": "sam", "password": "wrong"})
    assert bad.status_code == 200 and "do not match" in text(bad)
    good = client.post(reverse("login"), {"username": "sam", "password": PASSWORD})
    assert good.status_code == 302 and good["Location"] == reverse("dashboard:products")
    assert client.get(reverse("dashboard:products")).status_code == 200
    client.post(reverse("logout"))
    assert client.get(reverse("dashboard:products")).status_code == 302


def test_an_account_without_a_role_is_refused(primary) -> None:
    client = Client()
    client.force_login(make_person("nobody", None))
    response = client.get(reverse("dashboard:products"))
    assert response.status_code == 403
    assert "Ask an admin" in text(response)


def test_roles_migration_creates_the_permissions_it_grants(db) -> None:
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    call_command("migrate", "dashboard", "zero", verbosity=0)
    assert not Group.objects.filter(name__in=["support", "lead", "admin"]).exists()
    # as on a fresh database: the console's permission does not exist before the migration runs
    Permission.objects.filter(content_type__app_label="dashboard").delete()
    ContentType.objects.filter(app_label="dashboard").delete()
    call_command("migrate", "dashboard", verbosity=0)
    perms = {
        g.name: {f"{p.content_type.app_label}.{p.codename}" for p in g.permissions.all()} for g in Group.objects.all()
    }
    assert perms["support"] == {"dashboard.view_console", "autoplay_storage.view_summaryrun"}
    assert perms["lead"] == perms["support"] | {
        "autoplay_storage.rerun_summary", "autoplay_storage.view_recent_access", "autoplay_storage.export_user",
        "autoplay_storage.edit_state",
    }
    assert perms["lead"] <= perms["admin"]
    # every product, the audit page and erasure are the admin role's alone
    for only_admin in (
        "autoplay_storage.access_all_products", "autoplay_storage.view_auditentry", "autoplay_storage.erase_user"
    ):
        assert only_admin in perms["admin"] and only_admin not in perms["lead"] | perms["support"]
    assert "autoplay_storage.change_sinkdestination" in perms["admin"]


def test_admin_link_only_for_staff(primary, admin, support) -> None:
    assert 'href="/admin/"' in text(admin.get(reverse("dashboard:products")))
    assert 'href="/admin/"' not in text(support.get(reverse("dashboard:products")))


# -- products and users ----------------------------------------------------------


def test_products_show_counts_and_splits(primary, support) -> None:
    ids = load_demo(12)
    load_demo(3, product="other-product", seed=3)
    response = support.get(reverse("dashboard:products"))
    assert response.status_code == 200
    body = text(response)
    assert PRODUCT in body and "other-product" in body

    async def summaries(storage):
        return {p.product_id: p for p in await storage.browser.list_products()}

    acme = with_storage(summaries)[PRODUCT]
    assert acme.user_count == len(ids) == 12
    for journey, n in acme.journey_states.items():
        assert f"?journey={journey}\">{journey.replace('_', ' ')} <b>{n}</b>" in body
    for level, n in acme.mastery_levels.items():
        assert f"?mastery={level}\">{level.replace('_', ' ')} <b>{n}</b>" in body


def test_products_empty_state(primary, support) -> None:
    body = text(support.get(reverse("dashboard:products")))
    assert "No products yet" in body and "autoplay_demo" in body


def test_users_search_by_email_prefix_ignoring_case(primary, support) -> None:
    load_demo(8)
    plan = load_one(2, email="Marta.Quinn@Example.org", role="Billing-Admin")
    url = reverse("dashboard:users", args=[PRODUCT])
    for needle in ["marta.q", "MARTA.QUINN@EX", "billing-ad", plan.user_id[:6].upper()]:
        body = text(support.get(url, {"q": needle}))
        assert plan.user_id in body, needle
    miss = support.get(url, {"q": "nobody-has-this"})
    assert miss.status_code == 200 and "No users match" in text(miss)


def test_users_filters_and_sort(primary, support) -> None:
    load_demo(20)
    url = reverse("dashboard:users", args=[PRODUCT])

    async def rows(storage):
        return (await storage.browser.list_users(PRODUCT, limit=500)).items

    everyone = with_storage(rows)
    for journey in ("onboarding", "onboarded"):
        body = text(support.get(url, {"journey": journey}))
        for row in everyone:
            assert (row.user_id in body) == (row.journey_state == journey)
    onboarded = text(support.get(url, {"onboarded": "yes"}))
    for row in everyone:
        assert (row.user_id in onboarded) == row.onboarded
    level = everyone[0].mastery_level
    body = text(support.get(url, {"mastery": level}))
    for row in everyone:
        assert (row.user_id in body) == (row.mastery_level == level)
    newest = sorted(everyone, key=lambda r: r.last_activity_at, reverse=True)
    order = re.findall(r'href="/p/acme/u/([^/"]+)/"', text(support.get(url, {"order": "last_activity"})))
    assert order == [r.user_id for r in reversed(newest)]
    order = re.findall(r'href="/p/acme/u/([^/"]+)/"', text(support.get(url)))
    assert order == [r.user_id for r in newest]


def test_users_cursor_pagination_reaches_everyone_once(primary, support) -> None:
    ids = load_demo(63, max_sessions=1)
    url = reverse("dashboard:users", args=[PRODUCT])
    seen: list[str] = []
    response = support.get(url)
    while True:
        body = text(response)
        seen += re.findall(r'href="/p/acme/u/([^/"]+)/"', body)
        nxt = re.search(r'rel="next" href="([^"]+)"', body)
        if not nxt:
            break
        response = support.get(url + nxt.group(1).replace("&amp;", "&"))
        assert "First page" in text(response)
    assert sorted(seen) == sorted(ids) and len(seen) == 63


def test_users_bad_filters_are_a_400_with_the_reason(primary, support) -> None:
    url = reverse("dashboard:users", args=[PRODUCT])
    for params, reason in [
        ({"journey": "lost"}, "Unknown journey state"),
        ({"mastery": "wizard"}, "Unknown mastery level"),
        ({"onboarded": "maybe"}, "Unknown onboarding filter"),
        ({"order": "name"}, "Unknown sort"),
        ({"cursor": "not-a-cursor"}, "not valid"),
        ({"q": "x" * 300}, "longer than 200"),
    ]:
        response = support.get(url, params)
        assert response.status_code == 400, params
        assert reason in text(response)


# -- one user ------------------------------------------------------------------------


def test_user_page_shows_the_whole_journey(primary, support) -> None:
    plan = load_one(4, email="ines.okafor@acme.dev", role="manager")
    response = support.get(reverse("dashboard:user", args=[PRODUCT, plan.user_id]))
    assert response.status_code == 200
    body = text(response)
    state = state_of(plan.user_id)
    assert "ines.okafor@acme.dev" in body and "manager" in body
    assert f"badge big journey-{state['journey_state']}" in body
    assert f"{state['mastery']['rating']}/10" in body and state["mastery"]["description"] in body
    assert f"{round(state['onboarding']['completion_rate'] * 100)}%" in body
    for wid, wp in state["onboarding"]["workflow_progress"].items():
        assert wid.replace("_", " ") in body and f"status-{wp['status']}" in body
    for feature in state["discovered_features"]:
        assert feature.replace("_", " ") in body
    for session in plan.sessions:
        assert reverse("dashboard:snapshot", args=[PRODUCT, plan.user_id, session.session_id]) in body
    assert '<svg class="chart"' in body and body.count('<circle class="dot rate"') == 4
    # the current summary was produced by the recorded session-end run of the last session
    assert state["onboarding"]["summary"] in body
    produced = body.split("Produced")[1].split("</p>")[0]
    assert f'href="/p/acme/u/{plan.user_id}/s/{plan.sessions[-1].session_id}/"' in produced
    assert "session end (summarizer)" in body
    assert body.count('<span class="badge outcome-succeeded">') == 4


def test_summary_from_another_writer_is_said_so(primary, support) -> None:
    plan = load_one(1, record_runs=False)

    async def write(storage):
        def mutate(doc):
            doc["onboarding"]["summary"] = "Hand-written by the SDK."
            return doc

        await storage.update_user_state(PRODUCT, plan.user_id, mutate)

    with_storage(write)
    body = text(support.get(reverse("dashboard:user", args=[PRODUCT, plan.user_id])))
    assert "Hand-written by the SDK." in body and "Written by another writer" in body


def test_history_pages_through_every_session_beyond_the_inline_fifty(primary, support) -> None:
    plan = load_one(57, record_runs=False)
    assert len(state_of(plan.user_id)["sessions"]["index"]) == 50
    url = reverse("dashboard:user", args=[PRODUCT, plan.user_id])
    first = text(support.get(url))
    assert first.count('<circle class="dot rate"') == 57  # the chart covers all of them
    seen = re.findall(r'href="/p/acme/u/[^/]+/s/([^/"]+)/"', first.split('id="history"')[1].split('id="runs"')[0])
    nxt = re.search(r'rel="next" href="([^"]+)"', first)
    assert nxt and len(seen) == 50
    second = text(support.get(url + nxt.group(1).replace("&amp;", "&").split("#")[0]))
    seen += re.findall(r'href="/p/acme/u/[^/]+/s/([^/"]+)/"', second.split('id="history"')[1].split('id="runs"')[0])
    assert sorted(seen) == sorted(s.session_id for s in plan.sessions)


def test_chart_plots_the_newest_sessions_and_the_history_keeps_them_all(primary, support) -> None:
    plan = load_one_direct(230)
    url = reverse("dashboard:user", args=[PRODUCT, plan.user_id])
    body = text(support.get(url))
    assert "the newest 200 sessions" in body
    assert '<polyline class="line rate"' in body
    points = re.search(r'<polyline class="line rate" points="([^"]+)"', body).group(1).split()
    assert len(points) == 200
    assert re.search(r">session 31</text>.*>session 230</text>", body)
    seen: list[str] = []
    while True:
        history = body.split('id="history"')[1].split('id="runs"')[0]
        seen += re.findall(r'href="/p/acme/u/[^/]+/s/([^/"]+)/"', history)
        nxt = re.search(r'rel="next" href="([^"]+)"', body)
        if not nxt:
            break
        body = text(support.get(url + nxt.group(1).replace("&amp;", "&").split("#")[0]))
    assert len(seen) == 230 and set(seen) == {s.session_id for s in plan.sessions}


def test_unknown_user_and_session_are_404_pages(primary, support) -> None:
    plan = load_one(1, record_runs=False)
    missing = support.get(reverse("dashboard:user", args=[PRODUCT, "u_nobody"]))
    assert missing.status_code == 404 and "No such user" in text(missing)
    missing = support.get(reverse("dashboard:snapshot", args=[PRODUCT, plan.user_id, "s_nope"]))
    assert missing.status_code == 404 and "No such session" in text(missing)
    missing = support.get(reverse("dashboard:snapshot_json", args=[PRODUCT, plan.user_id, "s_nope"]))
    assert missing.status_code == 404


def test_ids_with_slashes_and_percents_are_reachable(primary, support) -> None:
    plan = load_one(1, record_runs=False)

    async def copy(storage):
        doc = await storage.get_user_state(PRODUCT, plan.user_id)
        await storage.save_user_state(PRODUCT, "team/a%20b", doc)

    with_storage(copy)
    body = text(support.get(reverse("dashboard:users", args=[PRODUCT])))
    link = re.search(r'href="(/p/acme/u/team[^"]+)"', body).group(1)
    page = support.get(link)
    assert page.status_code == 200 and "team/a%20b" in text(page)


# -- snapshots ---------------------------------------------------------------------


def test_snapshot_page_shows_every_field_frozen_and_raw(primary, support) -> None:
    plan = load_one(2, record_runs=False)
    sid = plan.sessions[1].session_id

    async def read(storage):
        return await storage.get_session_snapshot(PRODUCT, plan.user_id, sid)

    doc = with_storage(read)
    snap = SessionSnapshot.from_dict(doc)
    body = text(support.get(reverse("dashboard:snapshot", args=[PRODUCT, plan.user_id, sid])))
    assert 'class="badge big frozen"' in body and "</svg> frozen" in body and "Session 2" in body
    assert f"{snap.duration_s} s" in body and str(snap.completion_rate) in body
    for wid in snap.completed_workflow_ids + snap.in_progress_workflow_ids + snap.untouched_workflow_ids:
        assert wid.replace("_", " ") in body
    raw = re.search(r'<h2>Raw JSON</h2>.*?<pre class="raw">(.*?)</pre>', body, re.S).group(1)
    import html

    assert json.loads(html.unescape(raw)) == doc
    download = support.get(reverse("dashboard:snapshot_json", args=[PRODUCT, plan.user_id, sid]))
    assert download["Content-Type"].startswith("application/json")
    assert download["Content-Disposition"].startswith('attachment; filename="snapshot-')
    assert json.loads(download.content) == doc


# -- documents that cannot be read --------------------------------------------------


def test_corrupt_state_is_shown_with_its_raw_text(primary, support, request) -> None:
    plan = load_one(1, record_runs=False)
    write_raw(primary, request.node.redis_url, PRODUCT, plan.user_id, '{"user_id": "u", "journey_state": <<truncated')
    response = support.get(reverse("dashboard:user", args=[PRODUCT, plan.user_id]))
    assert response.status_code == 200
    body = text(response)
    assert "cannot be read" in body and "invalid JSON" in body
    assert "{&quot;user_id&quot;: &quot;u&quot;, &quot;journey_state&quot;: &lt;&lt;truncated" in body
    assert plan.sessions[0].session_id in body  # the history is still there


def test_state_of_an_unknown_version_is_shown_not_replaced(primary, support, request) -> None:
    plan = load_one(1, record_runs=False)
    raw = json.dumps({"_v": 99, "user_id": plan.user_id, "future_field": "kept"})
    write_raw(primary, request.node.redis_url, PRODUCT, plan.user_id, raw)
    body = text(support.get(reverse("dashboard:user", args=[PRODUCT, plan.user_id])))
    assert "schema version _v=99" in body and "future_field" in body

    async def raw_now(storage):
        return await storage.browser.get_raw_user_state(PRODUCT, plan.user_id)

    assert json.loads(with_storage(raw_now)) == json.loads(raw)


def test_corrupt_snapshot_is_shown_with_its_raw_text(primary, support, request) -> None:
    plan = load_one(1, record_runs=False)
    write_raw(primary, request.node.redis_url, PRODUCT, plan.user_id, "not json at all", session_id="s_broken")
    response = support.get(reverse("dashboard:snapshot", args=[PRODUCT, plan.user_id, "s_broken"]))
    assert response.status_code == 200
    body = text(response)
    assert "This snapshot cannot be read" in body and "not json at all" in body
    download = support.get(reverse("dashboard:snapshot_json", args=[PRODUCT, plan.user_id, "s_broken"]))
    assert download.content == b"not json at all"


def test_unreachable_primary_is_a_friendly_503(settings, support) -> None:
    configure_primary("redis", settings, f"redis://127.0.0.1:{closed_port()}/0")
    for url in [reverse("dashboard:products"), reverse("dashboard:users", args=[PRODUCT])]:
        response = support.get(url)
        assert response.status_code == 503
        assert "Storage unavailable" in text(response) and response["Retry-After"] == "5"


# -- re-running the summary --------------------------------------------------------


async def shouting_summarizer(snapshot: SessionSnapshot) -> str:
    return f"RE-RUN OF SESSION {snapshot.session_number} ({snapshot.session_id})"


async def failing_summarizer(snapshot: SessionSnapshot) -> str:
    raise RuntimeError("the model is overloaded")


async def slow_summarizer(snapshot: SessionSnapshot) -> str:
    await asyncio.sleep(5)
    return "too late"


def use_summarizer(settings, fn, timeout: float = 30.0) -> None:
    settings.AUTOPLAY_STORAGE = {
        **settings.AUTOPLAY_STORAGE,
        "SUMMARIZER": f"tests.test_dashboard.{fn.__name__}",
        "SUMMARIZER_TIMEOUT_S": timeout,
    }


def accept(client: Client, user_id: str, body: str):
    """Accept the preview on ``body`` (its run id and etag), as the Accept button does."""
    run_id = re.search(r'name="run_id" value="(\d+)"', body).group(1)
    etag = re.search(r'name="etag" value="([0-9a-f]+)"', body).group(1)
    url = reverse("dashboard:summary_accept", args=[PRODUCT, user_id])
    return client.post(url, {"run_id": run_id, "etag": etag}, follow=True)


def test_lead_reruns_the_summary_on_the_latest_snapshot(primary, lead, settings) -> None:
    plan = load_one(3)
    use_summarizer(settings, shouting_summarizer)
    page = text(lead.get(reverse("dashboard:user", args=[PRODUCT, plan.user_id])))
    assert "Re-run summary" in page
    before = state_of(plan.user_id)
    response = lead.post(reverse("dashboard:rerun_summary", args=[PRODUCT, plan.user_id]))
    expected = f"RE-RUN OF SESSION 3 ({plan.sessions[-1].session_id})"
    preview = text(response)
    assert response.status_code == 200 and "Re-run preview" in preview and "RE-RUN" in preview
    assert state_of(plan.user_id) == before  # a preview stores nothing
    run = SummaryRun.objects.get(source=SummaryRun.Source.PREVIEW)
    assert run.actor.username == "lee" and run.session_id == plan.sessions[-1].session_id
    assert run.previous_summary == before["onboarding"]["summary"] and run.new_summary == expected
    assert run.summarizer == "tests.test_dashboard.shouting_summarizer" and run.duration_ms is not None
    assert run.applied_at is None
    body = text(accept(lead, plan.user_id, preview))
    assert state_of(plan.user_id)["onboarding"]["summary"] == expected
    assert "The previewed summary is now the user" in body
    assert "re-run from the console, previewed by <b>lee</b>" in body
    run.refresh_from_db()
    assert run.applied_at is not None and run.applied_by.username == "lee"


def test_rerun_from_a_chosen_snapshot_previews_that_session(primary, lead, settings) -> None:
    plan = load_one(3, record_runs=False)
    use_summarizer(settings, shouting_summarizer)
    sid = plan.sessions[0].session_id
    page = text(lead.get(reverse("dashboard:snapshot", args=[PRODUCT, plan.user_id, sid])))
    assert f'name="session_id" value="{sid}"' in page
    response = lead.post(reverse("dashboard:rerun_summary", args=[PRODUCT, plan.user_id]), {"session_id": sid})
    accept(lead, plan.user_id, text(response))
    assert state_of(plan.user_id)["onboarding"]["summary"] == f"RE-RUN OF SESSION 1 ({sid})"


@pytest.mark.parametrize(
    ("summarizer", "timeout", "message", "outcome"),
    [
        (failing_summarizer, 30.0, "RuntimeError: the model is overloaded", "failed"),
        (slow_summarizer, 0.2, "did not answer within 0.2 s", "timed_out"),
    ],
)
def test_failed_rerun_says_why_and_changes_nothing(primary, lead, settings, summarizer, timeout, message, outcome):
    plan = load_one(2, record_runs=False)
    before = state_of(plan.user_id)
    use_summarizer(settings, summarizer, timeout)
    response = lead.post(reverse("dashboard:rerun_summary", args=[PRODUCT, plan.user_id]), follow=True)
    body = text(response)
    assert "The summary was not re-run" in body and message in body and "unchanged" in body
    assert state_of(plan.user_id) == before
    run = SummaryRun.objects.get(source=SummaryRun.Source.PREVIEW)
    assert run.outcome == outcome and run.new_summary is None
    assert f"outcome-{outcome}" in body


def test_rerun_with_no_session_says_so(primary, lead) -> None:
    async def start(storage):
        from autoplay_storage.lifecycle import on_session_start

        await on_session_start(PRODUCT, "u_new", "s_open", storage)

    with_storage(start)
    body = text(lead.post(reverse("dashboard:rerun_summary", args=[PRODUCT, "u_new"]), follow=True))
    assert "Nothing to summarize" in body


def test_support_sees_no_button_and_cannot_rerun(primary, support) -> None:
    plan = load_one(2, record_runs=False)
    before = state_of(plan.user_id)
    for url in [
        reverse("dashboard:user", args=[PRODUCT, plan.user_id]),
        reverse("dashboard:snapshot", args=[PRODUCT, plan.user_id, plan.sessions[0].session_id]),
    ]:
        assert "Re-run summary" not in text(support.get(url))
    response = support.post(reverse("dashboard:rerun_summary", args=[PRODUCT, plan.user_id]))
    assert response.status_code == 403
    assert state_of(plan.user_id) == before
    assert not SummaryRun.objects.filter(source=SummaryRun.Source.PREVIEW).exists()


def test_rerun_is_post_only(primary, lead) -> None:
    plan = load_one(1, record_runs=False)
    assert lead.get(reverse("dashboard:rerun_summary", args=[PRODUCT, plan.user_id])).status_code == 405


def test_rerun_enforces_csrf(primary, settings) -> None:
    plan = load_one(2, record_runs=False)
    use_summarizer(settings, shouting_summarizer)
    client = Client(enforce_csrf_checks=True)
    client.force_login(grant_products(make_person("lee", "lead")))
    url = reverse("dashboard:rerun_summary", args=[PRODUCT, plan.user_id])
    assert client.post(url).status_code == 403
    assert not SummaryRun.objects.filter(source=SummaryRun.Source.PREVIEW).exists()
    page = text(client.get(reverse("dashboard:user", args=[PRODUCT, plan.user_id])))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    preview = client.post(url, {"csrfmiddlewaretoken": token})
    assert preview.status_code == 200
    assert SummaryRun.objects.get(source=SummaryRun.Source.PREVIEW).new_summary.startswith("RE-RUN OF SESSION 2")
    assert client.post(reverse("dashboard:summary_accept", args=[PRODUCT, plan.user_id])).status_code == 403
