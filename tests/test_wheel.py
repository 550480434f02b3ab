"""The package (issue 27): the wheel built from this checkout installs into a fresh venv and runs
there with no checkout in sight: `signal-edge --version`, `serve` with its tag, admin UI assets,
Pinterest schema and migrations, and one event end to end."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile

import httpx
import pytest

from tests.support import (
    ADMIN_TOKEN,
    ROOT,
    FakePinterest,
    create_integration,
    create_source,
    free_port,
    post_batch,
    wait_for,
)


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


@pytest.mark.process
@pytest.mark.slow
def test_the_wheel_installs_and_serves_without_the_checkout(tmp_path):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path / "dist"), str(ROOT))
    [wheel] = (tmp_path / "dist").glob("signal_edge-*.whl")
    assert wheel.name.startswith(f"signal_edge-{version}-")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("collector/static/datafly.js", "collector/static/admin/admin.css", "collector/static/admin/alerts.js",
                   "collector/admin/templates/base.html", "collector/admin/templates/integration.html",
                   "delivery/pinterest/schema/conversion-events.schema.json", "delivery/sqlite/migrations.py",
                   "delivery/postgres/migrations.py"):
        assert needed in names, needed

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    run(str(venv / "bin" / "pip"), "install", "--quiet", str(wheel))
    elsewhere = tmp_path / "srv"  # no checkout on the path: not the cwd, not PYTHONPATH
    elsewhere.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin"}
    assert run("signal-edge", "--version", cwd=elsewhere, env=env).stdout.strip() == f"signal-edge {version}"
    where = run(str(venv / "bin" / "python"), "-c", "import collector; print(collector.__file__)", cwd=elsewhere,
                env=env).stdout
    assert where.startswith(str(venv)) and str(ROOT) not in where

    fake = FakePinterest().start()
    port, admin_port = free_port(), free_port()
    log = open(tmp_path / "serve.log", "wb")
    serve = subprocess.Popen(["signal-edge", "serve", "--port", str(port), "--admin-port", str(admin_port)],
                             cwd=elsewhere, stdout=log, stderr=subprocess.STDOUT,
                             env={**env, "SIGNAL_ADMIN_TOKEN": ADMIN_TOKEN, "SIGNAL_PINTEREST_API_BASE": fake.url,
                                  "SIGNAL_FLUSH_INTERVAL": "0.2"})
    edge, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}"
    try:
        wait_for(lambda: httpx.get(edge + "/healthz").status_code == 200, 30, what="the installed server")
        tag = httpx.get(edge + "/d.js")
        assert tag.status_code == 200 and "pipeline-key" in tag.text
        assert httpx.get(admin_url + "/static/admin/admin.css").status_code == 200
        assert "Admin token" in httpx.get(admin_url + "/login").text
        with httpx.Client(base_url=admin_url + "/v1/admin", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
            source = create_source(admin)
            create_integration(admin, source["id"])
        answer = post_batch(edge, source["pipeline_key"], [{"type": "track", "event": "Signed Up",
                                                            "properties": {"email": "jane@example.com"}}])
        assert answer.status_code == 200
        event = wait_for(lambda: fake.sandbox.events(), 30, what="the event at Pinterest")[0]
        assert event["event_name"] == "signup"
    finally:
        serve.terminate()
        serve.wait(30)
        log.close()
        fake.stop()
    assert (elsewhere / "signal-edge.db").exists()  # the default database, where it was started
    assert "Traceback" not in (tmp_path / "serve.log").read_text()
