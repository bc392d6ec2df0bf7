"""What both clients share: the routes as call descriptions, answers parsed into documents, the retry rule.

Each route is described once (``Call``) and parsed once; ``ConsoleClient``
and ``SyncConsoleClient`` differ only in how they send and sleep.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState

from .errors import ConsoleError, error_for

API_ROOT = "/api/v1/products"
# The API promises that these 503s changed nothing: any call may be repeated after them.
_NOTHING_CHANGED = frozenset({"storage_unavailable", "auth_unavailable"})


@dataclass(frozen=True)
class RetryPolicy:
    """How long a call keeps trying after 503, 429 or a lost connection.

    ``max_attempts`` counts the first try; ``max_wait_s`` bounds the total
    time spent sleeping between tries (a ``Retry-After`` longer than what is
    left ends the retries at once, so a caller is never held past it). Without
    ``Retry-After`` the wait grows ``backoff_s * 2**n``, capped at
    ``max_backoff_s``, with jitter so many agents do not retry in step.
    """

    max_attempts: int = 4
    max_wait_s: float = 30.0
    backoff_s: float = 0.25
    max_backoff_s: float = 8.0
    on_retry: Callable[[int, float, str], None] | None = field(default=None, compare=False)
    """Called before each sleep with (attempt just failed, seconds to wait, reason)."""

    def delay(self, attempt: int, retry_after: float | None, waited: float) -> float | None:
        """Seconds to wait before try ``attempt + 1``, or ``None`` when the budget is spent."""
        if attempt >= self.max_attempts:
            return None
        if retry_after is not None:
            wait = retry_after
        else:
            ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
            wait = ceiling / 2 + random.uniform(0, ceiling / 2)
        if waited + wait > self.max_wait_s:
            return None
        return wait


NO_RETRY = RetryPolicy(max_attempts=1)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class Call:
    """One request: where, what, and whether repeating it after an unclear failure is safe."""

    method: str
    path: str
    idempotent: bool
    json: Any = None
    params: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None


def retry_reason(call: Call, response: httpx.Response | None, error: Exception | None) -> str | None:
    """Why this outcome may be retried, or ``None`` if it is final."""
    if error is not None:
        if isinstance(error, httpx.ConnectError | httpx.ConnectTimeout):
            return "connect"  # the request never reached the server: safe for every call
        if isinstance(error, httpx.TransportError) and call.idempotent:
            return type(error).__name__
        return None
    assert response is not None
    if response.status_code == 429:
        return "429"  # refused before it was handled
    if response.status_code == 503 and (call.idempotent or _code(response) in _NOTHING_CHANGED):
        return "503"
    return None


def _code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def raise_for(response: httpx.Response) -> Any:
    """The JSON body of a 2xx answer, or the typed error of any other."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return body
    if response.is_success:
        raise ConsoleError(response.status_code, "invalid_response", "the answer is not a JSON object")
    raise error_for(response.status_code, body, retry_after_seconds(response.headers.get("Retry-After")))


def unreachable(error: Exception) -> ConsoleError:
    from .errors import ConsoleUnavailableError

    return ConsoleUnavailableError(None, "connection_error", f"{type(error).__name__}: {error}")


# --- answers --------------------------------------------------------------------


@dataclass(frozen=True)
class VersionedState:
    """A state as stored, its ``etag`` (send it back as If-Match) and the wire document as answered."""

    state: UserAdoptionState
    etag: str
    document: dict[str, Any]


@dataclass(frozen=True)
class SessionStart(VersionedState):
    onboarding_session: SessionSnapshot | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionRow:
    """One finished session of the history listing (``corrupt``: stored but unreadable)."""

    session_id: str
    session_number: int
    started_at: float
    captured_at: float
    duration_s: float
    journey_state: str
    mastery_level: str
    mastery_rating: int
    completion_rate: float
    reached_onboarding_complete: bool
    corrupt: bool


@dataclass(frozen=True)
class SessionPage:
    items: list[SessionRow]
    next_cursor: str | None


def versioned(body: dict[str, Any]) -> VersionedState:
    doc = body["state"]
    return VersionedState(UserAdoptionState.from_dict(doc), body["etag"], doc)


def session_start(body: dict[str, Any]) -> SessionStart:
    doc = body["state"]
    onboarding = body.get("onboarding_session")
    return SessionStart(
        UserAdoptionState.from_dict(doc),
        body["etag"],
        doc,
        SessionSnapshot.from_dict(onboarding) if onboarding else None,
        body.get("context") or {},
    )


def session_page(body: dict[str, Any]) -> SessionPage:
    names = SessionRow.__dataclass_fields__
    items = [SessionRow(**{k: v for k, v in row.items() if k in names}) for row in body["items"]]
    return SessionPage(items, body.get("next_cursor"))


