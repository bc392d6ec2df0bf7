"""Ids: every id the API accepts opens in the console; ids made only of dots are refused and reported.

A path segment made only of dots is rewritten by HTTP clients and browsers
(``/u/./`` becomes ``/u/``, ``/u/../`` the users list), so the API refuses
such ids with a clear 422, the console still opens those another writer
stored, and ``autoplay_reindex`` lists them.
"""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

import httpx
import pytest
import redis
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from api.ids import PRODUCT_ID_PATTERN, SESSION_ID_PATTERN, USER_ID_PATTERN
from autoplay_storage.keys import session_key, user_state_key
from tests.support.api_server import ApiServer
from tests.support.browser import chromium, shot
from tests.support.dashboard import PASSWORD, configure_primary, make_person, with_storage

pytestmark = pytest.mark.django_db(transaction=True)

PRODUCT = "acme"
ACCEPTED = [".a", "a.", "a.b", "..a", "a..", "@", "+", "-", "_", "a@b+c-d_e", "x" * 128]
# As they travel in a URL: httpx (like browsers) would remove a literal "." or ".." segment.
DOTS_ONLY = {".": "%2E", "..": "%2E%2E", "...": "..."}
SNAPSHOT = {"started_at": 1_700_000_000, "captured_at": 1_700_000_600}


def error_of(response: httpx.Response, field: str) -> str:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error" and body["details"][0]["field"] == field, body
    return body["message"]


@pytest.fixture
def client(api_server: ApiServer, make_key: Any, primary: str) -> httpx.Client:
    # A key issued before the rule could name such a product (keys are checked before ids).
    with api_server.client(make_key(PRODUCT, "p1", *DOTS_ONLY)) as c:
        yield c


@pytest.mark.parametrize("dots", list(DOTS_ONLY))
def test_the_api_refuses_ids_made_only_of_dots(client: httpx.Client, dots: str) -> None:
    in_url = DOTS_ONLY[dots]
    message = error_of(client.post(f"/api/v1/products/{PRODUCT}/users/{in_url}/sessions/s1/start"), "user_id")
    assert message == f"user_id: {dots!r} is made only of dots, which HTTP clients and browsers rewrite in a URL " \
        "path ('.' and '..' are path segments); use at least one other character"
    error_of(client.get(f"/api/v1/products/{in_url}/users/u1/state"), "product_id")
    error_of(client.post(f"/api/v1/products/{PRODUCT}/users/u1/sessions/{in_url}/start"), "session_id")
    session_end = f"/api/v1/products/{PRODUCT}/users/u1/sessions/{in_url}/end"
    error_of(client.post(session_end, json={"snapshot": {"session_id": dots, **SNAPSHOT}}), "session_id")
    other = error_of(client.get(f"/api/v1/products/{PRODUCT}/users/a:b/state"), "user_id")
    assert "A-Z a-z 0-9 . _ @ + -" in other and "not only dots" in other
    assert client.get(f"/api/v1/products/{PRODUCT}/users/u1/state").status_code == 404  # nothing was stored


@pytest.mark.parametrize("user_id", ACCEPTED)
def test_ids_with_dots_and_signs_are_accepted(client: httpx.Client, user_id: str) -> None:
    base = f"/api/v1/products/{PRODUCT}/users/{user_id}"
    assert client.post(f"{base}/sessions/.s/start").status_code == 200
    ended = client.post(f"{base}/sessions/.s/end", json={"snapshot": {"session_id": ".s", **SNAPSHOT}})
    assert ended.status_code == 200, ended.text
    assert client.get(f"{base}/state").json()["state"]["user_id"] == user_id
    assert client.get(f"{base}/sessions/.s").status_code == 200


def test_no_key_is_issued_for_a_product_made_only_of_dots(db: None) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not only dots"):
        call_command("autoplay_apikey", "create", "--name", "agent", "--product", "..", stdout=StringIO())


def test_openapi_states_the_rule(api_server: ApiServer, primary: str) -> None:
    with api_server.client() as c:
        spec = c.get("/api/openapi.json").json()
    start = spec["paths"]["/api/v1/products/{product_id}/users/{user_id}/sessions/{session_id}/start"]["post"]
    patterns = {p["name"]: p["schema"]["pattern"] for p in start["parameters"]}
    assert patterns == {"product_id": PRODUCT_ID_PATTERN, "user_id": USER_ID_PATTERN, "session_id": SESSION_ID_PATTERN}
    assert "only of dots" in spec["info"]["description"]
    for dots in DOTS_ONLY:
        assert not re.fullmatch(USER_ID_PATTERN, dots) and not re.fullmatch(SESSION_ID_PATTERN, dots)


