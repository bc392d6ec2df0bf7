"""The audit log's guarantees (append-only, never failing its caller) and product access resolution."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import IntegrityError, transaction
from django.test import RequestFactory
from django.utils import timezone

from autoplay_storage import access, audit
from autoplay_storage.models import AuditEntry, ProductGrant
from autoplay_storage.models.audit import AuditImmutableError

pytestmark = pytest.mark.django_db


def test_entries_cannot_be_changed_or_deleted_through_the_orm() -> None:
    audit.record(audit.Action.USER_VIEW, actor=audit.Actor.staff("ana"), product_id="p", user_id="u")
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.action, entry.product_id, entry.user_id) == ("ana", "user.view", "p", "u")
    entry.actor = "someone else"
    with pytest.raises(AuditImmutableError):
        entry.save()
    with pytest.raises(AuditImmutableError):
        entry.delete()
    with pytest.raises(AuditImmutableError):
        AuditEntry.objects.filter(id=entry.id).update(actor="x")
    with pytest.raises(AuditImmutableError):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.get().actor == "ana"


def test_prune_removes_only_older_entries() -> None:
    for days in (40, 35, 1):
        AuditEntry(at=timezone.now() - timedelta(days=days), actor_kind="system", actor="t", action="x").save()
    removed = AuditEntry.objects.prune_before(timezone.now() - timedelta(days=30), batch=1)
    assert removed == 2
    assert AuditEntry.objects.count() == 1


def test_request_actor_address_and_details_that_json_cannot_take() -> None:
    request = RequestFactory().get("/", REMOTE_ADDR="203.0.113.9")
    request.user = User.objects.create_user("bea")
    audit.record_request(request, audit.Action.STATE_EDIT, product_id="p", details={"fields": {"a"}})
    entry = AuditEntry.objects.get()
    assert (entry.actor_kind, entry.actor, entry.client_address) == ("staff", "bea", "203.0.113.9")
    assert entry.details == {"fields": "{'a'}"}


def test_a_failing_write_is_logged_and_does_not_raise(caplog: Any) -> None:
    with transaction.atomic():
        # A broken transaction makes every query fail, as a locked or lost database would.
        with pytest.raises(IntegrityError):
            ProductGrant.objects.create(product_id="p")  # neither user nor group
        audit.record(audit.Action.USER_VIEW, actor=audit.Actor.staff("ana"))
        transaction.set_rollback(True)
    assert "audit entry user.view could not be written" in caplog.text


def test_access_follows_user_and_group_grants() -> None:
    ana = User.objects.create_user("ana")
    support = Group.objects.create(name="support-eu")
    ana.groups.add(support)
    assert access.product_access(ana) == access.NO_ACCESS
    ProductGrant.objects.create(user=ana, product_id="a")
    ProductGrant.objects.create(group=support, product_id="b")
    seen = access.product_access(User.objects.get(pk=ana.pk))
    assert seen.allows("a") and seen.allows("b") and not seen.allows("c")
    assert seen.filter(["c", "b", "a"]) == ["b", "a"]
    ProductGrant.objects.create(group=support, all_products=True)
    assert access.product_access(User.objects.get(pk=ana.pk)).allows("c")


def test_superusers_and_the_all_products_permission_see_everything() -> None:
    root = User.objects.create_superuser("root")
    assert access.product_access(root).all
    assert not access.product_access(None).allows("a")


def test_a_grant_names_exactly_one_holder_and_a_product_or_all() -> None:
    ana = User.objects.create_user("ana")
    for bad in (
        {"product_id": "a"},
        {"user": ana, "group": Group.objects.create(name="g"), "product_id": "a"},
        {"user": ana, "product_id": "", "all_products": False},
        {"user": ana, "product_id": "a", "all_products": True},
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            ProductGrant.objects.create(**bad)