def snapshot(body: dict[str, Any]) -> SessionSnapshot:
    return SessionSnapshot.from_dict(body["snapshot"])


def context(body: dict[str, Any]) -> dict[str, Any]:
    return body["context"]


# --- routes ---------------------------------------------------------------------


def _user(product_id: str, user_id: str) -> str:
    return f"{API_ROOT}/{quote(product_id, safe='')}/users/{quote(user_id, safe='')}"


def _session(product_id: str, user_id: str, session_id: str) -> str:
    return f"{_user(product_id, user_id)}/sessions/{quote(session_id, safe=':')}"


def _doc(value: UserAdoptionState | SessionSnapshot | Mapping[str, Any]) -> dict[str, Any]:
    return value.to_dict() if isinstance(value, UserAdoptionState | SessionSnapshot) else dict(value)


def _etag(value: str) -> str:
    return value if value == "*" or value.startswith(('"', "W/")) else f'"{value}"'


def start_call(product_id: str, user_id: str, session_id: str, metadata: Mapping[str, Any] | None) -> Call:
    body = {"metadata": dict(metadata)} if metadata else {}
    # Starting the same session again is harmless (the API says so): safe to repeat.
    return Call("POST", _session(product_id, user_id, session_id) + "/start", True, json=body)


def end_call(
    product_id: str, user_id: str, session_id: str, body: dict[str, Any], summary: str | None, summarize: bool
) -> Call:
    if summary is not None:
        body["summary"] = summary
    if summarize:
        body["summarize"] = True
    # A session end is idempotent on the session id: a repeat changes nothing.
    return Call("POST", _session(product_id, user_id, session_id) + "/end", True, json=body)


def end_snapshot_call(
    product_id: str,
    user_id: str,
    snap: SessionSnapshot | Mapping[str, Any],
    *,
    summary: str | None = None,
    summarize: bool = False,
) -> Call:
    doc = _doc(snap)
    return end_call(product_id, user_id, str(doc.get("session_id", "")), {"snapshot": doc}, summary, summarize)


def end_state_call(
    product_id: str,
    user_id: str,
    session_id: str,
    state: UserAdoptionState | Mapping[str, Any],
    *,
    catalog_workflow_ids: list[str],
    started_at: float,
    completion_rate_denominator: str | None = None,
    summary: str | None = None,
    summarize: bool = False,
) -> Call:
    body: dict[str, Any] = {
        "state": _doc(state),
        "catalog_workflow_ids": list(catalog_workflow_ids),
        "started_at": started_at,
    }
    if completion_rate_denominator is not None:
        denominator = getattr(completion_rate_denominator, "value", completion_rate_denominator)
        body["completion_rate_denominator"] = str(denominator)
    return end_call(product_id, user_id, session_id, body, summary, summarize)


def get_state_call(product_id: str, user_id: str) -> Call:
    return Call("GET", _user(product_id, user_id) + "/state", True)


def replace_call(
    product_id: str,
    user_id: str,
    state: UserAdoptionState | Mapping[str, Any],
    *,
    if_match: str | None = None,
    create_only: bool = False,
) -> Call:
    if (if_match is None) == (not create_only):
        raise ValueError("pass if_match (an etag, or '*') or create_only=True")
    headers = {"If-Match": _etag(if_match)} if if_match is not None else {"If-None-Match": "*"}
    # Conditional: a repeat of an applied replace finds its own content and succeeds; a
    # repeat after another writer gets 409. "*" is a blind overwrite: not repeated blindly.
    return Call("PUT", _user(product_id, user_id) + "/state", if_match != "*", json=_doc(state), headers=headers)


def patch_call(product_id: str, user_id: str, ops: list[Mapping[str, Any]], *, if_match: str | None = None) -> Call:
    headers = {"If-Match": _etag(if_match)} if if_match is not None else None
    # Only an etag makes a patch safe to repeat: the first try may have been applied.
    idempotent = if_match is not None and if_match != "*"
    body = {"ops": [dict(op) for op in ops]}
    return Call("PATCH", _user(product_id, user_id) + "/state", idempotent, json=body, headers=headers)


def sessions_call(product_id: str, user_id: str, cursor: str | None, limit: int) -> Call:
    params: dict[str, Any] = {"limit": limit}
    if cursor:
        params["cursor"] = cursor
    return Call("GET", _user(product_id, user_id) + "/sessions", True, params=params)


def session_call(product_id: str, user_id: str, session_id: str) -> Call:
    return Call("GET", _session(product_id, user_id, session_id), True)


def context_call(product_id: str, user_id: str) -> Call:
    return Call("GET", _user(product_id, user_id) + "/context", True)


def client_headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "Accept": "application/json", "User-Agent": "autoplay-storage-remote"}
