"""Caddyfile.cluster with real Caddy in front of two real nodes on one PostgreSQL (issue 17):
its reverse_proxy block, as the README ships it, with the addresses of this machine and
`tls internal` in place of the public name. A node that dies is left out, and events keep
being accepted through the other."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections import Counter

import httpx
import pytest

from tests.support import ROOT, SignalEdge, create_integration, create_source, free_port, post_batch, wait_for

pytestmark = pytest.mark.skipif(shutil.which("caddy") is None, reason="caddy is installed by `make test`")
GLOBALS = "{\n\tadmin off\n\tskip_install_trust\n\tauto_https disable_redirects\n\tstorage file_system {$CADDY_STORAGE}\n}\n"


def caddyfile(port: int, upstreams: list[int]) -> str:
    text = (ROOT / "Caddyfile.cluster").read_text()
    text = text[text.index("data.example.com {"):]  # the site block as shipped; the globals are the test's
    text = text.replace("data.example.com {", f"https://[::1]:{port} {{\n\ttls internal", 1)
    return GLOBALS + text.replace("10.0.0.11:8080 10.0.0.12:8080", " ".join(f"127.0.0.1:{p}" for p in upstreams))


def test_two_nodes_behind_caddy_survive_one_dying(tmp_path, pg_url, fake_pinterest):
    env = {"SIGNAL_DATABASE_URL": pg_url, "SIGNAL_SECRET_KEY_FILE": str(tmp_path / "cluster.key"),
           "SIGNAL_FLUSH_INTERVAL": "0.1"}
    nodes = [SignalEdge(tmp_path, fake_pinterest.url, env=env).start() for _ in range(2)]
    port = free_port()
    config = tmp_path / "Caddyfile"
    config.write_text(caddyfile(port, [node.port for node in nodes]))
    caddy_env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
                 "XDG_CONFIG_HOME": str(tmp_path / "config"), "CADDY_STORAGE": str(tmp_path / "caddy")}
    log = open(tmp_path / "caddy.log", "wb")
    caddy = subprocess.Popen(["caddy", "run", "--config", str(config), "--adapter", "caddyfile"], env=caddy_env,
                             stdout=log, stderr=subprocess.STDOUT)
    front = f"https://[::1]:{port}"
    try:
        wait_for(lambda: httpx.get(front + "/healthz", verify=False).status_code == 200, timeout=30,
                 what="Caddy in front of the nodes")
        with nodes[0].admin() as admin:
            source = create_source(admin)
            integration = create_integration(admin, source["id"])
        client = httpx.Client(verify=False, timeout=10)

        def send(n: int) -> int:
            return post_batch(front, source["pipeline_key"], [{"type": "track", "event": "Signed Up",
                                                              "messageId": f"c-{n}"}], client).status_code

        statuses = Counter(send(n) for n in range(20))
        assert statuses == {200: 20}
        nodes[1].kill()
        killed = time.monotonic()
        answers = []
        while time.monotonic() - killed < 6:
            answers.append((time.monotonic() - killed, send(1000 + len(answers))))
            time.sleep(0.05)
        # Caddy's checks take the dead node out within seconds; from then on, every event is taken.
        assert all(status == 200 for at, status in answers if at > 3), answers
        accepted = [f"c-{n}" for n in range(20)] + [f"c-{1000 + i}" for i, (_, s) in enumerate(answers) if s == 200]
        wait_for(lambda: set(accepted) <= {e["event_id"] for e in fake_pinterest.sandbox.events()}, timeout=40,
                 what="every accepted event, including those the dead node took")
        with nodes[0].admin() as admin:  # the dead node's batch counts once its lease has run out (20 s)
            wait_for(lambda: admin.get(f"/integrations/{integration['id']}").json()["delivery"]["delivered"]
                     >= len(accepted), timeout=40, what="the accounting")
    finally:
        caddy.terminate()
        caddy.wait(10)
        log.close()
        for node in nodes:
            node.stop()
