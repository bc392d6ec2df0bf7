"""API keys: the management command and the admin page (create shown once, list, revoke)."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from api import auth
from api.models import ApiKey, hash_key

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("autoplay_apikey", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_command_creates_lists_and_revokes() -> None:
    output = run("create", "--name", "support bot", "--product", "p1", "--product", "p2")
    key = output.strip().splitlines()[-1]
    assert re.fullmatch(r"ap_[0-9a-f]{8}_[A-Za-z0-9_\-]{40,}", key)
    row = ApiKey.objects.get()
    assert row.products == ["p1", "p2"] and row.name == "support bot"
    assert row.key_hash == hash_key(key) and key not in str(row.__dict__)

    listing = run("list")
    assert f"ap_{row.prefix}_" in listing and "support bot" in listing and "active" in listing
    assert key.split("_", 2)[2] not in listing

    assert "Revoked" in run("revoke", f"ap_{row.prefix}")
    row.refresh_from_db()
    assert row.revoked_at is not None
    assert "revoked" in run("list")
    with pytest.raises(CommandError, match="already revoked"):
        run("revoke", row.prefix)
    with pytest.raises(CommandError, match="no key"):
        run("revoke", "00000000")


def test_command_refuses_bad_product_ids() -> None:
    with pytest.raises(CommandError, match="not a product id"):
        run("create", "--name", "x", "--product", "a:b")
    assert not ApiKey.objects.exists()


@pytest.mark.django_db(transaction=True)
async def test_verify_caches_and_rejects() -> None:
    from asgiref.sync import sync_to_async

    row, key = await sync_to_async(ApiKey.issue)("cache test", ["p1"])
    auth.forget()
    identity = await auth.verify(key)
    assert identity.allows("p1") and not identity.allows("p2")
    assert await auth.verify(key) is identity  # remembered by this worker
    for bad in (key + "x", "ap_" + row.prefix + "_guess", "ap_short_x", ""):
        with pytest.raises(auth.ApiError) as err:
            await auth.verify(bad)
        assert err.value.status == 401
    auth.forget()


def test_admin_creates_a_key_shown_once_and_revokes(client: Any, admin_user: Any, settings: Any) -> None:
    client.force_login(admin_user)
    form = {"name": "web agent", "products_text": "p1, p2 p3", "scopes": ["read", "write"]}
    response = client.post("/admin/api/apikey/add/", form)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    text = response.content.decode()
    key = re.search(r"<code[^>]*>(ap_[0-9a-f]{8}_[^<]+)</code>", text).group(1)
    from django.contrib.sessions.models import Session

    stored = " ".join(f"{s.session_data} {s.get_decoded()}" for s in Session.objects.all())
    assert key not in stored, "the one-time key never sits in the session store"
    row = ApiKey.objects.get()
    assert row.products == ["p1", "p2", "p3"] and row.created_by == admin_user
    assert row.key_hash == hash_key(key)

    page = client.get(f"/admin/api/apikey/{row.pk}/change/").content.decode()
    assert key not in page and f"ap_{row.prefix}_" in client.get("/admin/api/apikey/").content.decode()
    assert 'name="_save"' not in page  # keys are immutable: nothing to save

    bad = client.post("/admin/api/apikey/add/", {"name": "x", "products_text": "a:b", "scopes": ["read"]})
    assert "not a product id" in bad.content.decode() and ApiKey.objects.count() == 1

    client.post("/admin/api/apikey/", {"action": "revoke_keys", "_selected_action": [row.pk]}, follow=True)
    row.refresh_from_db()
    assert row.revoked_at is not None


@pytest.mark.django_db(transaction=True)
def test_key_store_failure_is_a_503_not_a_500() -> None:
    """A key that cannot be checked is neither accepted nor called invalid: the agent retries."""
    from asgiref.sync import async_to_sync
    from django.db import connection

    _, key = ApiKey.issue("outage", ["p1"])
    auth.forget()
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE api_apikey RENAME TO api_apikey_away")
    try:
        with pytest.raises(auth.ApiError) as err:
            async_to_sync(auth.verify)(key)
        assert err.value.status == 503 and err.value.code == "auth_unavailable"
        assert int(err.value.headers["Retry-After"]) > 0
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE api_apikey_away RENAME TO api_apikey")
    assert async_to_sync(auth.verify)(key).allows("p1")
    auth.forget()


def test_command_takes_scopes_and_existing_keys_keep_read_and_write() -> None:
    run("create", "--name", "reader", "--product", "p1", "--scope", "read")
    assert ApiKey.objects.get(name="reader").scopes == ["read"]
    run("create", "--name", "agent", "--product", "p1")
    assert ApiKey.objects.get(name="agent").scopes == ["read", "write"]
    with pytest.raises(CommandError):
        run("create", "--name", "x", "--product", "p1", "--scope", "everything")
    assert "scopes read" in run("list")


@pytest.mark.django_db(transaction=True)
def test_scopes_decide_what_a_key_may_do(api_server: Any, primary: str) -> None:
    auth.forget()
    _, reader = ApiKey.issue("reader", ["p1"], scopes=["read"])
    _, writer = ApiKey.issue("writer", ["p1"], scopes=["write"])
    _, both = ApiKey.issue("agent", ["p1"])
    user = "/api/v1/products/p1/users/u1"
    with api_server.client(both) as c:
        assert c.post(f"{user}/sessions/s1/start").status_code == 200
        assert c.get(f"{user}/state").status_code == 200
    with api_server.client(reader) as c:
        assert c.get(f"{user}/state").status_code == 200
        assert c.get(f"{user}/sessions").status_code == 200
        refused = c.post(f"{user}/sessions/s2/start")
        assert refused.status_code == 403 and refused.json()["code"] == "scope_forbidden"
        assert "write" in refused.json()["message"]
        assert c.patch(f"{user}/state", json={"ops": []}).status_code == 403
    with api_server.client(writer) as c:
        assert c.post(f"{user}/sessions/s2/start").status_code == 200
        refused = c.get(f"{user}/state")
        assert refused.status_code == 403 and refused.json()["code"] == "scope_forbidden"
    auth.forget()
