"""Insight reads on Redis: product numbers, segment counts, filtered users, the stuck queue (keys: ``facts.py``).

Numbers are read from the sets and counters the writes keep (``ZCARD``,
``ZCOUNT``, ``HGETALL``): a page view costs a few round trips, never a scan
of the documents. A list walks the smallest activity-ordered set every row
must be in and checks the others per batch (``ZMSCORE``), or reads a small
workflow or metadata set whole and sorts it; the live documents have the
last word, as for every listing.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from ...browse import Page, UserSummary
from ...facts import (
    COHORT_SESSIONS,
    CohortRow,
    ProductStats,
    StuckUser,
    UserFilter,
    build_stats,
)
from ..common import Position, clamp_limit, decode_cursor, encode_cursor
from .facts import (
    NEVER,
    SEP,
    catalog_key,
    cohort_key,
    cohorts_key,
    counts_key,
    first_seen_key,
    meta_key,
    session_counts,
    sessions_count_key,
    workflow_key,
    workflows_key,
)
from .index import Command
from .keys import UserKeys, journey_key, mastery_key, onboarded_key, users_key
from .rows import read_row, read_row_and_facts
from .transport import Transport, text

SCAN_MAX = 20_000  # members a list walks per request before it answers with what it found and a cursor
LOOKUP_FIRST = 5_000  # a membership set this small is read whole and sorted, instead of walking the users
_BATCH = 500


@dataclass
class _Plan:
    """A filter as sets: every row is in ``all_of``, in one of each ``any_of``, in none of ``none_of``."""

    all_of: list[str]  # scored by last activity
    members_of: list[str] = field(default_factory=list)  # membership only (score 0)
    any_of: list[list[str]] = field(default_factory=list)
    none_of: list[str] = field(default_factory=list)
    ranges: list[tuple[str, float, float]] = field(default_factory=list)  # key, low (incl.), high (excl.)
    low: float = float("-inf")  # the activity range (the score of every all_of set)
    high: float = float("inf")


def _plan(product_id: str, f: UserFilter) -> _Plan:
    plan = _Plan([users_key(product_id)])
    if f.journey_state:
        plan.all_of.append(journey_key(product_id, f.journey_state))
    if len(f.mastery_levels) == 1:
        plan.all_of.append(mastery_key(product_id, f.mastery_levels[0]))
    elif f.mastery_levels:
        plan.any_of.append([mastery_key(product_id, m) for m in f.mastery_levels])
    if f.onboarded is not None:
        plan.all_of.append(onboarded_key(product_id, f.onboarded))
    if f.workflow_id:
        status = f.workflow_status or "in_progress"
        if status == "untouched":
            plan.none_of += [workflow_key(product_id, f.workflow_id, s) for s in ("completed", "in_progress")]
        else:
            plan.members_of.append(workflow_key(product_id, f.workflow_id, status))
    if f.meta_key:
        plan.members_of.append(meta_key(product_id, f.meta_key, f.meta_value or ""))
    if f.active_after is not None:
        plan.low = f.active_after
    if f.active_before is not None:
        plan.high = f.active_before
    if f.first_seen_after is not None or f.first_seen_before is not None:
        low = f.first_seen_after if f.first_seen_after is not None else float("-inf")
        high = f.first_seen_before if f.first_seen_before is not None else float("inf")
        plan.ranges.append((first_seen_key(product_id), low, high))
    if f.sessions_min is not None or f.sessions_max is not None:
        low = f.sessions_min if f.sessions_min is not None else float("-inf")
        high = f.sessions_max + 0.5 if f.sessions_max is not None else float("inf")
        plan.ranges.append((sessions_count_key(product_id), low, high))
    if len(plan.all_of) > 1:
        plan.all_of.remove(users_key(product_id))  # every other activity set holds only the product's users
    return plan


@dataclass
class _Head:
    """One workflow's in-progress set, as the stuck queue's merge reads it."""

    workflow_id: str
    key: str
    offset: int = 0
    done: bool = False
    items: list[Position] = field(default_factory=list)  # the batch not merged yet, newest last


def _scored(reply: list[Any]) -> list[tuple[Any, float]]:
    """(member, score) of a ``WITHSCORES`` reply: flat on a raw connection, pairs through the cluster client."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(m, float(score)) for m, score in reply]
    return [(m, float(score)) for m, score in zip(reply[::2], reply[1::2], strict=True)]


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Read a dropped task's outcome, so that its error is not reported as never retrieved."""
    if not task.cancelled():
        task.exception()


