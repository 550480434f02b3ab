"""Pinterest credentials that never silently expire (issue 20): an integration with an app and a
refresh token gets its access tokens itself, refreshes them before they expire and after a 401,
keeps each rotated refresh token durably, pauses with plain words when the refresh token is
refused, and resumes when connected again. No secret is ever shown, logged or stored in clear."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support import ADMIN_TOKEN, create_integration, create_source, post_batch, stats, wait_for

APP_ID, APP_SECRET = "1481234", "app-secret-ABCDEF0123456789"


def oauth_config(fake, **extra) -> dict:
    fake.sandbox.add_app(APP_ID, APP_SECRET)
    return {"ad_account_id": "549764982399", "app_id": APP_ID, "app_secret": APP_SECRET,
            "refresh_token": fake.sandbox.grant(APP_ID), **extra}


def oauth_integration(admin, source_id, fake, **extra) -> dict:
    body = {"source_id": source_id, "vendor": "pinterest", "name": "Pinterest (OAuth)", "enabled": True,
            "config": oauth_config(fake, **extra), "consent_categories": []}
    response = admin.post("/integrations", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def send(edge_url: str, key: str, ids: list[str]) -> int:
    """Signed Up events with these ids; the edge's status code."""
    return post_batch(edge_url, key, [{"type": "track", "event": "Signed Up", "messageId": i} for i in ids]).status_code


def short_lived(edge_factory, fake, token_seconds: float, flush: str):
    """An edge whose OAuth integration gets access tokens that live `token_seconds`:
    (edge, source, integration)."""
    fake.sandbox.state.access_token_seconds = token_seconds
    edge = edge_factory(env={"SIGNAL_FLUSH_INTERVAL": flush})
    with edge.admin() as admin:
        source = create_source(admin)
        return edge, source, oauth_integration(admin, source["id"], fake)


def delivered_ids(fake) -> set[str]:
    return {e["event_id"] for e in fake.sandbox.events(include_test=False)}


def refreshes(fake) -> int:
    return fake.sandbox.state.refreshes


def test_an_app_and_a_refresh_token_are_enough_to_deliver(edge, fake_pinterest):
    with edge.admin() as admin:
        source = create_source(admin)
        integration = oauth_integration(admin, source["id"], fake_pinterest)
        assert integration["config"]["connected"] is True and integration["config"]["access_token"] is None
        assert send(edge.url, source["pipeline_key"], ["oauth-1"]) == 200
        wait_for(lambda: "oauth-1" in delivered_ids(fake_pinterest), what="delivery with a minted access token")
        shown = admin.get(f"/integrations/{integration['id']}").json()
        assert shown["config"]["access_token"].startswith("pina_****")
        assert shown["config"]["token_refreshed_at"] and shown["config"]["access_token_expires_at"]
        assert refreshes(fake_pinterest) == 1
        minted = admin.post(f"/integrations/{integration['id']}/conversion-token").json()
        assert minted["config"]["conversion_token"].startswith("ct_****")
        audit = [a["action"] for a in admin.get("/audit-log").json()["data"]]
        assert "refresh" in audit and "mint-conversion-token" in audit


def test_five_second_tokens_over_thirty_seconds_of_steady_events(edge_factory, fake_pinterest):
    edge, source, integration = short_lived(edge_factory, fake_pinterest, 5, "0.2")
    sent, started = [], time.monotonic()
    while time.monotonic() - started < 30:
        batch = [f"steady-{len(sent) + i}" for i in range(5)]
        assert send(edge.url, source["pipeline_key"], batch) == 200
        sent += batch
        time.sleep(0.25)
    wait_for(lambda: set(sent) <= delivered_ids(fake_pinterest), timeout=20, what="every event")
    with edge.admin() as admin:
        counts = stats(admin, integration["id"])
    assert counts["dead_lettered"] == 0 and counts["delivered"] == len(sent)
    # A refresh at 80% of each 5 s token: about eight in 30 s, not one per request (120 requests).
    assert 5 <= refreshes(fake_pinterest) <= 12, refreshes(fake_pinterest)
    assert fake_pinterest.sandbox.state.refused_refreshes == 0


def test_a_kill_right_after_a_refresh_loses_nothing(edge_factory, fake_pinterest):
    edge, source, integration = short_lived(edge_factory, fake_pinterest, 3, "0.1")
    before = refreshes(fake_pinterest)
    assert send(edge.url, source["pipeline_key"], ["before-kill"]) == 200
    wait_for(lambda: refreshes(fake_pinterest) > before, what="a refresh")
    edge.kill()  # the rotated refresh token must be on disk: the old one is refused from now on
    time.sleep(3)  # the access token it held has run out meanwhile
    again = edge_factory(db=edge.db, env={"SIGNAL_FLUSH_INTERVAL": "0.1"})
    assert send(again.url, source["pipeline_key"], ["after-restart"]) == 200
    wait_for(lambda: {"before-kill", "after-restart"} <= delivered_ids(fake_pinterest), what="delivery after the restart")
    assert fake_pinterest.sandbox.state.refused_refreshes == 0
    with again.admin() as admin:
        assert admin.get(f"/integrations/{integration['id']}").json()["health"]["status"] == "healthy"


