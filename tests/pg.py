"""A throwaway PostgreSQL cluster for the tests: Debian's server binaries, `initdb` in a
temporary directory (as the `postgres` user when the tests run as root: PostgreSQL refuses
to run as root), listening on 127.0.0.1 on a free port. `make test` installs the package
when it is missing; a test never skips for want of it."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

import asyncpg

from tests.support import free_port


def bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL's server is not installed: run `make test` (it installs Debian's "
                           "postgresql), or `apt-get install -y postgresql`")
    return Path(found[-1]).parent


class PostgresServer:
    def __init__(self, core: str | None = None) -> None:
        self.core = core
        self.bin = bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="signal-edge-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            account = pwd.getpwnam("postgres")
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / tool), *args]
        if self.core is not None:  # the server and every backend it forks run on that core
            command = ["taskset", "-c", self.core, *command]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> "PostgresServer":
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=400 "
                   "-c shared_buffers=64MB")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "server.log"), "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = "t_" + uuid.uuid4().hex[:12]

        async def create() -> None:
            conn = await asyncpg.connect(self.url())
            try:
                await conn.execute(f"CREATE DATABASE {name}")
            finally:
                await conn.close()
        # A thread of its own: under Playwright's sync API this thread already runs an event loop.
        worker = threading.Thread(target=asyncio.run, args=(create(),))
        worker.start()
        worker.join(60)
        return self.url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
