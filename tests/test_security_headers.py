"""Headers and secrets: a CSP on every console page that the pages really keep, no caching of user data,
one HTTPS switch that passes ``check --deploy``, owner-only files under var/."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import chromium
from tests.support.dashboard import PASSWORD, PRODUCT, configure_primary, load_demo, load_one, make_person

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.django_db(transaction=True)


def _pages(plan: Any) -> list[str]:
    user = f"/p/{PRODUCT}/u/{plan.user_id}/"
    session = plan.sessions[0].session_id
    return [
        "/",
        f"/p/{PRODUCT}/",
        user,
        f"{user}s/{session}/",
        f"{user}s/{session}/snapshot.json",
        f"{user}edit",
        f"{user}compare",
        f"{user}erase",
        f"{user}export.json",
        f"/p/{PRODUCT}/insight/",
        f"/p/{PRODUCT}/insight/users/",
        f"/p/{PRODUCT}/stuck/",
        f"/p/{PRODUCT}/?format=csv",
        "/audit/",
        "/audit/?format=csv",
        "/admin/autoplay_storage/productgrant/add/",
        "/admin/",
        "/admin/autoplay_storage/sinkdestination/add/",
        "/admin/api/apikey/add/",
        "/api/docs",
    ]


@pytest.fixture
def console(settings: Any, live_server: Any) -> tuple[str, Any]:
    configure_primary("database", settings)
    load_demo(5)
    plan = load_one(3, email="ada@example.com")
    make_person("ada", "admin", staff=True)
    return live_server.url, plan


@pytest.mark.browser
def test_every_console_page_keeps_its_content_security_policy(console: tuple[str, Any]) -> None:
    base, plan = console
    violations: list[str] = []
    with chromium() as browser:
        page = browser.new_page()
        page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
        page.goto(base + "/accounts/login/")
        page.fill("#id_username", "ada")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        for path in _pages(plan):
            if path.endswith((".json", "format=csv")):  # a download: fetched with the page's cookies, not navigated to
                fetched = page.request.get(base + path)
                assert fetched.status == 200 and "no-store" in fetched.headers["cache-control"], path
                continue
            response = page.goto(base + path)
            assert response is not None and response.status == 200, path
            headers = response.headers
            policy = headers["content-security-policy"]
            assert "default-src 'none'" in policy and "unsafe-inline" not in policy, (path, policy)
            assert "no-store" in headers["cache-control"], path
        # The bars are drawn by width classes, not inline styles the policy would block.
        page.goto(base + f"/p/{PRODUCT}/")
        assert page.locator("span.meter > span").first.evaluate("e => e.getBoundingClientRect().width") >= 0
    assert violations == []


def test_the_login_page_and_errors_carry_the_policy_and_static_files_stay_cacheable(client: Any) -> None:
    login = client.get("/accounts/login/")
    assert "default-src 'none'" in login["Content-Security-Policy"]
    assert "no-store" in login["Cache-Control"]
    missing = client.get("/p/nothing-here/")
    assert missing.status_code in (302, 404) and "no-store" in missing["Cache-Control"]


def test_api_responses_carrying_user_data_are_not_cached(api_server: Any, make_key: Any, primary: str) -> None:
    with api_server.client(make_key("p1")) as c:
        started = c.post("/api/v1/products/p1/users/u1/sessions/s1/start")
        assert "no-store" in started.headers["cache-control"]
        assert "no-store" in c.get("/api/v1/products/p1/users/u1/state").headers["cache-control"]
        assert "no-store" in c.get("/api/v1/products/p1/users/nobody/state").headers["cache-control"]


def _manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_one_https_switch_passes_check_deploy(tmp_path: Path) -> None:
    env = {
        "AUTOPLAY_VAR_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "console.example.com",
        "DJANGO_SECRET_KEY": "",
    }
    plain = _manage(env, "check", "--deploy")
    assert "security.W008" in plain.stderr and "autoplay_storage.W001" in plain.stderr
    https = _manage({**env, "DJANGO_HTTPS": "1", "AUTOPLAY_ENCRYPTION_KEY": "k" * 40}, "check", "--deploy")
    assert https.returncode == 0, https.stderr
    assert "no issues" in https.stdout + https.stderr


def test_files_under_var_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DJANGO_SECRET_KEY")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "migrate", "--noinput", "-v", "0"],
        env={**env, "AUTOPLAY_VAR_DIR": str(var)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    for name in ("secret_key", "db.sqlite3"):
        assert stat.S_IMODE((var / name).stat().st_mode) == 0o600, name
