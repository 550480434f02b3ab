"""The admin UI's pages: Jinja2 templates (templates/, package data), autoescaped, on one base
layout. Pages are rendered from view models (views.py), never from strings pasted together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NAV = (("/integrations", "Integrations"), ("/sources", "Sources"), ("/debugger", "Debugger"), ("/alerts", "Alerts"),
       ("/erasure", "Erasure"))
DIRECTORY = Path(__file__).resolve().parent / "templates"

# Every page autoescapes (not only *.html), a misspelt name fails instead of rendering empty, and
# the templates are read once, at start: no file is read on the event loop while serving.
_env = jinja2.Environment(loader=jinja2.FileSystemLoader(DIRECTORY), autoescape=True, auto_reload=False,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
templates = Jinja2Templates(env=_env)
for _name in _env.list_templates():
    _env.get_template(_name)


def render(request: Request, template: str, title: str, csrf: str | None, *, active: str = "",
           script: str | None = None, notice: tuple[str, str] | None = None, status: int = 200,
           page: dict[str, str] | None = None, **context: Any) -> Response:
    """A page of the admin UI. `csrf` is None on pages for logged-out visitors (no navigation);
    `notice` is what the server has to tell this session once (flash.py), as (kind, message);
    `page` is what the page's script reads from <main data-hook="page"> (data-* attributes)."""
    return templates.TemplateResponse(request, template, {
        "title": title, "csrf": csrf, "nav": NAV if csrf is not None else (), "active": active, "script": script,
        "notice": notice, "page": {f"data-{k}": v for k, v in (page or {}).items()}, **context,
    }, status_code=status, headers=SECURITY_HEADERS)
