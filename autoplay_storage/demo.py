"""Realistic demo data: users of a project-management product learning it over several sessions.

Used by ``autoplay_bootstrap`` (a small first-run product), ``autoplay_demo``
(more users, with a progress bar) and the benchmarks. Two ways to load:

- ``lifecycle`` (default): every session goes through the engine as an agent
  would drive it (``on_session_start``, activity written with
  ``update_user_state``, ``on_session_end`` with a summarizer), so the demo
  exercises the same code paths as production traffic;
- ``direct``: the same documents are built in-process with the same engine
  functions and written with one ``save_*`` per document (a bulk load for
  benchmarks: a few round trips per user instead of a dozen per session).

Pure engine code: importable without Django settings.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .lifecycle import Summarizer, apply_session_end, init_user_state, load_state, on_session_end, on_session_start
from .manager import StorageManager
from .protocol import StateDoc
from .summarizers import template_summarizer
from .user_adoption_state import MasteryLevel, SessionSnapshot, UserAdoptionState, WorkflowStatus

DEMO_PRODUCT = "demo-projects"

WORKFLOWS: dict[str, list[str]] = {
    "create_project": ["name_project", "choose_template", "add_first_task"],
    "invite_team": ["open_invite_dialog", "send_invite", "teammate_joined"],
    "configure_columns": ["open_board_settings", "add_column", "reorder_columns"],
    "connect_calendar": ["open_integrations", "authorize_calendar", "sync_first_event"],
    "set_up_automation": ["open_automations", "pick_trigger", "save_rule"],
    "export_report": ["open_reports", "choose_range", "download_csv"],
}
CATALOG = list(WORKFLOWS)
FEATURES = [
    "board_view", "timeline_view", "comments", "mentions", "file_upload", "keyboard_shortcuts",
    "search", "filters", "dashboards", "time_tracking", "recurring_tasks", "dark_mode",
]
SOURCES = ["tour", "activity", "activity", "judge", "followup"]
FIRST = ["ana", "ben", "chloe", "dev", "emma", "farid", "grace", "hugo", "ines", "jonas", "kira", "liam",
         "maya", "noah", "olga", "pavel", "quinn", "rosa", "sami", "tara", "umar", "vera", "wei", "yara", "zoe"]
LAST = ["alvarez", "becker", "costa", "dubois", "eriksen", "fischer", "garcia", "haddad", "ivanova", "jensen",
        "kowalski", "lopez", "moreau", "nakamura", "okafor", "petrov", "rossi", "schmidt", "tanaka", "weber"]
COMPANIES = ["northwind.io", "acme.dev", "globex.com", "initech.co", "umbrella.org", "hooli.xyz", "vandelay.net"]
ROLES = ["admin", "manager", "member", "member", "member", "viewer"]
TEAMS = ["design", "engineering", "marketing", "operations", "sales", "support"]
PLANS = ["free", "team", "team", "business"]
EVIDENCE = {
    "tour": "followed the guided tour step",
    "activity": "seen in the activity stream",
    "judge": "judged from the session transcript",
    "followup": "confirmed in a follow-up question",
}
TIMING = [
    "user paused on the board settings for 40 s",
    "user opened and closed the invite dialog twice",
    "user is moving quickly; no sign of friction",
    "user searched the help centre for 'automation'",
    "user came back after a week away",
]
DESCRIPTIONS = {
    MasteryLevel.NOVICE: "Still finding their way around the board.",
    MasteryLevel.BEGINNER: "Creates tasks unaided; relies on the tour for anything else.",
    MasteryLevel.INTERMEDIATE: "Comfortable with projects and the team; has not tried automations.",
    MasteryLevel.PROFICIENT: "Uses integrations and reports; sets up work for others.",
    MasteryLevel.POWER_USER: "Automates routine work and explores advanced features on their own.",
}


def mastery_for(rating: int) -> MasteryLevel:
    if rating <= 1:
        return MasteryLevel.NOVICE
    if rating <= 3:
        return MasteryLevel.BEGINNER
    if rating <= 5:
        return MasteryLevel.INTERMEDIATE
    if rating <= 8:
        return MasteryLevel.PROFICIENT
    return MasteryLevel.POWER_USER


# --- planning: every random choice is made up front --------------------------
# (a state mutation may be retried on a write conflict, so it must be pure)


@dataclass
class SessionPlan:
    session_id: str
    started_at: float
    captured_at: float
    steps: list[tuple[str, str, str, float]]  # workflow, step, source, confidence
    features: list[str]
    rating_gain: int
    step_in: tuple[bool, str, str] | None


@dataclass
class UserPlan:
    user_id: str
    metadata: dict[str, Any]
    sessions: list[SessionPlan] = field(default_factory=list)
    leave_open: str | None = None  # a session started and not ended yet

    @property
    def first_seen_at(self) -> float:
        return self.sessions[0].started_at - 30


def plan_user(rng: random.Random, *, sessions: int, now: float | None = None, user_id: str | None = None) -> UserPlan:
    """One user's metadata and sessions, spread over the past weeks, ending before ``now``."""
    now = time.time() if now is None else now
    first, last = rng.choice(FIRST), rng.choice(LAST)
    uid = user_id or f"u_{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
    metadata = {
        "name": f"{first.title()} {last.title()}",
        "email": f"{first}.{last}{rng.randint(1, 999)}@{rng.choice(COMPANIES)}",
        "role": rng.choice(ROLES),
        "team": rng.choice(TEAMS),
        "plan": rng.choice(PLANS),
    }
    plan = UserPlan(user_id=uid, metadata=metadata)
    span = rng.uniform(1, 50) * 86400.0
    start = now - span - 3600
    pending = [(wid, step) for wid in rng.sample(CATALOG, len(CATALOG)) for step in WORKFLOWS[wid]]
    speed = rng.uniform(0.8, 3.0)  # steps per session: fast learners and slow ones
    for n in range(sessions):
        started = start + span * n / max(1, sessions) + rng.uniform(0, span / max(1, sessions) / 3)
        minutes = rng.uniform(3, 45)
        take = min(len(pending), max(0, round(rng.gauss(speed * 2, 1.2))))
        steps = [(wid, step, rng.choice(SOURCES), round(rng.uniform(0.6, 0.99), 2)) for wid, step in pending[:take]]
        del pending[:take]
        if pending and rng.random() < 0.5:  # something started and left half done
            wid, step = pending[0]
            steps.append((wid, step, "activity", -round(rng.uniform(0.3, 0.6), 2)))
        step_in = None
        if rng.random() < 0.6:
            step_in = (rng.random() < 0.45, rng.choice(TIMING), "")
        plan.sessions.append(
            SessionPlan(
                session_id=f"s_{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}",
                started_at=round(started, 3),
                captured_at=round(started + minutes * 60, 3),
                steps=steps,
                features=rng.sample(FEATURES, rng.randint(0, 3)),
                rating_gain=rng.choice([0, 1, 1, 1, 2]),
                step_in=step_in,
            )
        )
    if rng.random() < 0.1:
        plan.leave_open = f"s_{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}"
    return plan


