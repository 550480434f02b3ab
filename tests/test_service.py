"""Running signal-edge as a service: the systemd unit passes `systemd-analyze verify`, its stop
timeout is what the README computes, its env file names only real settings, and a generated
admin token goes to a 0600 file (never to the journal) when stdout is not a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from collector.settings import _ENV, Settings
from tests.support import ROOT, free_port, wait_for

DEPLOY = ROOT / "deploy"
INSTALLED = "/opt/signal-edge/bin/signal-edge"


def unit_settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.process
def test_the_unit_passes_systemd_analyze_verify(tmp_path):
    unit = tmp_path / "signal-edge.service"
    # verify checks that ExecStart's program exists: point it at this checkout's entry point
    program = Path(sys.executable).with_name("signal-edge")
    assert program.exists()
    unit.write_text((DEPLOY / "signal-edge.service").read_text().replace(INSTALLED, str(program)))
    verified = subprocess.run([shutil.which("systemd-analyze") or "systemd-analyze", "verify", str(unit)],
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr  # no unknown key either


def test_the_unit_is_hardened_and_waits_for_a_request_in_flight():
    unit = unit_settings((DEPLOY / "signal-edge.service").read_text())
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "StateDirectory": "signal-edge",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "UMask": "0077", "User": "signal-edge",
                       "KillSignal": "SIGTERM"}.items():
        assert unit[key] == [value], key
    assert unit["CapabilityBoundingSet"] == [""]
    assert unit["ExecStart"] == [f"{INSTALLED} serve"]
    defaults = Settings()
    assert unit["TimeoutStopSec"] == [f"{defaults.shutdown_grace + defaults.request_timeout + 1:.0f}"]
    # The README says the same: grace + request timeout + a second.
    readme = (ROOT / "README.md").read_text()
    assert f"({defaults.shutdown_grace + defaults.request_timeout + 1:.0f} s by default)" in readme


def test_the_env_file_names_only_real_settings():
    names = re.findall(r"^#?(SIGNAL_[A-Z_]+)=", (DEPLOY / "signal-edge.env").read_text(), re.M)
    assert names and set(names) <= set(_ENV), set(names) - set(_ENV)
    sysusers = (DEPLOY / "signal-edge.sysusers").read_text()
    assert re.search(r"^u signal-edge ", sysusers, re.M)


def serve(tmp_path: Path, stdout, **env) -> subprocess.Popen:
    port, admin_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector", "serve", "--port", str(port), "--admin-port", str(admin_port),
         "--db", str(tmp_path / "service.db")],
        cwd=ROOT, stdout=stdout, stderr=subprocess.STDOUT,
        env={"PATH": "/usr/bin:/bin", "SIGNAL_PINTEREST_API_BASE": "http://127.0.0.1:9", **env})
    proc.admin_port = admin_port
    return proc


@pytest.mark.process
def test_a_generated_admin_token_goes_to_a_private_file_when_stdout_is_no_terminal(tmp_path):
    out = tmp_path / "journal.txt"
    with open(out, "wb") as journal:
        proc = serve(tmp_path, journal)
        try:
            token_file = tmp_path / "service.admin-token"
            wait_for(lambda: "admin token: written to" in out.read_text(), timeout=20, what="the banner")
            token = token_file.read_text().strip()
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            assert token.startswith("sea_") and token not in out.read_text()
            answer = httpx.get(f"http://127.0.0.1:{proc.admin_port}/v1/admin/sources",
                               headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200
        finally:
            proc.terminate()
            proc.wait(30)
    assert str(token_file) in out.read_text() and token not in out.read_text()


@pytest.mark.process
def test_a_generated_admin_token_is_shown_once_at_a_terminal(tmp_path):
    master, slave = pty.openpty()
    proc = serve(tmp_path, slave)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 20
        while b"admin token" not in seen or b"\n" not in seen.split(b"admin token", 1)[1]:
            assert time.monotonic() < deadline, seen
            if select.select([master], [], [], 0.5)[0]:
                seen += os.read(master, 4096)
    finally:
        proc.terminate()
        proc.wait(30)
        os.close(master)
    assert re.search(rb"admin token \(shown once, only its hash is stored\): sea_\S+", seen)
    assert not (tmp_path / "service.admin-token").exists()
