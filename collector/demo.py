"""`signal-edge demo`: a Pinterest sandbox, a demo source and integration pointed at it,
and a small shop page that loads the tag."""

from __future__ import annotations

import html
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from collector.admin.api import new_pipeline_key
from collector.edge.serving import STUB
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


def token_file(services: Services) -> Path:
    """Where the demo keeps its admin token, beside its key file (0600): a demo restarted with
    `make serve` keeps the token the browser logged in with."""
    return services.settings.key_file.with_suffix(".admin-token")


async def demo_admin_token(services: Services, rotate: bool) -> str:
    """The admin token the demo prints on every start: the kept one, unless it no longer works
    or `--rotate` asks for a new one."""
    path = token_file(services)
    kept = path.read_text().strip() if path.exists() else ""
    if services.new_admin_token:
        token = services.new_admin_token
    elif not rotate and kept and await services.auth.check(kept):
        return kept
    else:
        token = await services.auth.rotate()
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


def demo_setup(sandbox_port: int, shop_port: int, rotate: bool = False):
    async def setup(services: Services) -> list[Listener]:
        source = await ensure_demo_config(services)
        if not services.settings.admin_token:  # else the token is the operator's own
            services.new_admin_token = await demo_admin_token(services, rotate)
        sandbox = Sandbox(demo=True)  # the seed's example tokens (pina_ABC123..., ct_ABC123...) work
        sandbox.add_token(DEMO_ACCESS_TOKEN, scopes=("ads:read", "ads:write"))  # reads the Event Quality Score too
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
            lines.append(f"  admin token:        {services.new_admin_token}   (kept in {token_file(services)}; "
                         "`make serve DEMO_ARGS=--rotate` issues a new one)")
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
button{{font-size:1rem;padding:.5rem 1rem;margin:.25rem}}.card{{border:1px solid #ccc;border-radius:8px;padding:1rem}}
#state{{background:#f1f3f4;border-radius:8px;padding:.5rem 1rem}}#done{{color:#137333;font-weight:600}}</style>
{STUB}
<script async src="{edge}/d.js" data-pipeline-key="{key}"></script>
</head><body>
<h1>Demo shop</h1>
<p>Every click below goes to the edge, then to the <a href="http://localhost:{sandbox_port}/">Pinterest sandbox</a>.
Watch it in the <a href="http://localhost:{admin_port}/debugger">admin UI's debugger</a>.</p>
<p id="state" role="status"
aria-live="polite"><span id="who">Not logged in</span> · Cart: <span id="cart">0 items</span></p>
<div class="card"><h2>Widget</h2><p>$49.99</p>
<button id="view">View</button> <button id="add">Add to cart</button>
</div>
<p><button id="login">Log in as Jane</button> <button id="buy">Buy now</button></p>
<p id="done" role="status" aria-live="polite"></p>
<script>
var cart = 0;
function show() {{
  document.getElementById("cart").textContent = cart + (cart === 1 ? " item" : " items");
  document.getElementById("who").textContent =
    localStorage.getItem("demo-user") ? "Logged in as Jane" : "Not logged in";
}}
document.getElementById("view").onclick = function () {{
  _df.track("Product Viewed", {{product_id: "SKU-A", name: "Widget", price: 49.99, currency: "USD"}});
}};
document.getElementById("add").onclick = function () {{
  cart += 2; show();
  _df.track("Product Added", {{product_id: "SKU-A", name: "Widget", price: 49.99, quantity: 2, currency: "USD"}});
}};
document.getElementById("login").onclick = function () {{
  localStorage.setItem("demo-user", "user-123"); show();
  _df.identify("user-123", {{email: "jane.doe@example.com", phone: "+44 7700 900123"}});
}};
document.getElementById("buy").onclick = function () {{
  var order = "ORD-" + Date.now();
  _df.track("Order Completed", {{order_id: order, total: 129.99, currency: "USD", products: [
    {{product_id: "SKU-A", name: "Widget", price: 49.99, quantity: 2}},
    {{product_id: "SKU-B", name: "Gadget", price: 30.01, quantity: 1}}]}});
  cart = 0; show();
  document.getElementById("done").textContent = "Thank you! Order " + order + " is placed: find it in the debugger.";
}};
show();
</script>
</body></html>"""


def shop_app(edge_url: str, pipeline_key: str, sandbox_port: int, admin_port: int) -> Starlette:
    page = shop_page(edge_url, pipeline_key, sandbox_port, admin_port)

    async def index(request):
        return HTMLResponse(page)

    return Starlette(routes=[Route("/", index), Route("/{path:path}", index)])
