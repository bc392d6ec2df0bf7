"""``ConsoleClient`` (asyncio) and ``SyncConsoleClient``: every route of the agent API, on httpx.

Both return the engine's documents (``UserAdoptionState``, ``SessionSnapshot``)
with their etags, raise the typed errors of ``errors``, and retry what is safe
to retry (``calls.retry_reason``) within one ``RetryPolicy``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, TypeVar

import httpx

from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState

from . import calls
from .calls import Call, RetryPolicy, SessionPage, SessionRow, SessionStart, VersionedState
from .errors import ConsoleError

logger = logging.getLogger("autoplay_storage.remote")

T = TypeVar("T")
Timeout = float | httpx.Timeout
State = UserAdoptionState | Mapping[str, Any]
Snapshot = SessionSnapshot | Mapping[str, Any]

DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def _request(client: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
    return client.build_request(call.method, call.path, json=call.json, params=call.params, headers=call.headers)


def _next_wait(
    policy: RetryPolicy,
    call: Call,
    attempt: int,
    waited: float,
    response: httpx.Response | None,
    error: Exception | None,
) -> float | None:
    """How long to sleep before trying ``call`` again, or ``None`` to give up with this outcome."""
    reason = calls.retry_reason(call, response, error)
    if reason is None:
        return None
    retry_after = calls.retry_after_seconds(response.headers.get("Retry-After")) if response is not None else None
    wait = policy.delay(attempt, retry_after, waited)
    if wait is not None:
        logger.info("retrying %s %s in %.2fs (%s)", call.method, call.path, wait, reason, extra={"attempt": attempt})
        if policy.on_retry is not None:
            policy.on_retry(attempt, wait, reason)
    return wait


class ConsoleClient:
    """The agent API for asyncio code. Use as ``async with ConsoleClient(url, key) as client``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=calls.client_headers(api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> ConsoleClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, call: Call, parse: Callable[[dict[str, Any]], T]) -> T:
        attempt, waited = 0, 0.0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            try:
                response = await self._http.send(_request(self._http, call))
            except httpx.TransportError as exc:
                wait = _next_wait(self.retry, call, attempt, waited, None, exc)
                if wait is None:
                    raise calls.unreachable(exc) from exc
            else:
                wait = _next_wait(self.retry, call, attempt, waited, response, None)
                if wait is None:
                    return parse(calls.raise_for(response))
            waited += wait
            await asyncio.sleep(wait)

    async def start_session(
        self, product_id: str, user_id: str, session_id: str, *, metadata: Mapping[str, Any] | None = None
    ) -> SessionStart:
        """Load or create the state and mark the session current; the onboarding session and agent context."""
        return await self._run(calls.start_call(product_id, user_id, session_id, metadata), calls.session_start)

    async def end_session(
        self, product_id: str, user_id: str, snapshot: Snapshot, *, summary: str | None = None, summarize: bool = False
    ) -> VersionedState:
        """Send the frozen snapshot; the server freezes it (write-once) and folds it into the state."""
        call = calls.end_snapshot_call(product_id, user_id, snapshot, summary=summary, summarize=summarize)
        return await self._run(call, calls.versioned)

    async def end_session_from_state(
        self,
        product_id: str,
        user_id: str,
        session_id: str,
        state: State,
        *,
        catalog_workflow_ids: list[str],
        started_at: float,
        completion_rate_denominator: str | None = None,
        summary: str | None = None,
        summarize: bool = False,
    ) -> VersionedState:
        """Send the live state and the catalog; the server builds the snapshot and ends the session."""
        call = calls.end_state_call(
            product_id,
            user_id,
            session_id,
            state,
            catalog_workflow_ids=catalog_workflow_ids,
            started_at=started_at,
            completion_rate_denominator=completion_rate_denominator,
            summary=summary,
            summarize=summarize,
        )
        return await self._run(call, calls.versioned)

    async def get_state(self, product_id: str, user_id: str) -> VersionedState:
        return await self._run(calls.get_state_call(product_id, user_id), calls.versioned)

    async def replace_state(
        self, product_id: str, user_id: str, state: State, *, if_match: str | None = None, create_only: bool = False
    ) -> VersionedState:
        """PUT with ``If-Match`` (an etag, or ``"*"``) or, with ``create_only``, ``If-None-Match: *``."""
        call = calls.replace_call(product_id, user_id, state, if_match=if_match, create_only=create_only)
        return await self._run(call, calls.versioned)

    async def patch_state(
        self, product_id: str, user_id: str, ops: list[Mapping[str, Any]], *, if_match: str | None = None
    ) -> VersionedState:
        """Apply ``ops`` (``{"op": "mastery", ...}``) in order, all or none."""
        return await self._run(calls.patch_call(product_id, user_id, ops, if_match=if_match), calls.versioned)

    async def list_sessions(
        self, product_id: str, user_id: str, *, cursor: str | None = None, limit: int = 50
    ) -> SessionPage:
        return await self._run(calls.sessions_call(product_id, user_id, cursor, limit), calls.session_page)

    async def iter_sessions(self, product_id: str, user_id: str, *, page_size: int = 100) -> AsyncIterator[SessionRow]:
        """Every finished session, newest first, page after page."""
        cursor: str | None = None
        while True:
            page = await self.list_sessions(product_id, user_id, cursor=cursor, limit=page_size)
            for row in page.items:
                yield row
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def get_session(self, product_id: str, user_id: str, session_id: str) -> SessionSnapshot:
        return await self._run(calls.session_call(product_id, user_id, session_id), calls.snapshot)

    async def get_context(self, product_id: str, user_id: str) -> dict[str, Any]:
        return await self._run(calls.context_call(product_id, user_id), calls.context)


