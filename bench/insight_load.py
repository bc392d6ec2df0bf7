"""Direct loaders for bench/dashboard.py at a million users: the rows and keys the write paths would make,
written in bulk (Redis pipelines; bulk INSERTs, then the insight rebuild from the documents).

Each user is written as the adapters write it (the same derivations:
``index_commands``, ``facts_commands``, the browse columns, the search
terms), only without a compare-and-set or a transaction per user.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any


def clones(users: int) -> Any:
    from autoplay_storage.demo import clone_states, state_archetypes

    return clone_states(asyncio.run(state_archetypes(200, seed=1)), users, seed=1)


def load_redis(url: str, product: str, users: int, progress: Callable[[int], None], batch: int = 1000) -> None:
    import redis

    from autoplay_storage.adapters.redis.facts import facts_commands
    from autoplay_storage.adapters.redis.index import index_commands, index_entry
    from autoplay_storage.facts import user_facts
    from autoplay_storage.keys import user_state_key

    client = redis.Redis.from_url(url)
    rows = clones(users)
    try:
        while chunk := list(itertools.islice(rows, batch)):
            pipe = client.pipeline(transaction=False)
            for uid, doc in chunk:
                pipe.set(user_state_key(product, uid), json.dumps(doc, separators=(",", ":")))
                commands = index_commands(product, uid, None, index_entry(product, uid, doc))
                for cmd in [*commands, *facts_commands(product, uid, None, user_facts(doc))]:
                    pipe.execute_command(*cmd)
            pipe.execute()
            progress(len(chunk))
    finally:
        client.close()


def load_database(alias: str, product: str, users: int, progress: Callable[[int], None], batch: int = 5000) -> None:
    from django.db import transaction

    from autoplay_storage.adapters.database_facts import rebuild
    from autoplay_storage.adapters.database_rows import user_summary
    from autoplay_storage.browse import search_terms
    from autoplay_storage.models.records import UserSearchTerm, UserStateRecord

    rows = clones(users)
    while chunk := list(itertools.islice(rows, batch)):
        records, terms = [], []
        for uid, doc in chunk:
            row = user_summary(product, uid, doc)
            found = sorted(search_terms(uid, row.metadata))
            terms.append(found)
            records.append(
                UserStateRecord(
                    product_id=product, user_id=uid, document=json.dumps(doc, separators=(",", ":")),
                    journey_state=row.journey_state, mastery_level=row.mastery_level,
                    mastery_rating=row.mastery_rating, completion_rate=row.completion_rate, onboarded=row.onboarded,
                    sessions_count=row.sessions_count, first_seen_at=row.first_seen_at or 0.0,
                    last_activity_at=row.last_activity_at or 0.0, search_text="\n".join(found),
                )
            )  # fmt: skip
        with transaction.atomic(using=alias):
            UserStateRecord.objects.using(alias).bulk_create(records)
            pairs = zip(records, terms, strict=True)
            UserSearchTerm.objects.using(alias).bulk_create(
                [UserSearchTerm(state_id=r.id, product_id=product, term=t) for r, ts in pairs for t in ts]
            )
        progress(len(chunk))
    rebuild(alias)  # the insight rows and counters, from the documents just written
