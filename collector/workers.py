"""`signal-edge serve --workers N`: N processes serving the same ports, so one machine uses
all its cores (PostgreSQL only: they share one database).

The parent prepares the database first (migrations, the secret key, the admin token, printed
once), then starts N ordinary `serve` processes whose sockets share each port
(SO_REUSEPORT: the kernel spreads the connections). It restarts a process that dies, and
passes SIGINT/SIGTERM on to all of them, each then flushing as a single server does.

A parent that dies without passing anything on (SIGKILL, a crash) takes its processes with
it: on Linux the kernel sends each one SIGTERM (PR_SET_PDEATHSIG), and every process also
watches its parent's pid (`watch_parent`), so each flushes and stops as on a SIGTERM.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time

from collector.loop import run_on_loop
from collector.parent import PARENT_ENV
from collector.runtime import _banner, show
from collector.settings import Settings

log = logging.getLogger("signal_edge")
STARTUP = 10.0  # a process that exits sooner than this after its start failed to start: stop all
PR_SET_PDEATHSIG = 1


def serve_workers(settings: Settings, argv: list[str]) -> int:
    services = run_on_loop(_prepare(settings))
    show(_banner(services, settings.workers), services)
    command = [sys.executable, "-m", "collector", *_without_workers(argv), "--reuse-port"]
    stopping = False

    def stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    env = {**os.environ, PARENT_ENV: str(os.getpid())}

    def start() -> subprocess.Popen:
        return subprocess.Popen(command, env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    procs = [start() for _ in range(settings.workers)]
    started = [time.monotonic()] * len(procs)
    while not stopping:
        time.sleep(0.2)
        for i, proc in enumerate(procs):
            if proc.poll() is None or stopping:
                continue
            if time.monotonic() - started[i] < STARTUP:
                log.error("a worker process exited at start (code %s); stopping the others", proc.returncode)
                stop(None, None)
                break
            log.warning("worker process %d exited (code %s); starting another", proc.pid, proc.returncode)
            procs[i], started[i] = start(), time.monotonic()
    codes = [proc.wait() for proc in procs]
    return max(codes) if any(codes) else 0


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux keeps it across exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


async def _prepare(settings: Settings):
    """Migrate, check the secret key and make sure an admin token exists, once for all
    processes; returns what the banner shows."""
    from collector.admin.auth import AdminAuth
    from collector.keys import load_secret_key
    from collector.services import close_database, node_id, open_backend

    db, store, _ = await open_backend(settings, node_id(), serving=False)
    try:
        secret_key = await load_secret_key(store, settings.secret_key, settings.key_file)
        token = await AdminAuth(store, secret_key).ensure(settings.admin_token)
    finally:
        await close_database(db)
    return _Prepared(settings, token)


class _Prepared:
    """Enough of Services for the banner."""

    def __init__(self, settings: Settings, token: str | None) -> None:
        self.settings, self.new_admin_token = settings, token


def _without_workers(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out