class SyncConsoleClient:
    """The same routes for code without an event loop (scripts, sync agents, notebooks)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=calls.client_headers(api_key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> SyncConsoleClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call, parse: Callable[[dict[str, Any]], T]) -> T:
        attempt, waited = 0, 0.0
        while True:
            attempt += 1
            try:
                response = self._http.send(_request(self._http, call))
            except httpx.TransportError as exc:
                wait = _next_wait(self.retry, call, attempt, waited, None, exc)
                if wait is None:
                    raise calls.unreachable(exc) from exc
            else:
                wait = _next_wait(self.retry, call, attempt, waited, response, None)
                if wait is None:
                    return parse(calls.raise_for(response))
            waited += wait
            time.sleep(wait)

    def start_session(
        self, product_id: str, user_id: str, session_id: str, *, metadata: Mapping[str, Any] | None = None
    ) -> SessionStart:
        return self._run(calls.start_call(product_id, user_id, session_id, metadata), calls.session_start)

    def end_session(
        self, product_id: str, user_id: str, snapshot: Snapshot, *, summary: str | None = None, summarize: bool = False
    ) -> VersionedState:
        call = calls.end_snapshot_call(product_id, user_id, snapshot, summary=summary, summarize=summarize)
        return self._run(call, calls.versioned)

    def end_session_from_state(
        self,
        product_id: str,
        user_id: str,
        session_id: str,
        state: State,
        *,
        catalog_workflow_ids: list[str],
        started_at: float,
        completion_rate_denominator: str | None = None,
        summary: str | None = None,
        summarize: bool = False,
    ) -> VersionedState:
        call = calls.end_state_call(
            product_id,
            user_id,
            session_id,
            state,
            catalog_workflow_ids=catalog_workflow_ids,
            started_at=started_at,
            completion_rate_denominator=completion_rate_denominator,
            summary=summary,
            summarize=summarize,
        )
        return self._run(call, calls.versioned)

    def get_state(self, product_id: str, user_id: str) -> VersionedState:
        return self._run(calls.get_state_call(product_id, user_id), calls.versioned)

    def replace_state(
        self, product_id: str, user_id: str, state: State, *, if_match: str | None = None, create_only: bool = False
    ) -> VersionedState:
        call = calls.replace_call(product_id, user_id, state, if_match=if_match, create_only=create_only)
        return self._run(call, calls.versioned)

    def patch_state(
        self, product_id: str, user_id: str, ops: list[Mapping[str, Any]], *, if_match: str | None = None
    ) -> VersionedState:
        return self._run(calls.patch_call(product_id, user_id, ops, if_match=if_match), calls.versioned)

    def list_sessions(
        self, product_id: str, user_id: str, *, cursor: str | None = None, limit: int = 50
    ) -> SessionPage:
        return self._run(calls.sessions_call(product_id, user_id, cursor, limit), calls.session_page)

    def iter_sessions(self, product_id: str, user_id: str, *, page_size: int = 100) -> Iterator[SessionRow]:
        cursor: str | None = None
        while True:
            page = self.list_sessions(product_id, user_id, cursor=cursor, limit=page_size)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get_session(self, product_id: str, user_id: str, session_id: str) -> SessionSnapshot:
        return self._run(calls.session_call(product_id, user_id, session_id), calls.snapshot)

    def get_context(self, product_id: str, user_id: str) -> dict[str, Any]:
        return self._run(calls.context_call(product_id, user_id), calls.context)


__all__ = ["ConsoleClient", "ConsoleError", "SyncConsoleClient"]
