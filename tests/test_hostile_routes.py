"""Hostile stored documents through every route: the API over real HTTP and the console, on every primary.

Documents are planted straight in the primary (another writer, a hand edit,
a truncated restore), bypassing the API. Whatever they hold, no route
answers 5xx, and every route treats one document one way:

- a document the published SDK's reader reads (``json.loads`` gives an
  object with a known ``_v``) is read by the reader's rules (spec section 4):
  NaN, wrong types and unknown enum values fall back, and every state route
  answers 2xx with the state as the reader makes of it;
- anything else is reported, with the same code on every state route
  (``corrupt_document`` or ``unsupported_version``), and is never
  overwritten.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, given, settings

from autoplay_storage.errors import UnsupportedVersionError
from autoplay_storage.user_adoption_state import SessionSnapshot, UserAdoptionState
from tests.conftest import load_fixtures
from tests.support.api_server import ApiServer
from tests.support.dashboard import configure_primary, make_person, with_storage, write_raw
from tests.support.hostile import check_snapshot, check_state, stored_texts

pytestmark = pytest.mark.django_db(transaction=True)

FIXTURES = load_fixtures()
STATES = [doc for name, doc in FIXTURES.items() if name.startswith("state__")]
SNAPSHOTS = [doc for name, doc in FIXTURES.items() if name.startswith("snapshot__")]
ROUTE_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
_examples = itertools.count()


@pytest.fixture(params=["memory", "database", "redis", pytest.param("postgres", marks=pytest.mark.postgres)])
def primary(request: pytest.FixtureRequest, settings: Any) -> str:
    kind = "database" if request.param == "postgres" else request.param
    configure_primary(kind, settings, request.getfixturevalue("redis_url") if kind == "redis" else None)
    if request.param == "postgres":
        settings.AUTOPLAY_STORAGE = {
            **settings.AUTOPLAY_STORAGE,
            "DATABASE_ALIAS": request.getfixturevalue("postgres_alias"),
        }
    request.node.redis_url = settings.AUTOPLAY_STORAGE.get("REDIS_URL")
    return kind


@pytest.fixture
def client(api_server: ApiServer, make_key: Any, primary: str) -> Iterator[httpx.Client]:
    with api_server.client(make_key("p1", "hp")) as c:
        yield c


@pytest.fixture
def console(primary: str) -> Client:
    c = Client()
    c.force_login(make_person("sam", "support"))
    return c


def sdk_reading(text: str) -> dict[str, Any] | None:
    """What the published SDK's reader makes of a stored text: the document, or ``None`` (unreadable)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def expected_state_error(text: str) -> str | None:
    """``None`` when the state reads; else the code every state route must answer with."""
    doc = sdk_reading(text)
    if doc is None:
        return "corrupt_document"
    try:
        UserAdoptionState.from_dict(doc)
    except UnsupportedVersionError:
        return "unsupported_version"
    return None


def raw_state(primary: str, redis_url: str | None, product: str, user: str) -> str | None:
    async def go(storage: Any) -> str | None:
        return await storage.browser.get_raw_user_state(product, user)

    return with_storage(go)


def no_5xx(response: Any, what: str) -> Any:
    status = response.status_code
    assert status < 500, f"{what}: {status} {response.content[:300]!r}"
    if status >= 400 and response["Content-Type"].startswith("application/json"):
        assert json.loads(response.content)["code"], what
    return response


class Routes:
    """Every API route on one user, each called on the planted document."""

    def __init__(self, client: httpx.Client, product: str, user: str) -> None:
        self.client = client
        self.base = f"/api/v1/products/{product}/users/{user}"

    def state_routes(self, etag: str) -> dict[str, httpx.Response]:
        snapshot = {"session_id": "s_end", "started_at": 1_700_000_000, "captured_at": 1_700_000_600}
        put = {"metadata": {"role": "admin"}, "journey_state": "onboarded"}
        return {
            "GET state": lambda: self.client.get(f"{self.base}/state"),
            "GET context": lambda: self.client.get(f"{self.base}/context"),
            "PATCH state": lambda: self.client.patch(
                f"{self.base}/state", json={"ops": [{"op": "mastery", "rating": 4}]}
            ),
            "PUT state": lambda: self.client.put(f"{self.base}/state", json=put, headers={"If-Match": etag}),
            "start": lambda: self.client.post(f"{self.base}/sessions/s_new/start", json={"metadata": {"a": 1}}),
            "end": lambda: self.client.post(f"{self.base}/sessions/s_end/end", json={"snapshot": snapshot}),
        }


