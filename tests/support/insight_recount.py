"""The insight aggregates' reference: every number, filter count, list and the stuck queue of one product,
compared with a full recount of its stored documents (``facts.recount``), and the documents read around the
adapter on each primary."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from autoplay_storage.facts import UserFilter, matches, recount, user_facts

DAY = 86400.0
Documents = Callable[[], Awaitable[tuple[list[dict], list[dict]]]]

FILTERS = [
    UserFilter(),
    UserFilter(journey_state="onboarded"),
    UserFilter(mastery_levels=("novice", "beginner")),
    UserFilter(onboarded=False, mastery_levels=("intermediate",)),
    UserFilter(workflow_id="create_project", workflow_status="completed"),
    UserFilter(workflow_id="invite_team", workflow_status="in_progress"),
    UserFilter(workflow_id="configure_columns", workflow_status="untouched"),
    UserFilter(sessions_min=2, sessions_max=4),
    UserFilter(first_seen_after=time.time() - 20 * DAY),
    UserFilter(active_before=time.time() - 5 * DAY, journey_state="onboarding"),
    UserFilter(meta_key="plan", meta_value="team"),
    UserFilter(meta_key="role", meta_value="manager", workflow_id="create_project", workflow_status="untouched"),
    UserFilter(workflow_id="invite_team", workflow_status="in_progress", mastery_levels=("beginner", "intermediate"),
               sessions_min=2, sessions_max=5),
    UserFilter(mastery_levels=("novice", "beginner", "intermediate"), active_after=time.time() - 10 * DAY,
               first_seen_after=time.time() - 40 * DAY, sessions_min=2),
    UserFilter(workflow_id="configure_columns", workflow_status="untouched", mastery_levels=("novice", "proficient")),
]


async def check_insight(adapter: Any, product_id: str, documents: Documents) -> set[str]:
    """Assert the adapter's insight answers equal a recount of ``documents()``; the user ids they list."""
    states, snaps = await documents()
    expected = recount(states, snaps)
    assert await adapter.insight_stats(product_id) == expected
    assert expected.users == len(states) and sum(expected.sessions_per_day.values()) == len(snaps)
    facts = {d["user_id"]: user_facts(d) for d in states}
    listed: set[str] = set()
    for f in FILTERS:
        wanted = {u for u, fa in facts.items() if matches(fa, f)}
        assert await adapter.count_users(product_id, f) == len(wanted), f
        seen, cursor = [], None
        while True:
            page = await adapter.list_filtered_users(product_id, f, cursor=cursor, limit=3)
            seen += [row.user_id for row in page.items]
            if not (cursor := page.next_cursor):
                break
        assert sorted(seen) == sorted(wanted), f
        assert len(seen) == len(set(seen))
        listed.update(seen)
    older = time.time() - 7 * DAY
    stuck = sorted(
        (
            (wf.last_progress_at, wf.workflow_id, u)
            for u, fa in facts.items()
            for wf in fa.workflows
            if wf.status == "in_progress" and wf.last_progress_at < older
        ),
        reverse=True,
    )
    got, cursor = [], None
    while True:
        page = await adapter.list_stuck(product_id, older, cursor=cursor, limit=2)
        got += [(r.last_progress_at, r.workflow_id, r.user.user_id) for r in page.items]
        if not (cursor := page.next_cursor):
            break
    assert [g[0] for g in got] == [s[0] for s in stuck], (got, stuck)
    assert sorted(got) == sorted(stuck), (got, stuck)
    return listed | {u for _, _, u in got}


def db_documents(alias: str, product_id: str) -> tuple[list[dict], list[dict]]:
    """One product's state and snapshot documents in the database (sync: run it in a thread)."""
    from autoplay_storage.models import SessionSnapshotRecord, UserStateRecord

    mine = {"product_id": product_id}
    states = UserStateRecord.objects.using(alias).filter(**mine).values_list("document", flat=True)
    snaps = SessionSnapshotRecord.objects.using(alias).filter(**mine).values_list("document", flat=True)
    return [json.loads(d) for d in states], [json.loads(d) for d in snaps]


def redis_documents(url: str, product_id: str, cluster: bool = False) -> tuple[list[dict], list[dict]]:
    """One product's state and snapshot documents on Redis, found by SCAN (sync: run it in a thread)."""
    import redis

    if cluster:
        from redis.cluster import RedisCluster

        client: Any = RedisCluster.from_url(url)
        scan: dict[str, Any] = {"target_nodes": RedisCluster.PRIMARIES}
        part = f"{{{product_id}:*}}"
    else:
        client, scan, part = redis.Redis.from_url(url), {}, f"{product_id}:*"
    try:
        states = [json.loads(client.get(k)) for k in client.scan_iter(f"autoplay:user:{part}:state", **scan)]
        snaps = [json.loads(client.get(k)) for k in client.scan_iter(f"autoplay:user:{part}:session:*", **scan)]
    finally:
        client.close()
    return states, snaps
