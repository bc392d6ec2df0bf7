"""The support routes over real HTTP, on both primaries: session diffs, summary preview and PUT."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from autoplay_storage.models import AuditEntry, SummaryRun
from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState
from tests.support.api_server import ApiServer
from tests.support.dashboard import write_raw

USER = "/api/v1/products/p1/users/u1"
pytestmark = pytest.mark.django_db(transaction=True)


async def review_summarizer(snapshot: SessionSnapshot) -> str:
    return f"Brief after session {snapshot.session_number}: {len(snapshot.completed_workflow_ids)} workflows done."


@pytest.fixture
def client(api_server: ApiServer, make_key, primary: str, settings: Any, request) -> httpx.Client:
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "SUMMARIZER": f"{__name__}.review_summarizer"}
    request.node.redis_url = settings.AUTOPLAY_STORAGE.get("REDIS_URL")
    with api_server.client(make_key("p1")) as c:
        yield c


def end(client: httpx.Client, session_id: str, progress: dict[str, str], features: list[str], rating: int) -> dict:
    state = {
        "mastery": {"rating": rating, "level": "beginner" if rating < 5 else "proficient"},
        "discovered_features": features,
        "onboarding": {
            "workflow_progress": {w: {"workflow_id": w, "status": s, "confidence": 0.8} for w, s in progress.items()}
        },
    }
    body = {"state": state, "catalog_workflow_ids": ["create_project", "invite_team"], "started_at": 1_700_000_000}
    response = client.post(f"{USER}/sessions/{session_id}/end", json={**body, "summarize": True})
    assert response.status_code == 200, response.text
    return response.json()


def two_sessions(client: httpx.Client) -> None:
    end(client, "s1", {"create_project": "in_progress"}, ["projects"], 2)
    end(client, "s2", {"create_project": "completed", "invite_team": "in_progress"}, ["projects", "invites"], 6)


def changes(body: dict) -> dict[tuple, tuple]:
    return {(c["area"], c.get("workflow_id") or c.get("feature"), c["field"]): (c["kind"], c["after"]) for c in body}


def test_a_session_against_the_previous_one(client: httpx.Client) -> None:
    two_sessions(client)
    response = client.get(f"{USER}/sessions/s2/diff")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["comparable"] is True and body["problem"] is None
    assert (body["before"]["session_id"], body["after"]["session_id"]) == ("s1", "s2")
    found = changes(body["changes"])
    assert found[("workflow", "create_project", "status")] == ("completed", "completed")
    assert found[("workflow", "invite_team", "status")] == ("started", "in_progress")
    assert found[("feature", "invites", "discovered")] == ("discovered", True)
    assert found[("mastery", None, "rating")] == ("increased", 6)
    assert found[("summary", None, "text")][1] == "Brief after session 2: 1 workflows done."
    same = client.get(f"{USER}/sessions/s2/diff", params={"against": "s2"}).json()
    assert same["changes"] == []
    assert client.get(f"{USER}/sessions/s1/diff", params={"against": "s2"}).json()["after"]["session_id"] == "s2"


def test_a_session_against_the_live_state_and_the_first_session(client: httpx.Client) -> None:
    two_sessions(client)
    patched = client.patch(f"{USER}/state", json={"ops": [{"op": "journey", "journey_state": "onboarded"}]})
    assert patched.status_code == 200, patched.text
    body = client.get(f"{USER}/sessions/s2/diff", params={"against": "state"}).json()
    assert body["after"]["kind"] == "state"
    assert changes(body["changes"])[("journey", None, "journey_state")] == ("changed", "onboarded")
    first = client.get(f"{USER}/sessions/s1/diff")
    assert first.status_code == 404 and first.json()["code"] == "no_previous_session"
    missing = client.get(f"{USER}/sessions/nope/diff")
    assert missing.status_code == 404 and missing.json()["code"] == "session_not_found"
    bad = client.get(f"{USER}/sessions/s1/diff", params={"against": "a b"})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"


def test_an_unreadable_snapshot_is_said_plainly(client: httpx.Client, primary: str, request) -> None:
    two_sessions(client)
    write_raw(primary, request.node.redis_url, "p1", "u1", "{truncated", session_id="s0")
    body = client.get(f"{USER}/sessions/s2/diff", params={"against": "s0"}).json()
    assert body["comparable"] is False and body["changes"] == []
    assert body["before"]["readable"] is False and "s0 cannot be read" in body["problem"]


def test_the_diff_needs_a_key_and_is_in_openapi(client: httpx.Client, api_server: ApiServer) -> None:
    with api_server.client() as anonymous:
        assert anonymous.get(f"{USER}/sessions/s1/diff").status_code == 401
    schema = client.get("/api/openapi.json").json()
    route = schema["paths"]["/api/v1/products/{product_id}/users/{user_id}/sessions/{session_id}/diff"]["get"]
    assert route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("DiffOut")
    assert "ChangeOut" in schema["components"]["schemas"]
    assert "/api/v1/products/{product_id}/users/{user_id}/summary/preview" in schema["paths"]


def test_preview_stores_nothing_and_put_accepts_it_with_the_etag(client: httpx.Client) -> None:
    two_sessions(client)
    before = client.get(f"{USER}/state").json()
    response = client.post(f"{USER}/summary/preview", json={"session_id": "s1"})
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["new"] == "Brief after session 1: 0 workflows done."
    assert preview["current"] == before["state"]["onboarding"]["summary"] and preview["etag"] == before["etag"]
    assert client.get(f"{USER}/state").json()["etag"] == before["etag"]  # nothing stored
    run = SummaryRun.objects.get(pk=preview["run_id"])
    assert (run.source, run.applied_at, run.actor_label) == ("preview", None, "API key test agent")

    no_precondition = client.put(f"{USER}/summary", json={"preview_id": preview["run_id"]})
    assert no_precondition.status_code == 428
    put = client.put(
        f"{USER}/summary", json={"preview_id": preview["run_id"]}, headers={"If-Match": f'"{preview["etag"]}"'}
    )
    assert put.status_code == 200, put.text
    state = UserAdoptionState.from_dict(put.json()["state"])
    assert state.onboarding.summary == preview["new"]
    assert put.json()["version"] == {"run_id": run.pk, "source": "preview", "session_id": "s1", "restored_from": None}
    again = client.put(f"{USER}/summary", json={"preview_id": run.pk}, headers={"If-Match": put.json()["etag"]})
    assert again.status_code == 422 and "accepted already" in again.json()["message"]
    assert AuditEntry.objects.filter(action="summary.write", user_id="u1").count() == 1


def test_a_stale_etag_is_a_conflict_and_nothing_is_written(client: httpx.Client) -> None:
    two_sessions(client)
    etag = client.get(f"{USER}/state").json()["etag"]
    client.patch(f"{USER}/state", json={"ops": [{"op": "metadata", "values": {"plan": "pro"}}]})
    put = client.put(f"{USER}/summary", json={"text": "Written by hand"}, headers={"If-Match": etag})
    assert put.status_code == 409 and put.json()["code"] == "state_conflict"
    assert client.get(f"{USER}/state").json()["state"]["onboarding"]["summary"] != "Written by hand"
    assert not SummaryRun.objects.filter(source="manual").exists()


def test_write_by_hand_then_restore_an_earlier_version(client: httpx.Client) -> None:
    two_sessions(client)
    first = SummaryRun.objects.filter(user_id="u1", session_id="s1").exclude(applied_at=None).get()
    current = client.get(f"{USER}/state").json()
    put = client.put(f"{USER}/summary", json={"text": "  By hand.  "}, headers={"If-Match": current["etag"]})
    assert put.status_code == 200, put.text
    assert put.json()["state"]["onboarding"]["summary"] == "By hand."
    restored = client.put(f"{USER}/summary", json={"restore_id": first.pk}, headers={"If-Match": put.json()["etag"]})
    assert restored.status_code == 200, restored.text
    assert restored.json()["state"]["onboarding"]["summary"] == first.new_summary
    assert restored.json()["version"]["restored_from"] == first.pk
    both = client.put(f"{USER}/summary", json={"text": "x", "restore_id": first.pk}, headers={"If-Match": "*"})
    assert both.status_code == 422
    unknown = client.put(f"{USER}/summary", json={"restore_id": 99999}, headers={"If-Match": restored.json()["etag"]})
    assert unknown.status_code == 422 and "no summary run 99999" in unknown.json()["message"]


def test_a_failing_summarizer_is_a_502_recorded(client: httpx.Client, settings: Any) -> None:
    two_sessions(client)
    settings.AUTOPLAY_STORAGE = {**settings.AUTOPLAY_STORAGE, "SUMMARIZER": "tests.test_api.failing_summarizer"}
    response = client.post(f"{USER}/summary/preview")
    assert response.status_code == 502 and response.json()["code"] == "summarizer_failed"
    assert SummaryRun.objects.get(pk=response.json()["details"]["run_id"]).outcome == "failed"
