"""A slow summarizer for server-process tests (configured by dotted path): an LLM call that takes a while."""

from __future__ import annotations

import asyncio
import os

from autoplay_storage.user_adoption_state import SessionSnapshot


async def summarize(snapshot: SessionSnapshot) -> str:
    await asyncio.sleep(float(os.environ.get("SLOW_SUMMARIZER_S", "2")))
    return f"brief of {snapshot.session_id}"
