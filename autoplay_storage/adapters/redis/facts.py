"""The insight indexes' diff of one state write, and a snapshot's counters: pure functions, no I/O.

Keys live beside the browsing indexes, in the product's braces (one slot per
product in a cluster), under ``autoplay:idx:{P}:f:`` (docs/insight.md):

- ``f:wf:<workflow>:<status>`` zset of users (in_progress, completed), score 0: membership only
- ``f:stuck`` zset of ``<workflow>\\0<user>`` in progress, by last progress time
- ``f:cohort:<week>`` zset of users first seen that week, by sessions to onboard (``NEVER``: not yet)
- ``f:cohorts`` set of cohort weeks; ``f:catalog`` set of workflow ids seen in snapshots;
  ``f:workflows`` set of workflow ids seen in states
- ``f:first_seen`` / ``f:sessions`` zsets of users by first seen time / session count
- ``f:meta:<key>\\0<value>`` zset of users, score 0
- ``f:daily`` hash day → sessions ended; ``f:weekly`` hash ``<week>:<level>`` → sessions ended

Lists order rows by the ``users`` index (last activity) and check these
sets per batch. Every membership command is idempotent, so the diff can be re-sent (the
cluster path sends it right after the user's transaction). The two hashes
count snapshots, and are bumped in the step that freezes the snapshot
(write-once), so a retried end never counts twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from ...facts import SnapshotFacts, UserFacts, user_facts
from ...keys import PREFIX
from .index import Command

SEP = "\x00"
NEVER = 1_000_000_000  # the cohort score of a user not onboarded yet


def _f(product_id: str) -> str:
    return f"{PREFIX}:idx:{{{product_id}}}:f:"


def facts_pattern() -> str:
    """SCAN pattern of every insight key (the rebuild clears them first)."""
    return f"{PREFIX}:idx:{{*}}:f:*"


def workflow_key(product_id: str, workflow_id: str, status: str) -> str:
    return f"{_f(product_id)}wf:{workflow_id}:{status}"


def stuck_key(product_id: str) -> str:
    return f"{_f(product_id)}stuck"


def cohort_key(product_id: str, week: int) -> str:
    return f"{_f(product_id)}cohort:{week}"


def cohorts_key(product_id: str) -> str:
    return f"{_f(product_id)}cohorts"


def catalog_key(product_id: str) -> str:
    return f"{_f(product_id)}catalog"


def workflows_key(product_id: str) -> str:
    return f"{_f(product_id)}workflows"


def first_seen_key(product_id: str) -> str:
    return f"{_f(product_id)}first_seen"


def sessions_count_key(product_id: str) -> str:
    return f"{_f(product_id)}sessions"


def meta_key(product_id: str, key: str, value: str) -> str:
    return f"{_f(product_id)}meta:{key}{SEP}{value}"


def daily_key(product_id: str) -> str:
    return f"{_f(product_id)}daily"


def weekly_key(product_id: str) -> str:
    return f"{_f(product_id)}weekly"


def facts_commands(product_id: str, user_id: str, old: UserFacts | None, new: UserFacts | None) -> list[Command]:
    """Commands that move one user's insight entries from ``old`` facts to ``new`` (``None``: none).

    Only what differs is sent: membership sets carry no activity score (a
    list orders them by the ``users`` index), so most writes add nothing.
    """
    if old == new:
        return []
    cmds: list[Command] = []
    old_wf = {(w.workflow_id, w.status): w for w in old.workflows} if old else {}
    new_wf = {(w.workflow_id, w.status): w for w in new.workflows} if new else {}
    if old_wf != new_wf:
        stuck = stuck_key(product_id)
        for wid, status in sorted(old_wf.keys() - new_wf.keys()):
            cmds.append(("ZREM", workflow_key(product_id, wid, status), user_id))
            if status == "in_progress":
                cmds.append(("ZREM", stuck, f"{wid}{SEP}{user_id}"))
        for (wid, status), wf in sorted(new_wf.items()):
            if (wid, status) not in old_wf:
                cmds.append(("ZADD", workflow_key(product_id, wid, status), 0, user_id))
            if status == "in_progress" and old_wf.get((wid, status)) != wf:
                cmds.append(("ZADD", stuck, wf.last_progress_at, f"{wid}{SEP}{user_id}"))
        fresh = sorted({w for w, _ in new_wf} - {w for w, _ in old_wf})
        if fresh:
            cmds.append(("SADD", workflows_key(product_id), *fresh))
    old_meta = set(old.metadata) if old else set()
    new_meta = set(new.metadata) if new else set()
    for k, v in sorted(old_meta - new_meta):
        cmds.append(("ZREM", meta_key(product_id, k, v), user_id))
    for k, v in sorted(new_meta - old_meta):
        cmds.append(("ZADD", meta_key(product_id, k, v), 0, user_id))
    if old is not None and (new is None or old.cohort_week != new.cohort_week):
        cmds.append(("ZREM", cohort_key(product_id, old.cohort_week), user_id))
    if new is None:
        if old is not None:
            cmds.append(("ZREM", first_seen_key(product_id), user_id))
            cmds.append(("ZREM", sessions_count_key(product_id), user_id))
        return cmds
    if old is None or old.cohort_week != new.cohort_week or old.sessions_to_onboard != new.sessions_to_onboard:
        onboard = NEVER if new.sessions_to_onboard is None else new.sessions_to_onboard
        cmds.append(("ZADD", cohort_key(product_id, new.cohort_week), onboard, user_id))
        cmds.append(("SADD", cohorts_key(product_id), new.cohort_week))
    if old is None or old.first_seen_at != new.first_seen_at:
        cmds.append(("ZADD", first_seen_key(product_id), new.first_seen_at, user_id))
    if old is None or old.sessions_count != new.sessions_count:
        cmds.append(("ZADD", sessions_count_key(product_id), new.sessions_count, user_id))
    return cmds


class FactsMemo:
    """The facts of the state this process last wrote per key, so the next write need not compute them again.

    Keyed by the index entry the write filed: the last-seen cache hands that
    very object back (``Seen.filed``) only while the stored bytes are still
    the ones this process wrote, so an identity match proves the facts current.
    """

    def __init__(self, size: int) -> None:
        self.size = max(0, size)
        self._facts: dict[str, tuple[object, UserFacts | None]] = {}

    def old(self, key: str, filed: object, current: dict[str, Any] | None) -> UserFacts | None:
        if current is None:
            return None
        hit = self._facts.get(key)
        if hit is not None and filed is not None and hit[0] is filed:
            return hit[1]
        return user_facts(current)

    def keep(self, key: str, entry: object, facts: UserFacts | None) -> None:
        if not self.size:
            return
        if len(self._facts) >= self.size and key not in self._facts:
            self._facts.pop(next(iter(self._facts)))  # the oldest key: dicts keep insertion order
        self._facts[key] = (entry, facts)


def snapshot_commands(product_id: str, facts: SnapshotFacts | None) -> list[Command]:
    """A newly frozen snapshot's counters and catalog (send only with the write that froze it)."""
    if facts is None:
        return []
    cmds: list[Command] = [
        ("HINCRBY", daily_key(product_id), facts.day, 1),
        ("HINCRBY", weekly_key(product_id), f"{facts.week}:{facts.mastery_level}", 1),
    ]
    if facts.catalog:
        cmds.append(("SADD", catalog_key(product_id), *facts.catalog))
    return cmds


def snapshot_uncount_commands(product_id: str, erased: Iterable[SnapshotFacts]) -> list[Command]:
    """Take erased snapshots' counts back (send only with the step that deletes them).

    The catalog is left: it names the product's workflows, not the user.
    """
    days: Counter[int] = Counter()
    weeks: Counter[str] = Counter()
    for facts in erased:
        days[facts.day] += 1
        weeks[f"{facts.week}:{facts.mastery_level}"] += 1
    return [("HINCRBY", daily_key(product_id), day, -n) for day, n in sorted(days.items())] + [
        ("HINCRBY", weekly_key(product_id), week, -n) for week, n in sorted(weeks.items())
    ]


def parse_int_hash(raw: dict[Any, Any] | list[Any]) -> dict[str, int]:
    """An ``HGETALL`` reply (a flat list on the raw connection, a dict through a client) as text → int."""
    pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
    return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in pairs}
