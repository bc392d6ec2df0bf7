"""What the user page asks the database, and the cached access it asks instead, kept true to every change.

The console's own queries are counted on the request's connection
(Django's ``CaptureQueriesContext``); the primary's reads of the state and
the sessions go through the database adapter's own threads and are not
among them. Access (permissions, roles, grants) and the product's settings
come from one read of Django's cache, renewed by any change to them: each
change below is seen by the very next page.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from autoplay_storage.models import AuditEntry, ProductGrant, ProductSettings
from tests.support.dashboard import PRODUCT, configure_primary, grant_products, load_one, make_person

pytestmark = pytest.mark.django_db(transaction=True)

# The session, the signed-in user, one cache read (access and the product's settings), the summary
# runs, the values staff set, the summary history; a lead or an admin also reads the recent-access
# panel. The user.view entry's INSERT runs on the audit writer's own connection (counted below).
SUPPORT_QUERIES = 6
LEAD_QUERIES = SUPPORT_QUERIES + 1


@pytest.fixture
def user_url(settings) -> str:
    configure_primary("database", settings)
    return reverse("dashboard:user", args=[PRODUCT, load_one(5).user_id])


def signed_in(role: str) -> tuple[Client, object]:
    person = make_person(role, role, products=[PRODUCT])
    client = Client()
    client.force_login(person)
    return client, person


def counted(client: Client, url: str) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return [q["sql"] for q in queries.captured_queries]


@pytest.mark.parametrize(("role", "expected"), [("support", SUPPORT_QUERIES), ("lead", LEAD_QUERIES)])
def test_the_user_page_makes_this_many_queries(user_url, role, expected) -> None:
    client, _ = signed_in(role)
    client.get(user_url)  # the first page fills the cache
    sql = counted(client, user_url)
    assert len(sql) == expected, "\n".join(sql)
    assert sum("auth_permission" in q or "productgrant" in q or "productsettings" in q for q in sql) == 0
    assert sum(q.startswith("INSERT") for q in sql) == 0  # the entry is not written on the request's connection
    assert AuditEntry.objects.filter(action="user.view").count() == 2  # but written, once a page


def test_every_change_to_access_is_seen_by_the_next_page(user_url) -> None:
    client, lead = signed_in("lead")
    assert client.get(user_url).status_code == 200
    grant_products(lead, "another-product")  # the grant taken away
    assert client.get(user_url).status_code == 404
    grant_products(lead, PRODUCT)
    assert client.get(user_url).status_code == 200
    settings_row = ProductSettings.objects.create(product_id=PRODUCT, require_access_reason=True)
    asked = client.get(user_url)
    assert asked.status_code == 302 and "/reason?next=" in asked["Location"]
    settings_row.delete()
    assert client.get(user_url).status_code == 200
    lead_group = Group.objects.get(name="lead")
    panel = Permission.objects.get(codename="view_recent_access")
    assert b"Recent access by staff" in client.get(user_url).content
    lead_group.permissions.remove(panel)  # the role changed
    assert b"Recent access by staff" not in client.get(user_url).content
    lead.groups.clear()  # no role at all
    assert client.get(user_url).status_code == 403
    lead.groups.add(lead_group)
    ProductGrant.objects.filter(user=lead).delete()
    ProductGrant.objects.create(group=lead_group, product_id=PRODUCT)  # the group's grant serves too
    assert client.get(user_url).status_code == 200
    assert b'id="erase-user"' not in client.get(user_url).content
    lead.is_superuser = True  # a superuser holds every permission, erasure included
    lead.save()
    assert b'id="erase-user"' in client.get(user_url).content
