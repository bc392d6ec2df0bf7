"""The agent API over real HTTP (uvicorn on loopback), on both primaries.

Every response body is checked the way an SDK client would use it: the
``state`` and ``snapshot`` parts must ``from_dict`` into the published
documents and survive ``to_dict`` unchanged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState
from tests.support.api_server import ApiServer, granian_server

USER = "/api/v1/products/p1/users/u1"
pytestmark = pytest.mark.django_db(transaction=True)


def state_of(body: dict[str, Any]) -> UserAdoptionState:
    """Parse a response state as an SDK client would; it must round-trip unchanged."""
    state = UserAdoptionState.from_dict(body["state"])
    assert state.to_dict() == body["state"]
    return state


def snapshot_of(doc: dict[str, Any]) -> SessionSnapshot:
    snapshot = SessionSnapshot.from_dict(doc)
    assert snapshot.to_dict() == doc
    return snapshot


def end_with_state(client: httpx.Client, session_id: str, state: dict[str, Any], **extra: Any) -> httpx.Response:
    body = {"state": state, "catalog_workflow_ids": ["create_project", "invite_team"], "started_at": 1_700_000_000}
    return client.post(f"{USER}/sessions/{session_id}/end", json={**body, **extra})


def error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == code, body
    assert body["message"]
    return body


@pytest.fixture
def client(api_server: ApiServer, make_key, primary: str) -> httpx.Client:
    with api_server.client(make_key("p1")) as c:
        yield c


# --- lifecycle ----------------------------------------------------------------


def test_session_lifecycle_round_trip(client: httpx.Client) -> None:
    started = client.post(f"{USER}/sessions/s1/start", json={"metadata": {"role": "admin"}})
    assert started.status_code == 200, started.text
    body = started.json()
    state = state_of(body)
    assert state.user_id == "u1" and state.metadata == {"role": "admin"}
    assert state.sessions.current_session_id == "s1"
    assert body["onboarding_session"] is None
    assert body["context"] == {
        "user_journey_state": "onboarding",
        "user_mastery_level": "novice",
        "user_mastery_rating": 0,
        "session_count": 0,
        "is_returning_user": False,
    }
    assert started.headers["ETag"] == f'"{body["etag"]}"'

    # Mid-session progress, then the end built by the server from the live state.
    live = state.to_dict()
    live["onboarding"]["workflow_progress"] = {
        "create_project": {"workflow_id": "create_project", "status": "completed", "last_evaluated_at": 1_700_000_100}
    }
    live["mastery"] = {"rating": 3, "level": "beginner", "description": "first project"}
    ended = end_with_state(client, "s1", live, summary="Made a project.")
    assert ended.status_code == 200, ended.text
    after = state_of(ended.json())
    assert after.sessions.count == 1 and after.sessions.current_session_id is None
    assert after.mastery.rating == 3 and after.onboarding.summary == "Made a project."
    assert after.onboarding.completion_rate == 0.5
    assert after.onboarding.workflow_progress["create_project"].status.value == "completed"

    # Retried end: nothing changes (idempotent on the session id).
    again = end_with_state(client, "s1", live, summary="Something else.")
    assert again.status_code == 200
    assert again.json()["state"] == ended.json()["state"]

    # A returning user gets session 1 as the onboarding session.
    second = client.post(f"{USER}/sessions/s2/start").json()
    onboarding = snapshot_of(second["onboarding_session"])
    assert onboarding.session_id == "s1" and onboarding.session_number == 1
    assert onboarding.untouched_workflow_ids == ["invite_team"]
    assert second["context"]["session_count"] == 1
    assert second["context"]["onboarding_summary"] == "Made a project."
    assert second["context"]["onboarding_session_untouched_workflows"] == ["invite_team"]

    # The second end sends a complete snapshot.
    snap = SessionSnapshot.from_adoption_state(
        UserAdoptionState.from_dict(second["state"]),
        session_id="s2",
        session_number=2,
        started_at=1_700_000_500,
        catalog_workflow_ids=["create_project", "invite_team"],
        now=1_700_000_900,
    )
    ended2 = client.post(f"{USER}/sessions/s2/end", json={"snapshot": snap.to_dict()})
    assert ended2.status_code == 200, ended2.text
    assert state_of(ended2.json()).sessions.count == 2

    stored = client.get(f"{USER}/sessions/s2")
    assert stored.status_code == 200
    assert snapshot_of(stored.json()["snapshot"]) == snap

    context = client.get(f"{USER}/context").json()["context"]
    assert context["session_count"] == 2 and context["is_returning_user"] is True


def test_end_folds_the_frozen_snapshot_not_a_rebuilt_one(client: httpx.Client) -> None:
    """An end whose first attempt froze the snapshot but never updated the state: the retry folds the frozen one."""
    from asgiref.sync import async_to_sync

    from autoplay_storage.runtime import get_storage

    client.post(f"{USER}/sessions/s1/start")
    frozen = {
        "session_id": "s1",
        "user_id": "u1",
        "session_number": 1,
        "started_at": 1_700_000_000,
        "captured_at": 1_700_000_600,
        "mastery": {"rating": 6, "level": "intermediate", "description": "a"},
    }
    async_to_sync(get_storage().save_session_snapshot)("p1", "u1", "s1", SessionSnapshot.from_dict(frozen).to_dict())
    rebuilt = {**frozen, "captured_at": 1_700_000_900, "mastery": {"rating": 1, "level": "novice", "description": "b"}}
    ended = client.post(f"{USER}/sessions/s1/end", json={"snapshot": rebuilt})
    assert ended.status_code == 200, ended.text
    state = state_of(ended.json())
    assert state.mastery.rating == 6 and state.sessions.index[0].captured_at == 1_700_000_600


def test_history_newest_first_and_paginated(client: httpx.Client) -> None:
    client.post(f"{USER}/sessions/s0/start")
    ids = [f"s{i}" for i in range(5)]
    for i, sid in enumerate(ids):
        snap = {"session_id": sid, "started_at": 1_700_000_000 + i * 100, "captured_at": 1_700_000_050 + i * 100}
        assert client.post(f"{USER}/sessions/{sid}/end", json={"snapshot": snap}).status_code == 200
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{USER}/sessions", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [row["session_id"] for row in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert pages == 3
    rows = client.get(f"{USER}/sessions", params={"limit": 500}).json()["items"]
    assert [r["session_number"] for r in rows] == [5, 4, 3, 2, 1]


def test_summarize_runs_the_configured_summarizer_once(client: httpx.Client) -> None:
    from autoplay_storage.models import SummaryRun

    client.post(f"{USER}/sessions/s1/start")
    snap = {"session_id": "s1", "started_at": 1_700_000_000, "captured_at": 1_700_000_600, "session_number": 1}
    first = client.post(f"{USER}/sessions/s1/end", json={"snapshot": snap, "summarize": True})
    assert first.status_code == 200, first.text
    summary = first.json()["state"]["onboarding"]["summary"]
    assert summary and summary.startswith("In session 1")
    again = client.post(f"{USER}/sessions/s1/end", json={"snapshot": snap, "summarize": True})
    assert again.json()["state"]["onboarding"]["summary"] == summary
    runs = list(SummaryRun.objects.filter(product_id="p1", user_id="u1"))
    assert [(r.source, r.outcome, r.session_id) for r in runs] == [("session_end", "succeeded", "s1")]


async def failing_summarizer(snapshot: SessionSnapshot) -> str:
    """A summarizer that breaks, as user code may (configured by dotted path below)."""
    raise RuntimeError("the LLM is down")


def test_failing_summarizer_never_loses_the_session(client: httpx.Client, settings: Any) -> None:
    from autoplay_storage.models import SummaryRun

    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "SUMMARIZER": f"{__name__}.failing_summarizer"}
    snap = {"session_id": "s1", "started_at": 1_700_000_000, "captured_at": 1_700_000_600}
    response = client.post(f"{USER}/sessions/s1/end", json={"snapshot": snap, "summarize": True})
    assert response.status_code == 200, response.text
    state = state_of(response.json())
    assert state.sessions.count == 1 and state.onboarding.summary is None
    run = SummaryRun.objects.get(session_id="s1")
    assert run.outcome == "failed" and "the LLM is down" in run.error


def test_explicit_summary_is_recorded_once(client: httpx.Client) -> None:
    from autoplay_storage.models import SummaryRun

    snap = {"session_id": "s1", "started_at": 1_700_000_000, "captured_at": 1_700_000_600}
    for _ in range(2):
        response = client.post(f"{USER}/sessions/s1/end", json={"snapshot": snap, "summary": "Agent's own words."})
        assert response.json()["state"]["onboarding"]["summary"] == "Agent's own words."
    assert SummaryRun.objects.filter(source="explicit", session_id="s1").count() == 1


def test_sdk_documents_are_accepted_as_sent(client: httpx.Client, sdk_fixtures: dict[str, dict]) -> None:
    state_doc = sdk_fixtures["state__prod_1__u_123"]
    url = "/api/v1/products/p1/users/u_123"
    created = client.put(f"{url}/state", json=state_doc, headers={"If-None-Match": "*"})
    assert created.status_code == 200, created.text
    read = client.get(f"{url}/state").json()["state"]
    for key in ("metadata", "mastery", "discovered_features", "journey_state", "sessions"):
        assert read[key] == UserAdoptionState.from_dict(state_doc).to_dict()[key]
    snap_doc = sdk_fixtures["snapshot__prod_1__u_123__sess_c"]
    ended = client.post(f"{url}/sessions/{snap_doc['session_id']}/end", json={"snapshot": snap_doc})
    assert ended.status_code == 200, ended.text
    stored = client.get(f"{url}/sessions/{snap_doc['session_id']}").json()["snapshot"]
    assert stored == SessionSnapshot.from_dict(snap_doc).to_dict()


def test_main_flow_on_granian_as_make_run_serves_it(tmp_path: Any) -> None:
    """The shipped stack: granian workers, config.asgi, the embedded default primary on its own SQLite file."""
    with granian_server(tmp_path, ["p1"]) as (server, key), server.client(key) as c:
        start = c.post(f"{USER}/sessions/s1/start")
        assert start.status_code == 200, start.text
        live = start.json()["state"]
        ended = end_with_state(c, "s1", live, summarize=True)
        assert ended.status_code == 200, ended.text
        assert state_of(ended.json()).sessions.count == 1
        # Several requests so both workers answer: every one sees the same stored state.
        counts = {c.get(f"{USER}/state").json()["state"]["sessions"]["count"] for _ in range(6)}
        assert counts == {1}
        second = c.post(f"{USER}/sessions/s2/start").json()
        assert snapshot_of(second["onboarding_session"]).session_id == "s1"
        assert second["context"]["onboarding_summary"]
        error_of(c.get("/api/v1/products/p2/users/u1/state"), 403, "product_forbidden")


# --- state: read, replace, update ---------------------------------------------


def test_replace_with_optimistic_concurrency(client: httpx.Client) -> None:
    start = client.post(f"{USER}/sessions/s1/start").json()
    etag = start["etag"]
    read = client.get(f"{USER}/state")
    assert read.json()["etag"] == etag and read.headers["ETag"] == f'"{etag}"'

    doc = read.json()["state"]
    doc["mastery"] = {"rating": 7, "level": "proficient", "description": "fast"}
    doc["sessions"] = {"count": 99, "current_session_id": None, "index": []}  # server-owned: ignored
    assert error_of(client.put(f"{USER}/state", json=doc), 428, "precondition_required")

    replaced = client.put(f"{USER}/state", json=doc, headers={"If-Match": f'"{etag}"'})
    assert replaced.status_code == 200, replaced.text
    new = state_of(replaced.json())
    assert new.mastery.rating == 7
    assert new.sessions.count == 0 and new.sessions.current_session_id == "s1"
    new_etag = replaced.json()["etag"]
    assert new_etag != etag
    # The same PUT retried (its answer lost): the content is stored already, so it succeeds unchanged.
    retried = client.put(f"{USER}/state", json=doc, headers={"If-Match": f'"{etag}"'})
    assert retried.status_code == 200 and retried.json()["etag"] == new_etag

    # The stale etag loses, and nothing is overwritten.
    doc["mastery"] = {"rating": 1, "level": "novice", "description": "stale"}
    conflict = error_of(client.put(f"{USER}/state", json=doc, headers={"If-Match": etag}), 409, "state_conflict")
    assert conflict["details"]["current_etag"] == new_etag
    assert client.get(f"{USER}/state").json()["state"]["mastery"]["rating"] == 7

    assert error_of(client.put(f"{USER}/state", json=doc, headers={"If-None-Match": "*"}), 409, "state_exists")
    assert error_of(
        client.put(f"{USER}/state", json=doc, headers={"If-Match": "nonsense"}), 400, "invalid_precondition"
    )
    assert client.put(f"{USER}/state", json=doc, headers={"If-Match": "*"}).status_code == 200

    mismatch = client.put(f"{USER}/state", json={**doc, "user_id": "someone_else"}, headers={"If-Match": "*"})
    assert error_of(mismatch, 422, "user_id_mismatch")["details"][0]["field"] == "body.user_id"


def test_put_creates_only_with_if_none_match(client: httpx.Client) -> None:
    missing = client.put(f"{USER}/state", json={"user_id": "u1"}, headers={"If-Match": "*"})
    error_of(missing, 404, "user_not_found")
    created = client.put(f"{USER}/state", json={"metadata": {"plan": "pro"}}, headers={"If-None-Match": "*"})
    assert created.status_code == 200, created.text
    assert state_of(created.json()).metadata == {"plan": "pro"}


def test_patch_operations(client: httpx.Client) -> None:
    assert error_of(
        client.patch(f"{USER}/state", json={"ops": [{"op": "journey", "journey_state": "onboarded"}]}),
        404,
        "user_not_found",
    )
    client.post(f"{USER}/sessions/s1/start", json={"metadata": {"team": "red", "tmp": 1}})
    ops = [
        {"op": "workflow_progress", "workflow_id": "create_project", "status": "in_progress", "confidence": 0.4},
        {"op": "step_progress", "workflow_id": "create_project", "step_id": "name", "status": "completed"},
        {"op": "mastery", "rating": 4, "level": "beginner", "description": "learning"},
        {"op": "journey", "journey_state": "onboarded"},
        {"op": "discovered_features", "features": ["boards", "", "boards", "filters"]},
        {"op": "metadata", "values": {"role": "pm", "tmp": None}},
        {"op": "step_in", "should_step_in": True, "reason": "stuck", "suggested_workflow_ids": ["create_project"]},
        {"op": "onboarding_complete"},
    ]
    response = client.patch(f"{USER}/state", json={"ops": ops})
    assert response.status_code == 200, response.text
    state = state_of(response.json())
    wp = state.onboarding.workflow_progress["create_project"]
    assert wp.status.value == "in_progress" and wp.confidence == 0.4
    assert wp.steps["name"].status.value == "completed" and wp.steps["name"].completed_at is not None
    assert (state.mastery.rating, state.mastery.level.value) == (4, "beginner")
    assert state.journey_state.value == "onboarded" and state.is_onboarded
    assert state.discovered_features == ["boards", "filters"]
    assert state.metadata == {"team": "red", "role": "pm"}
    assert state.onboarding.last_step_in is not None and state.onboarding.proactive_support_count == 1

    # All or nothing: a bad op anywhere rejects the whole list.
    bad = client.patch(f"{USER}/state", json={"ops": [{"op": "mastery", "rating": 9}, {"op": "mastery", "rating": 11}]})
    assert error_of(bad, 422, "validation_error")["details"][0]["field"] == "ops.1.mastery.rating"
    unknown = client.patch(f"{USER}/state", json={"ops": [{"op": "teleport"}]})
    error_of(unknown, 422, "validation_error")
    assert client.get(f"{USER}/state").json()["state"]["mastery"]["rating"] == 4

    # If-Match is honoured when sent.
    etag = response.json()["etag"]
    client.patch(f"{USER}/state", json={"ops": [{"op": "mastery", "rating": 5}]})
    stale = client.patch(f"{USER}/state", json={"ops": [{"op": "mastery", "rating": 9}]}, headers={"If-Match": etag})
    error_of(stale, 409, "state_conflict")
    assert client.get(f"{USER}/state").json()["state"]["mastery"]["rating"] == 5


def test_concurrent_writes_never_lose_an_update(api_server: ApiServer, make_key, primary: str) -> None:
    key = make_key("p1")

    async def run() -> None:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=api_server.url, headers=headers, timeout=60) as c:
            assert (await c.post(f"{USER}/sessions/s0/start")).status_code == 200
            patches = [
                c.patch(f"{USER}/state", json={"ops": [{"op": "discovered_features", "features": [f"f{i}"]}]})
                for i in range(12)
            ]
            ends = [
                c.post(
                    f"{USER}/sessions/e{i}/end",
                    json={
                        "snapshot": {"session_id": f"e{i}", "started_at": 1_700_000_000, "captured_at": 1_700_000_010}
                    },
                )
                for i in range(12)
            ]
            responses = await asyncio.gather(*patches, *ends)
            assert [r.status_code for r in responses] == [200] * len(responses), [r.text for r in responses]
            state = (await c.get(f"{USER}/state")).json()["state"]
        assert sorted(state["discovered_features"]) == sorted(f"f{i}" for i in range(12))
        assert state["sessions"]["count"] == 12
        assert sorted(e["session_number"] for e in state["sessions"]["index"]) == list(range(1, 13))

    asyncio.run(run())


def test_racing_replaces_with_one_etag_have_exactly_one_winner(api_server: ApiServer, make_key, primary: str) -> None:
    key = make_key("p1")

    async def run() -> None:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=api_server.url, headers=headers, timeout=60) as c:
            start = (await c.post(f"{USER}/sessions/s1/start")).json()
            etag, doc = start["etag"], start["state"]
            puts = [
                c.put(
                    f"{USER}/state",
                    json={**doc, "metadata": {"writer": i}},
                    headers={"If-Match": f'"{etag}"'},
                )
                for i in range(8)
            ]
            responses = await asyncio.gather(*puts)
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [200] + [409] * 7, [r.text for r in responses]
            winner = next(r for r in responses if r.status_code == 200).json()
            assert all(r.json()["details"]["current_etag"] == winner["etag"] for r in responses if r.status_code == 409)
            assert (await c.get(f"{USER}/state")).json()["state"]["metadata"] == winner["state"]["metadata"]

    asyncio.run(run())


# --- keys -------------------------------------------------------------------------


def test_keys_authenticate_and_scope(api_server: ApiServer, make_key, primary: str) -> None:
    from api.models import ApiKey

    key = make_key("p1", "p2")
    with api_server.client() as anonymous:
        body = error_of(anonymous.get(f"{USER}/state"), 401, "missing_api_key")
        assert body["message"]
        assert anonymous.get(f"{USER}/state").headers["WWW-Authenticate"] == "Bearer"
        wrong_scheme = anonymous.get(f"{USER}/state", headers={"Authorization": f"Token {key}"})
        error_of(wrong_scheme, 401, "invalid_authorization")
        forged = anonymous.get(f"{USER}/state", headers={"Authorization": f"Bearer {key[:-4]}AAAA"})
        error_of(forged, 401, "invalid_api_key")
        error_of(anonymous.get(f"{USER}/state", headers={"Authorization": "Bearer nope"}), 401, "invalid_api_key")
    with api_server.client(key) as c:
        assert c.post("/api/v1/products/p2/users/u1/sessions/s1/start").status_code == 200
        error_of(c.post("/api/v1/products/p3/users/u1/sessions/s1/start"), 403, "product_forbidden")
    row = ApiKey.objects.get(prefix=key.split("_")[1])
    assert row.last_used_at is not None

    row.revoke()  # every worker refuses it from the next request on (tests/test_shared_cache.py)
    with api_server.client(key) as c:
        error_of(c.get(f"{USER}/state"), 401, "invalid_api_key")


def test_probes_need_no_key(api_server: ApiServer, primary: str) -> None:
    with api_server.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json() == {"status": "ok"}
        assert c.get("/api/openapi.json").status_code == 200
        assert c.get("/api/docs").status_code == 200


def test_api_path_is_lean_but_guarded(api_server: ApiServer, make_key, primary: str, settings: Any) -> None:
    """/api/ skips the console's middleware yet keeps the security headers and the host check."""
    with api_server.client(make_key("p1")) as c:
        response = c.post(f"{USER}/sessions/s1/start")
        assert response.status_code == 200
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "set-cookie" not in response.headers and "Vary" not in response.headers
        error_of(c.get(f"{USER}/state", headers={"Host": "evil.example"}), 400, "disallowed_host")
        not_allowed = error_of(c.delete(f"{USER}/state"), 405, "method_not_allowed")
        assert "PATCH" in not_allowed["message"]
        login = c.get("/accounts/login/")  # the console still runs its full middleware
        assert login.status_code == 200 and "csrftoken" in login.cookies


