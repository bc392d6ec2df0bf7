"""Summarizers: the LLM one against a loopback OpenAI-compatible server, fast, slow and failing."""

from __future__ import annotations

import pytest

from autoplay_storage import InMemoryStorageAdapter, StorageManager, on_session_end, on_session_start
from autoplay_storage.models import SummaryRun
from autoplay_storage.prompts import ONBOARDING_SUMMARY_PROMPT
from autoplay_storage.runtime import get_summarizer
from autoplay_storage.summarizers import (
    OpenAICompatibleSummarizer,
    SummarizerError,
    llm_summarizer,
    template_summarizer,
)
from autoplay_storage.summary_runs import SummaryFailed, recorded_summarizer, run_summarizer
from autoplay_storage.user_adoption_state import SessionSnapshot, build_onboarding_summary_input

LLM_PATH = "autoplay_storage.summarizers.llm_summarizer"


@pytest.fixture
def llm_settings(settings, llm_server):
    settings.AUTOPLAY_STORAGE = {
        **settings.AUTOPLAY_STORAGE,
        "SUMMARIZER": LLM_PATH,
        "LLM_BASE_URL": llm_server.url,
        "LLM_MODEL": "test-model-1",
        "LLM_API_KEY": "sk-loopback",
        "LLM_TIMEOUT_S": 0.5,
    }
    return settings


async def ended_session(storage: StorageManager, session_id: str, *, summarizer=None, summary=None):
    state, _ = await on_session_start("prod_1", "u_7", session_id, storage)
    state.upsert_workflow_progress("create_project", status="completed")
    snapshot = SessionSnapshot.from_adoption_state(
        state,
        session_id=session_id,
        session_number=state.sessions.count + 1,
        started_at=1_790_000_000.0,
        catalog_workflow_ids=["create_project", "invite_team"],
        now=1_790_000_300.0,
    )
    updated = await on_session_end("prod_1", "u_7", snapshot, storage, summarizer=summarizer, summary=summary)
    return snapshot, updated


async def test_the_llm_summarizer_sends_the_formatted_prompt(llm_settings, llm_server):
    storage = StorageManager([InMemoryStorageAdapter()])
    snapshot, updated = await ended_session(storage, "sess_1", summarizer=get_summarizer())
    assert get_summarizer() is llm_summarizer
    assert updated.onboarding.summary == "You are picking up after session 1."
    [request] = llm_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["authorization"] == "Bearer sk-loopback"
    content = ONBOARDING_SUMMARY_PROMPT["content"].format(**build_onboarding_summary_input(snapshot))
    assert request["body"] == {"model": "test-model-1", "messages": [{"role": "system", "content": content}]}


async def test_a_slow_llm_times_out_and_the_session_is_still_recorded(llm_settings, llm_server):
    storage = StorageManager([InMemoryStorageAdapter()])
    await ended_session(storage, "sess_1", summary="Earlier brief.")
    llm_server.mode = "slow"
    _, updated = await ended_session(storage, "sess_2", summarizer=llm_summarizer)
    assert llm_server.waiting == 1
    assert updated.sessions.count == 2
    assert updated.has_session("sess_2")
    assert updated.onboarding.summary == "Earlier brief."  # a failed summary leaves the old one


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("slow", "did not answer within 0.5 s"),
        ("fail", "answered HTTP 500: {\"error\": {\"message\": \"the model is overloaded\""),
        ("garbage", "did not answer in the chat-completions format"),
    ],
)
async def test_llm_failures_say_what_went_wrong(llm_settings, llm_server, mode, message):
    llm_server.mode = mode
    snapshot = SessionSnapshot.from_dict({"session_id": "s", "user_id": "u", "session_number": 3})
    with pytest.raises(SummarizerError) as err:
        await llm_summarizer(snapshot)
    assert message in str(err.value)
    assert llm_server.url in str(err.value)


async def test_an_unreachable_or_unconfigured_llm_is_a_clear_error(settings, llm_server, monkeypatch):
    snapshot = SessionSnapshot.from_dict({"session_id": "s", "user_id": "u"})
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "LLM_BASE_URL": "", "LLM_MODEL": ""}
    monkeypatch.delenv("AUTOPLAY_LLM_BASE_URL", raising=False)
    with pytest.raises(SummarizerError, match="set AUTOPLAY_LLM_BASE_URL"):
        await llm_summarizer(snapshot)
    llm_server.close()  # nothing listens on that port any more
    unreachable = OpenAICompatibleSummarizer(base_url=llm_server.url, model="m", timeout_s=2)
    with pytest.raises(SummarizerError, match="could not reach"):
        await unreachable(snapshot)


