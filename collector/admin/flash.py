"""One-time notices for a UI session ("Connected", "Pinterest did not connect: ..."), kept in
the config store, never in the address: a page shows only what this server said to this
session, so a link cannot make an admin page show made-up text or a made-up success."""

from __future__ import annotations

import json
import time

SECONDS = 600  # a notice not shown within this long is dropped


def _key(session_key: str) -> str:
    return "flash:" + session_key


async def leave(store, session_key: str, kind: str, message: str) -> None:
    """`kind`: "ok" or "error"."""
    await store.set_meta(_key(session_key), json.dumps({"kind": kind, "message": message,
                                                       "expires_at": time.time() + SECONDS}))


async def take(store, session_key: str) -> tuple[str, str] | None:
    """The session's notice, once."""
    raw = await store.get_meta(_key(session_key))
    if raw is None:
        return None
    await store.delete_meta(_key(session_key))
    notice = json.loads(raw)
    return (notice["kind"], notice["message"]) if notice["expires_at"] > time.time() else None