# --- bad input never gives a 500 ---------------------------------------------------


def test_bad_input_gets_a_4xx_naming_the_problem(client: httpx.Client, settings: Any) -> None:
    end = f"{USER}/sessions/s1/end"
    post = client.post
    error_of(post(end, content=b'{"snapshot": ', headers={"Content-Type": "application/json"}), 400, "malformed_body")
    error_of(post(end, content=b'{"snapshot": {"started_at": NaN}}'), 400, "malformed_body")
    error_of(post(end, content=b"[1, 2]"), 400, "malformed_body")
    error_of(post(end, content=b'{"state": {"metadata": {"x": 1e999}}}'), 400, "malformed_body")
    error_of(post(end, content=b'{"state": {"metadata": {"x": ' + b"9" * 5000 + b"}}}"), 400, "malformed_body")
    error_of(post(end, content=b"\xff\xfe"), 400, "malformed_body")
    error_of(post(end, content=b'{"summary": "\\ud800"}'), 400, "malformed_body")
    deep = b'{"state": {"metadata": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}}"
    error_of(post(end, content=deep), 400, "body_too_deep")
    error_of(post(end, content=b"[" * 100_000), 400, "body_too_deep")

    wrong_type = error_of(
        post(end, json={"snapshot": {"session_id": "s1", "started_at": "yesterday", "captured_at": 1}}),
        422,
        "validation_error",
    )
    assert wrong_type["details"][0]["field"] == "snapshot.started_at"
    both = error_of(post(end, json={}), 422, "validation_error")
    assert "snapshot" in both["message"]
    error_of(post(end, json={"state": {}}), 422, "validation_error")
    error_of(
        post(end, json={"snapshot": {"session_id": "s1", "started_at": 1, "captured_at": 2}, "typo": 1}),
        422,
        "validation_error",
    )
    huge = post(
        end, json={"snapshot": {"session_id": "s1", "session_number": 2**40, "started_at": 1, "captured_at": 2}}
    )
    assert error_of(huge, 422, "validation_error")["details"][0]["field"] == "snapshot.session_number"
    mismatch = post(end, json={"snapshot": {"session_id": "other", "started_at": 1, "captured_at": 2}})
    assert error_of(mismatch, 422, "session_id_mismatch")["details"][0]["field"] == "snapshot.session_id"
    version = client.put(f"{USER}/state", json={"_v": 2}, headers={"If-None-Match": "*"})
    assert error_of(version, 422, "validation_error")["details"][0]["field"] == "_v"

    for bad_id in ("a:b", "x" * 129, "sp ace", "{tag}", "é"):
        response = client.get(f"/api/v1/products/p1/users/{bad_id}/state")
        assert error_of(response, 422, "validation_error")["details"][0]["field"] == "user_id", bad_id
    assert client.get(f"{USER}/sessions/2024-01-01T10:00:00").status_code == 404  # ':' is fine in session ids
    error_of(client.get(f"{USER}/sessions", params={"limit": 0}), 422, "validation_error")
    error_of(client.get(f"{USER}/sessions", params={"cursor": "!!not-ours!!"}), 400, "invalid_cursor")

    too_big = b'{"summary": "' + b"x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE + b'"}'
    error_of(post(end, content=too_big), 413, "body_too_large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while received
        for start in range(0, len(too_big), 65536):
            yield too_big[start : start + 65536]

    error_of(post(end, content=chunked()), 413, "body_too_large")

    error_of(client.get(f"{USER}/state"), 404, "user_not_found")
    error_of(client.get(f"{USER}/context"), 404, "user_not_found")
    error_of(client.get(f"{USER}/sessions/nope"), 404, "session_not_found")
    error_of(client.get("/api/v1/nowhere"), 404, "not_found")


def test_size_limit_also_holds_without_the_lean_path(client: httpx.Client, settings: Any) -> None:
    """Mounted on Django's plain handler (test client), the key check refuses a large body before parsing it."""
    from django.test import Client

    key = client.headers["Authorization"]
    body = b'{"summary": "' + b"x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE + b'"}'
    response = Client().post(
        f"{USER}/sessions/s1/end", body, content_type="application/json", headers={"Authorization": key}
    )
    assert response.status_code == 413 and response.json()["code"] == "body_too_large"


