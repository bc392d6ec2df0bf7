"""The insight API over HTTP on a real server: users by filter and segment in cursor pages, the stats,
the key's product and scope, bad filters as 400, and the OpenAPI document."""

from __future__ import annotations

import httpx
import pytest

from autoplay_storage.models import Segment
from tests.support.api_server import ApiServer
from tests.support.dashboard import PRODUCT, load_demo


@pytest.fixture
def loaded(primary: str) -> str:
    load_demo(18)
    return primary


def get(api_server: ApiServer, key: str, path: str, **params) -> httpx.Response:
    return httpx.get(
        f"{api_server.url}/api/v1/products/{PRODUCT}{path}",
        params=params,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def all_users(api_server: ApiServer, key: str, **params) -> list[dict]:
    rows, cursor = [], None
    while True:
        body = get(api_server, key, "/users", limit=4, **params, **({"cursor": cursor} if cursor else {})).json()
        rows += body["items"]
        if not (cursor := body["next_cursor"]):
            return rows


def test_stats_and_filtered_users_agree(api_server, make_key, loaded) -> None:
    key = make_key(PRODUCT)
    stats = get(api_server, key, "/stats")
    assert stats.status_code == 200
    body = stats.json()
    assert body["users"] == 18 and body["funnel"] and body["cohorts"]
    assert sum(body["sessions_per_day"].values()) == sum(
        sum(levels.values()) for levels in body["mastery_per_week"].values()
    )
    row = body["funnel"][0]
    for status in ("completed", "in_progress", "untouched"):
        users = all_users(api_server, key, workflow=row["workflow_id"], status=status)
        assert len(users) == row[status] and len({u["user_id"] for u in users}) == row[status]
    everyone = all_users(api_server, key)
    assert len(everyone) == 18
    activity = [u["last_activity_at"] for u in everyone]
    assert activity == sorted(activity, reverse=True)
    onboarded = all_users(api_server, key, onboarded="yes", order="last_activity")
    assert all(u["onboarded"] for u in onboarded)
    assert len(onboarded) == sum(c["onboarded"] for c in body["cohorts"])


def test_a_saved_segment_lists_its_users(api_server, make_key, loaded) -> None:
    key = make_key(PRODUCT)
    segment = Segment.objects.create(product_id=PRODUCT, name="Beginners", params={"mastery": "novice,beginner"})
    users = all_users(api_server, key, segment=segment.slug)
    assert users and all(u["mastery_level"] in ("novice", "beginner") for u in users)
    assert users == all_users(api_server, key, mastery="novice,beginner")
    missing = get(api_server, key, "/users", segment="nope")
    assert missing.status_code == 404 and missing.json()["code"] == "segment_not_found"


def test_bad_filters_keys_and_products_are_refused(api_server, make_key, loaded) -> None:
    key = make_key(PRODUCT)
    bad = get(api_server, key, "/users", mastery="wizard")
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_filter" and "wizard" in bad.json()["message"]
    assert get(api_server, key, "/users", sessions_min="-1").status_code == 400
    assert get(api_server, key, "/users", cursor="not-a-cursor").json()["code"] == "invalid_cursor"
    assert get(api_server, key, "/users", limit=0).status_code == 422
    other = make_key("another-product")
    assert get(api_server, other, "/stats").status_code == 403
    assert get(api_server, "ap_nope", "/users").status_code == 401


def test_the_routes_are_in_the_openapi_document(api_server, primary) -> None:
    spec = httpx.get(f"{api_server.url}/api/openapi.json", timeout=30).json()
    users = spec["paths"]["/api/v1/products/{product_id}/users"]["get"]
    assert users["operationId"] == "users_list" and users["tags"] == ["insight"]
    assert {p["name"] for p in users["parameters"]} >= {"segment", "workflow", "status", "cursor", "meta_key"}
    assert "StatsOut" in str(spec["paths"]["/api/v1/products/{product_id}/stats"]["get"]["responses"]["200"])
