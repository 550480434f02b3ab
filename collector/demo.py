"""`signal-edge demo`: a Pinterest sandbox, a demo source and integration pointed at it,
and a small shop page that loads the tag."""

from __future__ import annotations

import html
import time

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from collector.admin.api import new_pipeline_key
from collector.runtime import Listener
from collector.services import Services
from delivery.config import Integration, PinterestConfig, Source
from delivery.pinterest.sandbox import Sandbox

DEMO_SOURCE = "src_demo"
DEMO_INTEGRATION = "int_demo"
DEMO_AD_ACCOUNT = "549764982399"
DEMO_ACCESS_TOKEN = "pina_DEMO_SANDBOX_ACCESS_TOKEN_0001"
DEMO_CONVERSION_TOKEN = "ct_DEMO_SANDBOX_CONVERSION_TOKEN_0001"


async def ensure_demo_config(services: Services) -> Source:
    store = services.store
    now = time.time()
    source = store.source(DEMO_SOURCE)
    if source is None:
        source = Source(id=DEMO_SOURCE, name="Demo shop", pipeline_key=new_pipeline_key(), created_at=now,
                        updated_at=now, default_country="US")
        await store.put_source(source, "create")
    if store.integration(DEMO_INTEGRATION) is None:
        integration = Integration(
            id=DEMO_INTEGRATION, source_id=DEMO_SOURCE, name="Pinterest Conversions API (sandbox)", created_at=now,
            updated_at=now, variant="retail", consent_categories=["advertising"],
            config=PinterestConfig(DEMO_AD_ACCOUNT, DEMO_ACCESS_TOKEN, DEMO_CONVERSION_TOKEN),
        )
        await store.put_integration(integration, "create")
    return source


def demo_setup(sandbox_port: int, shop_port: int):
    async def setup(services: Services) -> list[Listener]:
        source = await ensure_demo_config(services)
        if not services.new_admin_token and not services.settings.admin_token:
            # The demo prints a usable admin token on every start.
            services.new_admin_token = await services.auth.rotate()
        sandbox = Sandbox()
        sandbox.add_token(DEMO_ACCESS_TOKEN)
        sandbox.add_token(DEMO_CONVERSION_TOKEN)
        shop = shop_app(services.settings.edge_url, source.pipeline_key, sandbox_port,
                        services.settings.admin_port)
        return [
            Listener("Pinterest sandbox", sandbox, "127.0.0.1", sandbox_port, after_delivery=True),
            Listener("demo shop", shop, "127.0.0.1", shop_port, after_delivery=True),
        ]

    return setup


def demo_banner(shop_port: int, sandbox_port: int):
    def banner(services: Services) -> str:
        s = services.settings
        lines = [
            "signal-edge demo is running",
            f"  demo shop:          http://localhost:{shop_port}/?epik=dj0yJnU9ZGVtbyZwPTE",
            f"  admin UI:           http://localhost:{s.admin_port}/",
            f"  Pinterest sandbox:  http://localhost:{sandbox_port}/  (what Pinterest received)",
            f"  edge:               {s.edge_url}",
        ]
        if services.new_admin_token:
            lines.append(f"  admin token:        {services.new_admin_token}")
        lines.append("Press Ctrl+C to stop.")
        return "\n".join(lines)

    return banner


def shop_page(edge_url: str, pipeline_key: str, sandbox_port: int, admin_port: int) -> str:
    edge = html.escape(edge_url)
    key = html.escape(pipeline_key)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Demo shop</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}}
button{{font-size:1rem;padding:.5rem 1rem;margin:.25rem}}.card{{border:1px solid #ccc;border-radius:8px;padding:1rem}}</style>
<script>!function(w,n){{var d=w[n]=w[n]||[];"page track identify group consent reset flush".split(" ").forEach(function(m){{d[m]=d[m]||function(){{d.push([m,[].slice.call(arguments)])}}}})}}(window,"_df")</script>
<script async src="{edge}/d.js" data-pipeline-key="{key}"></script>
</head><body>
<h1>Demo shop</h1>
<p>Every click below goes to the edge, then to the <a href="http://localhost:{sandbox_port}/">Pinterest sandbox</a>.
Watch it in the <a href="http://localhost:{admin_port}/">admin UI</a> debugger.</p>
<div class="card"><h2>Widget</h2><p>$49.99</p>
<button id="view" onclick="_df.track('Product Viewed',{{product_id:'SKU-A',name:'Widget',price:49.99,currency:'USD'}})">View</button>
<button id="add" onclick="_df.track('Product Added',{{product_id:'SKU-A',name:'Widget',price:49.99,quantity:2,currency:'USD'}})">Add to cart</button>
</div>
<p><button id="login" onclick="_df.identify('user-123',{{email:'jane.doe@example.com',phone:'+44 7700 900123'}})">Log in as Jane</button>
<button id="buy" onclick="_df.track('Order Completed',{{order_id:'ORD-'+Date.now(),total:129.99,currency:'USD',products:[{{product_id:'SKU-A',name:'Widget',price:49.99,quantity:2}},{{product_id:'SKU-B',name:'Gadget',price:30.01,quantity:1}}]}})">Buy now</button></p>
</body></html>"""


def shop_app(edge_url: str, pipeline_key: str, sandbox_port: int, admin_port: int) -> Starlette:
    page = shop_page(edge_url, pipeline_key, sandbox_port, admin_port)

    async def index(request):
        return HTMLResponse(page)

    return Starlette(routes=[Route("/", index), Route("/{path:path}", index)])
