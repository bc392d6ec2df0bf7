"""Which products a console user may see: resolved once per request, applied by every view.

Admins and superusers hold ``autoplay_storage.access_all_products`` (the
admin role has every permission); everyone else sees the products granted
to them or to one of their groups. A product outside the grants is
answered like one that does not exist, so its existence is not revealed.

What a console user may do (permissions, roles, grants) and a product's
settings change rarely and are read on every page, so they are kept in
Django's cache, shared by every worker, under one *access generation*:
any saved or deleted grant, product setting, group, permission or
membership writes a new generation once its transaction commits, and an
entry of another generation is read again from the database. An entry is
kept at most ``CACHE_TTL_S`` either way, for a change the ORM signals do
not see (raw SQL, ``QuerySet.update``).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import transaction
from django.db.models import Q

from .audit import Action, Actor, record
from .models import ProductGrant, ProductSettings

ACCESS_ALL = "autoplay_storage.access_all_products"
GENERATION_KEY = "console-access:generation"
CACHE_TTL_S = 60

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProductAccess:
    all: bool
    products: frozenset[str] = frozenset()

    def allows(self, product_id: str) -> bool:
        return self.all or product_id in self.products

    def filter(self, product_ids: Iterable[str]) -> list[str]:
        return [product_id for product_id in product_ids if self.allows(product_id)]


NO_ACCESS = ProductAccess(all=False)


@dataclass(frozen=True)
class StaffAccess:
    """What one console user may do: Django's permissions, their roles (group names) and their products."""

    permissions: frozenset[str]
    roles: tuple[str, ...]
    products: ProductAccess
    product_settings: ProductSettings | None = None  # of the product asked about, when one was


NO_STAFF_ACCESS = StaffAccess(frozenset(), (), NO_ACCESS)


def new_generation() -> None:
    """Make every cached access and product setting stale: now, and again once the transaction commits.

    Now, so the change's own transaction reads what it wrote; after the
    commit, so a page that read the old rows meanwhile (and stored them under
    the generation of now) is not trusted either.
    """
    _write_generation()
    transaction.on_commit(_write_generation)


def _write_generation() -> None:
    try:
        cache.set(GENERATION_KEY, secrets.token_hex(8), None)
    except Exception as exc:  # the cache is down: entries age out within CACHE_TTL_S
        logger.error("console access generation could not be written: %s", exc)


def _changed(action: str = "", **_: Any) -> None:
    if not action.startswith("pre_"):  # m2m_changed signals before and after: once is enough
        new_generation()


def watch_access_changes() -> None:
    """Connect the signals after which cached access is stale (called once, from the app's ``ready``)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.db.models.signals import m2m_changed, post_delete, post_migrate, post_save

    user_model = get_user_model()
    for model in (ProductGrant, ProductSettings, Group, Permission):
        post_save.connect(_changed, sender=model, dispatch_uid=f"access-save-{model.__name__}")
        post_delete.connect(_changed, sender=model, dispatch_uid=f"access-delete-{model.__name__}")
    post_delete.connect(_changed, sender=user_model, dispatch_uid="access-delete-user")
    for through in (user_model.groups.through, user_model.user_permissions.through, Group.permissions.through):
        m2m_changed.connect(_changed, sender=through, dispatch_uid=f"access-m2m-{through.__name__}")
    post_migrate.connect(_changed, dispatch_uid="access-migrate")


def _cached(reads: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Each ``read()``, or what it returned before under the current generation: one cache round trip on hits."""
    try:
        found = cache.get_many([GENERATION_KEY, *reads])
        generation = found.get(GENERATION_KEY)
        if generation is None:  # first use, or evicted: start one (another worker may win the race)
            cache.add(GENERATION_KEY, secrets.token_hex(8), None)
            generation = cache.get(GENERATION_KEY)
    except Exception as exc:  # the cache is down: the database answers every time
        logger.warning("console access cache cannot be read: %s", exc)
        return {key: read() for key, read in reads.items()}
    values, missed = {}, {}
    for key, read in reads.items():
        entry = found.get(key)
        if isinstance(entry, tuple) and len(entry) == 2 and generation is not None and entry[0] == generation:
            values[key] = entry[1]
        else:
            values[key] = read()
            missed[key] = (generation, values[key])
    if missed and generation is not None:
        try:
            cache.set_many(missed, CACHE_TTL_S)
        except Exception as exc:
            logger.warning("console access cache cannot be written: %s", exc)
    return values


def _read_staff_access(user: Any) -> tuple[list[str], list[str], bool, list[str]]:
    """From the database: permissions, roles, whether a grant covers every product, granted products."""
    groups = list(user.groups.order_by("name").values_list("id", "name"))
    permissions = sorted(user.get_all_permissions())
    if ACCESS_ALL in permissions:
        return permissions, [name for _, name in groups], True, []
    grants = ProductGrant.objects.filter(Q(user=user) | Q(group__in=[gid for gid, _ in groups]))
    everything, products = False, set()
    for product_id, all_products in grants.values_list("product_id", "all_products"):
        everything = everything or all_products
        products.add(product_id)
    return permissions, [name for _, name in groups], everything, sorted(products - {""})


