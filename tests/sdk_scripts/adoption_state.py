"""An agent's use of ``autoplay_sdk`` 0.13: every document member, then the storage page's examples.

Written against the SDK's API only. ``tests/test_sdk_compat.py`` runs this
file as it is and again with its imports pointed at ``autoplay_storage``,
and compares what ``main()`` returns: the documents' ``to_dict()`` after each
step, the return values, and whether each mutation bumped
``last_updated_at``.
"""

from __future__ import annotations

from typing import Any

from autoplay_sdk.prompts import ONBOARDING_SUMMARY_PROMPT
from autoplay_sdk.storage import (
    InMemoryStorageAdapter,
    StorageManager,
    build_agent_context,
    on_session_end,
    on_session_start,
)
from autoplay_sdk.user_adoption_state import (
    JourneyState,
    MasteryLevel,
    SessionIndexEntry,
    SessionSnapshot,
    StepInAssessment,
    UserAdoptionState,
    WorkflowStatus,
    build_onboarding_summary_input,
)

T0 = 1_700_000_000.0
CATALOG = ["create_project", "invite_team", "configure_columns"]


def documents(seen: list[tuple[str, Any]]) -> None:
    """Every member the issue lists, on one state."""

    def touched(label: str, state: UserAdoptionState, call: Any) -> Any:
        state.last_updated_at = 0.0
        result = call()
        seen.append((f"{label} bumps last_updated_at", state.last_updated_at != 0.0))
        state.last_updated_at = T0
        return result

    state = UserAdoptionState(user_id="u_123", metadata={"role": "admin", "team": "ops"})
    state.first_seen_at = state.last_updated_at = state.onboarding.exploration_started_at = T0
    ob = state.onboarding

    wp = ob.upsert_workflow_progress(
        "create_project",
        status=WorkflowStatus.IN_PROGRESS,
        confidence=0.4,
        evidence="opened the wizard",
        source="activity",
        now=T0 + 10,
    )
    seen.append(("upsert_workflow_progress new", wp.to_dict()))
    seen.append(
        (
            "upsert clamps above 1",
            ob.upsert_workflow_progress(
                "invite_team", status=WorkflowStatus.NOT_STARTED, confidence=1.7, now=T0 + 11
            ).to_dict(),
        )
    )

    step = wp.upsert_step_progress(
        "name_it", status=WorkflowStatus.COMPLETED, confidence=0.8, evidence="typed a name", now=T0 + 12
    )
    seen.append(("upsert_step_progress new", step.to_dict()))
    wp.upsert_step_progress("pick_template", status=WorkflowStatus.IN_PROGRESS, confidence=2, now=T0 + 13)
    again = wp.upsert_step_progress("name_it", status=WorkflowStatus.COMPLETED, confidence=-1, now=T0 + 14)
    seen.append(("upsert_step_progress keeps completed_at and evidence", again.to_dict()))
    seen.append(("upsert_step_progress returns the stored step", again is wp.steps["name_it"]))
    seen.append(("completed_step_ids", wp.completed_step_ids))

    done = ob.upsert_workflow_progress("create_project", status=WorkflowStatus.COMPLETED, confidence=0.9, now=T0 + 20)
    seen.append(("upsert keeps source and evidence", done.to_dict()))
    later = ob.upsert_workflow_progress(
        "create_project",
        status=WorkflowStatus.COMPLETED,
        confidence=-0.2,
        evidence="project p1 exists",
        source="judge",
        now=T0 + 30,
    )
    seen.append(("upsert keeps completed_at", later.to_dict()))
    ob.upsert_workflow_progress("configure_columns", status=WorkflowStatus.IN_PROGRESS, confidence=0.5, now=T0 + 31)

    seen.append(("completed_workflow_ids", ob.completed_workflow_ids))
    seen.append(("in_progress_workflow_ids", ob.in_progress_workflow_ids))
    seen.append(("outstanding_workflow_ids", ob.outstanding_workflow_ids(["invite_team", *CATALOG, "export"])))

    assessment = StepInAssessment(
        decided_at=T0 + 40,
        should_step_in=True,
        timing_assessment="idle for 30 s",
        reason="stuck on the invite dialog",
        suggested_workflow_ids=["invite_team"],
    )
    seen.append(("record_step_in", ob.record_step_in(assessment)))
    seen.append(("is_onboarding_complete before", ob.is_onboarding_complete))
    seen.append(("mark_onboarding_complete", ob.mark_onboarding_complete(now=T0 + 50)))
    seen.append(("mark_onboarding_complete again", ob.mark_onboarding_complete(now=T0 + 99)))
    seen.append(("is_onboarding_complete after", ob.is_onboarding_complete))
    seen.append(("onboarding", ob.to_dict()))

    seen.append(("current_session_id at first", state.current_session_id))
    touched("set_current_session", state, lambda: state.set_current_session("  sess_abc  "))
    seen.append(("current_session_id", state.current_session_id))
    touched("set_current_session blank", state, lambda: state.set_current_session(""))
    seen.append(("current_session_id cleared", state.current_session_id))
    state.current_session_id = "sess_abc"
    seen.append(("role", state.role))

    touched("mark_welcomed", state, lambda: state.mark_welcomed(now=T0 + 60))
    touched("mark_judged", state, lambda: state.mark_judged(now=T0 + 61))
    for n in range(1, 4):
        entry = SessionIndexEntry(session_id=f"sess_{n}", session_number=n, started_at=T0 + n, captured_at=T0 + n + 1)
        touched(f"record_session {n}", state, lambda entry=entry: state.record_session(entry))
    seen.append(("sessions_index", [entry.to_dict() for entry in state.sessions_index]))
    seen.append(("sessions_count", state.sessions_count))

    touched(
        "set_mastery",
        state,
        lambda: state.set_mastery(rating=12, level=MasteryLevel.INTERMEDIATE, description="moves fast"),
    )
    touched("set_journey_state", state, lambda: state.set_journey_state(JourneyState.ONBOARDED, reason="tour done"))
    touched(
        "record_discovered_features",
        state,
        lambda: state.record_discovered_features(["projects", "", "projects", "columns"]),
    )
    seen.append(("to_prompt_block", state.to_prompt_block()))
    seen.append(("to_prompt_block of a new user", UserAdoptionState(user_id="u_2").to_prompt_block()))
    seen.append(("state", state.to_dict()))
    seen.append(("from_dict round trip", UserAdoptionState.from_dict(state.to_dict()).to_dict()))


