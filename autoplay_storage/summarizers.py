"""Built-in summarizers: ``async def (SessionSnapshot) -> str``.

``template_summarizer`` is deterministic and offline: a readable brief built
only from the snapshot's facts, so the console works with no LLM configured.
"""

from __future__ import annotations

from .user_adoption_state import SessionSnapshot


def _names(ids: list[str]) -> str:
    words = [i.replace("_", " ") for i in ids]
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


async def template_summarizer(snapshot: SessionSnapshot) -> str:
    """A second-person handover brief from the snapshot alone (no LLM)."""
    minutes = round(snapshot.duration_s / 60.0, 1)
    parts = [
        f"In session {snapshot.session_number} ({minutes:g} min) the user was "
        f"{snapshot.mastery.level.value.replace('_', ' ')} (mastery {snapshot.mastery.rating}/10) "
        f"and {'has completed onboarding' if snapshot.reached_onboarding_complete else 'is still onboarding'}."
    ]
    if snapshot.completed_workflow_ids:
        parts.append(f"They completed {_names(snapshot.completed_workflow_ids)}.")
    if snapshot.in_progress_workflow_ids:
        parts.append(f"They left {_names(snapshot.in_progress_workflow_ids)} unfinished.")
    rate = round(snapshot.completion_rate * 100)
    parts.append(f"Overall completion is {rate}%.")
    if snapshot.in_progress_workflow_ids:
        parts.append(f"Offer to help them finish {snapshot.in_progress_workflow_ids[0].replace('_', ' ')} first.")
    elif snapshot.untouched_workflow_ids:
        parts.append(f"Suggest {snapshot.untouched_workflow_ids[0].replace('_', ' ')} next.")
    else:
        parts.append("Nothing is left in the catalog: help them go deeper.")
    return " ".join(parts)
