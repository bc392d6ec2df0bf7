"""The agents' JSON API: one NinjaAPI, async routes over ``autoplay_storage`` selectors (reads) and services (writes).

Paths (all under ``/api/v1/products/{product_id}/users/{user_id}``) are the
contract agents are written against; see docs/api.md. Responses are
serialized once from the wire documents (``to_dict``) and returned as they
are: the response models below document them for OpenAPI, and re-validating
every state on the way out would only cost time.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from django.http import HttpRequest, HttpResponse
from ninja import Header, NinjaAPI, Query

from autoplay_storage import selectors, services
from autoplay_storage.audit import Action, arecord_request
from autoplay_storage.browse import MAX_PAGE_SIZE
from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState

from . import errors
from .auth import ApiKeyAuth
from .erasure import router as erasure_router
from .errors import ApiError, json_response
from .ids import (
    USER,
    ProductId,
    SessionId,
    UserId,
)
from .insight import router as insight_router
from .parser import StrictJsonParser
from .schemas import (
    ContextOut,
    Error,
    SessionEndIn,
    SessionPage,
    SessionStartIn,
    SessionStartOut,
    SnapshotOut,
    StateOut,
    StatePatchIn,
    UserStateDoc,
)
from .support import router as support_router

DESCRIPTION = """\
Memory for an in-product AI agent: call **start** when a session begins and
**end** when it finishes; read and update the user's state in between.

Authenticate with `Authorization: Bearer <key>` (keys are created by an admin
and scoped to products). Every error is JSON `{"code", "message", "details"?}`;
branch on `code`. A `503` carries `Retry-After`: nothing was changed, retry.

