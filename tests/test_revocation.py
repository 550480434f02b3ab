"""Revocation takes effect at once in a running server (issue 16): admin-token rotation, logout,
SIGNAL_ADMIN_TOKEN only seeding, throttled and audited logins, and the admin Host check."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from tests.support import ADMIN_TOKEN, ROOT, wait_for


def login(admin_url: str, token: str = ADMIN_TOKEN) -> httpx.Client:
    """A browser-like client logged in to the UI: it holds the session cookie."""
    client = httpx.Client(base_url=admin_url, follow_redirects=False, timeout=10)
    response = client.post("/login", data={"token": token})
    assert response.status_code == 303, response.text
    return client


def csrf_of(client: httpx.Client) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', client.get("/sources").text).group(1)


def rotate(db) -> str:
    return subprocess.run([sys.executable, "-m", "collector", "admin-token", "--rotate", "--db", str(db)],
                          cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def works(client: httpx.Client, **kwargs) -> bool:
    return client.get("/v1/admin/sources", **kwargs).status_code == 200


@pytest.mark.timed
def test_rotation_revokes_the_old_token_and_every_session_within_a_second(edge):
    browser = login(edge.admin_url)
    assert works(browser)
    with httpx.Client(base_url=edge.admin_url) as api:
        old = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert works(api, headers=old)  # the running server has read the current hash
        rotated = rotate(edge.db)
        rotated_at = time.monotonic()
        wait_for(lambda: not works(api, headers=old), timeout=1.5, interval=0.05, what="the old token to stop working")
        wait_for(lambda: not works(browser), timeout=1.5, interval=0.05, what="the old session to end")
        assert time.monotonic() - rotated_at < 1.5
        assert works(api, headers={"Authorization": f"Bearer {rotated}"})
    assert browser.get("/sources").status_code == 303  # the UI sends it to the login page


def test_a_logout_ends_the_session_even_where_its_cookie_was_copied(edge):
    browser = login(edge.admin_url)
    copy = httpx.Client(base_url=edge.admin_url, cookies={"se_session": browser.cookies["se_session"]})
    assert works(copy)
    assert browser.post("/logout", data={"csrf": csrf_of(browser)}).status_code == 303
    wait_for(lambda: not works(copy), timeout=1.5, interval=0.05, what="the copied session to end")
    assert works(login(edge.admin_url))  # logging in again gives a new session


def test_the_environment_token_only_seeds_the_first_one(edge_factory, tmp_path):
    first = edge_factory()
    rotated = rotate(first.db)
    first.stop()
    again = edge_factory(db=first.db)  # SIGNAL_ADMIN_TOKEN is still the first token
    with httpx.Client(base_url=again.admin_url) as api:
        assert not works(api, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert works(api, headers={"Authorization": f"Bearer {rotated}"})
    assert "SIGNAL_ADMIN_TOKEN is set but is not the admin token" in again.output()


def test_logins_are_throttled_per_client_and_audited(edge):
    with httpx.Client(base_url=edge.admin_url) as client:
        statuses = [client.post("/login", data={"token": f"sea_wrong_{i}"}).status_code for i in range(21)]
        assert statuses[:20] == [401] * 20 and statuses[20] == 429
        refused = client.post("/login", data={"token": "sea_wrong_again"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert "Too many failed logins" in refused.text
        api = client.get("/v1/admin/sources", headers={"Authorization": "Bearer sea_wrong_again"})
        assert api.status_code == 429 and api.json()["error"]["code"] == "too_many_failures"
        # The right token is never refused: a guesser on the same address cannot lock the admin out.
        assert client.get("/v1/admin/sources", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200
        assert client.post("/login", data={"token": ADMIN_TOKEN}).status_code == 303
    rows = sqlite3.connect(edge.db).execute(
        "SELECT action, CAST(new AS TEXT) FROM audit_log WHERE object_type='admin_session'").fetchall()
    assert [action for action, _ in rows].count("login_failed") == 20
    assert all('"client":"127.0.0.1"' in new for _, new in rows)
    assert not any("sea_" in new for _, new in rows)  # no token is ever audited


def test_login_and_logout_are_audited(edge):
    browser = login(edge.admin_url)
    browser.post("/logout", data={"csrf": csrf_of(browser)})
    with edge.admin() as admin:
        actions = [(a["action"], a["new"]["client"]) for a in admin.get("/audit-log").json()["data"]
                   if a["object_type"] == "admin_session"]
    assert actions[:2] == [("logout", "127.0.0.1"), ("login", "127.0.0.1")]


def test_the_admin_app_answers_only_the_host_names_it_is_configured_for(edge_factory):
    edge = edge_factory(env={"SIGNAL_ADMIN_HOSTS": "admin.example.com"})
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    url = edge.admin_url + "/v1/admin/sources"
    for host in ("localhost", f"localhost:{edge.admin_port}", "127.0.0.1", "admin.example.com:443"):
        assert httpx.get(url, headers={**auth, "Host": host}).status_code == 200, host
    rebound = httpx.get(url, headers={**auth, "Host": "attacker.example"})
    assert rebound.status_code == 421 and rebound.json()["error"]["code"] == "host_not_allowed"
    assert "SIGNAL_ADMIN_HOSTS" in rebound.json()["error"]["message"]
    assert httpx.get(edge.admin_url + "/", headers={"Host": "attacker.example"}).status_code == 421
    # Health checks come from load balancers under any name.
    assert httpx.get(edge.admin_url + "/healthz", headers={"Host": "10.0.0.5:8084"}).status_code == 200
