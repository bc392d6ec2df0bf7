"""The audit page at /audit/: admins only, filters, id-keyset pages, the streamed CSV, and its own entries."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.http import StreamingHttpResponse
from django.test import AsyncClient, Client
from django.urls import reverse

from autoplay_storage.models import AuditEntry
from tests.support.dashboard import make_person

pytestmark = pytest.mark.django_db(transaction=True)

URL = reverse("dashboard:audit")
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def plant(count: int, **values: str) -> None:
    for i in range(count):
        AuditEntry(
            at=T0 + timedelta(hours=i), actor_kind="staff", actor=values.get("actor", "sam"),
            action=values.get("action", "user.view"), product_id=values.get("product", "p1"),
            user_id=values.get("user", f"u{i}"), details={"n": i},
        ).save()


@pytest.fixture
def admin() -> Client:
    client = Client()
    client.force_login(make_person("ada", "admin"))
    return client


def shown_users(response) -> list[str]:
    table = response.content.decode().split("<tbody>")[1].split("</tbody>")[0] if b"<tbody>" in response.content else ""
    return re.findall(r'<td class="mono">(u\d+|x\d*)</td>', table)


def test_only_admins_open_the_audit_page(db) -> None:
    for role in ("support", "lead"):
        client = Client()
        client.force_login(make_person(f"{role}-person", role))
        assert client.get(URL).status_code == 403
        assert client.get(URL, {"format": "csv"}).status_code == 403
        assert "Audit</a>" not in client.get(reverse("dashboard:products")).content.decode()
    assert AuditEntry.objects.filter(action="permission.denied").count() == 4
    admin = Client()
    admin.force_login(make_person("ada", "admin"))
    assert admin.get(URL).status_code == 200
    assert "Audit</a>" in admin.get(reverse("dashboard:products")).content.decode()
    assert Client().get(URL).status_code == 302  # signed out: to the sign-in page


def test_filters_by_actor_action_product_user_and_time(admin) -> None:
    plant(3)
    plant(2, actor="lee", action="snapshot.view", product="p2", user="x")
    assert len(shown_users(admin.get(URL, {"actor": "lee"}))) == 2
    assert len(shown_users(admin.get(URL, {"action": "snapshot.view"}))) == 2
    assert len(shown_users(admin.get(URL, {"product": "p1"}))) == 3
    assert shown_users(admin.get(URL, {"user": "u1"})) == ["u1"]
    # since <= at < until; a bare date as until includes that whole day
    assert shown_users(admin.get(URL, {"since": "2026-11-20T10:00", "until": "2026-11-20T11:00", "product": "p1"})) == [
        "u1"
    ]
    assert len(shown_users(admin.get(URL, {"until": "2026-11-20", "product": "p1"}))) == 3
    assert shown_users(admin.get(URL, {"since": "2026-11-21"})) == []
    (view,) = AuditEntry.objects.filter(action="audit.view", details__filter__actor="lee")
    assert (view.actor, view.details) == ("ada", {"filter": {"actor": "lee"}, "cursor": None})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "yesterday"}, "since &#x27;yesterday&#x27; is not a date"),
        ({"until": "2026-13-40"}, "until &#x27;2026-13-40&#x27; is not a date"),
        ({"since": "2026-11-21", "until": "2026-11-20"}, "since must be before until"),
        ({"action": "DROP TABLE"}, "Unknown action"),
        ({"actor": "a" * 256}, "actor filter is longer than 255"),
        ({"cursor": "-5"}, "This page link is not valid"),
        ({"cursor": "abc"}, "This page link is not valid"),
        ({"format": "xml"}, "Unknown format"),
    ],
)
def test_bad_filters_are_a_400_saying_what_is_wrong(admin, params, message) -> None:
    response = admin.get(URL, params)
    assert response.status_code == 400
    assert message in response.content.decode()
    if "format" not in params:
        assert admin.get(URL, {**params, "format": "csv"}).status_code == 400


def test_cursor_pages_reach_every_entry_once_even_while_entries_are_written(admin) -> None:
    plant(230)
    seen: list[int] = []
    params: dict[str, str] = {"product": "p1"}
    pages = 0
    while True:
        response = admin.get(URL, params)
        assert response.status_code == 200
        seen += [int(n) for n in re.findall(r'<td class="mono">u(\d+)</td>', response.content.decode())]
        pages += 1
        plant(1, user="x")  # a new entry meanwhile never shifts the next page
        older = re.search(r'id="audit-older" href="\?([^"]+)"', response.content.decode())
        if not older:
            break
        params = dict(pair.split("=", 1) for pair in older.group(1).replace("&amp;", "&").split("&"))
    assert pages == 3
    assert seen == list(range(229, -1, -1))


async def test_the_csv_is_streamed_filtered_and_recorded() -> None:
    from asgiref.sync import sync_to_async

    await sync_to_async(plant)(3)
    await sync_to_async(plant)(2, actor="lee", action="snapshot.view", user="x")
    await sync_to_async(AuditEntry(actor_kind="staff", actor="=cmd|' /C calc'!A0", action="user.view").save)()
    admin = await sync_to_async(make_person)("ada", "admin")
    client = AsyncClient()
    await client.aforce_login(admin)
    response = await client.get(URL, {"actor": "sam", "format": "csv"})
    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse) and response.is_async
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert "no-store" in response["Cache-Control"]
    assert response["Content-Disposition"].startswith('attachment; filename="audit-')
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["user_id"] for r in rows] == ["u2", "u1", "u0"]
    assert rows[0]["actor"] == "sam" and rows[0]["action"] == "user.view" and rows[0]["details"] == '{"n": 2}'
    formula = await client.get(URL, {"actor": "=cmd|' /C calc'!A0", "format": "csv"})
    text = b"".join([chunk async for chunk in formula.streaming_content]).decode()
    assert "'=cmd" in text  # a spreadsheet formula is written as text
    export = await AuditEntry.objects.filter(action="audit.export").order_by("id").afirst()
    assert (export.actor, export.details) == ("ada", {"filter": {"actor": "sam"}})


def test_a_superuser_opens_the_audit_page(db) -> None:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw-for-tests-only"))
    assert client.get(URL).status_code == 200