@ROUTE_SETTINGS
@given(state_text=stored_texts(STATES), snapshot_text=stored_texts(SNAPSHOTS))
def test_no_stored_document_makes_a_route_answer_5xx(
    client: httpx.Client, console: Client, primary: str, request: pytest.FixtureRequest, state_text: str,
    snapshot_text: str,
) -> None:
    redis_url = request.node.redis_url
    product, user = "hp", f"u{next(_examples)}"
    plant = lambda: write_raw(primary, redis_url, product, user, state_text)  # noqa: E731
    write_raw(primary, redis_url, product, user, snapshot_text, session_id="s1")
    plant()
    routes = Routes(client, product, user)

    error = expected_state_error(state_text)
    first = client.get(f"{routes.base}/state")
    if error is None:
        assert first.status_code == 200, first.text
        body = first.json()
        check_state(body["state"])
        assert UserAdoptionState.from_dict(body["state"]).to_dict() == body["state"]
        assert first.headers["ETag"] == f'"{body["etag"]}"'
        assert client.get(f"{routes.base}/state").json()["etag"] == body["etag"], "the etag is stable"
        etag = f'"{body["etag"]}"'
    else:
        assert first.status_code == 409 and first.json()["code"] == error, first.text
        etag = "*"

    for name, call in routes.state_routes(etag).items():
        plant()
        response = call()
        assert response.status_code < 500, f"{name}: {response.status_code} {response.text[:300]}"
        if error is None:
            assert response.status_code == 200, f"{name}: {response.text[:300]}"
            if "state" in response.json():
                check_state(response.json()["state"])
        else:
            assert response.status_code == 409 and response.json()["code"] == error, f"{name}: {response.text[:300]}"
            assert raw_state(primary, redis_url, product, user) == state_text, f"{name} overwrote it"

    history = client.get(f"{routes.base}/sessions")
    assert history.status_code == 200, history.text
    one = client.get(f"{routes.base}/sessions/s1")
    if sdk_reading(snapshot_text) is None:
        assert one.status_code == 409 and one.json()["code"] == "corrupt_document", one.text
    else:
        assert one.status_code == 200, one.text
        check_snapshot(one.json()["snapshot"])
        assert SessionSnapshot.from_dict(one.json()["snapshot"]).to_dict() == one.json()["snapshot"]

    plant()
    for name, url in [
        ("products", reverse("dashboard:products")),
        ("users", reverse("dashboard:users", args=[product])),
        ("user", reverse("dashboard:user", args=[product, user])),
        ("snapshot", reverse("dashboard:snapshot", args=[product, user, "s1"])),
        ("download", reverse("dashboard:snapshot_json", args=[product, user, "s1"])),
    ]:
        page = no_5xx(console.get(url), name)
        assert page.status_code == 200, name
    user_page = console.get(reverse("dashboard:user", args=[product, user])).content.decode()
    assert ("cannot be read" in user_page) == (error is not None)


NAN_STATE = (
    '{"_v": 1, "user_id": "u1", "first_seen_at": NaN, "last_judged_at": Infinity,'
    ' "metadata": {"score": -Infinity, "role": "admin"}, "mastery": {"rating": NaN, "level": "beginner"}}'
)


def test_a_state_with_non_finite_numbers_reads_the_same_on_every_route(
    client: httpx.Client, console: Client, primary: str, request: pytest.FixtureRequest
) -> None:
    """Python's json writes NaN and Infinity; GET reads them as a write would store them, with a stable etag."""
    redis_url = request.node.redis_url
    write_raw(primary, redis_url, "p1", "u1", NAN_STATE)
    got = client.get("/api/v1/products/p1/users/u1/state")
    assert got.status_code == 200, got.text
    state = got.json()["state"]
    assert state["metadata"] == {"score": None, "role": "admin"}
    assert state["last_judged_at"] is None and state["mastery"] == {"rating": 0, "level": "beginner", "description": ""}
    assert raw_state(primary, redis_url, "p1", "u1") == NAN_STATE, "a read never writes"

    page = console.get(reverse("dashboard:user", args=["p1", "u1"])).content.decode()
    assert "holds non-finite numbers" in page
    for where in ("first_seen_at", "last_judged_at", "metadata.score", "mastery.rating"):
        assert where in page

    # The etag read is the one the write checks: a replace with it succeeds.
    replaced = client.put(
        "/api/v1/products/p1/users/u1/state",
        json={"metadata": {"role": "lead"}},
        headers={"If-Match": got.headers["ETag"]},
    )
    assert replaced.status_code == 200, replaced.text
    stored = json.loads(raw_state(primary, redis_url, "p1", "u1"))
    assert stored["metadata"] == {"role": "lead"} and stored["mastery"]["rating"] == 0

    # A PATCH stores exactly what GET answered (but for what the patch and the write stamp change).
    write_raw(primary, redis_url, "p1", "u1", NAN_STATE)
    journey = {"ops": [{"op": "journey", "journey_state": "onboarded"}]}
    patched = client.patch("/api/v1/products/p1/users/u1/state", json=journey)
    assert patched.status_code == 200, patched.text
    after = patched.json()["state"]
    for field in ("metadata", "mastery", "last_judged_at", "sessions"):
        assert after[field] == state[field], field


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_a_snapshot_with_non_finite_numbers_is_served_as_read(
    client: httpx.Client, console: Client, primary: str, request: pytest.FixtureRequest, literal: str
) -> None:
    redis_url = request.node.redis_url
    client.post("/api/v1/products/p1/users/u1/sessions/s0/start")
    text = f'{{"session_id": "s1", "started_at": {literal}, "captured_at": 1700000600, "completion_rate": {literal}}}'
    write_raw(primary, redis_url, "p1", "u1", text, session_id="s1")
    got = client.get("/api/v1/products/p1/users/u1/sessions/s1")
    assert got.status_code == 200, got.text
    snap = got.json()["snapshot"]
    assert snap["started_at"] == snap["captured_at"] == 1700000600 and snap["completion_rate"] == 0.0
    assert client.get("/api/v1/products/p1/users/u1/sessions").status_code == 200
    page = console.get(reverse("dashboard:snapshot", args=["p1", "u1", "s1"])).content.decode()
    assert "holds non-finite numbers" in page and "started_at" in page


