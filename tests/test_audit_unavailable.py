"""An audit table that cannot be written never fails the request it records.

The real table is renamed away in the test database for the test's length
(every write and read of it then raises the database's own error), and the
audited console pages and API writes are requested for real: the console
through Django's test client, the API through a loopback server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse

from autoplay_storage.models import AuditEntry
from tests.support.dashboard import PRODUCT, configure_primary, load_one, make_person

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def audit_table() -> Iterator[None]:
    """The audit table renamed away while inside: writing or reading an entry is a real database error."""
    table = AuditEntry._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE "{table}" RENAME TO "{table}_away"')
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER TABLE "{table}_away" RENAME TO "{table}"')


def signed_in(user: User) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def test_the_user_pages_open_when_no_entry_can_be_written(settings: Any, caplog: Any) -> None:
    configure_primary("database", settings)
    plan = load_one(2)
    session = plan.sessions[1].session_id
    people = [signed_in(make_person(name, role)) for name, role in (("sam", "support"), ("lee", "lead"))]
    with audit_table(), caplog.at_level("ERROR", logger="autoplay_storage.audit"):
        for client in people:  # a lead's page also reads the log (the recent-access panel)
            page = client.get(reverse("dashboard:user", args=[PRODUCT, plan.user_id]))
            assert page.status_code == 200
            assert plan.user_id in page.content.decode()
            snapshot = reverse("dashboard:snapshot", args=[PRODUCT, plan.user_id, session])
            assert client.get(snapshot).status_code == 200
    assert "audit entry user.view could not be written" in caplog.text
    assert "audit entry snapshot.view could not be written" in caplog.text
    assert f"recent access of {PRODUCT}/{plan.user_id} could not be read" in caplog.text
    assert not AuditEntry.objects.filter(action="user.view").exists()


def test_state_writes_succeed_when_no_entry_can_be_written(api_server, make_key, settings, caplog: Any) -> None:
    configure_primary("database", settings)
    key = make_key("p1", name="billing agent")
    url = "/api/v1/products/p1/users/u1/state"
    with api_server.client(key) as client, audit_table(), caplog.at_level("ERROR", logger="autoplay_storage.audit"):
        created = client.put(url, json={"metadata": {"plan": "pro"}}, headers={"If-None-Match": "*"})
        assert created.status_code == 200, created.text
        patched = client.patch(url, json={"ops": [{"op": "journey", "journey_state": "onboarded"}]},
                               headers={"If-Match": f'"{created.json()["etag"]}"'})
        assert patched.status_code == 200, patched.text
        assert client.get(url).json()["state"]["journey_state"] == "onboarded"
    assert "audit entry state.put could not be written" in caplog.text
    assert "audit entry state.patch could not be written" in caplog.text