def test_a_refused_refresh_token_pauses_until_connected_again(edge, fake_pinterest):
    with edge.admin() as admin:
        source = create_source(admin)
        config = oauth_config(fake_pinterest)
        integration = create_integration(admin, source["id"], config={**config, "access_token": None,
                                                                        "conversion_token": None})
        fake_pinterest.sandbox.state.refresh_tokens.clear()  # Pinterest forgot it (revoked, expired)
        held = [f"held-{i}" for i in range(5)]
        assert send(edge.url, source["pipeline_key"], held) == 200

        def paused():
            health = admin.get(f"/integrations/{integration['id']}").json()["health"]
            return health if health["problem"] == "refresh_refused" else None
        health = wait_for(paused, what="the integration to pause")
        assert health["status"] == "unhealthy"
        assert health["message"].startswith("Pinterest no longer accepts this app's refresh token: connect again.")
        assert stats(admin, integration["id"])["queued"] == 5 and not delivered_ids(fake_pinterest)
        admin.patch(f"/integrations/{integration['id']}",
                    json={"config": {"refresh_token": fake_pinterest.sandbox.grant(APP_ID)}})
        wait_for(lambda: set(held) <= delivered_ids(fake_pinterest), what="the held events after reconnecting")


@pytest.mark.process
def test_two_nodes_refresh_an_integration_one_at_a_time(tmp_path, pg_url, fake_pinterest):
    from tests.support import SignalEdge

    fake_pinterest.sandbox.state.access_token_seconds = 4
    env = {"SIGNAL_DATABASE_URL": pg_url, "SIGNAL_SECRET_KEY_FILE": str(tmp_path / "k.key"), "SIGNAL_FLUSH_INTERVAL": "0.1"}
    nodes = [SignalEdge(tmp_path, fake_pinterest.url, env=env).start() for _ in range(2)]
    try:
        with nodes[0].admin() as admin:
            source = create_source(admin)
            oauth_integration(admin, source["id"], fake_pinterest)
        sent, started = [], time.monotonic()
        while time.monotonic() - started < 15:
            for node in nodes:
                event_id = f"two-{len(sent)}"
                assert send(node.url, source["pipeline_key"], [event_id]) == 200
                sent.append(event_id)
            time.sleep(0.2)
        wait_for(lambda: set(sent) <= delivered_ids(fake_pinterest), timeout=20, what="every event")
        # A second refresh with the same rotating token would have been refused.
        assert fake_pinterest.sandbox.state.refused_refreshes == 0
        assert refreshes(fake_pinterest) <= 15 / (4 * 0.8) + 3
    finally:
        for node in nodes:
            node.stop()


def test_no_secret_is_ever_shown_logged_or_stored_in_clear(edge, fake_pinterest):
    fake_pinterest.sandbox.state.access_token_seconds = 2
    with edge.admin() as admin:
        source = create_source(admin)
        integration = oauth_integration(admin, source["id"], fake_pinterest)
        first_refresh = fake_pinterest.sandbox.state.refresh_tokens.copy()
        for n in range(3):
            send(edge.url, source["pipeline_key"], [f"s-{n}"])
            time.sleep(1.8)
        wait_for(lambda: {"s-0", "s-1", "s-2"} <= delivered_ids(fake_pinterest), what="the events")
        admin.post(f"/integrations/{integration['id']}/conversion-token")
        shown = "".join(admin.get(path).text for path in (
            f"/integrations/{integration['id']}", "/integrations", "/audit-log", "/debugger/events?limit=100"))
        ui = httpx.Client(base_url=edge.admin_url)
        ui.post("/login", data={"token": ADMIN_TOKEN})
        shown += ui.get(f"/integrations/{integration['id']}").text
    secrets_issued = {APP_SECRET, *first_refresh, *fake_pinterest.sandbox.state.refresh_tokens,
                      *(t for t in fake_pinterest.sandbox.state.tokens if t.startswith(("pina_", "ct_")))}
    assert len(secrets_issued) > 4
    edge.stop()
    stored = b"".join(p.read_bytes() for p in edge.db.parent.glob(edge.db.name + "*"))
    log = edge.output()
    for secret in secrets_issued:
        assert secret not in shown and secret not in log and secret.encode() not in stored, secret[:8]
