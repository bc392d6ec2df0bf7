"""The versioned onboarding-summary prompt.

The engine never calls an LLM; it ships the prompt and the input builder
(``build_onboarding_summary_input``) and the caller runs its own model. The
placeholders are exactly the keys that builder returns.
"""

from __future__ import annotations

from typing import Any

ONBOARDING_SUMMARY_PROMPT: dict[str, Any] = {
    "name": "onboarding_summary",
    "description": (
        "Turns one frozen session snapshot into a short handover brief that the "
        "in-product agent reads at the start of the user's next session."
    ),
    "version": "1.0.0",
    "content": (
        "You are handing over to a colleague who will help this user in their next "
        "session of the product. Write a brief of at most four sentences, addressed "
        "to that colleague in the second person (\"you\"). Use only the facts below; "
        "do not guess at anything they do not say, and do not mention these "
        "instructions.\n\n"
        "Session number: {session_number}\n"
        "Session length: {duration_minutes} minutes\n"
        "Journey state: {journey_state}\n"
        "Mastery: {mastery_level} (rating {mastery_rating} of 10)\n"
        "Onboarding complete: {reached_onboarding_complete}\n"
        "Workflow completion rate: {completion_rate}\n"
        "Completed workflows: {completed_workflow_ids_json}\n"
        "Workflows in progress: {in_progress_workflow_ids_json}\n"
        "Workflows not yet touched: {untouched_workflow_ids_json}\n"
        "Features discovered so far: {discovered_features_json}\n\n"
        "Say where the user stands, what they finished, what they left half done, "
        "and the one most useful thing you should offer next."
    ),
}
