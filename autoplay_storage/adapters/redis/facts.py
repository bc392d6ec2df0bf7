"""The insight indexes' diff of one state write, and a snapshot's counters: pure functions, no I/O.

Keys live beside the browsing indexes, in the product's braces (one slot per
product in a cluster), under ``autoplay:idx:{P}:f:`` (docs/insight.md):

- ``f:wf:<workflow>:in_progress_at`` zset of the users in progress on it, by last progress time
  (the funnel's count, the filter's set, and the stuck queue: its oldest entries)
- ``f:wf:<workflow>:completed`` zset of the users who completed it, score 0: membership only
- ``f:cohort:<week>`` zset of users first seen that week, by sessions to onboard (``NEVER``: not yet)
- ``f:cohorts`` set of cohort weeks; ``f:catalog`` set of workflow ids seen in snapshots;
  ``f:workflows`` set of workflow ids seen in states
- ``f:first_seen`` / ``f:sessions`` zsets of users by first seen time / session count
- ``f:meta:<key>\\0<value>`` zset of users, score 0
- ``f:counts`` hash ``<day>:<level>`` → sessions ended that day at that mastery level (the
  sessions-per-day chart sums the levels, the mastery chart the days of each week)

Lists order rows by the ``users`` index (last activity) and check these
sets per batch. Every membership command is idempotent, so the diff can be re-sent (the
cluster path sends it right after the user's transaction). The hash counts
snapshots, and is bumped in the step that freezes the snapshot (write-once),
so a retried end never counts twice. The id sets (``catalog``,
``workflows``, ``cohorts``) only grow: a process sends an id it added in the
last few minutes again only after that (``Announced``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from ...facts import DAY_S, SnapshotFacts, UserFacts, user_facts, week_of
from ...keys import PREFIX
from ..common import SentLately
from .index import Command

SEP = "\x00"
NEVER = 1_000_000_000  # the cohort score of a user not onboarded yet


def _f(product_id: str) -> str:
    return f"{PREFIX}:idx:{{{product_id}}}:f:"


def facts_pattern() -> str:
    """SCAN pattern of every insight key (the rebuild clears them first)."""
    return f"{PREFIX}:idx:{{*}}:f:*"


def workflow_key(product_id: str, workflow_id: str, status: str) -> str:
    """The users with ``status`` on the workflow (in progress: scored by last progress)."""
    return _wf_key(_f(product_id), (workflow_id, status))


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


def counts_key(product_id: str) -> str:
    return f"{_f(product_id)}counts"


def facts_commands(
    product_id: str, user_id: str, old: UserFacts | None, new: UserFacts | None, sent: Announced | None = None
) -> list[Command]:
    """Commands that move one user's insight entries from ``old`` facts to ``new`` (``None``: none).

    Only what differs is sent: membership sets carry no activity score (a
    list orders them by the ``users`` index), so most writes add nothing.
    ``sent``: leave out the id set members this process sent lately.
    """
    if old == new:
        return []
    f = _f(product_id)
    cmds: list[Command] = []
    old_w, new_w = old.workflows if old else (), new.workflows if new else ()
    if old_w != new_w:  # tuples compared in C first: most writes change no workflow
        # The facts that changed, found by set difference (in C): usually one or two.
        gone_s, came_s = set(old_w), set(new_w)
        gone = {(w[0], w[1]): w for w in sorted(gone_s - came_s)}
        came = {(w[0], w[1]): w for w in sorted(came_s - gone_s)}
        for ws in gone:
            if ws not in came:
                cmds.append(("ZREM", _wf_key(f, ws), user_id))
        for ws, w in came.items():
            was = gone.get(ws)
            if was is None or (was[2] != w[2] and ws[1] == "in_progress"):
                cmds.append(("ZADD", _wf_key(f, ws), w[2] if ws[1] == "in_progress" else 0, user_id))
        # A workflow new to the user: its old fact, of any status, would be gone.
        moved = {ws[0] for ws in gone}
        fresh = [ws[0] for ws in came if ws[0] not in moved]
        if fresh and (fresh := _unsent(sent, f + "workflows", fresh)):
            cmds.append(("SADD", f + "workflows", *fresh))
    old_m, new_m = old.metadata if old else (), new.metadata if new else ()
    if old_m != new_m:
        kept = set(new_m)
        for k, v in old_m:
            if (k, v) not in kept:
                cmds.append(("ZREM", f"{f}meta:{k}{SEP}{v}", user_id))
        kept = set(old_m)
        for k, v in new_m:
            if (k, v) not in kept:
                cmds.append(("ZADD", f"{f}meta:{k}{SEP}{v}", 0, user_id))
    if old is not None and (new is None or old.cohort_week != new.cohort_week):
        cmds.append(("ZREM", f"{f}cohort:{old.cohort_week}", user_id))
    if new is None:
        if old is not None:
            cmds.append(("ZREM", f + "first_seen", user_id))
            cmds.append(("ZREM", f + "sessions", user_id))
        return cmds
    if old is None or old.cohort_week != new.cohort_week or old.sessions_to_onboard != new.sessions_to_onboard:
        onboard = NEVER if new.sessions_to_onboard is None else new.sessions_to_onboard
        cmds.append(("ZADD", f"{f}cohort:{new.cohort_week}", onboard, user_id))
        if _unsent(sent, f + "cohorts", [new.cohort_week]):
            cmds.append(("SADD", f + "cohorts", new.cohort_week))
    if old is None or old.first_seen_at != new.first_seen_at:
        cmds.append(("ZADD", f + "first_seen", new.first_seen_at, user_id))
    if old is None or old.sessions_count != new.sessions_count:
        cmds.append(("ZADD", f + "sessions", new.sessions_count, user_id))
    return cmds


def _wf_key(f: str, ws: tuple[str, str]) -> str:
    return f"{f}wf:{ws[0]}:{'in_progress_at' if ws[1] == 'in_progress' else ws[1]}"


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


def snapshot_commands(product_id: str, facts: SnapshotFacts | None, sent: Announced | None = None) -> list[Command]:
    """A newly frozen snapshot's counter and catalog (send only with the write that froze it)."""
    if facts is None:
        return []
    cmds: list[Command] = [("HINCRBY", counts_key(product_id), f"{facts.day}:{facts.mastery_level}", 1)]
    if facts.catalog and (catalog := _unsent(sent, catalog_key(product_id), facts.catalog)):
        cmds.append(("SADD", catalog_key(product_id), *catalog))
    return cmds


