"""Built-in summarizers: ``async def (SessionSnapshot) -> str``.

``template_summarizer`` is deterministic and offline: a readable brief built
only from the snapshot's facts, so the console works with no LLM configured.
``llm_summarizer`` sends ``ONBOARDING_SUMMARY_PROMPT`` to any OpenAI-compatible
chat endpoint (OpenAI, Azure-style proxies, vLLM, Ollama, LiteLLM ...) chosen
by environment variables, so teams plug in the model they already run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx

from .prompts import ONBOARDING_SUMMARY_PROMPT
from .user_adoption_state import SessionSnapshot, build_onboarding_summary_input


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


class SummarizerError(RuntimeError):
    """The LLM could not produce a summary; the message says what to fix."""


# (setting in AUTOPLAY_STORAGE, environment variable) for each LLM option.
_LLM_OPTIONS = {
    "base_url": ("LLM_BASE_URL", "AUTOPLAY_LLM_BASE_URL"),
    "model": ("LLM_MODEL", "AUTOPLAY_LLM_MODEL"),
    "api_key": ("LLM_API_KEY", "AUTOPLAY_LLM_API_KEY"),
    "timeout_s": ("LLM_TIMEOUT_S", "AUTOPLAY_LLM_TIMEOUT_S"),
}


def _option(name: str) -> str:
    """Django's ``AUTOPLAY_STORAGE`` when the web project is running, else the environment."""
    setting, env = _LLM_OPTIONS[name]
    try:
        from django.conf import settings

        if settings.configured:
            value = getattr(settings, "AUTOPLAY_STORAGE", {}).get(setting)
            if value not in (None, ""):
                return str(value)
    except ImportError:  # the engine runs without Django too
        pass
    return os.environ.get(env, "")


@dataclass(frozen=True)
class OpenAICompatibleSummarizer:
    """``POST {base_url}/chat/completions`` with the onboarding prompt as the system message."""

    base_url: str
    model: str
    api_key: str = ""
    timeout_s: float = 20.0

    @classmethod
    def from_settings(cls) -> OpenAICompatibleSummarizer:
        base_url, model = _option("base_url"), _option("model")
        if not base_url or not model:
            raise SummarizerError(
                "the LLM summarizer is not configured: set AUTOPLAY_LLM_BASE_URL (for example "
                "https://api.openai.com/v1) and AUTOPLAY_LLM_MODEL"
            )
        timeout = _option("timeout_s")
        try:
            timeout_s = float(timeout) if timeout else 20.0
        except ValueError:
            raise SummarizerError(f"AUTOPLAY_LLM_TIMEOUT_S must be a number of seconds, not {timeout!r}") from None
        return cls(base_url=base_url, model=model, api_key=_option("api_key"), timeout_s=timeout_s)

    def request_body(self, snapshot: SessionSnapshot) -> dict[str, Any]:
        content = ONBOARDING_SUMMARY_PROMPT["content"].format(**build_onboarding_summary_input(snapshot))
        return {"model": self.model, "messages": [{"role": "system", "content": content}]}

    async def __call__(self, snapshot: SessionSnapshot) -> str:
        url = self.base_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            # A client per call: async clients belong to one event loop, and calls are rare.
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                response = await client.post(url, json=self.request_body(snapshot), headers=headers)
        except httpx.TimeoutException:
            raise SummarizerError(f"{url} did not answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise SummarizerError(f"could not reach {url}: {type(exc).__name__}: {exc}") from None
        if response.status_code != 200:
            raise SummarizerError(f"{url} answered HTTP {response.status_code}: {response.text[:300]}")
        try:
            text = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise SummarizerError(
                f"{url} did not answer in the chat-completions format (choices[0].message.content): "
                f"{response.text[:300]}"
            ) from None
        if not isinstance(text, str) or not text.strip():
            raise SummarizerError(f"{url} returned an empty summary")
        return text.strip()


async def llm_summarizer(snapshot: SessionSnapshot) -> str:
    """The configured OpenAI-compatible model; set ``AUTOPLAY_SUMMARIZER`` to this function's dotted path."""
    return await OpenAICompatibleSummarizer.from_settings()(snapshot)