def test_unreadable_stored_documents_are_reported_not_replaced(client: httpx.Client, primary: str) -> None:
    """A corrupt or newer-version state gives 409 with a clear code; nothing overwrites it."""
    from django.conf import settings

    from autoplay_storage.models import UserStateRecord

    def write_raw(text: str) -> None:
        if primary == "redis":
            import redis

            with redis.Redis.from_url(settings.AUTOPLAY_STORAGE["REDIS_URL"]) as r:
                r.set("autoplay:user:p1:u1:state", text)
        else:
            UserStateRecord.objects.filter(product_id="p1", user_id="u1").update(document=text)

    def raw_state() -> str:
        if primary == "redis":
            import redis

            with redis.Redis.from_url(settings.AUTOPLAY_STORAGE["REDIS_URL"]) as r:
                return r.get("autoplay:user:p1:u1:state").decode()
        return UserStateRecord.objects.get(product_id="p1", user_id="u1").document

    client.post(f"{USER}/sessions/s1/start")
    write_raw('{"_v": 1, "user_id": "u1", truncated')
    for response in (
        client.get(f"{USER}/state"),
        client.post(f"{USER}/sessions/s2/start"),
        client.patch(f"{USER}/state", json={"ops": [{"op": "journey", "journey_state": "onboarded"}]}),
    ):
        error_of(response, 409, "corrupt_document")
    assert raw_state() == '{"_v": 1, "user_id": "u1", truncated'
    write_raw(json.dumps({"_v": 2, "user_id": "u1"}))
    error_of(client.post(f"{USER}/sessions/s2/start"), 409, "unsupported_version")
    error_of(client.put(f"{USER}/state", json={}, headers={"If-Match": "*"}), 409, "unsupported_version")
    assert json.loads(raw_state()) == {"_v": 2, "user_id": "u1"}  # still there, untouched

    # A snapshot that is not JSON: reported, not "not found".
    if primary == "redis":
        import redis

        with redis.Redis.from_url(settings.AUTOPLAY_STORAGE["REDIS_URL"]) as r:
            r.set("autoplay:user:p1:u1:session:broken", "{not json")
    else:
        from autoplay_storage.models import SessionSnapshotRecord

        SessionSnapshotRecord.objects.create(product_id="p1", user_id="u1", session_id="broken", document="{not json")
    error_of(client.get(f"{USER}/sessions/broken"), 409, "corrupt_document")


def test_unreachable_primary_gives_503_with_retry_after(
    api_server: ApiServer,
    make_key,
    settings: Any,
) -> None:
    from tests.support.redis_server import closed_port

    settings.AUTOPLAY_STORAGE = {
        **settings.AUTOPLAY_STORAGE,
        "PRIMARY": "redis",
        "REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0",
    }
    snap = {"session_id": "s1", "started_at": 1, "captured_at": 2}
    with api_server.client(make_key("p1")) as c:
        for response in (
            c.post(f"{USER}/sessions/s1/start"),
            c.post(f"{USER}/sessions/s1/end", json={"snapshot": snap}),
            c.get(f"{USER}/state"),
            c.patch(f"{USER}/state", json={"ops": [{"op": "mastery", "rating": 1}]}),
            c.get(f"{USER}/sessions"),
            c.get(f"{USER}/context"),
        ):
            error_of(response, 503, "storage_unavailable")
            assert int(response.headers["Retry-After"]) > 0
        assert c.get("/readyz").status_code == 503