def snapshot_uncount_commands(product_id: str, erased: Iterable[SnapshotFacts]) -> list[Command]:
    """Take erased snapshots' counts back (send only with the step that deletes them).

    The catalog is left: it names the product's workflows, not the user.
    """
    fields = Counter(f"{facts.day}:{facts.mastery_level}" for facts in erased)
    return [("HINCRBY", counts_key(product_id), name, -n) for name, n in sorted(fields.items())]


def session_counts(raw: dict[Any, Any] | list[Any]) -> tuple[dict[int, int], dict[int, dict[str, int]]]:
    """The ``counts`` hash as (sessions per day, sessions per week and mastery level)."""
    days: Counter[int] = Counter()
    levels: dict[int, Counter[str]] = {}
    for name, n in parse_int_hash(raw).items():
        day, _, level = name.partition(":")
        days[int(day)] += n
        levels.setdefault(week_of(int(day) * DAY_S), Counter())[level] += n
    return {d: n for d, n in days.items() if n}, {w: {lv: n for lv, n in c.items() if n} for w, c in levels.items()}


class Announced(SentLately):
    """``SentLately`` for the only-growing id sets, marked from the commands of a write that succeeded."""

    SETS = (":f:catalog", ":f:workflows", ":f:cohorts")

    def confirm(self, commands: Iterable[Command]) -> None:
        """The write that carried ``commands`` succeeded: remember its id set members."""
        for cmd in commands:
            if cmd[0] == "SADD" and cmd[1].endswith(self.SETS):
                self.mark(cmd[1], cmd[2:])


def _unsent(sent: Announced | None, key: str, members: Any) -> Any:
    return members if sent is None else sent.unsent(key, members)


def parse_int_hash(raw: dict[Any, Any] | list[Any]) -> dict[str, int]:
    """An ``HGETALL`` reply (a flat list on the raw connection, a dict through a client) as text → int."""
    pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2], strict=True)
    return {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in pairs}