async def storage_page(seen: list[tuple[str, Any]]) -> None:
    """The storage page's three steps, on the in-memory adapter."""
    storage = StorageManager([InMemoryStorageAdapter()])

    state, onboarding_session = await on_session_start(
        product_id="prod_1", user_id="u_123", session_id="sess_abc", storage=storage
    )
    seen.append(("on_session_start state", state.to_dict()))
    seen.append(("on_session_start onboarding_session", onboarding_session))
    seen.append(("build_agent_context", build_agent_context(state, onboarding_session)))

    state.onboarding.upsert_workflow_progress(
        "create_project", status=WorkflowStatus.COMPLETED, confidence=0.9, source="tour", now=T0 + 100
    )
    state.set_mastery(rating=4, level=MasteryLevel.BEGINNER, description="first project")
    state.record_discovered_features(["projects"])
    snapshot = SessionSnapshot.from_adoption_state(
        state,
        session_id="sess_abc",
        session_number=state.sessions_count + 1,
        started_at=T0,
        catalog_workflow_ids=CATALOG,
        now=T0 + 600,
    )
    seen.append(("SessionSnapshot.from_adoption_state", snapshot.to_dict()))

    async def my_summarizer(snapshot: SessionSnapshot) -> str:
        prompt_input = build_onboarding_summary_input(snapshot)
        content = ONBOARDING_SUMMARY_PROMPT["content"].format(**prompt_input)
        seen.append(("build_onboarding_summary_input", prompt_input))
        seen.append(("the prompt formats", isinstance(content, str) and bool(content)))
        return f"Completed {prompt_input['completed_workflow_ids_json']}."

    updated = await on_session_end(
        product_id="prod_1", user_id="u_123", session_snapshot=snapshot, storage=storage, summarizer=my_summarizer
    )
    seen.append(("on_session_end state", updated.to_dict()))

    returning, onboarding_session = await on_session_start(
        product_id="prod_1", user_id="u_123", session_id="sess_def", storage=storage
    )
    seen.append(("returning on_session_start state", returning.to_dict()))
    seen.append(("returning onboarding_session", onboarding_session.to_dict()))
    seen.append(("returning build_agent_context", build_agent_context(returning, onboarding_session)))


async def main() -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []
    documents(seen)
    await storage_page(seen)
    return seen