@pytest.mark.parametrize(
    "field, value",
    [("metadata", {"email": "\ud800@example.com"}), ("metadata", {"note": "a\x00b"}), ("future", "\udfff")],
    ids=["lone-surrogate-email", "nul", "lone-surrogate-unknown-field"],
)
def test_strings_no_store_can_encode_are_read_and_written_back_escaped(
    client: httpx.Client, console: Client, primary: str, request: pytest.FixtureRequest, field: str, value: Any
) -> None:
    """``json.loads`` reads ``"\\ud800"`` as a lone surrogate; it goes back out as that escape, never as a 500."""
    redis_url = request.node.redis_url
    text = json.dumps({"_v": 1, "user_id": "u1", field: value})
    write_raw(primary, redis_url, "p1", "u1", text)
    got = client.get("/api/v1/products/p1/users/u1/state")
    assert got.status_code == 200, got.text
    assert got.json()["state"][field] == value
    patched = client.patch("/api/v1/products/p1/users/u1/state", json={"ops": [{"op": "mastery", "rating": 2}]})
    assert patched.status_code == 200, patched.text
    assert json.loads(raw_state(primary, redis_url, "p1", "u1"))[field] == value
    for url in (reverse("dashboard:users", args=["p1"]), reverse("dashboard:user", args=["p1", "u1"])):
        assert console.get(url).status_code == 200
    assert client.post("/api/v1/products/p1/users/u1/sessions/s1/start").status_code == 200


@pytest.mark.parametrize("depth", [50, 400])
def test_deeply_nested_free_form_values_are_read(
    client: httpx.Client, primary: str, request: pytest.FixtureRequest, depth: int
) -> None:
    nested: Any = 1
    for _ in range(depth):
        nested = {"a": nested}
    write_raw(primary, request.node.redis_url, "p1", "u1", json.dumps({"_v": 1, "user_id": "u1", "metadata": nested}))
    assert client.get("/api/v1/products/p1/users/u1/state").status_code == 200
    assert client.post("/api/v1/products/p1/users/u1/sessions/s1/start").status_code == 200


def test_lists_and_objects_where_enum_values_belong_are_read(
    client: httpx.Client, primary: str, request: pytest.FixtureRequest
) -> None:
    text = json.dumps({"_v": 1, "user_id": "u1", "journey_state": ["onboarded"], "mastery": {"level": {"x": 1}}})
    write_raw(primary, request.node.redis_url, "p1", "u1", text)
    patched = client.patch("/api/v1/products/p1/users/u1/state", json={"ops": [{"op": "mastery", "rating": 3}]})
    assert patched.status_code == 200, patched.text
    assert patched.json()["state"]["journey_state"] == "onboarding"
    assert patched.json()["state"]["mastery"]["level"] == "novice"


def test_an_etag_read_after_another_writer_changed_the_state_is_accepted(
    client: httpx.Client, primary: str, request: pytest.FixtureRequest
) -> None:
    """A write this process made is remembered; another writer's later change must not make a fresh etag stale."""
    user = "/api/v1/products/p1/users/u1"
    assert client.post(f"{user}/sessions/s1/start").status_code == 200
    assert client.patch(f"{user}/state", json={"ops": [{"op": "mastery", "rating": 1}]}).status_code == 200
    write_raw(primary, request.node.redis_url, "p1", "u1", NAN_STATE)  # the SDK, say, writes behind our back
    fresh = client.get(f"{user}/state")
    replaced = client.put(f"{user}/state", json={"metadata": {"v": 2}}, headers={"If-Match": fresh.headers["ETag"]})
    assert replaced.status_code == 200, replaced.text
    assert json.loads(raw_state(primary, request.node.redis_url, "p1", "u1"))["metadata"] == {"v": 2}
