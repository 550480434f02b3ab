"""The files around a SQLite database: who may serve it (a lock file), who else has it open
(its -shm file's locks), their modes, and one-line answers for a file that cannot be used.
An in-memory database (`in_memory`) has none of these files: it is this process's alone."""

from __future__ import annotations

import ctypes
import fcntl
import os
import sqlite3

from delivery.store import StorageUnusable
from delivery.version import version

MEMORY = ":memory:"
BUSY_TIMEOUT_MS = 5000  # how long a transaction waits for a lock another process holds


def in_memory(path: str) -> bool:
    """SQLite's private in-memory database, or a URI that names one shared by this process's
    connections (`file:/name?vfs=memdb`, `file:name?mode=memory&cache=shared`)."""
    return path == MEMORY or (path.startswith("file:") and ("vfs=memdb" in path or "mode=memory" in path))


def lock_serving(path: str) -> int:
    """One serving process per file; returns the lock file's descriptor (closing it releases the
    lock). A second one would keep its own stale copy of the configuration and, at its start,
    release the first one's leases. The kernel drops the lock when the process dies, however it
    dies. The file names the holder: its pid and version (versions before 0.3 wrote the pid alone)."""
    lock = path + ".lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StorageUnusable(f"cannot create {lock}: {exc.strerror}; check that the directory is writable") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise StorageUnusable(
            f"{holder} already serves {path}: a SQLite file serves one process. Stop that one (to upgrade: stop it, "
            "back it up with `signal-edge backup`, then start the new version), or run several on PostgreSQL (set "
            "SIGNAL_DATABASE_URL)") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {version()}".encode())
    return fd


def in_use(path: str, current: int, target: int) -> str:
    """Why a schema change (from version `current` to `target`) is refused: another process (an
    older signal-edge, say) has the file open, and would go on reading and writing it in the old
    schema."""
    holder = "another process"
    try:
        fd = os.open(path + ".lock", os.O_RDONLY)
    except OSError:
        pass
    else:
        holder = _holder(fd) if _locked(fd) else holder
        os.close(fd)
    return (f"{path} is in schema version {current} and this signal-edge ({version()}) would change it to {target}, "
            f"but {holder} has it open and would go on using the old schema. Stop it first: stop, back up "
            "(`signal-edge backup`), upgrade, start")


def _holder(fd: int) -> str:
    """Who holds a lock file, from what it wrote: "signal-edge 0.3.0 (pid 42)"."""
    os.lseek(fd, 0, os.SEEK_SET)
    pid, _, held_by = os.read(fd, 64).decode(errors="replace").strip().partition(" ")
    return f"signal-edge {held_by or 'before 0.3'} (pid {pid or '?'})"


def _locked(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


class _Flock(ctypes.Structure):
    _fields_ = [("l_type", ctypes.c_short), ("l_whence", ctypes.c_short), ("l_start", ctypes.c_int64),
                ("l_len", ctypes.c_int64), ("l_pid", ctypes.c_int32)]


_WAL_DMS = 128  # the byte of the -shm file every open connection holds a shared lock on (SQLite's wal.c)


def open_elsewhere(path: str) -> bool:
    """Another process has the database open, whatever it is (an older signal-edge without the
    lock file, a backup, the sqlite3 shell): in WAL mode every connection holds a shared lock on
    one byte of the -shm file, and an exclusive lock on it is refused while one does. An OFD lock
    (owned by this descriptor, not the process): closing it releases no lock SQLite holds here."""
    try:
        fd = os.open(path + "-shm", os.O_RDWR)
    except OSError:
        return False  # no -shm file: nobody has it open in WAL mode
    try:
        probe = _Flock(fcntl.F_WRLCK, os.SEEK_SET, _WAL_DMS, 1, 0)
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, bytes(probe))
    except OSError:
        return True
    finally:
        os.close(fd)  # the probe's lock goes with it
    return False


def private_files(path: str) -> None:
    """The database and its WAL and shared-memory files readable by this user only. SQLite
    creates the -wal and -shm files with the database file's mode, so a new file is made 0600
    first; files left by an older version are tightened."""
    if path == MEMORY or path.startswith("file:"):
        return
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for name in (path, path + "-wal", path + "-shm"):
        try:
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)
        except FileNotFoundError:
            pass


def unusable(path: str, exc: sqlite3.Error) -> str:
    """One line that says why `path` cannot be used and what to do."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == 26:  # NOTADB
        return f"{path} is not a SQLite database (or it is encrypted or damaged); point --db at the right file"
    if code in (5, 6):  # BUSY, LOCKED
        return (f"{path} is locked by another process (a backup tool, or another signal-edge) for over "
                f"{BUSY_TIMEOUT_MS // 1000}s; stop it and start again")
    if code == 11:  # CORRUPT
        return f"{path} is damaged ({exc}); restore it from a backup"
    if code in (14, 8):  # CANTOPEN, READONLY
        return f"cannot open {path} for writing ({exc}); check that its directory exists and is writable"
    if code == 13:  # FULL
        return f"the disk that holds {path} is full; free some space and start again"
    return f"cannot use {path}: {exc}"
