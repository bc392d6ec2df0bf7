"""``manage.py autoplay_copy`` between a real redis-server and the database (SQLite, and PostgreSQL when reachable)."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
import redis
from django.core.management import CommandError, call_command

from autoplay_storage.adapters.database import DatabaseStorageAdapter
from autoplay_storage.adapters.redis import RedisStorageAdapter
from autoplay_storage.keys import session_key, user_state_key
from autoplay_storage.lifecycle import on_session_end, on_session_start
from autoplay_storage.management.commands.autoplay_copy import encode_position
from autoplay_storage.manager import StorageManager
from autoplay_storage.user_adoption_state import SessionSnapshot

db = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["default", pytest.param("postgres", marks=pytest.mark.postgres)])
def alias(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_alias")
    return "default"


def run(coro_fn, *args):
    """Each step in its own loop, like the command itself (async clients belong to their loop)."""

    async def main():
        adapters = [RedisStorageAdapter(args[0]), DatabaseStorageAdapter(args[1])] if len(args) == 2 else []
        try:
            return await coro_fn(*adapters)
        finally:
            for adapter in adapters:
                await adapter.aclose()

    return asyncio.run(main())


def copy(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("autoplay_copy", *args, stdout=out, stderr=err)
    return out.getvalue()


def snapshot(session_id: str, user_id: str, captured: float) -> SessionSnapshot:
    return SessionSnapshot(
        session_id=session_id, user_id=user_id, session_number=1, started_at=captured - 30, captured_at=captured
    )


async def populate(adapter) -> None:
    """Two products; one user with 60 sessions (beyond the 50 kept inline); users without sessions."""
    storage = StorageManager([adapter])
    for product_id, count in (("prod_a", 7), ("prod_b", 3)):
        for i in range(count):
            user_id = f"{product_id}_u{i}"
            await on_session_start(product_id, user_id, f"{user_id}_s0", storage, metadata={"email": f"{user_id}@x.io"})
            if i % 2 == 0:
                await on_session_end(product_id, user_id, snapshot(f"{user_id}_s0", user_id, 1000.0 + i), storage)
    for n in range(60):
        await on_session_end("prod_a", "prod_a_u1", snapshot(f"long_{n:02d}", "prod_a_u1", 2000.0 + n), storage)


async def dump(adapter) -> dict[str, str]:
    """Every document the browsing interface reaches, as parsed JSON (raw text where it is corrupt)."""
    out: dict[str, str] = {}
    for product in await adapter.list_products():
        cursor = None
        while True:
            page = await adapter.list_users(product.product_id, cursor=cursor, limit=500)
            for row in page.items:
                raw = await adapter.get_raw_user_state(product.product_id, row.user_id)
                out[f"{product.product_id}/{row.user_id}"] = _norm(raw)
                sessions = await adapter.list_sessions(product.product_id, row.user_id, limit=500)
                assert sessions.next_cursor is None
                for s in sessions.items:
                    raw = await adapter.get_raw_session_snapshot(product.product_id, row.user_id, s.session_id)
                    out[f"{product.product_id}/{row.user_id}/{s.session_id}"] = _norm(raw)
            if not (cursor := page.next_cursor):
                break
    return out


def _norm(raw: str | None):
    try:
        return json.loads(raw)
    except ValueError:
        return raw


@db
def test_redis_to_database_copies_everything_faithfully_and_is_idempotent(redis_url: str, alias: str) -> None:
    run(lambda r, d: populate(r), redis_url, alias)
    plain = redis.Redis.from_url(redis_url)
    # A document the published SDK wrote (no index entries) and two corrupt ones.
    sdk_state = {"_v": 1, "user_id": "sdk_user", "journey_state": "onboarded", "last_updated_at": 5.0}
    plain.set(user_state_key("prod_b", "sdk_user"), json.dumps(sdk_state))
    plain.set(session_key("prod_b", "sdk_user", "sdk_s1"), json.dumps(snapshot("sdk_s1", "sdk_user", 7.0).to_dict()))
    plain.set(user_state_key("prod_a", "prod_a_u3"), "{truncated")
    plain.set(session_key("prod_a", "prod_a_u0", "prod_a_u0_s0"), "[not, an object")

    output = copy("--from", "redis", "--to", "database", "--redis-url", redis_url, "--database", alias, "--batch", "3")
    assert "11 users" in output and "2 corrupt documents copied as raw text" in output

    source = run(lambda r, d: dump(r), redis_url, alias)
    target = run(lambda r, d: dump(d), redis_url, alias)
    assert target == source
    assert len([k for k in source if k.count("/") == 1]) == 11
    assert len([k for k in source if k.startswith("prod_a/prod_a_u1/")]) == 60  # beyond the 50 inline
    assert target["prod_a/prod_a_u3"] == "{truncated"
    assert target["prod_b/sdk_user"] == sdk_state

    again = copy("--from", "redis", "--to", "database", "--redis-url", redis_url, "--database", alias)
    assert "0 states written (10 already current)" in again
    assert run(lambda r, d: dump(d), redis_url, alias) == source


@db
def test_database_to_redis_copies_and_reports_what_it_cannot_store(redis_url: str, alias: str) -> None:
    from autoplay_storage.models.records import UserStateRecord

    run(lambda r, d: populate(d), redis_url, alias)
    UserStateRecord.objects.using(alias).filter(user_id="prod_b_u2").update(document="not json")

    with pytest.raises(CommandError, match="1 documents were not copied"):
        copy("--from", "database", "--to", "redis", "--redis-url", redis_url, "--database", alias)

    source = run(lambda r, d: dump(d), redis_url, alias)
    target = run(lambda r, d: dump(r), redis_url, alias)
    assert source.pop("prod_b/prod_b_u2") == "not json"
    assert run(lambda r, d: r.get_raw_user_state("prod_b", "prod_b_u2"), redis_url, alias) is None
    snapshot_key = "prod_b/prod_b_u2/prod_b_u2_s0"
    assert target == {k: v for k, v in source.items() if k != snapshot_key}
    # Its snapshot was still copied (only the listing, which goes through the state, cannot reach it).
    copied = run(lambda r, d: r.get_session_snapshot("prod_b", "prod_b_u2", "prod_b_u2_s0"), redis_url, alias)
    assert copied == source[snapshot_key]


@db
def test_a_newer_target_state_is_kept(redis_url: str, alias: str) -> None:
    async def setup(r, d):
        await r.save_user_state("p", "u", {"_v": 1, "user_id": "u", "last_updated_at": 100.0, "metadata": {"v": 1}})
        await d.save_user_state("p", "u", {"_v": 1, "user_id": "u", "last_updated_at": 200.0, "metadata": {"v": 2}})
        await r.save_user_state("p", "old", {"_v": 1, "user_id": "old", "last_updated_at": 300.0, "metadata": {"v": 3}})
        await d.save_user_state("p", "old", {"_v": 1, "user_id": "old", "last_updated_at": 50.0, "metadata": {"v": 0}})

    run(setup, redis_url, alias)
    output = copy("--from", "redis", "--to", "database", "--redis-url", redis_url, "--database", alias)
    assert "1 states written (1 already current)" in output
    assert run(lambda r, d: d.get_user_state("p", "u"), redis_url, alias)["metadata"] == {"v": 2}
    assert run(lambda r, d: d.get_user_state("p", "old"), redis_url, alias)["metadata"] == {"v": 3}


@db
def test_resume_from_a_position_skips_what_came_before(redis_url: str) -> None:
    run(lambda r, d: populate(r), redis_url, "default")
    token = encode_position("prod_b", None)
    output = copy("--from", "redis", "--to", "database", "--redis-url", redis_url, "--resume-from", token)
    assert "3 users" in output
    products = run(lambda r, d: d.list_products(), redis_url, "default")
    assert [(p.product_id, p.user_count) for p in products] == [("prod_b", 3)]


@db
def test_bad_arguments_and_an_unreachable_source_are_errors(redis_url: str) -> None:
    from tests.support.redis_server import closed_port

    with pytest.raises(CommandError, match="must differ"):
        copy("--from", "redis", "--to", "redis", "--redis-url", redis_url)
    with pytest.raises(CommandError, match="not a token"):
        copy("--from", "redis", "--to", "database", "--redis-url", redis_url, "--resume-from", "garbage!")
    with pytest.raises(CommandError, match="redis"):
        copy("--from", "redis", "--to", "database", "--redis-url", f"redis://127.0.0.1:{closed_port()}/0")


@db
def test_documents_the_target_refuses_are_reported_not_dropped(redis_url: str) -> None:
    async def setup(r, d):
        await d.save_raw_user_state("p", "nan_user", '{"_v":1,"user_id":"nan_user","last_updated_at":NaN}')
        await d.save_user_state("p", "fine", {"_v": 1, "user_id": "fine", "last_updated_at": 1.0})

    run(setup, redis_url, "default")
    err = io.StringIO()
    with pytest.raises(CommandError, match="1 documents were not copied"):
        call_command("autoplay_copy", "--from", "database", "--to", "redis", "--redis-url", redis_url, stderr=err)
    assert "user state p/nan_user refused by the target" in err.getvalue()
    assert run(lambda r, d: r.get_user_state("p", "fine"), redis_url, "default") is not None