def apply_activity(state: UserAdoptionState, session: SessionPlan) -> None:
    """What the agent observed during one session, written as an agent would."""
    t = session.started_at
    dt = (session.captured_at - session.started_at) / (len(session.steps) + 2)
    for wid, step, source, confidence in session.steps:
        t += dt
        if confidence < 0:  # a step begun, not finished
            state.upsert_step_progress(wid, step, status=WorkflowStatus.IN_PROGRESS, confidence=-confidence,
                                       evidence=f"{step.replace('_', ' ')}: started, not finished", now=t)
            state.upsert_workflow_progress(wid, status=WorkflowStatus.IN_PROGRESS, source=source, now=t)
            continue
        state.upsert_step_progress(wid, step, status=WorkflowStatus.COMPLETED, confidence=confidence,
                                   evidence=f"{step.replace('_', ' ')}: {EVIDENCE[source]}", now=t)
        done = [s for s in WORKFLOWS[wid] if (sp := state.onboarding.workflow_progress[wid].steps.get(s))
                and sp.status is WorkflowStatus.COMPLETED]
        complete = len(done) == len(WORKFLOWS[wid])
        state.upsert_workflow_progress(
            wid,
            status=WorkflowStatus.COMPLETED if complete else WorkflowStatus.IN_PROGRESS,
            confidence=confidence,
            evidence=f"{len(done)} of {len(WORKFLOWS[wid])} steps done; last: {step.replace('_', ' ')}",
            source=source,
            now=t,
        )
    added = state.record_discovered_features(session.features, now=t)
    state.onboarding.distinct_features_seen = len(state.discovered_features)
    if added:
        state.onboarding.explore_gate_passed = state.onboarding.distinct_features_seen >= 3
    if not state.onboarding.welcomed:
        state.onboarding.welcomed = True
        state.onboarding.last_welcome_at = session.started_at + 5
    completed = state.workflow_ids_with_status(WorkflowStatus.COMPLETED)
    rating = min(10, state.mastery.rating + session.rating_gain + (1 if len(completed) >= 3 else 0))
    level = mastery_for(rating)
    state.set_mastery(rating, level, DESCRIPTIONS[level], now=t)
    if session.step_in is not None:
        should, timing, _ = session.step_in
        pending = [w for w in CATALOG if w not in completed]
        reason = (
            f"Offer help with {pending[0].replace('_', ' ')}: it is the next unfinished workflow."
            if should and pending
            else "The user is making progress alone; stepping in would interrupt."
        )
        state.record_step_in(should_step_in=should and bool(pending), timing_assessment=timing, reason=reason,
                             suggested_workflow_ids=pending[:2] if should else [], now=session.captured_at - 60)
    if len(completed) >= 4 and state.onboarding.onboarding_completed_at is None:
        state.onboarding.onboarding_completed_at = session.captured_at - 30
        state.set_journey_state("onboarded", now=t)


