"""What the audit log records, exactly, for each audited action; the admin's read-only view; the prune command.

Console actions go through Django's test client, API calls through a real
loopback server (``api_server``), commands through ``call_command``; every
check reads the real ``AuditEntry`` table.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from api.models import ApiKey
from autoplay_storage import audit
from autoplay_storage.models import AuditEntry, ProductGrant, SinkDestination, SummaryRun
from tests.support.dashboard import PRODUCT, configure_primary, load_one, make_person

pytestmark = pytest.mark.django_db(transaction=True)


def fields(entry: AuditEntry) -> tuple[Any, ...]:
    return (entry.actor_kind, entry.actor, entry.action, entry.product_id, entry.user_id, entry.session_id,
            entry.client_address, entry.details)


def only(action: str) -> AuditEntry:
    (entry,) = AuditEntry.objects.filter(action=action)
    return entry


@pytest.fixture
def plan(settings):
    configure_primary("database", settings)
    return load_one(2)


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_console_views_are_recorded_once_each(plan) -> None:
    sam = signed_in(make_person("sam", "support"))
    session = plan.sessions[1].session_id
    assert sam.get(reverse("dashboard:user", args=[PRODUCT, plan.user_id])).status_code == 200
    assert sam.get(reverse("dashboard:snapshot", args=[PRODUCT, plan.user_id, session])).status_code == 200
    assert sam.get(reverse("dashboard:snapshot_json", args=[PRODUCT, plan.user_id, session])).status_code == 200
    assert sam.get(reverse("dashboard:users", args=[PRODUCT])).status_code == 200  # a list: not audited
    assert fields(only("user.view")) == ("staff", "sam", "user.view", PRODUCT, plan.user_id, "", "127.0.0.1", {})
    assert fields(only("snapshot.view")) == (
        "staff", "sam", "snapshot.view", PRODUCT, plan.user_id, session, "127.0.0.1", {}
    )
    assert fields(only("snapshot.download")) == (
        "staff", "sam", "snapshot.download", PRODUCT, plan.user_id, session, "127.0.0.1", {}
    )
    assert AuditEntry.objects.exclude(action="signin.success").count() == 3
    # a missing user is no view of anyone
    assert sam.get(reverse("dashboard:user", args=[PRODUCT, "nobody"])).status_code == 404
    assert AuditEntry.objects.exclude(action="signin.success").count() == 3


def test_a_rerun_is_recorded_with_the_summary_before_and_after(plan) -> None:
    lee = signed_in(make_person("lee", "lead"))
    response = lee.post(reverse("dashboard:rerun_summary", args=[PRODUCT, plan.user_id]))
    assert response.status_code == 200  # the preview: nothing stored yet
    run = SummaryRun.objects.get(source="preview")
    assert run.new_summary
    current = SummaryRun.objects.exclude(pk=run.pk).order_by("-started_at").first()
    assert fields(only("summary.rerun")) == (
        "staff", "lee", "summary.rerun", PRODUCT, plan.user_id, run.session_id, "127.0.0.1",
        {"run_id": run.pk, "summarizer": run.summarizer, "current": response.context["preview"].current,
         "previewed": run.new_summary},
    )
    assert not AuditEntry.objects.filter(action="summary.write").exists()
    etag = response.context["preview"].etag
    accepted = lee.post(reverse("dashboard:summary_accept", args=[PRODUCT, plan.user_id]),
                        {"run_id": run.pk, "etag": etag})
    assert accepted.status_code == 302
    written = only("summary.write")
    assert (written.actor, written.details["after"], written.details["run_id"]) == ("lee", run.new_summary, run.pk)
    assert current is None or written.details["before"] == response.context["preview"].current


def test_the_recent_access_panel_is_for_leads_and_admins(plan) -> None:
    sam = signed_in(make_person("sam", "support"))
    url = reverse("dashboard:user", args=[PRODUCT, plan.user_id])
    assert 'id="recent-access"' not in sam.get(url).content.decode()
    audit.record(audit.Action.USER_VIEW, actor=audit.Actor.staff("someone-else"), product_id="other", user_id="x")
    for person in (make_person("lee", "lead"), make_person("ada", "admin")):
        page = signed_in(person).get(url).content.decode()
        panel = page[page.index('id="recent-access"'):]
        assert "sam" in panel and "user.view" in panel and "someone-else" not in panel


# -- the API -----------------------------------------------------------------------


@pytest.fixture
def agent(api_server, make_key, settings):
    configure_primary("database", settings)
    key = make_key("p1", name="billing agent")
    prefix = key.split("_")[1]
    with api_server.client(key) as client:
        yield client, f"ap_{prefix}_… billing agent"


def test_state_put_and_patch_are_recorded_with_the_key(agent) -> None:
    client, actor = agent
    url = "/api/v1/products/p1/users/u1/state"
    created = client.put(url, json={"metadata": {"plan": "pro"}}, headers={"If-None-Match": "*"})
    assert created.status_code == 200, created.text
    etag = created.json()["etag"]
    patched = client.patch(url, json={"ops": [{"op": "journey", "journey_state": "onboarded"}]},
                           headers={"If-Match": f'"{etag}"'})
    assert patched.status_code == 200, patched.text
    put, patch = only("state.put"), only("state.patch")
    assert fields(put) == (
        "api_key", actor, "state.put", "p1", "u1", "", "127.0.0.1",
        {"before": {"etag": None}, "after": {"etag": etag}, "create_only": True},
    )
    assert fields(patch) == (
        "api_key", actor, "state.patch", "p1", "u1", "", "127.0.0.1",
        {"ops": [{"op": "journey", "journey_state": "onboarded"}], "before": {"etag": etag},
         "after": {"etag": patched.json()["etag"]}},
    )
    # a refused write changes nothing and is no state.put
    stale = client.put(url, json={"metadata": {}}, headers={"If-Match": f'"{etag}"'})
    assert stale.status_code == 409
    assert AuditEntry.objects.filter(action="state.put").count() == 1


def test_api_denials_are_recorded(api_server, make_key, settings) -> None:
    configure_primary("database", settings)
    reader = ApiKey.issue("reader", ["p1"], scopes=["read"])[1]
    with api_server.client(reader) as client:
        response = client.put("/api/v1/products/p1/users/u1/state", json={}, headers={"If-None-Match": "*"})
        assert response.status_code == 403 and response.json()["code"] == "scope_forbidden"
        assert client.get("/api/v1/products/p2/users/u1/state").status_code == 403
    scope, product = AuditEntry.objects.filter(action="permission.denied").order_by("id")
    prefix = reader.split("_")[1]
    assert fields(scope) == (
        "api_key", f"ap_{prefix}_… reader", "permission.denied", "p1", "u1", "", "127.0.0.1",
        {"code": "scope_forbidden", "method": "PUT", "path": "/api/v1/products/p1/users/u1/state", "needs": "write"},
    )
    assert (product.product_id, product.details["code"]) == ("p2", "product_forbidden")


# -- keys, sinks and grants -----------------------------------------------------------


def test_key_create_and_revoke_from_the_command(db, capsys) -> None:
    call_command("autoplay_apikey", "create", "--name", "agent", "--product", "p1")
    key = capsys.readouterr().out.strip()
    row = ApiKey.objects.get()
    described = {"key": f"ap_{row.prefix}_…", "name": "agent", "products": ["p1"],
                 "scopes": ["read", "write"], "rate": None, "burst": None}
    assert fields(only("apikey.create")) == (
        "system", "manage.py autoplay_apikey", "apikey.create", "", "", "", None, described
    )
    call_command("autoplay_apikey", "revoke", row.prefix)
    assert only("apikey.revoke").details == described
    assert key not in str(list(AuditEntry.objects.values_list("details", flat=True)))


def test_key_create_and_revoke_from_the_admin(db) -> None:
    root = signed_in(User.objects.create_superuser("root", "root@example.com", "pw-for-tests-only"))
    page = root.post(reverse("admin:api_apikey_add"), {"name": "agent", "products_text": "p1", "scopes": ["read"]})
    key = page.context["key"]
    row = ApiKey.objects.get()
    described = {"key": f"ap_{row.prefix}_…", "name": "agent", "products": ["p1"],
                 "scopes": ["read"], "rate": None, "burst": None}
    assert fields(only("apikey.create")) == ("staff", "root", "apikey.create", "", "", "", "127.0.0.1", described)
    root.post(reverse("admin:api_apikey_changelist"), {"action": "revoke_keys", "_selected_action": [row.pk]})
    assert fields(only("apikey.revoke"))[:2] == ("staff", "root") and only("apikey.revoke").details == described
    assert key not in str(list(AuditEntry.objects.values_list("details", flat=True)))


def test_sink_changes_are_recorded_before_and_after_with_the_key_masked(db) -> None:
    root = signed_in(User.objects.create_superuser("root", "root@example.com", "pw-for-tests-only"))
    secret = "phc_live_secret_0123456789"
    form = {"name": "analytics", "kind": "posthog", "enabled": "on", "host": "", "property_prefix": "ap",
            "api_key": secret, "api_key_env": ""}
    assert root.post(reverse("admin:autoplay_storage_sinkdestination_add"), form).status_code == 302
    sink = SinkDestination.objects.get()
    change = reverse("admin:autoplay_storage_sinkdestination_change", args=[sink.pk])
    assert root.post(change, {**form, "api_key": "", "property_prefix": "xy"}).status_code == 302
    assert root.post(change, {**form, "api_key": "phc_other_secret_987"}).status_code == 302
    delete = reverse("admin:autoplay_storage_sinkdestination_delete", args=[sink.pk])
    assert root.post(delete, {"post": "yes"}).status_code == 302
    added, edited, rekeyed, deleted = AuditEntry.objects.filter(action="sink.change").order_by("id")
    config = {"name": "analytics", "kind": "posthog", "enabled": True, "host": "", "property_prefix": "ap",
              "api_key_env": "", "api_key": "********"}
    assert fields(added) == ("staff", "root", "sink.change", "", "", "", "127.0.0.1",
                             {"sink": "analytics", "before": None, "after": config})
    assert edited.details["before"] == config and edited.details["after"] == {**config, "property_prefix": "xy"}
    assert rekeyed.details["after"]["api_key"] == "******** (changed)"
    assert deleted.details["after"] is None
    everything = str(list(AuditEntry.objects.values_list("details", flat=True)))
    assert secret not in everything and "phc_other_secret_987" not in everything
    assert sink.api_key_encrypted not in everything


def test_grant_changes_in_the_admin_are_recorded(db) -> None:
    root = signed_in(User.objects.create_superuser("root", "root@example.com", "pw-for-tests-only"))
    sam = make_person("sam", "support", products=[])
    add = reverse("admin:autoplay_storage_productgrant_add")
    assert root.post(add, {"user": sam.pk, "group": "", "product_id": "p1"}).status_code == 302
    grant = ProductGrant.objects.get()
    assert grant.granted_by == "root"
    change = reverse("admin:autoplay_storage_productgrant_change", args=[grant.pk])
    group = Group.objects.get(name="support")
    assert root.post(change, {"user": "", "group": group.pk, "product_id": "p2"}).status_code == 302
    delete = reverse("admin:autoplay_storage_productgrant_delete", args=[grant.pk])
    assert root.post(delete, {"post": "yes"}).status_code == 302
    added, changed, deleted = AuditEntry.objects.filter(action="grant.change").order_by("id")
    assert fields(added) == ("staff", "root", "grant.change", "p1", "", "", "127.0.0.1",
                             {"before": None, "after": {"grantee": "user:sam", "product": "p1"}})
    assert changed.details == {"before": {"grantee": "user:sam", "product": "p1"},
                               "after": {"grantee": "group:support", "product": "p2"}}
    assert deleted.details == {"before": {"grantee": "group:support", "product": "p2"}, "after": None}


def test_product_settings_in_the_admin_are_recorded(db) -> None:
    root = signed_in(User.objects.create_superuser("root", "root@example.com", "pw-for-tests-only"))
    add = reverse("admin:autoplay_storage_productsettings_add")
    form = {"product_id": "p1", "require_access_reason": "on", "stuck_after_days": "7"}
    assert root.post(add, form).status_code == 302
    entry = only("product_settings.change")
    assert (entry.product_id, entry.details) == (
        "p1", {"before": None, "after": {"require_access_reason": True, "stuck_after_days": 7}}
    )


# -- nobody edits the log --------------------------------------------------------------


def test_the_admin_cannot_change_or_delete_entries_even_as_superuser(db) -> None:
    audit.record(audit.Action.USER_VIEW, actor=audit.Actor.staff("ana"), product_id="p", user_id="u")
    entry = AuditEntry.objects.get()
    root = signed_in(User.objects.create_superuser("root", "root@example.com", "pw-for-tests-only"))
    listing = root.get(reverse("admin:autoplay_storage_auditentry_changelist"))
    assert listing.status_code == 200
    body = listing.content.decode()
    assert "ana" in body and 'name="action"' not in body  # no bulk actions (delete selected)
    assert reverse("admin:autoplay_storage_auditentry_add") not in body
    change = reverse("admin:autoplay_storage_auditentry_change", args=[entry.pk])
    detail = root.get(change).content.decode()
    assert 'name="_save"' not in detail and "deletelink" not in detail
    assert root.post(change, {"actor": "mallory", "action": "user.view"}).status_code == 403
    delete = reverse("admin:autoplay_storage_auditentry_delete", args=[entry.pk])
    assert root.get(delete).status_code == 403 and root.post(delete, {"post": "yes"}).status_code == 403
    bulk = root.post(reverse("admin:autoplay_storage_auditentry_changelist"),
                     {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"})
    assert bulk.status_code in (200, 302)
    assert root.get(reverse("admin:autoplay_storage_auditentry_add")).status_code == 403
    assert AuditEntry.objects.get(pk=entry.pk).actor == "ana"
    assert set(AuditEntry.objects.values_list("action", flat=True)) == {"user.view", "signin.success"}


# -- prune -----------------------------------------------------------------------------


def test_prune_removes_old_entries_with_a_progress_bar_and_records_itself(db, capsys) -> None:
    for days in (40, 35, 31, 1):
        AuditEntry(at=timezone.now() - timedelta(days=days), actor_kind="system", actor="t", action="x").save()
    before = timezone.now()
    call_command("autoplay_audit_prune", "--older-than", "30")
    out, err = capsys.readouterr()
    assert "Removed 3 audit entries" in out and "3/3" in err
    assert list(AuditEntry.objects.filter(action="x").values_list("actor", flat=True)) == ["t"]
    pruned = only("audit.prune")
    assert (pruned.actor_kind, pruned.actor) == ("system", "manage.py autoplay_audit_prune")
    assert pruned.details["removed"] == 3 and pruned.details["older_than_days"] == 30
    cutoff = timezone.datetime.fromisoformat(pruned.details["cutoff"])
    assert before - timedelta(days=30, seconds=5) < cutoff <= timezone.now() - timedelta(days=30)


@pytest.mark.parametrize("days", ["0", "-3"])
def test_prune_refuses_less_than_a_day(db, days) -> None:
    AuditEntry(at=timezone.now(), actor_kind="system", actor="t", action="x").save()
    with pytest.raises(CommandError, match="at least 1 day"):
        call_command("autoplay_audit_prune", "--older-than", days)
    assert AuditEntry.objects.count() == 1
