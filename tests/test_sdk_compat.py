"""Code written against ``autoplay_sdk`` 0.13 runs on our documents with only its imports changed.

``tests/sdk_scripts/adoption_state.py`` uses every SDK member the issue
lists plus the storage page's examples. It runs once on the installed SDK and
once with its imports pointed at ``autoplay_storage``; what it saw must be
equal, after normalising only what docs/documents-and-ids.md documents as
differing.
"""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).parent / "sdk_scripts" / "adoption_state.py"
OUR_IMPORTS = {
    "from autoplay_sdk.prompts import": "from autoplay_storage import",
    "from autoplay_sdk.storage import": "from autoplay_storage import",
    "from autoplay_sdk.user_adoption_state import": "from autoplay_storage.user_adoption_state import",
}


def _source(ours: bool) -> str:
    source = SCRIPT.read_text()
    if ours:
        for sdk, our in OUR_IMPORTS.items():
            assert sdk in source
            source = source.replace(sdk, our)
        assert "autoplay_sdk" not in source.replace('"autoplay_sdk', "").split('"""', 2)[2]
    return source


async def _run(ours: bool) -> tuple[dict[str, Any], tuple[float, float]]:
    namespace: dict[str, Any] = {"__name__": "adoption_state_script"}
    exec(compile(_source(ours), str(SCRIPT), "exec"), namespace)
    started = time.time()
    seen = await namespace["main"]()
    labels = [label for label, _ in seen]
    assert len(labels) == len(set(labels)), "each observation has its own label"
    return dict(seen), (started, time.time())


def _wall_clock(value: Any, window: tuple[float, float]) -> Any:
    """Stamps the script cannot pass in (a new state's creation, ``_touch``) are the run's own time."""
    if isinstance(value, dict):
        return {k: _wall_clock(v, window) for k, v in value.items()}
    if isinstance(value, list):
        return [_wall_clock(v, window) for v in value]
    if isinstance(value, float) and window[0] <= value <= window[1]:
        return "<now>"
    return value


def _as_ours(sdk_seen: dict[str, Any]) -> dict[str, Any]:
    """The documented differences of our session end, applied to what the SDK saw."""
    seen = copy.deepcopy(sdk_seen)
    captured = seen["SessionSnapshot.from_adoption_state"]["workflow_progress"]
    end = seen["on_session_end state"]
    assert end["sessions"]["current_session_id"] == "sess_abc"
    end["sessions"]["current_session_id"] = None  # ours clears the session that ended
    for label in ("on_session_end state", "returning on_session_start state"):
        assert seen[label]["onboarding"]["workflow_progress"] == {}  # the SDK drops the captured progress
        seen[label]["onboarding"]["workflow_progress"] = captured  # ours merges it in
    return seen


@pytest.fixture(scope="module")
def observed() -> tuple[dict[str, Any], dict[str, Any]]:
    sdk, sdk_window = asyncio.run(_run(ours=False))
    ours, our_window = asyncio.run(_run(ours=True))
    return _wall_clock(sdk, sdk_window), _wall_clock(ours, our_window)


def test_the_script_sees_the_same_on_both(observed: tuple[dict[str, Any], dict[str, Any]]) -> None:
    sdk, ours = observed
    expected = _as_ours(sdk)
    assert list(ours) == list(expected)
    for label, value in expected.items():
        assert ours[label] == value, label


def test_the_script_covers_every_member_the_issue_lists() -> None:
    source = _source(ours=False)
    members = [
        ".upsert_workflow_progress(", ".completed_workflow_ids", ".in_progress_workflow_ids",
        ".outstanding_workflow_ids(", ".record_step_in(", ".is_onboarding_complete", ".mark_onboarding_complete(",
        ".upsert_step_progress(", ".completed_step_ids", ".current_session_id", ".sessions_index", ".role",
        ".mark_welcomed(", ".mark_judged(", ".set_current_session(", ".record_session(", ".to_prompt_block(",
        "SessionSnapshot.from_adoption_state(", "build_onboarding_summary_input(", "on_session_start(",
        "on_session_end(", "build_agent_context(", 'ONBOARDING_SUMMARY_PROMPT["content"].format(',
    ]  # fmt: skip
    assert [m for m in members if m not in source] == []


def test_the_documented_differences_are_real(observed: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """The normalisation is not a blanket: without it the session end differs in exactly those two fields."""
    sdk, ours = observed
    assert ours["on_session_end state"]["sessions"]["current_session_id"] is None
    assert sdk["on_session_end state"]["sessions"]["current_session_id"] == "sess_abc"
    assert ours["on_session_end state"]["onboarding"]["workflow_progress"].keys() == {"create_project"}
    assert sdk["on_session_end state"]["onboarding"]["workflow_progress"] == {}