def snapshot_of(state: UserAdoptionState, session: SessionPlan) -> SessionSnapshot:
    return SessionSnapshot.from_adoption_state(
        state,
        session_id=session.session_id,
        session_number=state.sessions.count + 1,
        started_at=session.started_at,
        catalog_workflow_ids=CATALOG,
        now=session.captured_at,
    )


def _settle_timeline(plan: UserPlan) -> Callable[[StateDoc | None], StateDoc | None]:
    """The demo replays the past: stamp first-seen and last activity with the simulated clock."""
    last_activity = plan.sessions[-1].captured_at if not plan.leave_open else time.time() - 120

    def mutate(doc: StateDoc | None) -> StateDoc | None:
        state = load_state(doc, plan.user_id)
        state.first_seen_at = plan.first_seen_at
        state.onboarding.exploration_started_at = plan.first_seen_at
        state.last_updated_at = last_activity
        return state.to_dict()

    return mutate


async def load_user_lifecycle(
    storage: StorageManager, product_id: str, plan: UserPlan, summarizer: Summarizer | None = None
) -> None:
    """Drive every session through the engine's lifecycle, as agents do."""
    summarizer = summarizer or template_summarizer
    for session in plan.sessions:
        await on_session_start(product_id, plan.user_id, session.session_id, storage, metadata=plan.metadata)

        def mutate(doc: StateDoc | None, session: SessionPlan = session) -> StateDoc:
            state = load_state(doc, plan.user_id)
            apply_activity(state, session)
            return state.to_dict()

        stored = await storage.update_user_state(product_id, plan.user_id, mutate)
        state = load_state(stored, plan.user_id)
        await on_session_end(product_id, plan.user_id, snapshot_of(state, session), storage, summarizer=summarizer)
    if plan.leave_open:
        await on_session_start(product_id, plan.user_id, plan.leave_open, storage)
    await storage.update_user_state(product_id, plan.user_id, _settle_timeline(plan))


