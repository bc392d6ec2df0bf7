"""The insight pages through Django's test client on the database and Redis primaries: the product page,
segments, the stuck queue, CSV downloads, product access and the audit entry of an export."""

from __future__ import annotations

import asyncio
import csv
import io
import re
import time

import pytest
from django.test import Client
from django.urls import reverse

from autoplay_storage.lifecycle import load_state
from autoplay_storage.models import AuditEntry, ProductSettings, Segment
from autoplay_storage.user_adoption_state import WorkflowStatus
from tests.support.dashboard import PRODUCT, configure_primary, load_demo, make_person, with_storage

pytestmark = pytest.mark.django_db(transaction=True)
DAY = 86400.0


@pytest.fixture(params=["database", "redis"])
def primary(request: pytest.FixtureRequest, settings) -> str:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    configure_primary(request.param, settings, url)
    load_demo(24)
    return request.param


def person(name: str, role: str, *products: str) -> Client:
    user = make_person(name, role, products=list(products))
    client = Client()
    client.force_login(user)
    return client


def stats() -> object:
    from autoplay_storage import selectors

    return with_storage(lambda _storage: selectors.product_stats(PRODUCT))


def stall(user_id: str, workflow_id: str, days: float, evidence: str) -> None:
    """Put ``workflow_id`` in progress for ``user_id`` with its last progress ``days`` ago."""

    async def go(storage):
        def edit(doc):
            state = load_state(doc, user_id)
            at = time.time() - days * DAY
            state.upsert_workflow_progress(workflow_id, status=WorkflowStatus.IN_PROGRESS, evidence=evidence, now=at)
            wp = state.onboarding.workflow_progress[workflow_id]
            wp.first_detected_at, wp.completed_at, wp.steps = at, None, {}
            return state.to_dict()

        await storage.update_user_state(PRODUCT, user_id, edit)

    with_storage(go)


def csv_rows(response) -> list[list[str]]:
    """The rows of a streamed download (its content is an async iterator, as served under ASGI)."""

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in response.streaming_content])

    return list(csv.reader(io.StringIO(asyncio.run(collect()).decode())))


def first_user() -> str:
    from autoplay_storage import selectors
    from autoplay_storage.browse import UserQuery

    page = with_storage(lambda _s: selectors.list_users(PRODUCT, UserQuery(), limit=1))
    return page.items[0].user_id


def test_product_page_shows_the_funnel_cohorts_and_charts_from_the_aggregates(primary) -> None:
    client = person("sam", "support", PRODUCT)
    response = client.get(reverse("dashboard:insight", args=[PRODUCT]))
    assert response.status_code == 200
    body = response.content.decode()
    numbers = stats()
    assert numbers.users == 24 and numbers.funnel
    for row in numbers.funnel:
        assert row.workflow_id in body
        assert row.completed + row.in_progress + row.untouched == 24
    link = reverse("dashboard:insight_users", args=[PRODUCT]) + f"?workflow={numbers.funnel[0].workflow_id}"
    assert link.replace("?", "?") in body.replace("&amp;", "&")
    assert body.count("<svg") == 2 and 'class="bar sessions"' in body
    assert "style=" not in body  # the CSP forbids inline styles
    assert sum(c.users for c in numbers.cohorts) == 24


def test_a_product_outside_the_grants_is_not_found(primary) -> None:
    other = person("oli", "support", "another-product")
    for name in ("insight", "insight_users", "stuck"):
        assert other.get(reverse(f"dashboard:{name}", args=[PRODUCT])).status_code == 404
    assert other.get(reverse("dashboard:users", args=[PRODUCT]) + "?format=csv").status_code == 404
    assert not AuditEntry.objects.filter(action="users.export_csv").exists()


