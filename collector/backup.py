"""`signal-edge backup --to FILE`: an online, consistent copy of the SQLite database.

SQLite's backup API copies the database as one read transaction sees it (pages=-1: one step),
so the copy is consistent however busy the server is: in WAL mode a reader does not block the
server's commits, and the server does not restart the copy. The copy is written beside its
target as `<FILE>.partial`, created 0600, checked (`PRAGMA quick_check`), switched out of WAL
mode so that it is one self-contained file, and only then renamed to FILE. The key file is not
in it, on purpose: a backup of the database alone decrypts nothing.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

from collector.settings import Settings

BUSY_TIMEOUT_MS = 10_000
PROGRESS_EVERY = 2.0  # seconds between progress lines


class BackupError(Exception):
    pass


def backup(settings: Settings, target: Path) -> str:
    """Copy the database to `target`; returns what to tell the person. Raises BackupError."""
    if settings.database_url:
        raise BackupError("this deployment's database is PostgreSQL: back it up with pg_dump (pg_dump -Fc -f "
                          "signal.dump 'postgresql://...'), and the key file apart from it")
    source = Path(settings.db).expanduser()
    if not source.is_file():
        raise BackupError(f"{source} does not exist; give the database with --db or SIGNAL_DB")
    target = target.expanduser()
    if target.exists():
        raise BackupError(f"{target} already exists; choose another name (a backup never overwrites one)")
    partial = target.with_name(target.name + ".partial")
    try:
        os.close(os.open(partial, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600))
        os.chmod(partial, 0o600)
    except OSError as exc:
        raise BackupError(f"cannot write {partial}: {exc.strerror}; check that its directory exists and is "
                          "writable") from None
    started = time.monotonic()
    try:
        size = _copy(source, partial)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return (f"backed up {source} ({size / 2**20:.1f} MiB) to {target} (mode 0600) in "
            f"{time.monotonic() - started:.1f} s. The key file ({settings.key_file}) is not in it: back it up "
            "apart from the database, and restore both (README: Back up and restore)")


def _copy(source: Path, partial: Path) -> int:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    dst = sqlite3.connect(partial)
    done = threading.Event()
    total = source.stat().st_size + _size(source.with_name(source.name + "-wal"))
    reporter = threading.Thread(target=_progress, args=(partial, total, done), daemon=True)
    reporter.start()
    try:
        try:
            src.backup(dst)  # one step: one read transaction, a consistent copy
        except sqlite3.Error as exc:
            raise BackupError(f"cannot read {source}: {exc}") from None
        dst.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
        check = dst.execute("PRAGMA quick_check(1)").fetchone()[0]
        if check != "ok":
            raise BackupError(f"the copy failed its check ({check}); the database itself may be damaged: run "
                              f"`sqlite3 {source} 'PRAGMA integrity_check'`")
    finally:
        done.set()
        src.close()
        dst.close()
    return partial.stat().st_size


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _progress(partial: Path, total: int, done: threading.Event) -> None:
    """A line every few seconds while a large database is copied (the copy runs in one call)."""
    while not done.wait(PROGRESS_EVERY):
        print(f"  copied {_size(partial) / 2**20:.0f} of about {total / 2**20:.0f} MiB", file=sys.stderr, flush=True)