def _settings_key(product_id: str) -> str:
    # Hashed: a product id may hold characters a cache key must not.
    return f"console-access:product:{hashlib.sha256(product_id.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _read_settings(product_id: str) -> tuple[bool, int] | None:
    found = ProductSettings.objects.filter(product_id=product_id).first()
    return None if found is None else (found.require_access_reason, found.stuck_after_days)


def _settings(product_id: str, values: tuple[bool, int] | None) -> ProductSettings:
    if values is None:
        return ProductSettings(product_id=product_id)
    return ProductSettings(product_id=product_id, require_access_reason=values[0], stuck_after_days=values[1])


def staff_access(user: Any, product_id: str | None = None) -> StaffAccess:
    """Permissions, roles and products of a signed-in console user, and ``product_id``'s settings (sync).

    One cache round trip when nothing changed; the settings come along so a
    page about one product needs no second read.
    """
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return NO_STAFF_ACCESS
    # A superuser's permissions are every permission: the flag is part of the key.
    user_key = f"console-access:user:{user.pk}:{int(user.is_superuser)}"
    reads: dict[str, Callable[[], Any]] = {user_key: lambda: _read_staff_access(user)}
    if product_id is not None:
        reads[_settings_key(product_id)] = lambda: _read_settings(product_id)
    found = _cached(reads)
    permissions, roles, everything, products = found[user_key]
    granted = ProductAccess(all=True) if user.is_superuser or everything else ProductAccess(False, frozenset(products))
    settings = _settings(product_id, found[_settings_key(product_id)]) if product_id is not None else None
    return StaffAccess(frozenset(permissions), tuple(roles), granted, settings)


async def astaff_access(user: Any, product_id: str | None = None) -> StaffAccess:
    return await sync_to_async(staff_access)(user, product_id)


def product_access(user: Any) -> ProductAccess:
    """The products ``user`` may see (sync)."""
    return staff_access(user).products


async def aproduct_access(user: Any) -> ProductAccess:
    return await sync_to_async(product_access)(user)


def product_settings(product_id: str) -> ProductSettings:
    """The product's settings (an unsaved row with the defaults when it has none); sync."""
    key = _settings_key(product_id)
    return _settings(product_id, _cached({key: lambda: _read_settings(product_id)})[key])


async def aproduct_settings(product_id: str) -> ProductSettings:
    return await sync_to_async(product_settings)(product_id)


PRODUCT_ID_MAX = 128


def product_id_problem(product_id: str) -> str | None:
    """Why ``product_id`` cannot be granted (``None``: it can). Any id the console can open is allowed."""
    if not product_id or len(product_id) > PRODUCT_ID_MAX:
        return f"a product id has 1 to {PRODUCT_ID_MAX} characters: {product_id!r}"
    if any(not ch.isprintable() or ch.isspace() for ch in product_id):
        return f"a product id has no spaces or control characters: {product_id!r}"
    return None


def describe(grant: ProductGrant) -> dict[str, Any]:
    """A grant as the audit log records it."""
    return {
        "grantee": f"user:{grant.user.get_username()}" if grant.user_id else f"group:{grant.group.name}",
        "product": "*" if grant.all_products else grant.product_id,
    }


def change_grants(
    *, user: Any = None, group: Any = None, products: Iterable[str] = (), all_products: bool = False,
    revoke: bool = False, actor: Actor,
) -> tuple[list[str], list[str]]:
    """Grant (or revoke) products for one user or group; returns (changed, unchanged) product ids.

    ``"*"`` stands for all products in the result. One ``grant.change``
    audit entry records what changed (none when nothing did).
    """
    owner = {"user": user} if user is not None else {"group": group}
    wanted = [("", True)] if all_products else [(p, False) for p in dict.fromkeys(products)]
    changed, unchanged = [], []
    with transaction.atomic():
        for product_id, everything in wanted:
            rows = ProductGrant.objects.filter(**owner, product_id=product_id, all_products=everything)
            label = "*" if everything else product_id
            if revoke:
                removed, _ = rows.delete()
                (changed if removed else unchanged).append(label)
            elif rows.exists():
                unchanged.append(label)
            else:
                ProductGrant.objects.create(
                    **owner, product_id=product_id, all_products=everything, granted_by=actor.name[:255]
                )
                changed.append(label)
    if changed:
        grantee = f"user:{user.get_username()}" if user is not None else f"group:{group.name}"
        record(
            Action.GRANT_CHANGE, actor=actor, product_id=changed[0] if len(changed) == 1 and changed[0] != "*" else "",
            details={"grantee": grantee, "revoked" if revoke else "granted": changed},
        )
    return changed, unchanged