def plant_dots_only_documents(kind: str, redis_url: str | None) -> None:
    """What another writer may have stored: a user '..' and a session '.' of user 'u1'."""
    state = {"_v": 1, "user_id": "..", "metadata": {"email": "dots@example.com"}}
    snapshot = {"session_id": ".", "user_id": "u1", "session_number": 1, **SNAPSHOT}

    async def go(storage: Any) -> None:
        await storage.save_user_state(PRODUCT, "..", state)
        await storage.save_user_state(PRODUCT, "u1", {"_v": 1, "user_id": "u1"})
        await storage.save_session_snapshot(PRODUCT, "u1", ".", snapshot)

    with_storage(go)


def test_reindex_lists_documents_under_ids_made_only_of_dots(primary: str, settings: Any) -> None:
    plant_dots_only_documents(primary, settings.AUTOPLAY_STORAGE.get("REDIS_URL"))
    if primary == "redis":  # another writer keeps no index entries: the SDK's keys alone
        with redis.Redis.from_url(settings.AUTOPLAY_STORAGE["REDIS_URL"]) as r:
            r.set(user_state_key("...", "u2"), '{"_v": 1, "user_id": "u2"}')
            assert r.exists(session_key(PRODUCT, "u1", "."))
    out = StringIO()
    call_command("autoplay_reindex", stdout=out, stderr=StringIO())
    text = out.getvalue()
    assert "ids made only of dots, which the agents' API refuses" in text
    assert "  state 'acme' / '..'" in text and "  snapshot 'acme' / 'u1' / '.'" in text
    assert ("  state '...' / 'u2'" in text) == (primary == "redis")
    if primary == "database":
        assert "nothing to rebuild" in text


def test_console_links_carry_dots_only_ids_past_url_normalisation(primary: str, settings: Any) -> None:
    plant_dots_only_documents(primary, settings.AUTOPLAY_STORAGE.get("REDIS_URL"))
    console = Client()
    console.force_login(make_person("sam", "support"))
    user_url = reverse("dashboard:user", args=[PRODUCT, ".."])
    assert user_url == "/p/acme/u/%252E%252E/"
    page = console.get(user_url)
    assert page.status_code == 200 and "made only of dots" in page.content.decode()
    snapshot = console.get(reverse("dashboard:snapshot", args=[PRODUCT, "u1", "."]))
    assert snapshot.status_code == 200
    assert "The session id &#x27;.&#x27; is made only of dots" in snapshot.content.decode()


@pytest.mark.browser
def test_every_accepted_id_opens_in_the_browser(
    api_server: ApiServer, make_key: Any, settings: Any, live_server: Any
) -> None:
    configure_primary("database", settings)
    with api_server.client(make_key(PRODUCT)) as api:
        for user_id in ACCEPTED:
            base = f"/api/v1/products/{PRODUCT}/users/{user_id}"
            api.post(f"{base}/sessions/s./start").raise_for_status()
            api.post(f"{base}/sessions/s./end", json={"snapshot": {"session_id": "s.", **SNAPSHOT}}).raise_for_status()
    plant_dots_only_documents("database", None)
    make_person("sam", "support")
    base = live_server.url
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.goto(base + "/accounts/login/")
        page.fill("#id_username", "sam")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        for user_id in [*ACCEPTED, ".."]:
            page.goto(f"{base}/p/{PRODUCT}/")
            page.get_by_role("link", name=user_id, exact=True).click()
            page.wait_for_selector("h1.mono")
            assert page.locator("h1.mono").inner_text() == user_id, page.url
            session = "." if user_id == ".." else "s."
            if user_id == "..":
                assert "made only of dots" in page.locator(".alert-warning").inner_text()
                page.goto(f"{base}{reverse('dashboard:user', args=[PRODUCT, 'u1'])}")
            page.locator("#history").get_by_role("link", name=session, exact=True).click()
            page.wait_for_selector(".badge.frozen")
            assert page.locator("h1 .mono").inner_text() == session, page.url
        shot(page, "10-dots-only-session")