async def test_the_environment_configures_the_llm_without_django_settings(settings, llm_server, monkeypatch):
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "LLM_BASE_URL": "", "LLM_MODEL": "", "LLM_API_KEY": ""}
    monkeypatch.setenv("AUTOPLAY_LLM_BASE_URL", llm_server.url)
    monkeypatch.setenv("AUTOPLAY_LLM_MODEL", "env-model")
    monkeypatch.delenv("AUTOPLAY_LLM_API_KEY", raising=False)
    text = await llm_summarizer(SessionSnapshot.from_dict({"session_id": "s", "user_id": "u", "session_number": 4}))
    assert text == "You are picking up after session 4."
    assert llm_server.requests[0]["body"]["model"] == "env-model"
    assert llm_server.requests[0]["authorization"] is None


@pytest.mark.django_db(transaction=True)
async def test_run_summarizer_records_success_failure_and_timeout(llm_settings, llm_server):
    snapshot = SessionSnapshot.from_dict({"session_id": "sess_9", "user_id": "u_7", "session_number": 2})
    result = await run_summarizer(snapshot, product_id="prod_1", user_id="u_7", source=SummaryRun.Source.DASHBOARD)
    assert result.text == "You are picking up after session 2."
    assert result.run.outcome == SummaryRun.Outcome.SUCCEEDED
    assert result.run.summarizer == LLM_PATH

    llm_server.mode = "fail"
    with pytest.raises(SummaryFailed) as failed:
        await run_summarizer(snapshot, product_id="prod_1", user_id="u_7", source=SummaryRun.Source.DASHBOARD)
    assert failed.value.run.outcome == SummaryRun.Outcome.FAILED
    assert "HTTP 500" in failed.value.run.error

    llm_server.mode = "slow"
    with pytest.raises(SummaryFailed) as slow:
        await run_summarizer(
            snapshot, product_id="prod_1", user_id="u_7", source=SummaryRun.Source.DASHBOARD, timeout_s=0.2
        )
    assert slow.value.run.outcome == SummaryRun.Outcome.TIMED_OUT
    outcomes = [r.outcome async for r in SummaryRun.objects.filter(session_id="sess_9").order_by("id")]
    assert outcomes == ["succeeded", "failed", "timed_out"]


@pytest.mark.django_db(transaction=True)
async def test_session_end_with_a_failing_llm_records_the_run_and_keeps_the_session(llm_settings, llm_server):
    llm_server.mode = "fail"
    storage = StorageManager([InMemoryStorageAdapter()])
    _, updated = await ended_session(storage, "sess_1", summarizer=recorded_summarizer("prod_1", "u_7"))
    assert updated.has_session("sess_1")
    assert updated.onboarding.summary is None
    assert await storage.get_session_snapshot("prod_1", "u_7", "sess_1") is not None
    run = await SummaryRun.objects.aget(session_id="sess_1")
    assert (run.source, run.outcome) == (SummaryRun.Source.SESSION_END, SummaryRun.Outcome.FAILED)
    assert "HTTP 500" in run.error


async def test_the_template_summarizer_is_deterministic_and_offline():
    snapshot = SessionSnapshot.from_dict(
        {
            "session_id": "s",
            "user_id": "u",
            "session_number": 2,
            "duration_s": 90,
            "completed_workflow_ids": ["create_project"],
            "in_progress_workflow_ids": ["invite_team"],
            "completion_rate": 0.5,
        }
    )
    first = await template_summarizer(snapshot)
    assert first == await template_summarizer(snapshot)
    assert "create project" in first and "invite team" in first and "50%" in first


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("mode", "summary", "outcome", "error"),
    [
        ("ok", "You are picking up after session 1.", "succeeded", ""),
        ("fail", None, "failed", "answered HTTP 500"),
        ("slow", None, "failed", "did not answer within 0.5 s"),
    ],
)
def test_the_api_session_end_with_the_llm_summarizer(
    api_server, make_key, llm_settings, llm_server, mode, summary, outcome, error
):
    llm_settings.AUTOPLAY_STORAGE = {**llm_settings.AUTOPLAY_STORAGE, "PRIMARY": "memory"}
    llm_server.mode = mode
    base = "/api/v1/products/p1/users/u_7/sessions/s1"
    body = {"state": {"user_id": "u_7"}, "catalog_workflow_ids": ["a"], "started_at": 1_790_000_000, "summarize": True}
    with api_server.client(make_key("p1")) as client:
        assert client.post(f"{base}/start").status_code == 200
        response = client.post(f"{base}/end", json=body)
    assert response.status_code == 200, response.text
    state = response.json()["state"]
    assert state["sessions"]["count"] == 1
    assert state["onboarding"]["summary"] == summary
    run = SummaryRun.objects.get(session_id="s1")
    assert (run.source, run.outcome) == (SummaryRun.Source.SESSION_END, outcome)
    assert error in run.error
