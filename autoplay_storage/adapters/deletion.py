"""The vendors' deletion APIs, over httpx: the analytics SDKs have none.

``posthog`` (the Python SDK) and ``amplitude-analytics`` only send events;
neither has a call that deletes a person. The deletions are plain REST calls:

- PostHog: ``POST {host}/api/projects/{project_id}/persons/bulk_delete/``
  with ``{"distinct_ids": [...], "delete_events": true}`` and a personal API
  key (scope ``person:write``) as a Bearer token. The private API lives on
  the app host (``us.posthog.com``), not the ingestion host
  (``us.i.posthog.com``).
- Amplitude: ``POST {base}/api/2/deletions/users`` with basic auth (API key :
  secret key) and ``{"user_ids": [...], "requester": "..."}``; it answers
  with the day the deletion job is scheduled for.

A deletion is final on the vendor's side, and each vendor queues it: an
answer of 200/202 is "accepted", not "done".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

POSTHOG_APP_HOST = "https://us.posthog.com"
AMPLITUDE_BASE = "https://amplitude.com"
AMPLITUDE_EU_BASE = "https://analytics.eu.amplitude.com"


class DeletionRefused(Exception):
    """The vendor answered and refused (bad credentials, unknown project): retrying will not help."""


class DeletionUnavailable(Exception):
    """No answer, a timeout, a 429 or a 5xx: retried with backoff."""


@dataclass(frozen=True)
class Deletion:
    """One deletion request: where to, with which credentials, for which ids."""

    kind: str  # "posthog" or "amplitude"
    base_url: str
    key: str  # PostHog: the personal API key; Amplitude: the API key
    user_ids: tuple[str, ...]
    project_id: str = ""  # PostHog
    secret: str = ""  # Amplitude: the secret key
    requester: str = ""  # Amplitude


def posthog_app_host(ingestion_host: str) -> str:
    """The private API's host for a sink's ingestion host (``eu.i.posthog.com`` -> ``eu.posthog.com``)."""
    if not ingestion_host:
        return POSTHOG_APP_HOST
    parts = urlsplit(ingestion_host)
    host = parts.hostname or ""
    if host.endswith(".i.posthog.com"):
        host = host.removesuffix(".i.posthog.com") + ".posthog.com"
    return f"{parts.scheme or 'https'}://{host}{f':{parts.port}' if parts.port else ''}"


def amplitude_base(server_url: str) -> str:
    """The deletion API's base for a sink's server URL (EU residency has its own)."""
    return AMPLITUDE_EU_BASE if "eu.amplitude.com" in (server_url or "") else AMPLITUDE_BASE


def request_parts(deletion: Deletion) -> tuple[str, dict[str, Any], httpx.Auth | None, dict[str, str]]:
    """(URL, JSON body, auth, headers) of the call."""
    base = deletion.base_url.rstrip("/")
    if deletion.kind == "posthog":
        url = f"{base}/api/projects/{deletion.project_id}/persons/bulk_delete/"
        body: dict[str, Any] = {"distinct_ids": list(deletion.user_ids), "delete_events": True}
        return url, body, None, {"Authorization": f"Bearer {deletion.key}"}
    url = f"{base}/api/2/deletions/users"
    body = {"user_ids": list(deletion.user_ids), "requester": deletion.requester}
    return url, body, httpx.BasicAuth(deletion.key, deletion.secret), {}


async def request_deletion(deletion: Deletion, *, timeout_s: float) -> str:
    """Ask the vendor; the reference it gives (Amplitude's day, or PostHog's status and date).

    Raises ``DeletionRefused`` (a 4xx other than 408/429) or ``DeletionUnavailable``.
    """
    url, body, auth, headers = request_parts(deletion)
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.post(url, json=body, auth=auth, headers=headers)
    except httpx.HTTPError as exc:
        raise DeletionUnavailable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
    if response.status_code in (408, 429) or response.status_code >= 500:
        raise DeletionUnavailable(f"HTTP {response.status_code}: {response.text[:300]}")
    if response.status_code >= 400:
        raise DeletionRefused(f"HTTP {response.status_code}: {response.text[:300]}")
    return reference(deletion.kind, response)


def reference(kind: str, response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        data = None
    if kind == "amplitude" and isinstance(data, list) and data and isinstance(data[0], dict) and data[0].get("day"):
        return f"day {data[0]['day']}"
    if isinstance(data, dict) and data.get("id"):
        return f"job {data['id']}"
    return f"HTTP {response.status_code} on {datetime.now(UTC):%Y-%m-%d}"
