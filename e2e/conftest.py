from __future__ import annotations

from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.conftest import edge, edge_factory, fake_pinterest, pg_url, postgres, shop  # noqa: F401  (shared fixtures)
from tests.support import ServerThread

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# A desktop Chrome User-Agent: the edge forwards whatever the browser sends.
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {**browser_type_launch_args, "executable_path": "/usr/bin/chromium", "headless": True,
            "args": ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run",
                     # www.shop.test (the site), data.shop.test (the edge), admin.shop.test and, on
                     # other sites, www.pinterest.test (a sign-in page) and data.other.test (an edge)
                     # are this machine
                     "--host-resolver-rules=MAP *.shop.test 127.0.0.1,MAP *.pinterest.test 127.0.0.1,"
                     "MAP *.other.test 127.0.0.1"]}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "user_agent": USER_AGENT}


class Site(ServerThread):
    """A site on its own loopback port, whose pages load the tag from the edge."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}

        async def serve(request):
            return HTMLResponse(self.pages.get(request.url.path, "<!doctype html><title>404</title>"))

        super().__init__(Starlette(routes=[Route("/{path:path}", serve)]))

    def page(self, path: str, body: str, edge_url: str, pipeline_key: str, head: str = "", **attrs) -> str:
        extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
        self.pages[path] = (
            f"<!doctype html><html><head><meta charset=utf-8><title>{path}</title>{head}"
            f'<script async src="{edge_url}/d.js" data-pipeline-key="{pipeline_key}"{extra}></script>'
            f"</head><body>{body}</body></html>"
        )
        return self.url + path


STUB = ('<script>!function(w,n){var d=w[n]=w[n]||[];"page track identify group consent reset flush"'
        '.split(" ").forEach(function(m){d[m]=d[m]||function(){d.push([m,[].slice.call(arguments)])}})}'
        '(window,"_df")</script>')


@pytest.fixture
def site():
    server = Site().start()
    yield server
    server.stop()
