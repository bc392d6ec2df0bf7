"""The console's erase and download routes over Django's test client: permissions, CSRF, product access, audit."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from autoplay_storage.models import AuditEntry, Erasure, ProductGrant
from tests.support.dashboard import PRODUCT, configure_primary, load_one, make_person

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def plan(settings):
    configure_primary("database", settings)
    return load_one(3)


def download_as(username: str, url: str) -> tuple[int, dict[str, str], bytes]:
    """GET a streamed download in one event loop, as the ASGI server serves it: (status, headers, body)."""
    from django.contrib.auth.models import User

    user = User.objects.get(username=username)

    async def go() -> tuple[int, dict[str, str], bytes]:
        client = AsyncClient()
        await client.aforce_login(user)
        response = await client.get(url)
        if not response.streaming:
            return response.status_code, dict(response.headers), response.content
        return response.status_code, dict(response.headers), b"".join([c async for c in response.streaming_content])

    return async_to_sync(go)()


def signed_in(username: str, role: str | None, products: list[str] | None = None, **kw) -> Client:
    """``products``: the grants (``None``: every product)."""
    client = Client(**kw)
    client.force_login(make_person(username, role, products=products))  # the sign-in form: test_signin_lockout
    return client


def test_the_erase_form_needs_the_csrf_token_and_the_typed_id(plan) -> None:
    admin = signed_in("ada", "admin", enforce_csrf_checks=True)
    url = f"/p/{PRODUCT}/u/{plan.user_id}/erase"
    assert admin.post(url, {"confirm": plan.user_id}).status_code == 403  # no CSRF token
    assert not Erasure.objects.exists()
    form = admin.get(url)
    assert form.status_code == 200
    token = form.cookies["csrftoken"].value
    wrong = admin.post(url, {"confirm": "someone-else", "csrfmiddlewaretoken": token})
    assert wrong.status_code == 400 and not Erasure.objects.exists()
    done = admin.post(url, {"confirm": plan.user_id, "csrfmiddlewaretoken": token})
    receipt = Erasure.objects.get()
    assert done.status_code == 302 and done["Location"] == f"/erasures/{receipt.id}/"
    assert receipt.requested_by == "staff:ada" and receipt.primary_status == "done"
    entry = AuditEntry.objects.get(action="user.erase")
    assert (entry.actor, entry.user_id, entry.details["erasure"]) == ("ada", plan.user_id, str(receipt.id))
    assert admin.get(f"/erasures/{receipt.id}/").status_code == 200


def test_only_admins_erase_and_leads_download_their_products_only(plan) -> None:
    from django.contrib.auth.models import Group

    lead = signed_in("lee", "lead", products=[])
    support = signed_in("sam", "support", products=[])
    erase = f"/p/{PRODUCT}/u/{plan.user_id}/erase"
    download = f"/p/{PRODUCT}/u/{plan.user_id}/export.json"
    assert lead.post(erase, {"confirm": plan.user_id}).status_code == 403
    assert support.get(download).status_code == 403
    assert lead.get(download).status_code == 404  # no grant for the product: as if it did not exist
    ProductGrant.objects.create(group=Group.objects.get(name="lead"), product_id=PRODUCT)
    got = lead.get(download)  # served as a WSGI server does: the stream consumed in a loop of its own
    assert got.status_code == 200
    with pytest.warns(Warning, match="consume asynchronous iterators"):
        doc = json.loads(b"".join(got))
    assert doc["user_id"] == plan.user_id and len(doc["snapshots"]) == 3
    assert not Erasure.objects.exists()


def test_a_download_is_streamed_never_cached_and_audited(plan) -> None:
    admin = signed_in("ada", "admin")
    status, headers, got = download_as("ada", f"/p/{PRODUCT}/u/{plan.user_id}/export.json")
    assert status == 200 and headers["Cache-Control"] == "no-store" and "Content-Length" not in headers
    doc = json.loads(got)
    assert [s["session_id"] for s in doc["snapshots"]] == [s.session_id for s in plan.sessions]
    assert AuditEntry.objects.filter(action="user.export", user_id=plan.user_id).count() == 1
    assert admin.get(f"/p/{PRODUCT}/u/nobody/export.json").status_code == 404
