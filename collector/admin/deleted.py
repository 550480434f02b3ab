"""What is kept of a deleted integration for its dead letters: the name they go under and its
source. Kept in the store's meta, which every node reads; written when it is deleted."""

from __future__ import annotations

import json
import time

from delivery.config import Integration


def _key(integration_id: str) -> str:
    return "deleted_integration:" + integration_id


async def remember(store, integ: Integration) -> None:
    await store.set_meta(_key(integ.id), json.dumps({"name": integ.name, "source_id": integ.source_id,
                                                     "deleted_at": time.time()}))


async def recall(store, integration_id: str) -> dict:
    """{name, source_id, deleted_at}, or {} for one deleted before this was kept."""
    raw = await store.get_meta(_key(integration_id))
    return json.loads(raw) if raw else {}
