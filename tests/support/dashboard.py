"""Helpers shared by the console's page tests and browser tests: primaries, people, data."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync

from autoplay_storage.demo import load_user_direct, load_user_lifecycle, load_users, plan_user
from autoplay_storage.keys import session_key, user_state_key
from autoplay_storage.manager import StorageManager
from autoplay_storage.runtime import get_storage
from autoplay_storage.summary_runs import recorded_summarizer

PRODUCT = "acme"
PASSWORD = "a-test-only-password-3141"


def with_storage(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(storage, ...)`` on the configured primary in a loop of its own, then close it."""

    async def go() -> Any:
        storage = get_storage()
        try:
            return await fn(storage, *args, **kwargs)
        finally:
            await storage.aclose()

    return async_to_sync(go)()


def configure_primary(kind: str, settings: Any, redis_url: str | None = None) -> None:
    cfg = {**settings.AUTOPLAY_STORAGE, "PRIMARY": kind}
    if kind == "redis":
        cfg["REDIS_URL"] = redis_url
    settings.AUTOPLAY_STORAGE = cfg


def make_person(username: str, role: str | None, *, staff: bool = False, products: list[str] | None = None) -> Any:
    """A sign-in with one role (``None``: an account with no role at all).

    ``products``: the products granted to that person; ``None`` grants all
    products, so page tests about something else browse as before grants.
    """
    from django.contrib.auth.models import Group, Permission, User

    from autoplay_storage.models import ProductGrant
    from dashboard.roles import sync_roles

    sync_roles(Group, Permission)  # transactional tests flush the groups the migration made
    user = User.objects.create_user(username=username, password=PASSWORD, is_staff=staff)
    if role:
        user.groups.add(Group.objects.get(name=role))
    if products is None:
        ProductGrant.objects.create(user=user, all_products=True)
    for product_id in products or ():
        ProductGrant.objects.create(user=user, product_id=product_id)
    return user


def grant_products(user: Any, *products: str) -> Any:
    """Set a sign-in's product grants to exactly these (none given: every product), as an admin does in /admin/."""
    from autoplay_storage.models import ProductGrant

    ProductGrant.objects.filter(user=user).delete()
    if not products:
        ProductGrant.objects.create(user=user, all_products=True)
    for product_id in products:
        ProductGrant.objects.create(user=user, product_id=product_id)
    return user


def load_demo(count: int, *, seed: int = 7, max_sessions: int = 4, product: str = PRODUCT) -> list[str]:
    """Demo users written straight through the manager (fast)."""
    return with_storage(load_users, product, count, max_sessions=max_sessions, seed=seed, direct=True)


def load_one(sessions: int, *, seed: int = 11, product: str = PRODUCT, record_runs: bool = True, **metadata: Any):
    """One user driven through the lifecycle, summary runs recorded; returns its plan."""
    plan = plan_user(random.Random(seed), sessions=sessions)
    plan.leave_open = None
    plan.metadata.update(metadata)

    async def go(storage: StorageManager) -> None:
        summarizer = recorded_summarizer(product, plan.user_id) if record_runs else None
        await load_user_lifecycle(storage, product, plan, summarizer)

    with_storage(go)
    return plan


def load_one_direct(sessions: int, *, seed: int = 13, product: str = PRODUCT):
    """One user with many sessions, its documents written straight through the manager; returns its plan."""
    plan = plan_user(random.Random(seed), sessions=sessions)
    plan.leave_open = None
    with_storage(load_user_direct, product, plan)
    return plan


def write_raw(kind: str, redis_url: str | None, product: str, user_id: str, raw: str, session_id: str = "") -> None:
    """Put text that is not a readable document where the primary keeps a state (or a snapshot)."""
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(redis_url)
        key = session_key(product, user_id, session_id) if session_id else user_state_key(product, user_id)
        client.set(key, raw)
        client.close()
        return

    async def go(storage: StorageManager) -> None:
        if session_id:
            await storage.primary.save_raw_session_snapshot(product, user_id, session_id, raw)
        else:
            await storage.primary.save_raw_user_state(product, user_id, raw)

    with_storage(go)