async def build_user_documents(plan: UserPlan) -> tuple[StateDoc, list[SessionSnapshot]]:
    """The documents the lifecycle would store for ``plan``, built in-process."""
    state = init_user_state(plan.user_id, metadata=plan.metadata)
    snapshots = []
    for session in plan.sessions:
        state.mark_session_started(session.session_id, now=session.started_at)
        apply_activity(state, session)
        snap = snapshot_of(state, session)
        summary = await template_summarizer(snap)
        apply_session_end(state, snap, summary, now=session.captured_at)
        snapshots.append(snap)
    if plan.leave_open:
        state.mark_session_started(plan.leave_open)
    state.first_seen_at = state.onboarding.exploration_started_at = plan.first_seen_at
    state.last_updated_at = plan.sessions[-1].captured_at if not plan.leave_open else time.time() - 120
    return state.to_dict(), snapshots


async def load_user_direct(storage: StorageManager, product_id: str, plan: UserPlan) -> None:
    """Write the finished documents: one save per snapshot and one for the state."""
    doc, snapshots = await build_user_documents(plan)
    for snap in snapshots:
        await storage.save_session_snapshot(product_id, plan.user_id, snap.session_id, snap.to_dict())
    await storage.save_user_state(product_id, plan.user_id, doc)


async def load_users(
    storage: StorageManager,
    product_id: str,
    count: int,
    *,
    max_sessions: int = 6,
    seed: int | None = None,
    direct: bool = False,
    concurrency: int = 50,
    summarizer_for: Callable[[str, str], Summarizer] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Load ``count`` users (1..``max_sessions`` sessions each) in concurrent batches; returns their ids.

    ``summarizer_for(product_id, user_id)`` picks the lifecycle's summarizer
    (e.g. one that records its runs); the template summarizer by default.
    """
    rng = random.Random(seed)
    now = time.time()
    ids: list[str] = []
    for start in range(0, count, concurrency):
        plans = [
            plan_user(rng, sessions=rng.randint(1, max(1, max_sessions)), now=now)
            for _ in range(min(concurrency, count - start))
        ]
        if direct:
            await asyncio.gather(*(load_user_direct(storage, product_id, p) for p in plans))
        else:
            await asyncio.gather(
                *(
                    load_user_lifecycle(
                        storage, product_id, p, summarizer_for(product_id, p.user_id) if summarizer_for else None
                    )
                    for p in plans
                )
            )
        ids.extend(p.user_id for p in plans)
        if progress is not None:
            progress(len(plans))
    return ids


async def state_archetypes(count: int, *, seed: int | None = None) -> list[StateDoc]:
    """``count`` fully simulated users' final states (the templates ``clone_states`` copies)."""
    rng = random.Random(seed)
    now = time.time()
    return [
        (await build_user_documents(plan_user(rng, sessions=rng.randint(1, 6), now=now)))[0]
        for _ in range(max(1, count))
    ]


def clone_states(templates: list[StateDoc], count: int, *, seed: int | None = None) -> Iterator[tuple[str, StateDoc]]:
    """``count`` users cloned from ``templates``, each with its own id, name, email, role and activity time.

    Simulating a user costs milliseconds of CPU; a list benchmark over
    100,000 users needs only their states, so most are clones.
    """
    rng = random.Random(seed)
    for i in range(count):
        doc = templates[i % len(templates)]
        first, last = rng.choice(FIRST), rng.choice(LAST)
        uid = f"u_{i:07d}"
        yield uid, {
            **doc,
            "user_id": uid,
            "metadata": {
                **doc["metadata"],
                "name": f"{first.title()} {last.title()}",
                "email": f"{first}.{last}{i}@{rng.choice(COMPANIES)}",
                "role": rng.choice(ROLES),
            },
            "last_updated_at": doc["last_updated_at"] - rng.uniform(0, 30 * 86400.0),
        }


async def load_states_bulk(
    storage: StorageManager,
    product_id: str,
    count: int,
    *,
    archetypes: int = 200,
    seed: int | None = None,
    concurrency: int = 200,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Many users' states (no snapshots), cloned from ``archetypes`` simulated ones, written concurrently."""
    templates = await state_archetypes(min(archetypes, count), seed=seed)
    clones = clone_states(templates, count, seed=seed)
    ids: list[str] = []
    while batch := list(itertools.islice(clones, concurrency)):
        await asyncio.gather(*(storage.save_user_state(product_id, uid, doc) for uid, doc in batch))
        ids.extend(uid for uid, _ in batch)
        if progress is not None:
            progress(len(batch))
    return ids