Ids: product and user ids are 1 to 128 of `A-Z a-z 0-9 . _ @ + -`; session
ids may also contain `:`. No id may be made only of dots (`.`, `..`): HTTP
clients and browsers rewrite such path segments before the request is sent.
"""

api = NinjaAPI(
    title="Autoplay storage console: agent API",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api",
    docs_url="/docs",
    openapi_url="/openapi.json",
    parser=StrictJsonParser(),
    auth=ApiKeyAuth(),
)
errors.install(api)
api.add_router("", insight_router)
api.add_router("", erasure_router)
api.add_router("", support_router)

IfMatch = Annotated[
    str | None,
    Header(alias="If-Match", description='the etag you read ("*": any stored version)', max_length=200),
]

_COMMON: dict[int, Any] = {401: Error, 403: Error, 422: Error, 429: Error, 503: Error}
_READ = {**_COMMON, 404: Error, 409: Error}
_WRITE = {**_COMMON, 400: Error, 409: Error, 413: Error}

_ETAG_RE = re.compile(r'^(?:W/)?"?([0-9a-f]{32})"?$')


def _etag_header(etag: str) -> dict[str, str]:
    return {"ETag": f'"{etag}"'}


def _precondition(value: str | None, header: str) -> str | None:
    """An ``If-Match`` value as services take it: ``*`` or the bare etag."""
    if value is None:
        return None
    value = value.strip()
    if value == "*":
        return value
    match = _ETAG_RE.match(value)
    if not match:
        raise ApiError(400, "invalid_precondition", f'{header} must be "*" or one etag as returned by this API')
    return match.group(1)


def _state_body(versioned: services.VersionedState) -> HttpResponse:
    body = {"state": versioned.state.to_dict(), "etag": versioned.etag}
    return json_response(body, headers=_etag_header(versioned.etag))


def _user_doc(doc: UserStateDoc, user_id: str, field: str) -> UserAdoptionState:
    wire = doc.wire()
    if wire.get("user_id") and wire["user_id"] != user_id:
        raise ApiError(
            422,
            "user_id_mismatch",
            f"{field}.user_id is {wire['user_id']!r} but the path says {user_id!r}",
            details=[{"field": f"{field}.user_id", "in": "body", "message": "must match the user id of the path"}],
        )
    wire["user_id"] = user_id
    return UserAdoptionState.from_dict(wire, user_id=user_id)


@api.post(
    USER + "/sessions/{session_id}/start",
    response={200: SessionStartOut, **_WRITE},
    by_alias=True,
    operation_id="session_start",
    tags=["sessions"],
    summary="Start a session: the state, the onboarding session and the agent context",
)
async def session_start(
    request: HttpRequest,
    product_id: ProductId,
    user_id: UserId,
    session_id: SessionId,
    payload: SessionStartIn | None = None,
) -> HttpResponse:
    """Loads the state (or creates it for a new user) and marks the session current.

    `onboarding_session` is the user's first session, for returning users.
    Calling start again for the same session is harmless.
    """
    metadata = payload.metadata if payload is not None else None
    started = await services.start_session(product_id, user_id, session_id, metadata=metadata)
    return json_response(
        {
            "state": started.state.to_dict(),
            "etag": started.etag,
            "onboarding_session": started.onboarding_session.to_dict() if started.onboarding_session else None,
            "context": started.context,
        },
        headers=_etag_header(started.etag),
    )


@api.post(
    USER + "/sessions/{session_id}/end",
    response={200: StateOut, **_WRITE},
    by_alias=True,
    operation_id="session_end",
    tags=["sessions"],
    summary="End a session: freeze its snapshot and update the state (idempotent)",
)
async def session_end(
    request: HttpRequest, product_id: ProductId, user_id: UserId, session_id: SessionId, payload: SessionEndIn
) -> HttpResponse:
    """Send the snapshot, or the live state with the catalog so the server freezes it.

    The snapshot is written once; repeating an end for the same session id
    changes nothing and returns the current state. `summary` stores that
    text as the user's summary; `summarize: true` runs the configured
    summarizer (a failure is recorded and the session is still ended).
    """
    if payload.snapshot is not None:
        doc = payload.snapshot.wire()
        if doc["session_id"] != session_id:
            raise ApiError(
                422,
                "session_id_mismatch",
                f"snapshot.session_id is {doc['session_id']!r} but the path says {session_id!r}",
                details=[{"field": "snapshot.session_id", "in": "body", "message": "must match the path"}],
            )
        if doc.get("user_id") and doc["user_id"] != user_id:
            raise ApiError(
                422,
                "user_id_mismatch",
                f"snapshot.user_id is {doc['user_id']!r} but the path says {user_id!r}",
                details=[{"field": "snapshot.user_id", "in": "body", "message": "must match the path"}],
            )
        number_at_commit = "session_number" not in doc
        if number_at_commit:  # a first guess; the session is frozen with the position it is recorded at
            doc["session_number"] = await services.next_session_number(product_id, user_id)
        snapshot = SessionSnapshot.from_dict(doc, session_id=session_id, user_id=user_id)
    else:
        # SessionEndIn's validator requires all three with the state form.
        assert payload.state is not None and payload.catalog_workflow_ids is not None
        assert payload.started_at is not None
        number_at_commit = True
        live = _user_doc(payload.state, user_id, "state")
        snapshot = await services.snapshot_from_live_state(
            product_id,
            user_id,
            session_id,
            live,
            catalog_workflow_ids=payload.catalog_workflow_ids,
            started_at=payload.started_at,
            completion_rate_denominator=payload.completion_rate_denominator,
        )
    ended = await services.end_session(
        product_id,
        user_id,
        snapshot,
        summary=payload.summary,
        summarize=payload.summarize,
        number_at_commit=number_at_commit,
    )
    return _state_body(ended)


@api.get(
    USER + "/state",
    response={200: StateOut, **_READ},
    by_alias=True,
    operation_id="state_get",
    tags=["state"],
    summary="Read the state",
)
async def state_get(request: HttpRequest, product_id: ProductId, user_id: UserId) -> HttpResponse:
    """The user adoption state (wire document) and its `etag` (also the `ETag` header)."""
    versioned = await selectors.get_state(product_id, user_id)
    return _state_body(versioned)


@api.put(
    USER + "/state",
    response={200: StateOut, **_WRITE, 404: Error, 428: Error},
    by_alias=True,
    operation_id="state_replace",
    tags=["state"],
    summary="Replace the state (optimistic concurrency)",
)
async def state_replace(
    request: HttpRequest,
    product_id: ProductId,
    user_id: UserId,
    payload: UserStateDoc,
    if_match: IfMatch = None,
    if_none_match: Annotated[
        str | None, Header(alias="If-None-Match", description='"*": create only', max_length=200)
    ] = None,
) -> HttpResponse:
    """Send `If-Match: "<etag>"` from your last read; a stale etag gets 409 and nothing is written.

    `If-None-Match: *` creates the state only if there is none. The session
    history (`sessions`), `first_seen_at` and a set `onboarding_completed_at`
    are kept from the stored state: only session ends write them.
    """
    expected = _precondition(if_match, "If-Match")
    if expected is None:
        if if_none_match is None:
            raise ApiError(
                428,
                "precondition_required",
                'send If-Match: "<etag>" (from your last read) or If-None-Match: * (create only)',
            )
        if if_none_match.strip() != "*":
            raise ApiError(400, "invalid_precondition", 'If-None-Match must be "*"')
    new = _user_doc(payload, user_id, "body")
    try:
        versioned = await services.replace_state(
            product_id, user_id, new, if_match=expected, create_only=expected is None
        )
    except services.StateExistsError as exc:
        raise ApiError(
            409,
            "state_exists",
            "a state is already stored; read it and send If-Match",
            details={"current_etag": exc.etag},
            headers=_etag_header(exc.etag),
        ) from exc
    await arecord_request(
        request, Action.STATE_PUT, product_id=product_id, user_id=user_id,
        details={"before": {"etag": expected}, "after": {"etag": versioned.etag}, "create_only": expected is None},
    )
    return _state_body(versioned)


@api.patch(
    USER + "/state",
    response={200: StateOut, **_WRITE, 404: Error},
    by_alias=True,
    operation_id="state_update",
    tags=["state"],
    summary="Small updates: progress, mastery, journey, features, metadata, step-in",
)
async def state_update(
    request: HttpRequest, product_id: ProductId, user_id: UserId, payload: StatePatchIn, if_match: IfMatch = None
) -> HttpResponse:
    """Apply `ops` in order, atomically: all of them or none.

    Each op is one of `workflow_progress`, `step_progress`, `mastery`,
    `journey`, `discovered_features`, `metadata`, `step_in`,
    `onboarding_complete`. `If-Match` is optional here; when sent, a stale
    etag gets 409 and nothing is applied.
    """
    expected = _precondition(if_match, "If-Match")
    versioned = await services.patch_state(product_id, user_id, [op.apply for op in payload.ops], if_match=expected)
    await arecord_request(
        request, Action.STATE_PATCH, product_id=product_id, user_id=user_id,
        details={
            "ops": [op.model_dump(mode="json", exclude_none=True) for op in payload.ops],
            "before": {"etag": expected}, "after": {"etag": versioned.etag},
        },
    )
    return _state_body(versioned)


@api.get(
    USER + "/sessions",
    response={200: SessionPage, **_COMMON, 400: Error, 501: Error},
    by_alias=True,
    operation_id="sessions_list",
    tags=["history"],
    summary="The session history, newest first",
)
async def sessions_list(
    request: HttpRequest,
    product_id: ProductId,
    user_id: UserId,
    cursor: Annotated[str | None, Query(max_length=1024, description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
) -> HttpResponse:
    """Every finished session (not only the 50 in the state's index), from the frozen snapshots."""
    try:
        page = await selectors.list_sessions(product_id, user_id, cursor=cursor or None, limit=limit)
    except ValueError as exc:
        raise ApiError(400, "invalid_cursor", "cursor is not a next_cursor this API returned") from exc
    items = [
        {
            "session_id": row.session_id,
            "session_number": row.session_number,
            "started_at": row.started_at,
            "captured_at": row.captured_at,
            "duration_s": row.duration_s,
            "journey_state": row.journey_state,
            "mastery_level": row.mastery_level,
            "mastery_rating": row.mastery_rating,
            "completion_rate": row.completion_rate,
            "reached_onboarding_complete": row.reached_onboarding_complete,
            "corrupt": row.corrupt,
        }
        for row in page.items
    ]
    return json_response({"items": items, "next_cursor": page.next_cursor})


@api.get(
    USER + "/sessions/{session_id}",
    response={200: SnapshotOut, **_READ},
    by_alias=True,
    operation_id="session_get",
    tags=["history"],
    summary="One frozen session snapshot",
)
async def session_get(
    request: HttpRequest, product_id: ProductId, user_id: UserId, session_id: SessionId
) -> HttpResponse:
    snapshot = await selectors.get_snapshot(product_id, user_id, session_id)
    if snapshot is None:
        raise ApiError(404, "session_not_found", f"no snapshot of session {session_id!r} for this user")
    return json_response({"snapshot": snapshot.to_dict()})


@api.get(
    USER + "/context",
    response={200: ContextOut, **_READ},
    by_alias=True,
    operation_id="context_get",
    tags=["state"],
    summary="The agent context",
)
async def context_get(request: HttpRequest, product_id: ProductId, user_id: UserId) -> HttpResponse:
    """What session start returns as `context`, without starting a session."""
    context = await selectors.get_context(product_id, user_id)
    return json_response({"context": context})