def _bound(value: float, *, exclusive: bool = False) -> str:
    if value == float("inf"):
        return "+inf"
    if value == float("-inf"):
        return "-inf"
    return f"({value!r}" if exclusive else repr(value)


class Insight:
    """The insight reads over one transport in one key mode."""

    def __init__(self, transport: Transport, keys: UserKeys) -> None:
        self.transport = transport
        self.keys = keys

    # -- numbers --

    async def stats(self, product_id: str) -> ProductStats:
        users, catalog, workflows, weeks, counted = await self.transport.pipeline(
            [
                ("ZCARD", users_key(product_id)),
                ("SMEMBERS", catalog_key(product_id)),
                ("SMEMBERS", workflows_key(product_id)),
                ("SMEMBERS", cohorts_key(product_id)),
                ("HGETALL", counts_key(product_id)),
            ]
        )
        catalog_ids = {text(w) for w in catalog}
        wids = sorted(catalog_ids | {text(w) for w in workflows})
        week_ids = sorted(int(text(w)) for w in weeks)
        cmds: list[Command] = []
        for wid in wids:
            cmds += [("ZCARD", workflow_key(product_id, wid, s)) for s in ("completed", "in_progress")]
        for week in week_ids:
            key = cohort_key(product_id, week)
            cmds += [("ZCARD", key), ("ZCOUNT", key, "-inf", f"({NEVER}")]
            cmds += [("ZCOUNT", key, "-inf", n) for n in range(1, COHORT_SESSIONS + 1)]
        replies = iter(await self.transport.pipeline(cmds))
        counts = {}
        for wid in wids:
            for status in ("completed", "in_progress"):
                if n := next(replies):
                    counts[(wid, status)] = n
        cohorts: list[tuple[int, int, int, tuple[int, ...]]] = []
        for week in week_ids:
            size, onboarded = next(replies), next(replies)
            cohorts.append((week, size, onboarded, tuple(next(replies) for _ in range(COHORT_SESSIONS))))
        medians = await self.transport.pipeline(
            [("ZRANGE", cohort_key(product_id, w), (n - 1) // 2, n // 2, "WITHSCORES") for w, _, n, _ in cohorts if n]
        )
        median_of = iter(medians)
        rows = []
        for week, size, onboarded, after in cohorts:
            median = None
            if onboarded:
                scores = [score for _, score in _scored(next(median_of))]
                median = sum(scores) / len(scores)
            rows.append(CohortRow(week, size, after, onboarded, median))
        days, levels = session_counts(counted)
        return build_stats(users, catalog_ids, counts, rows, days, levels)

    async def count(self, product_id: str, f: UserFilter) -> int:
        plan = _plan(product_id, f)
        low, high = _bound(plan.low), _bound(plan.high, exclusive=True)
        if len(plan.all_of) == 1 and not (plan.members_of or plan.any_of or plan.none_of or plan.ranges):
            (n,) = await self.transport.pipeline([("ZCOUNT", plan.all_of[0], low, high)])
            return int(n)
        alone = not (plan.any_of or plan.none_of or plan.ranges) and (plan.low, plan.high) == (-math.inf, math.inf)
        if alone and plan.all_of == [users_key(product_id)] and len(plan.members_of) == 1:
            (n,) = await self.transport.pipeline([("ZCARD", plan.members_of[0])])
            return int(n)
        # Intersections in scratch keys of the product (one slot), deleted by the last command. Redis
        # intersects in the time of the smallest input, so the users index is left out when a smaller
        # set bounds the result and no activity range needs its scores. Each mastery level asked for
        # is intersected with every other set at once, and only those small results are united. The
        # first dimension cut by score (the last activity, else the first range) is the score of those
        # intersections; the last dimension is counted (ZCOUNT) rather than cut.
        scratch = f"{users_key(product_id)}:tmp:{uuid.uuid4().hex}"
        ranged = not (plan.low == -math.inf and plan.high == math.inf)
        activity = [k for k in plan.all_of if k != users_key(product_id) or not plan.members_of or ranged]
        dims = [(activity[0], plan.low, plan.high)] if ranged else []
        dims += plan.ranges
        cmds: list[Command] = []
        names: list[str] = []
        for v, chosen in enumerate(itertools.product(*plan.any_of)):
            names.append(f"{scratch}:{v}")
            keys = list(dict.fromkeys([*activity, *plan.members_of, *chosen, *(d[0] for d in dims[:1])]))
            weights = [1 if dims and k == dims[0][0] else 0 for k in keys]
            cmds.append(("ZINTERSTORE", names[-1], len(keys), *keys, "WEIGHTS", *weights, "AGGREGATE", "SUM"))
        tmp = names[0]
        if len(names) > 1:
            tmp = f"{scratch}:all"
            cmds.append(("ZUNIONSTORE", tmp, len(names), *names, "AGGREGATE", "MAX"))  # one score per member
        if plan.none_of:
            cmds.append(("ZDIFFSTORE", tmp, 1 + len(plan.none_of), tmp, *plan.none_of))
        for i, (key, lo, hi) in enumerate(dims[:-1]):
            if i:  # the score becomes this dimension
                cmds.append(("ZINTERSTORE", tmp, 2, tmp, key, "WEIGHTS", 0, 1))
            cmds.append(("ZREMRANGEBYSCORE", tmp, "-inf", _bound(lo, exclusive=True)))
            cmds.append(("ZREMRANGEBYSCORE", tmp, _bound(hi), "+inf"))
        if len(dims) > 1:
            cmds.append(("ZINTERSTORE", tmp, 2, tmp, dims[-1][0], "WEIGHTS", 0, 1))
        if dims:
            cmds.append(("ZCOUNT", tmp, _bound(dims[-1][1]), _bound(dims[-1][2], exclusive=True)))
        else:
            cmds.append(("ZCARD", tmp))
        cmds.append(("DEL", *names, *([tmp] if tmp not in names else [])))
        results = await self.transport.pipeline(cmds)  # in order on one connection; the scratch keys are ours alone
        return int(results[-2])

    # -- lists --

    async def list_users(
        self, product_id: str, f: UserFilter, *, cursor: str | None = None, limit: int = 50, export: bool = False
    ) -> Page[UserSummary]:
        """A page of the filter's users; ``export``: of any size (a CSV reads a few thousand rows a page)."""
        limit = max(1, limit) if export else clamp_limit(limit)
        position = decode_cursor(cursor)
        descending = f.order == "-last_activity"
        plan = _plan(product_id, f)
        found, resume = await self._walk(plan, position, descending, limit)
        page, more = found[:limit], len(found) > limit
        check = None if f.empty else f  # an unfiltered list has nothing an index entry could get wrong but the order
        rows = await self._rows(product_id, [uid for _, uid in page], check)
        next_position = page[-1] if more and page else resume
        return Page(rows, encode_cursor(next_position) if next_position else None)

    async def _rows(self, product_id: str, user_ids: list[str], check: UserFilter | None) -> list[UserSummary]:
        """The users' rows from their live documents (the last word), ``_BATCH`` documents per ``MGET``.

        The next batch is asked for before one is decoded, so the server
        reads and sends it meanwhile.
        """
        keys = [self.keys.state(product_id, uid) for uid in user_ids]
        rows: list[UserSummary] = []
        ahead: asyncio.Task[list[Any]] | None = None
        try:
            for start in range(0, len(keys), _BATCH):
                end = start + _BATCH
                raws = await (ahead if ahead is not None else self.transport.get_many(keys[start:end]))
                ahead = None
                if end < len(keys):
                    ahead = asyncio.ensure_future(self.transport.get_many(keys[end : end + _BATCH]))
                    await asyncio.sleep(0)  # let it send its request
                for user_id, key, raw in zip(user_ids[start:end], keys[start:end], raws, strict=True):
                    if raw is None:
                        continue  # expired (TTL) or deleted since it was indexed
                    row = read_row(product_id, user_id, key, raw, check)
                    if row is not None:  # None: corrupt (counts nowhere) or no longer in the filter
                        rows.append(row)
        finally:
            if ahead is not None:  # the caller went away, or a read failed: drop the read ahead (and its connection)
                ahead.cancel()
                ahead.add_done_callback(_retrieved)
        return rows

    async def _walk(
        self, plan: _Plan, position: Position | None, descending: bool, limit: int
    ) -> tuple[list[Position], Position | None]:
        """Up to ``limit + 1`` members that pass ``plan``, in order; and where to resume if the walk stopped early."""
        drivers = plan.all_of
        sizes = await self.transport.pipeline([("ZCARD", k) for k in [*drivers, *plan.members_of]])
        if plan.members_of:
            small = min(zip(sizes[len(drivers) :], plan.members_of, strict=True))
            if small[0] <= LOOKUP_FIRST and small[0] < min(sizes[: len(drivers)]):
                return await self._lookup(small[1], plan, position, descending, limit), None
        if len(drivers) > 1:
            drivers = [k for _, k in sorted(zip(sizes, drivers, strict=True))]
        driver, others = drivers[0], [*drivers[1:], *plan.members_of]
        high, low = _bound(plan.high, exclusive=True), _bound(plan.low)
        if position is not None and descending and position[0] < plan.high:
            high = repr(position[0])
        if position is not None and not descending and position[0] > plan.low:
            low = repr(position[0])
        out: list[Position] = []
        offset, scanned, last = 0, 0, None
        client = self.transport.client
        size = min(_BATCH, 2 * (limit + 1))  # doubled while the checks keep too few: few round trips either way
        while scanned < SCAN_MAX:
            if descending:
                request = client.zrevrangebyscore(driver, high, low, start=offset, num=size, withscores=True)
            else:
                request = client.zrangebyscore(driver, low, high, start=offset, num=size, withscores=True)
            got = await self.transport.call(request)
            offset += len(got)
            scanned += len(got)
            batch = [(float(s), text(m)) for m, s in got]
            if position is not None:
                batch = [b for b in batch if (b < position if descending else b > position)]
            if batch:
                last = batch[-1]
                out.extend(await self._check(batch, others, plan))
                if len(out) > limit:
                    return out[: limit + 1], None
            if len(got) < size:
                return out, None
            size = min(_BATCH, size * 2)
        return out, last

    async def _lookup(
        self, key: str, plan: _Plan, position: Position | None, descending: bool, limit: int
    ) -> list[Position]:
        """A small membership set read whole: its members' activity from the first activity set, sorted here."""
        members = [text(m) for m in await self.transport.call(self.transport.client.zrange(key, 0, -1))]
        if not members:
            return []
        (scores,) = await self.transport.pipeline([("ZMSCORE", plan.all_of[0], *members)])
        batch = [(float(sc), m) for m, sc in zip(members, scores, strict=True) if sc is not None]
        batch = [b for b in batch if plan.low <= b[0] < plan.high]
        if position is not None:
            batch = [b for b in batch if (b < position if descending else b > position)]
        batch.sort(reverse=descending)
        others = [k for k in [*plan.all_of[1:], *plan.members_of] if k != key]
        out: list[Position] = []
        for i in range(0, len(batch), _BATCH):
            out.extend(await self._check(batch[i : i + _BATCH], others, plan))
            if len(out) > limit:
                break
        return out[: limit + 1]

    async def _check(self, batch: list[Position], others: list[str], plan: _Plan) -> list[Position]:
        members = [m for _, m in batch]
        cmds: list[Command] = [("ZMSCORE", k, *members) for k in others]
        for group in plan.any_of:
            cmds += [("ZMSCORE", k, *members) for k in group]
        cmds += [("ZMSCORE", k, *members) for k in plan.none_of]
        cmds += [("ZMSCORE", k, *members) for k, _, _ in plan.ranges]
        if not cmds:
            return batch
        replies = iter(await self.transport.pipeline(cmds))
        keep = [True] * len(batch)
        for _ in others:
            scores = next(replies)
            keep = [k and s is not None for k, s in zip(keep, scores, strict=True)]
        for group in plan.any_of:
            hits = [next(replies) for _ in group]
            keep = [k and any(h[i] is not None for h in hits) for i, k in enumerate(keep)]
        for _ in plan.none_of:
            scores = next(replies)
            keep = [k and s is None for k, s in zip(keep, scores, strict=True)]
        for _, lo, hi in plan.ranges:
            scores = next(replies)
            keep = [k and s is not None and lo <= float(s) < hi for k, s in zip(keep, scores, strict=True)]
        return [item for item, k in zip(batch, keep, strict=True) if k]

    async def stuck(
        self, product_id: str, older_than: float, *, cursor: str | None = None, limit: int = 50
    ) -> Page[StuckUser]:
        """Newest stuck first: in progress, last progress before ``older_than``, latest progress first.

        Each workflow's in-progress set is ordered by last progress, so the
        queue is those sets merged: a batch from each, then from whichever
        the merge used up, until a page of rows the live documents confirm is
        found. Ties on last progress are ordered by ``<workflow>\\0<user>``,
        the cursor's member.
        """
        limit = clamp_limit(limit)
        position = decode_cursor(cursor)
        # After a cursor, its own score again (ties are filtered in _refill).
        top = f"{position[0]!r}" if position and position[0] < older_than else f"({older_than!r}"
        ids = await self.transport.pipeline(
            [("SMEMBERS", catalog_key(product_id)), ("SMEMBERS", workflows_key(product_id))]
        )
        wids = sorted({text(w) for reply in ids for w in reply})
        heads = [_Head(wid, workflow_key(product_id, wid, "in_progress")) for wid in wids]
        out: list[StuckUser] = []
        while len(out) <= limit:
            await self._refill(heads, top, position, limit + 1)
            taken: list[Position] = []
            # Merge while every set has its next item at hand (or has no more).
            while len(taken) <= limit and all(h.items or h.done for h in heads):
                ready = [h for h in heads if h.items]
                if not ready:
                    break
                taken.append(max(ready, key=lambda h: h.items[-1]).items.pop())
            if not taken:
                break
            out.extend(await self._stuck_rows(product_id, taken, older_than))
        page = out[:limit]
        more = len(out) > limit
        next_cursor = None
        if more and page:
            last = page[-1]
            next_cursor = encode_cursor((last.last_progress_at, f"{last.workflow_id}{SEP}{last.user.user_id}"))
        return Page(page, next_cursor)

    async def _refill(self, heads: list[_Head], top: str, position: Position | None, size: int) -> None:
        """Give every set that ran dry its next batch (newest first, at most ``top``, after ``position``)."""
        while pending := [h for h in heads if not h.items and not h.done]:
            replies = await self.transport.pipeline(
                [
                    ("ZRANGE", h.key, top, "-inf", "BYSCORE", "REV", "LIMIT", h.offset, size, "WITHSCORES")
                    for h in pending
                ]
            )
            for head, reply in zip(pending, replies, strict=True):
                got = _scored(reply)
                head.offset += len(got)
                head.done = len(got) < size
                items = [(score, f"{head.workflow_id}{SEP}{text(m)}") for m, score in got]
                if position is not None:
                    items = [i for i in items if i < position]
                head.items = items[::-1]  # oldest last progress first: the merge pops the newest off the end

    async def _stuck_rows(self, product_id: str, items: list[Position], older_than: float) -> list[StuckUser]:
        pairs = [m.split(SEP, 1) for _, m in items]
        raws = await self.transport.get_many([self.keys.state(product_id, uid) for _, uid in pairs])
        rows = []
        for (wid, user_id), raw in zip(pairs, raws, strict=True):
            row = _stuck_row(product_id, user_id, wid, self.keys.state(product_id, user_id), raw, older_than)
            if row is not None:
                rows.append(row)
        return rows


def _stuck_row(
    product_id: str, user_id: str, workflow_id: str, key: str, raw: Any, older_than: float
) -> StuckUser | None:
    """The row if the live document still says stuck (an index entry may lag a racing write)."""
    if raw is None:
        return None
    read = read_row_and_facts(product_id, user_id, key, raw)
    wf = read[1].workflow(workflow_id) if read else None
    if read is None or wf is None or wf.status != "in_progress" or wf.last_progress_at >= older_than:
        return None
    return StuckUser(read[0], workflow_id, wf.last_progress_at, wf.evidence)