def test_a_segment_is_saved_shared_counted_and_opened_as_a_list(primary) -> None:
    sam = person("sam", "support", PRODUCT)
    wid = stats().funnel[0].workflow_id
    url = reverse("dashboard:insight_users", args=[PRODUCT])
    listed = sam.get(
        url,
        {
            "workflow": wid,
            "status": "completed",
            "mastery": ["novice", "beginner", "intermediate", "proficient", "power_user"],
        },
    )
    assert listed.status_code == 200
    total = int(re.search(r'class="total">(\d+)<', listed.content.decode())[1])
    assert total == next(r.completed for r in stats().funnel if r.workflow_id == wid)
    response = sam.post(
        reverse("dashboard:segment_create", args=[PRODUCT]),
        {"name": "Done with the first", "workflow": wid, "status": "completed"},
    )
    segment = Segment.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/segments/{segment.slug}/")
    lee = person("lee", "lead", PRODUCT)  # the shared link, opened by someone else
    opened = lee.get(response["Location"])
    assert opened.status_code == 200 and "Done with the first" in opened.content.decode()
    assert f'class="total">{total}<' in opened.content.decode()
    product_page = lee.get(reverse("dashboard:insight", args=[PRODUCT])).content.decode()
    assert re.search(rf"Done with the first</a></td><td class=\"num\">{total}<", product_page)
    assert person("oli", "support", "elsewhere").get(response["Location"]).status_code == 404
    bad = sam.post(reverse("dashboard:segment_create", args=[PRODUCT]), {"name": "", "workflow": wid})
    assert bad.status_code == 302 and Segment.objects.count() == 1


def test_bad_filters_are_400_with_what_is_wrong(primary) -> None:
    sam = person("sam", "support", PRODUCT)
    url = reverse("dashboard:insight_users", args=[PRODUCT])
    for params, message in [
        ({"mastery": "wizard"}, "Unknown mastery level"),
        ({"status": "completed"}, "needs the workflow"),
        ({"sessions_min": "-3"}, "whole number"),
        ({"active_after": "yesterday"}, "unix seconds or a date"),
    ]:
        response = sam.get(url, params)
        assert response.status_code == 400 and message in response.content.decode()
        assert sam.get(url, {**params, "format": "csv"}).status_code == 400
    assert sam.get(reverse("dashboard:stuck", args=[PRODUCT]), {"days": "soon"}).status_code == 400


def test_the_stuck_queue_lists_users_stalled_past_the_product_setting(primary) -> None:
    user_id = first_user()
    stall(user_id, "export_report", 12, "opened reports, never downloaded")
    sam = person("sam", "support", PRODUCT)
    url = reverse("dashboard:stuck", args=[PRODUCT])
    body = sam.get(url).content.decode()
    assert user_id in body and "opened reports, never downloaded" in body and "12 days" in body
    ProductSettings.objects.update_or_create(product_id=PRODUCT, defaults={"stuck_after_days": 30})
    assert "opened reports, never downloaded" not in sam.get(url).content.decode()
    rows = csv_rows(sam.get(url, {"days": 10, "format": "csv"}))
    assert rows[0][-4:] == ["workflow_id", "last_progress_at", "stuck_days", "evidence"]
    assert [user_id, "export_report"] in [[r[0], r[-4]] for r in rows[1:]]


def test_csv_downloads_every_row_of_the_list_and_is_audited(primary) -> None:
    sam = person("sam", "support", PRODUCT)
    url = reverse("dashboard:insight_users", args=[PRODUCT])
    response = sam.get(url, {"onboarded": "no", "format": "csv"})
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert response.streaming
    rows = csv_rows(response)
    total = int(re.search(r'class="total">(\d+)<', sam.get(url, {"onboarded": "no"}).content.decode())[1])
    assert rows[0][0] == "user_id" and len(rows) - 1 == total
    assert all(r[6] == "no" for r in rows[1:])
    entry = AuditEntry.objects.get(action="users.export_csv")
    assert entry.product_id == PRODUCT and "onboarded" in str(entry.details)
    plain = sam.get(reverse("dashboard:users", args=[PRODUCT]), {"format": "csv"})
    assert len(csv_rows(plain)) == 25
    assert AuditEntry.objects.filter(action="users.export_csv").count() == 2
