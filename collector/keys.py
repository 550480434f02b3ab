"""The secret key: where it lives, how it is checked, how it is rotated.

It encrypts the stored Pinterest tokens and signs the UI's session cookies, so it never sits
in the database it protects: a copy of the database (or of its backup) alone decrypts
nothing. `SIGNAL_SECRET_KEY` wins; otherwise the key is read from its own file, created 0600
on the first start. The database keeps only a fingerprint of the key (an HMAC, not the key),
so that a node started with the wrong key refuses to start instead of failing to decrypt.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from delivery.secrets import CHECK_META, SecretBox, fingerprint
from delivery.store import ConfigStore, StorageUnusable

LEGACY_META = "secret_key"  # where versions before 0.2 kept the key, in plaintext

log = logging.getLogger("signal_edge")


def read_key_file(path: Path) -> str | None:
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageUnusable(f"cannot read the secret key file {path}: {exc.strerror}") from None
    return key or None


def write_key_file(path: Path, key: str) -> None:
    """Write `key` to `path`, readable by this user only, all or nothing (a crash leaves the
    old file or the new one, never half of one)."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temporary, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
        _sync_directory(path.parent)
    except OSError as exc:
        raise StorageUnusable(f"cannot write the secret key file {path}: {exc.strerror}; check that its "
                              "directory exists and is writable, or set SIGNAL_SECRET_KEY") from None


def _sync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable: without it a crash may bring the old name back."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pending_key_file(path: Path) -> Path:
    """Where a rotation writes the new key before it re-seals anything."""
    return path.with_name(path.name + ".new")


async def load_secret_key(store: ConfigStore, configured: str | None, key_file: Path) -> str:
    """The key to use: SIGNAL_SECRET_KEY, else the key file (made on the first start). Moves a
    key that an older version kept in the database into the file. Raises StorageUnusable, in
    one line that says what to do, when the key is not the one the database was written with."""
    legacy = await store.get_meta(LEGACY_META)
    if legacy:
        if read_key_file(key_file) is None:
            write_key_file(key_file, legacy)
            log.warning("the secret key moved out of the database into %s (mode 0600); keep that file with "
                        "backups of the database, but not in the same place", key_file)
        await store.delete_meta(LEGACY_META)
    key: str | None
    if configured:
        key, where = configured, "SIGNAL_SECRET_KEY"
    else:
        key, where = read_key_file(key_file), str(key_file)
    stored = await store.get_meta(CHECK_META)
    if stored is None:
        if key is None:
            key = secrets.token_urlsafe(32)
            write_key_file(key_file, key)
            log.info("generated the secret key in %s (mode 0600); back it up apart from the database", key_file)
        # Nodes that start together on an empty database: the first key's fingerprint wins.
        stored = await store.init_meta(CHECK_META, fingerprint(key))
    if key is not None and hmac.compare_digest(fingerprint(key), stored):
        return key
    rotated = read_key_file(pending_key_file(key_file))
    if rotated is not None and hmac.compare_digest(fingerprint(rotated), stored):
        if configured:
            raise StorageUnusable("SIGNAL_SECRET_KEY holds the key from before the rotation: the stored tokens are "
                                  f"encrypted with the key in {pending_key_file(key_file)}; "
                                  "set SIGNAL_SECRET_KEY to it")
        os.replace(pending_key_file(key_file), key_file)  # a rotation stopped after re-encrypting: finish it
        _sync_directory(key_file.parent)
        log.warning("finished the secret key rotation that was interrupted: %s holds the new key", key_file)
        return rotated
    if key is None:
        raise StorageUnusable(f"no secret key: {key_file} does not exist, but this database's tokens were encrypted "
                              "with a key; restore that file from where you backed it up (with several nodes, "
                              "copy that file from another node), or set SIGNAL_SECRET_KEY to the key")
    raise StorageUnusable(f"the secret key from {where} is not the one this database was written with; use the "
                          f"key file from the first start (or the SIGNAL_SECRET_KEY used then)")


async def rotate_secret_key(store: ConfigStore, configured: bool, key_file: Path) -> Path:
    """A new key: every stored secret is encrypted again with it and the sessions end. The new
    key is written to a 0600 file and fsynced before anything is re-sealed, so no crash and no
    lost terminal can leave tokens that no written key opens. With a key file, that file then
    replaces it (load_secret_key finishes a rotation interrupted in between); with
    SIGNAL_SECRET_KEY, it stays for the operator to move into the variable. Returns where the
    new key is."""
    new = secrets.token_urlsafe(32)
    written = pending_key_file(key_file)
    write_key_file(written, new)
    count = await store.reseal(SecretBox(new), {CHECK_META: fingerprint(new)})
    if not configured:
        os.replace(written, key_file)
        _sync_directory(key_file.parent)
        written = key_file
    log.info("re-encrypted the tokens of %d integrations with the new secret key", count)
    return written
