"""The edge's ASGI app alone, for serving by any ASGI server (bench/servers.py): its services on
a fresh SQLite file (SIGNAL_DB), opened by the lifespan, with the benchmark's source (key
`dk_bench`, domain shop.example, no rate limits) and one integration. Delivery is not started:
what the edge takes stays queued, so that only ingestion is measured.

    granian --interface asgi --working-dir bench edge_app:app
    uvicorn --app-dir bench edge_app:app --lifespan on
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collector.edge.app import create_edge_app  # noqa: E402
from collector.services import open_services  # noqa: E402
from collector.settings import load_settings  # noqa: E402
from delivery.config import Integration, PinterestConfig, Source  # noqa: E402

KEY = "dk_bench"
_edge = None


async def open_edge(db: str):
    """(services, the edge app) on the SQLite file `db`, with the benchmark's source and integration."""
    settings = load_settings({"db": db}, environ={"SIGNAL_ADMIN_TOKEN": "sea_bench_admin_token_0123456789abcdef"})
    services = await open_services(settings)
    source = Source(id="src_bench", name="bench", pipeline_key=KEY, created_at=0, updated_at=0,
                    domain="shop.example", rate_limit_per_second=1e9, rate_limit_burst=10**9,
                    client_rate_limit_per_second=1e9, client_rate_limit_burst=10**9)
    await services.store.put_source(source, None)
    await services.store.put_integration(Integration(
        id="int_bench", source_id=source.id, name="P", created_at=0, updated_at=0,
        config=PinterestConfig("549764982399", "pina_bench", "ct_bench")), None)
    return services, create_edge_app(services)


async def app(scope, receive, send) -> None:
    global _edge
    if scope["type"] != "lifespan":
        await _edge[1](scope, receive, send)
        return
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _edge = await open_edge(os.environ["SIGNAL_DB"])
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await _edge[0].close()
            await send({"type": "lifespan.shutdown.complete"})
            return
