"""Per-product access in the console, the grant command and the reason for access, through Django's test client.

Data is written through the engine on the database primary; grants, settings
and the audit log are the real tables. Each refused page is compared with the
page of a product that does not exist: an ungranted product must not be told
apart from a missing one.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from autoplay_storage.models import AuditEntry, ProductGrant, ProductSettings
from dashboard.reasons import SESSION_KEY
from tests.support.dashboard import configure_primary, load_demo, load_one, make_person

pytestmark = pytest.mark.django_db(transaction=True)

A, B = "prod-a", "prod-b"


@pytest.fixture
def two_products(settings) -> dict[str, object]:
    configure_primary("database", settings)
    load_demo(3, product=A, seed=1)
    load_demo(3, product=B, seed=2)
    return {A: load_one(2, product=A, seed=5), B: load_one(2, product=B, seed=6)}


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def unmasked(response) -> str:
    """The page without its CSRF token, which is masked afresh on every render."""
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", response.content.decode())


def entries(action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(action=action).order_by("id"))


def test_a_support_user_sees_only_the_granted_product(two_products) -> None:
    sam = signed_in(make_person("sam", "support", products=[A]))
    products = sam.get(reverse("dashboard:products")).content.decode()
    assert f"/p/{A}/" in products and f"/p/{B}/" not in products
    assert sam.get(reverse("dashboard:users", args=[A])).status_code == 200
    assert sam.get(reverse("dashboard:user", args=[A, two_products[A].user_id])).status_code == 200


def test_an_ungranted_product_is_the_missing_products_404_and_is_recorded(two_products) -> None:
    # "ghost" is granted but holds nobody: its pages are what "does not exist" looks like.
    sam = signed_in(make_person("sam", "support", products=[A, "ghost"]))
    plan = two_products[B]
    session = plan.sessions[0].session_id
    urls = {
        "users": [B],
        "user": [B, plan.user_id],
        "snapshot": [B, plan.user_id, session],
        "snapshot_json": [B, plan.user_id, session],
    }
    for name, args in urls.items():
        refused = sam.get(reverse(f"dashboard:{name}", args=args))
        # the same as a product that does not exist and is not granted either ...
        nowhere = sam.get(reverse(f"dashboard:{name}", args=["nowhere", *args[1:]]))
        assert refused.status_code == nowhere.status_code == 404, name
        assert unmasked(refused).replace(B, "nowhere") == unmasked(nowhere), name
        if name != "users":  # ... and, for a user or a session, as a real miss in a granted product
            missing = sam.get(reverse(f"dashboard:{name}", args=["ghost", *args[1:]]))
            assert missing.status_code == 404, name
            assert unmasked(refused).replace(B, "ghost") == unmasked(missing), name
    denied = [e for e in entries("permission.denied") if e.product_id == B]
    assert len(denied) == 4  # the ghost product's pages are plain misses, not denials
    assert not AuditEntry.objects.filter(product_id="ghost").exists()
    last = denied[-1]
    assert (last.actor_kind, last.actor, last.product_id, last.user_id, last.session_id, last.client_address) == (
        "staff", "sam", B, plan.user_id, session, "127.0.0.1"
    )
    assert last.details == {
        "path": reverse("dashboard:snapshot_json", args=[B, plan.user_id, session]),
        "method": "GET",
        "needs": "product grant",
    }


def test_every_product_page_refuses_an_ungranted_product_before_its_view_runs(two_products) -> None:
    """``console_view`` is the one product check: no view repeats it, so every route naming a product is walked.

    The person holds every permission but the one to every product, and product A only; each route, asked for
    product B by each method it takes (GET, POST), is the 404 of a product that does not exist,
    and is recorded as a refused grant, not run.
    """
    from django.contrib.auth.models import Permission
    from django.urls import get_resolver

    from dashboard import urls

    una = make_person("una", None, products=[A])
    una.user_permissions.set(Permission.objects.exclude(codename="access_all_products"))
    client = signed_in(una)
    plan = two_products[B]
    values = {"product_id": B, "user_id": plan.user_id, "session_id": plan.sessions[0].session_id, "pk": 1, "slug": "s"}
    routes = [p for p in get_resolver(urls).url_patterns if "product_id" in p.pattern.converters]
    assert len(routes) >= 20  # the walk reaches the routes it is about
    for route in routes:
        url = reverse(f"dashboard:{route.name}", kwargs={k: values[k] for k in route.pattern.converters})
        checked = 0
        for method in (client.get, client.post):
            before = AuditEntry.objects.filter(action="permission.denied", product_id=B).count()
            response = method(url)
            if response.status_code == 405:  # a method the route does not take: refused before any check
                continue
            assert response.status_code == 404, (route.name, method.__name__)
            assert AuditEntry.objects.filter(action="permission.denied", product_id=B).count() == before + 1, route.name
            checked += 1
        assert checked, route.name


def test_a_lead_cannot_rerun_in_an_ungranted_product(two_products, settings) -> None:
    lee = signed_in(make_person("lee", "lead", products=[A]))
    response = lee.post(reverse("dashboard:rerun_summary", args=[B, two_products[B].user_id]))
    assert response.status_code == 404
    assert entries("summary.rerun") == []
    assert [e.product_id for e in entries("permission.denied")] == [B]


def test_group_grants_all_products_admins_and_superusers(two_products) -> None:
    support = Group.objects.get_or_create(name="support")[0]
    sam = make_person("sam", "support", products=[])
    assert signed_in(sam).get(reverse("dashboard:users", args=[B])).status_code == 404
    ProductGrant.objects.create(group=support, product_id=B)
    assert signed_in(sam).get(reverse("dashboard:users", args=[B])).status_code == 200
    everything = [
        make_person("una", "support", products=None),  # an all-products grant
        make_person("ada", "admin", products=[]),
        User.objects.create_superuser("root", "root@example.com", "pw-for-tests-only"),
    ]
    for person in everything:
        page = signed_in(person).get(reverse("dashboard:products")).content.decode()
        assert f"/p/{A}/" in page and f"/p/{B}/" in page, person.username


def test_the_console_403_is_recorded(two_products) -> None:
    nobody = signed_in(make_person("nobody", None, products=[]))
    assert nobody.get(reverse("dashboard:users", args=[A])).status_code == 403
    (entry,) = entries("permission.denied")
    assert (entry.actor, entry.product_id, entry.details["needs"]) == ("nobody", A, "dashboard.view_console")


# -- the grant command --------------------------------------------------------------


def grants_of(**owner: object) -> set[str]:
    return {"*" if g.all_products else g.product_id for g in ProductGrant.objects.filter(**owner)}


def test_grant_command_for_a_user_all_and_revoke(db, capsys) -> None:
    sam = make_person("sam", "support", products=[])
    call_command("autoplay_grant", "sam", A, B)
    assert grants_of(user=sam) == {A, B}
    assert "Granted for user sam: prod-a, prod-b" in capsys.readouterr().out
    call_command("autoplay_grant", "sam", A)  # again: nothing changes, nothing is recorded
    assert "already held: prod-a" in capsys.readouterr().out
    call_command("autoplay_grant", "sam", "--revoke", A)
    call_command("autoplay_grant", "sam", "--all")
    assert grants_of(user=sam) == {B, "*"}
    call_command("autoplay_grant", "sam", "--all", "--revoke")
    assert grants_of(user=sam) == {B}
    recorded = [(e.actor, e.product_id, e.details) for e in entries("grant.change")]
    assert recorded == [
        ("manage.py autoplay_grant", "", {"grantee": "user:sam", "granted": [A, B]}),
        ("manage.py autoplay_grant", A, {"grantee": "user:sam", "revoked": [A]}),
        ("manage.py autoplay_grant", "", {"grantee": "user:sam", "granted": ["*"]}),
        ("manage.py autoplay_grant", "", {"grantee": "user:sam", "revoked": ["*"]}),
    ]
    assert {e.actor_kind for e in entries("grant.change")} == {"system"}


def test_grant_command_for_a_group(db) -> None:
    make_person("sam", "support", products=[])
    support = Group.objects.get(name="support")
    call_command("autoplay_grant", "--group", "support", A)
    assert grants_of(group=support) == {A}
    assert entries("grant.change")[-1].details == {"grantee": "group:support", "granted": [A]}
    call_command("autoplay_grant", "--group", "support", "--revoke", A)
    assert grants_of(group=support) == set()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ghost", A], "no user named 'ghost'"),
        (["--group", "ghosts", A], "no group named 'ghosts'"),
        ([], "give a USERNAME"),
        (["sam"], "give at least one product id"),
        (["sam", "--all", A], "either product ids or --all"),
        (["sam", "has space"], "no spaces or control characters"),
        (["sam", "x" * 129], "1 to 128 characters"),
        (["sam", "--revoke", B], "nothing to revoke"),
    ],
)
def test_grant_command_refuses_bad_input(db, args, message) -> None:
    make_person("sam", "support", products=[])
    with pytest.raises(CommandError, match=message):
        call_command("autoplay_grant", *args)
    assert not ProductGrant.objects.exists() and not entries("grant.change")


# -- reason for access ----------------------------------------------------------------


def test_a_reason_is_asked_kept_and_recorded(two_products) -> None:
    ProductSettings.objects.create(product_id=A, require_access_reason=True)
    plan = two_products[A]
    user_url = reverse("dashboard:user", args=[A, plan.user_id])
    reason_url = reverse("dashboard:access_reason", args=[A, plan.user_id])
    sam = signed_in(make_person("sam", "support", products=[A]))
    asked = sam.get(user_url)
    assert asked.status_code == 302 and asked["Location"] == f"{reason_url}?next={user_url.replace('/', '%2F')}"
    assert entries("user.view") == []
    form = sam.get(asked["Location"])
    assert form.status_code == 200 and 'name="csrfmiddlewaretoken"' in form.content.decode()

    empty = sam.post(reason_url, {"reason": "   ", "next": user_url})
    assert empty.status_code == 400 and "Give a reason" in empty.content.decode()
    long = sam.post(reason_url, {"reason": "x" * 201, "next": user_url})
    assert long.status_code == 400 and "longer than 200 characters" in long.content.decode()

    given = sam.post(reason_url, {"reason": "TICKET-4711 billing question", "next": user_url})
    assert given.status_code == 302 and given["Location"] == user_url
    assert sam.get(user_url).status_code == 200
    session = plan.sessions[0].session_id
    assert sam.get(reverse("dashboard:snapshot", args=[A, plan.user_id, session])).status_code == 200
    assert sam.get(reverse("dashboard:snapshot_json", args=[A, plan.user_id, session])).status_code == 200
    for action in ("user.view", "snapshot.view", "snapshot.download"):
        (entry,) = entries(action)
        assert entry.details == {"reason": "TICKET-4711 billing question"}, action
    # another user of the same product asks again
    other = load_one(1, product=A, seed=9)
    assert sam.get(reverse("dashboard:user", args=[A, other.user_id])).status_code == 302


def test_a_kept_reason_expires_after_30_minutes(two_products) -> None:
    ProductSettings.objects.create(product_id=A, require_access_reason=True)
    plan = two_products[A]
    sam = signed_in(make_person("sam", "support", products=[A]))
    sam.post(reverse("dashboard:access_reason", args=[A, plan.user_id]), {"reason": "T-1"})
    session = sam.session
    (key,) = session[SESSION_KEY]
    assert json.loads(key) == ["sam", A, plan.user_id]
    assert 29 * 60 < session[SESSION_KEY][key]["until"] - time.time() <= 30 * 60
    session[SESSION_KEY][key]["until"] = time.time() - 1
    session.save()
    assert sam.get(reverse("dashboard:user", args=[A, plan.user_id])).status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/p/", "/\\evil.example", "javascript:x"])
def test_the_reason_form_redirects_only_within_the_site(two_products, target) -> None:
    ProductSettings.objects.create(product_id=A, require_access_reason=True)
    plan = two_products[A]
    sam = signed_in(make_person("sam", "support", products=[A]))
    given = sam.post(reverse("dashboard:access_reason", args=[A, plan.user_id]), {"reason": "T-2", "next": target})
    assert given.status_code == 302 and given["Location"] == reverse("dashboard:user", args=[A, plan.user_id])


def test_the_reason_form_needs_csrf_and_a_grant(two_products) -> None:
    ProductSettings.objects.create(product_id=A, require_access_reason=True)
    plan = two_products[A]
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_person("sam", "support", products=[A]))
    refused = client.post(reverse("dashboard:access_reason", args=[A, plan.user_id]), {"reason": "T-3"})
    assert refused.status_code == 403
    assert SESSION_KEY not in client.session
    other = signed_in(make_person("una", "support", products=[B]))
    assert other.get(reverse("dashboard:access_reason", args=[A, plan.user_id])).status_code == 404


def test_without_the_setting_no_reason_is_asked(two_products) -> None:
    ProductSettings.objects.create(product_id=A, require_access_reason=False)
    sam = signed_in(make_person("sam", "support", products=[A]))
    assert sam.get(reverse("dashboard:user", args=[A, two_products[A].user_id])).status_code == 200
    assert entries("user.view")[0].details == {}
