"""User facts: the compact record of one user the insight filters and aggregates run over (pure, no I/O).

Every primary keeps its aggregates as a *diff* of the facts of the document
a write replaces against the facts of the document it writes, in the same
atomic step as the write (docs/insight.md). Facts are a pure function of
the stored document, so a retried write (same old, same new) and a rebuild
from the documents give the same numbers as a full recount (``recount``).

Snapshot facts (the day, the mastery level and the catalog of one frozen
session) are counted once per snapshot: snapshots are write-once.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from .browse import Page, UserSummary
from .errors import DocumentError
from .user_adoption_state import JourneyState, MasteryLevel, UserAdoptionState, WorkflowStatus

DAY_S = 86400
COHORT_SESSIONS = 10  # the cohort table shows the share onboarded after 1..10 sessions
META_KEY_MAX, META_VALUE_MAX = 64, 100  # longer metadata is not indexed for the key=value filter
EVIDENCE_MAX = 300
_JOURNEYS = frozenset(j.value for j in JourneyState)
_LEVELS = frozenset(m.value for m in MasteryLevel)
_STATUSES = frozenset(s.value for s in WorkflowStatus)
ACTIVE_STATUSES = ("in_progress", "completed")  # kept per workflow; "never touched" is the rest
WorkflowFilter = Literal["completed", "in_progress", "untouched"]


def day_of(t: float) -> int:
    """Days since the epoch (UTC)."""
    return math.floor(t / DAY_S)


def week_of(t: float) -> int:
    """Weeks since the epoch, starting on Mondays (1970-01-01 was a Thursday)."""
    return math.floor((day_of(t) + 3) / 7)


def week_start_day(week: int) -> int:
    return week * 7 - 3


class WorkflowFact(NamedTuple):
    workflow_id: str
    status: str  # in_progress or completed (not_started entries are not kept: never touched)
    last_progress_at: float
    evidence: str


class UserFacts(NamedTuple):
    """A tuple: built on every state write, compared field by field by the diff."""

    journey_state: str = "onboarding"
    mastery_level: str = "novice"
    onboarded: bool = False
    sessions_to_onboard: int | None = None
    cohort_week: int = 0
    first_seen_at: float = 0.0
    last_activity_at: float = 0.0
    sessions_count: int = 0
    workflows: tuple[WorkflowFact, ...] = ()
    metadata: tuple[tuple[str, str], ...] = ()

    def workflow(self, workflow_id: str) -> WorkflowFact | None:
        return next((w for w in self.workflows if w.workflow_id == workflow_id), None)


class SnapshotFacts(NamedTuple):
    day: int
    week: int
    mastery_level: str
    catalog: tuple[str, ...]


def _finite(value: Any) -> bool:
    """A usable number: an integer too large for a float (a document's ``1e400`` written out) is not."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


_tuple = tuple.__new__


_INF = math.inf
_floor = math.floor


def _time(value: Any) -> float | None:
    """A usable timestamp (``type`` rather than ``isinstance``: a bool is not a time); on every write's path."""
    cls = value.__class__
    if cls is float:
        return value if -_INF < value < _INF else None  # NaN fails both
    if cls is int:
        try:
            return float(value)
        except OverflowError:  # a document's ``1e400`` written out as an integer
            return None
    return None


def _steps_progress(steps: dict[str, Any], best: float | None) -> float | None:
    """The latest of ``best`` and the steps' completion times."""
    for step in steps.values():
        t = step.get("completed_at") if step.__class__ is dict else None
        if t is not None and (t := _time(t)) is not None and (best is None or t > best):
            best = t
    return best


def _sessions_to_onboard(completed_at: float, count: int, index: list[Any]) -> int:
    """Sessions finished when onboarding completed: the older ones beyond the index, plus those indexed up to then."""
    upto = sum(1 for e in index if type(e) is dict and _finite(t := e.get("captured_at")) and t <= completed_at)
    return max(1, count - len(index) + upto)


def _metadata(metadata: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    if not metadata:
        return ()
    pairs = [
        (k, v)
        for k, v in metadata.items()
        if v.__class__ is str and k.__class__ is str and 0 < len(k) <= META_KEY_MAX and len(v) <= META_VALUE_MAX
    ]
    if len(pairs) > 1:
        pairs.sort()
    return tuple(pairs)


def _finite_time(value: Any) -> bool:
    """``_finite`` with a float checked in place (the case of every document this engine writes)."""
    return -_INF < value < _INF if value.__class__ is float else _finite(value)


def _canonical(doc: dict[str, Any]) -> bool:
    """The fields facts read are already valid (every document this engine writes): read them directly.

    On every write's path: classes compared by identity, a float time checked
    in place, each field read once.
    """
    get = doc.get
    mastery, onboarding, sessions = get("mastery"), get("onboarding"), get("sessions")
    version = get("_v", 1)
    if not (
        version == 1
        and version.__class__ is not bool
        and (journey := get("journey_state")).__class__ is str
        and journey in _JOURNEYS
        and mastery.__class__ is dict
        and (level := mastery.get("level")).__class__ is str
        and level in _LEVELS
        and onboarding.__class__ is dict
        and sessions.__class__ is dict
        and (count := sessions.get("count")).__class__ is int
        and count >= 0
        and (index := sessions.get("index")).__class__ is list
        and len(index) <= count
        and get("metadata").__class__ is dict
        and _finite_time(get("first_seen_at"))
        and _finite_time(get("last_updated_at"))
        and onboarding.get("workflow_progress").__class__ is dict
    ):
        return False
    completed = onboarding.get("onboarding_completed_at")
    return completed is None or _finite_time(completed)


def _workflows(progress: dict[str, Any]) -> tuple[WorkflowFact, ...] | None:
    """The active workflows, sorted; ``None`` if an entry is not what this engine writes.

    Each one's last progress is when it was detected, completed, or a step
    completed (re-judging is no progress), else when last judged. On every
    write's path, so a float time is checked in place and only anything
    else goes through ``_time``.
    """
    found = []
    append = found.append
    for wid, wp in progress.items():
        if wp.__class__ is not dict or not wid:
            return None
        status = wp.get("status")
        if status == "not_started":
            continue
        if status != "in_progress" and status != "completed":
            return None
        evidence = wp.get("evidence")
        if evidence.__class__ is not str:
            evidence = ""
        elif len(evidence) > EVIDENCE_MAX:
            evidence = evidence[:EVIDENCE_MAX]
        best = wp.get("first_detected_at")
        if best is not None and (best.__class__ is not float or not -_INF < best < _INF):
            best = _time(best)
        done = wp.get("completed_at")
        if done is not None:
            if done.__class__ is not float or not -_INF < done < _INF:
                done = _time(done)
            if done is not None and (best is None or done > best):
                best = done
        steps = wp.get("steps")
        if steps and steps.__class__ is dict:
            best = _steps_progress(steps, best)
        if best is None:
            best = _time(wp.get("last_evaluated_at")) or 0.0
        append(_tuple(WorkflowFact, (wid, status, best, evidence)))  # skips namedtuple's __new__
    if len(found) > 1:
        found.sort()
    return tuple(found)


def _indexed_upto(index: list[Any], completed_at: float) -> int | None:
    """Index entries captured up to ``completed_at``; ``None`` unless every entry is one the reader keeps.

    (A dict with its own session id and a capture time: one pass for both questions.)
    """
    ids = set()
    upto = 0
    for e in index:
        if e.__class__ is not dict:
            return None
        sid = e.get("session_id")
        if sid.__class__ is not str or not sid or sid in ids:
            return None
        t = _time(e.get("captured_at"))
        if t is None:
            return None
        ids.add(sid)
        if t <= completed_at:
            upto += 1
    return upto


def direct_facts(doc: dict[str, Any]) -> UserFacts | None:
    """``user_facts`` of a document this engine writes, read field by field; ``None`` for any other.

    Reads only the fields the facts name (a partial document holding just
    those gives the same facts: ``adapters/redis/rows.py``).
    """
    if not _canonical(doc):
        return None
    workflows = _workflows(doc["onboarding"]["workflow_progress"])
    if workflows is None:
        return None
    completed = doc["onboarding"].get("onboarding_completed_at")
    if completed is None:
        return _facts(doc, workflows, None)
    sessions = doc["sessions"]
    upto = _indexed_upto(sessions["index"], completed)  # only sessions to onboard read the index
    if upto is None:
        return None
    return _facts(doc, workflows, max(1, sessions["count"] - len(sessions["index"]) + upto))


def user_facts(doc: dict[str, Any]) -> UserFacts | None:
    """The facts of a stored state document; ``None`` when it cannot be read (it counts nowhere)."""
    facts = direct_facts(doc)
    if facts is not None:
        return facts
    try:  # another writer's document: read it by the documents' own rules
        fixed = UserAdoptionState.from_dict(doc, user_id=str(doc.get("user_id") or "-")).to_dict()
    except (DocumentError, TypeError, ValueError):
        return None
    # Where the reader would say "now" for a missing time, facts say 0: a recount must give the same.
    for name in ("first_seen_at", "last_updated_at"):
        fixed[name] = float(doc[name]) if _finite(doc.get(name)) else 0.0
    completed = fixed["onboarding"].get("onboarding_completed_at")
    sessions = fixed["sessions"]
    onboard = None if completed is None else _sessions_to_onboard(completed, sessions["count"], sessions["index"])
    return _facts(fixed, _workflows(fixed["onboarding"]["workflow_progress"]) or (), onboard)


def _facts(doc: dict[str, Any], workflows: tuple[WorkflowFact, ...], sessions_to_onboard: int | None) -> UserFacts:
    """``sessions_to_onboard``: ``None`` when not onboarded (``week_of`` inlined: on every write's path)."""
    first_seen = float(doc["first_seen_at"])
    return _tuple(
        UserFacts,
        (
            doc["journey_state"],
            doc["mastery"]["level"],
            sessions_to_onboard is not None,
            sessions_to_onboard,
            _floor((_floor(first_seen / DAY_S) + 3) / 7),
            first_seen,
            float(doc["last_updated_at"]),
            doc["sessions"]["count"],
            workflows,
            _metadata(doc["metadata"]),
        ),
    )


def snapshot_facts(doc: dict[str, Any]) -> SnapshotFacts | None:
    """What one frozen session adds to the charts and the catalog; ``None``: no usable capture time.

    On every session end's path: the catalog is gathered into one set (in C)
    and only its members are checked.
    """
    get = doc.get
    captured = get("captured_at")
    if not _finite_time(captured):
        return None
    mastery = get("mastery")
    level = mastery.get("level") if isinstance(mastery, dict) else None
    ids: set[Any] = set()
    for name in ("completed_workflow_ids", "in_progress_workflow_ids", "untouched_workflow_ids"):
        listed = get(name)
        if isinstance(listed, list):
            try:
                ids.update(listed)
            except TypeError:  # an unhashable entry (a list, an object): the ids one by one
                ids.update(wid for wid in listed if isinstance(wid, str))
    progress = get("workflow_progress")
    if isinstance(progress, dict):
        ids.update(progress)  # its keys
    catalog = [wid for wid in ids if isinstance(wid, str) and wid] if ids else []
    if len(catalog) > 1:
        catalog.sort()
    day = _floor(captured / DAY_S)  # day_of and week_of, inlined
    level = level if isinstance(level, str) and level in _LEVELS else "novice"
    return _tuple(SnapshotFacts, (day, _floor((day + 3) / 7), level, tuple(catalog)))


# -- filters --------------------------------------------------------------------


@dataclass(frozen=True)
class UserFilter:
    """A segment's filter over one product's users; every field optional (``None``: any)."""

    journey_state: str | None = None
    mastery_levels: tuple[str, ...] = ()
    onboarded: bool | None = None
    workflow_id: str | None = None
    workflow_status: WorkflowFilter | None = None
    active_after: float | None = None
    active_before: float | None = None
    first_seen_after: float | None = None
    first_seen_before: float | None = None
    sessions_min: int | None = None
    sessions_max: int | None = None
    meta_key: str | None = None
    meta_value: str | None = None
    order: Literal["-last_activity", "last_activity"] = "-last_activity"

    @property
    def empty(self) -> bool:
        return self == UserFilter(order=self.order)

    def to_params(self) -> dict[str, str]:
        """The query-string form (``from_params`` reads it back): a segment's shareable definition."""
        out: dict[str, str] = {}
        if self.journey_state:
            out["journey"] = self.journey_state
        if self.mastery_levels:
            out["mastery"] = ",".join(self.mastery_levels)
        if self.onboarded is not None:
            out["onboarded"] = "yes" if self.onboarded else "no"
        if self.workflow_id:
            out["workflow"] = self.workflow_id
            out["status"] = self.workflow_status or "in_progress"
        for name in ("active_after", "active_before", "first_seen_after", "first_seen_before"):
            value = getattr(self, name)
            if value is not None:
                out[name] = repr(value)  # every digit: a saved segment must mean what was asked
        if self.sessions_min is not None:
            out["sessions_min"] = str(self.sessions_min)
        if self.sessions_max is not None:
            out["sessions_max"] = str(self.sessions_max)
        if self.meta_key:
            out["meta_key"] = self.meta_key
            out["meta_value"] = self.meta_value or ""
        if self.order != "-last_activity":
            out["order"] = self.order
        return out


def matches(facts: UserFacts | None, f: UserFilter) -> bool:
    """Whether a user with ``facts`` is in the segment (the reference every store's index answers agree with).

    Of a workflow only its status is read: the Redis lists check their rows
    with facts that hold nothing else of the workflows (``adapters/redis/rows.py``).
    """
    if facts is None:
        return False
    if f.journey_state and facts.journey_state != f.journey_state:
        return False
    if f.mastery_levels and facts.mastery_level not in f.mastery_levels:
        return False
    if f.onboarded is not None and facts.onboarded != f.onboarded:
        return False
    if f.workflow_id:
        wf = facts.workflow(f.workflow_id)
        status = wf.status if wf else "untouched"
        if status != (f.workflow_status or "in_progress"):
            return False
    if f.active_after is not None and facts.last_activity_at < f.active_after:
        return False
    if f.active_before is not None and facts.last_activity_at >= f.active_before:
        return False
    if f.first_seen_after is not None and facts.first_seen_at < f.first_seen_after:
        return False
    if f.first_seen_before is not None and facts.first_seen_at >= f.first_seen_before:
        return False
    if f.sessions_min is not None and facts.sessions_count < f.sessions_min:
        return False
    if f.sessions_max is not None and facts.sessions_count > f.sessions_max:
        return False
    return not (f.meta_key and (f.meta_key, f.meta_value or "") not in facts.metadata)


# -- aggregates -------------------------------------------------------------------


@dataclass(frozen=True)
class FunnelRow:
    workflow_id: str
    completed: int
    in_progress: int
    untouched: int


@dataclass(frozen=True)
class CohortRow:
    week: int
    users: int
    onboarded_after: tuple[int, ...]  # users onboarded within 1, 2, … COHORT_SESSIONS sessions (cumulative)
    onboarded: int
    median_sessions: float | None


@dataclass(frozen=True)
class ProductStats:
    users: int
    funnel: list[FunnelRow] = field(default_factory=list)
    cohorts: list[CohortRow] = field(default_factory=list)
    sessions_per_day: dict[int, int] = field(default_factory=dict)
    mastery_per_week: dict[int, dict[str, int]] = field(default_factory=dict)


def cohort_row(week: int, users: int, histogram: dict[int, int]) -> CohortRow:
    """A cohort from its size and how many users onboarded at exactly n sessions."""
    onboarded = sum(histogram.values())
    cumulative, total = [], 0
    for n in range(1, COHORT_SESSIONS + 1):
        total += histogram.get(n, 0)
        cumulative.append(total)
    median = None
    if onboarded:
        median = float(statistics.median(n for n, k in sorted(histogram.items()) for _ in range(k)))
    return CohortRow(week, users, tuple(cumulative), onboarded, median)


def build_stats(
    users: int,
    catalog: Iterable[str],
    status_counts: dict[tuple[str, str], int],
    cohorts: Iterable[CohortRow],
    days: dict[int, int],
    weeks: dict[int, dict[str, int]],
) -> ProductStats:
    """Assemble the numbers every store counts the same way."""
    wids = sorted(set(catalog) | {w for w, _ in status_counts})
    funnel = []
    for wid in wids:
        done, doing = status_counts.get((wid, "completed"), 0), status_counts.get((wid, "in_progress"), 0)
        funnel.append(FunnelRow(wid, done, doing, max(0, users - done - doing)))
    rows = sorted((c for c in cohorts if c.users), key=lambda c: c.week)
    return ProductStats(
        users,
        funnel,
        rows,
        {d: n for d, n in sorted(days.items()) if n},
        {w: {lv: n for lv, n in levels.items() if n} for w, levels in sorted(weeks.items()) if any(levels.values())},
    )


def recount(states: Iterable[dict[str, Any]], snapshots: Iterable[dict[str, Any]]) -> ProductStats:
    """The numbers from a full scan of one product's documents (the reference; the memory primary's answer)."""
    users = 0
    status_counts: Counter[tuple[str, str]] = Counter()
    cohorts: dict[int, tuple[int, dict[int, int]]] = {}
    for doc in states:
        facts = user_facts(doc)
        if facts is None:
            continue
        users += 1
        for wf in facts.workflows:
            status_counts[(wf.workflow_id, wf.status)] += 1
        n, hist = cohorts.get(facts.cohort_week, (0, {}))
        if facts.sessions_to_onboard is not None:
            hist[facts.sessions_to_onboard] = hist.get(facts.sessions_to_onboard, 0) + 1
        cohorts[facts.cohort_week] = (n + 1, hist)
    catalog: set[str] = set()
    days: Counter[int] = Counter()
    weeks: dict[int, Counter[str]] = {}
    for doc in snapshots:
        snap = snapshot_facts(doc)
        if snap is None:
            continue
        catalog.update(snap.catalog)
        days[snap.day] += 1
        weeks.setdefault(snap.week, Counter())[snap.mastery_level] += 1
    rows = [cohort_row(week, n, hist) for week, (n, hist) in cohorts.items()]
    return build_stats(users, catalog, dict(status_counts), rows, dict(days), {w: dict(c) for w, c in weeks.items()})


@dataclass(frozen=True)
class StuckUser:
    """One row of the stuck queue: a user in progress on ``workflow_id`` with no progress since ``last_progress_at``."""

    user: UserSummary
    workflow_id: str
    last_progress_at: float
    evidence: str


@runtime_checkable
class InsightStore(Protocol):
    """What a primary offers the insight pages, from aggregates it keeps as it writes (no scan per call)."""

    async def insight_stats(self, product_id: str) -> ProductStats: ...

    async def count_users(self, product_id: str, f: UserFilter) -> int: ...

    async def list_filtered_users(
        self, product_id: str, f: UserFilter, *, cursor: str | None = None, limit: int = 50
    ) -> Page[UserSummary]: ...

    async def export_users(
        self, product_id: str, f: UserFilter, *, cursor: str | None = None, limit: int = 50
    ) -> Page[UserSummary]:
        """``list_filtered_users`` for a CSV: pages of any size; a row may carry only the metadata a CSV shows."""
        ...

    async def list_stuck(
        self, product_id: str, older_than: float, *, cursor: str | None = None, limit: int = 50
    ) -> Page[StuckUser]:
        """Users in progress on a workflow with no progress since ``older_than``, newest stuck first."""
        ...


def list_row(product_id: str, user_id: str, doc: dict[str, Any]) -> UserSummary:
    """``database_rows.user_summary`` for a list or an export, reading a canonical document's fields directly."""
    from .adapters.database_rows import user_summary

    row = direct_row(product_id, user_id, doc)
    return row if row is not None else user_summary(product_id, user_id, doc)


def direct_row(product_id: str, user_id: str, doc: dict[str, Any]) -> UserSummary | None:
    """``list_row`` of a document whose fields read are all valid (``_canonical``), field by field; else ``None``.

    The same values as the defensive reader gives; reads only the fields a
    row shows (a partial document holding just those gives the same row).
    """
    if not _canonical(doc):
        return None
    metadata = doc["metadata"]
    if not all(v.__class__ in (str, int, bool) or v is None for v in metadata.values()):
        return None  # floats (maybe not finite) and containers: the defensive reader copies them safely
    mastery, onboarding, sessions = doc["mastery"], doc["onboarding"], doc["sessions"]
    rating, rate, current = mastery.get("rating"), onboarding.get("completion_rate"), sessions.get("current_session_id")
    if (
        rating.__class__ is not int
        or not 0 <= rating <= 10
        or rate.__class__ is not float
        or not 0.0 <= rate <= 1.0
        or not (current is None or current.__class__ is str)
    ):
        return None
    return UserSummary(
        product_id=product_id,
        user_id=user_id,
        journey_state=doc["journey_state"],
        mastery_level=mastery["level"],
        mastery_rating=rating,
        completion_rate=rate,
        onboarded=onboarding.get("onboarding_completed_at") is not None,
        sessions_count=sessions["count"],
        first_seen_at=float(doc["first_seen_at"]),
        last_activity_at=float(doc["last_updated_at"]),
        current_session_id=current or None,
        metadata=metadata,
    )
