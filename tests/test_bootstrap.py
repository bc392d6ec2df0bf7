"""The first-run commands: ``autoplay_bootstrap`` (roles, demo data, sign-ins, grants) and ``autoplay_demo``."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command

from autoplay_storage import access
from autoplay_storage.models import SummaryRun
from tests.support.dashboard import configure_primary, with_storage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["database", "redis"])
def primary(request: pytest.FixtureRequest, settings) -> str:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    configure_primary(request.param, settings, url)
    request.node.redis_url = url
    return request.param


def test_bootstrap_creates_roles_demo_and_sign_ins(primary, settings, monkeypatch, capsys) -> None:
    from django.contrib.auth import authenticate
    from django.test import RequestFactory

    signing_in = RequestFactory().post("/accounts/login/")  # sign-in lockouts need the request (django-axes)
    monkeypatch.setenv("AUTOPLAY_SUPPORT_PASSWORD", "from-the-env-2718")
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "DEMO": True}
    call_command("autoplay_bootstrap", "--demo-users", "5", verbosity=0)
    out = capsys.readouterr().out
    passwords = dict(re.findall(r"^\s+(\w+)\s+role \w+\s+password (\S+)", out, re.M))
    assert set(passwords) == {"admin", "lead", "support"}
    assert authenticate(signing_in, username="admin", password=passwords["admin"]).is_staff
    assert authenticate(signing_in, username="lead", password=passwords["lead"]) is not None
    assert authenticate(signing_in, username="support", password="from-the-env-2718") is not None
    assert passwords["admin"] != passwords["lead"]
    # the demo sign-ins see the demo product; the admin role sees every product
    from django.contrib.auth.models import User

    from autoplay_storage.access import product_access
    from autoplay_storage.models import AuditEntry

    for name in ("lead", "support"):
        seen = product_access(User.objects.get(username=name))
        assert seen == access.ProductAccess(all=False, products=frozenset({"demo-projects"}))
        assert AuditEntry.objects.get(action="grant.change", details__grantee=f"user:{name}").details == {
            "grantee": f"user:{name}", "granted": ["demo-projects"]
        }
    assert product_access(User.objects.get(username="admin")).all

    async def products(storage):
        return await storage.browser.list_products()

    (demo,) = with_storage(products)
    assert demo.product_id == "demo-projects" and demo.user_count == 5
    assert SummaryRun.objects.filter(product_id="demo-projects", source="session_end").exists()
    # a second start changes nothing and prints where to sign in
    call_command("autoplay_bootstrap", verbosity=0)
    out = capsys.readouterr().out
    assert "already holds products" in out and "changepassword" in out
    assert with_storage(products)[0].user_count == 5


def test_bootstrap_without_demo(primary, settings, capsys) -> None:
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "DEMO": False}
    call_command("autoplay_bootstrap", verbosity=0)
    assert "Demo data: off" in capsys.readouterr().out

    async def products(storage):
        return await storage.browser.list_products()

    assert with_storage(products) == []


def test_autoplay_demo_loads_more_users(primary, capsys) -> None:
    call_command("autoplay_demo", "--users", "7", "--product", "more", "--sessions", "3", "--seed", "1")
    assert "Loaded 7 users" in capsys.readouterr().out

    async def users(storage):
        return (await storage.browser.list_users("more", limit=100)).items

    rows = with_storage(users)
    assert len(rows) == 7 and all(1 <= r.sessions_count <= 3 for r in rows)
    assert all("@" in r.metadata["email"] for r in rows)
