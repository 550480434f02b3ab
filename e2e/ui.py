"""What the admin UI tests share: logging in, screenshots, and the checks every page must pass
(labelled controls, nothing cut off at phone width, axe-core)."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import expect

from e2e.conftest import ARTIFACTS
from tests.support import ADMIN_TOKEN, ROOT, create_integration, create_source, post_batch, stats, wait_for

SHOTS = ARTIFACTS / "ui"
AXE = Path(ROOT) / "node_modules" / "axe-core" / "axe.min.js"


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def with_a_dead_letter(edge, fake_pinterest, message_id: str) -> dict:
    """An integration whose one event Pinterest refused for good (a dead letter)."""
    with edge.admin() as api:
        source = create_source(api)
        integration = create_integration(api, source["id"])
        fake_pinterest.sandbox.state.failing_event_ids[message_id] = "event_time is invalid."
        post_batch(edge.url, source["pipeline_key"], [{"type": "track", "event": "Signed Up", "messageId": message_id}])
        wait_for(lambda: stats(api, integration["id"])["dead_lettered"] == 1, what="a dead letter")
    return integration


def login(page, admin_url: str, then: str = "/") -> None:
    page.goto(admin_url + then)
    expect(page).to_have_url(re.compile(r"/login"))
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    # The page's buttons work once its module scripts have run (before "load"): on a busy host a
    # click that came sooner was lost.
    page.wait_for_load_state("load")


def assert_every_control_is_labelled(page) -> None:
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
        .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.getAttribute('aria-labelledby')
                     && !(c.tagName === 'BUTTON' && c.textContent.trim()))
        .map(c => c.outerHTML.slice(0, 80))""")
    assert unlabelled == []


def assert_nothing_cut_off(page, width: int) -> None:
    """Nothing wider than the screen, no table that needs sideways scrolling, and no text
    squeezed to a character or two per line (shortened names carry their whole text in a title)."""
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    wide = page.evaluate("""() => [...document.querySelectorAll('.table')]
        .filter(t => t.scrollWidth > t.clientWidth + 1).map(t => t.querySelector('caption')?.textContent || 'a table')""")
    assert wide == [], f"tables wider than {width}px: {wide}"
    squeezed = page.evaluate("""() => [...document.querySelectorAll('main *')].filter(n => {
        const own = [...n.childNodes].filter(c => c.nodeType === 3).map(c => c.textContent.trim()).join('');
        if (own.length < 6 || n.closest('[title]') || n.offsetParent === null) return false;
        const box = n.getBoundingClientRect();
        return box.width > 0 && box.width < 40 && box.height > 60;
      }).map(n => n.outerHTML.slice(0, 80))""")
    assert squeezed == [], f"text wrapped a character or two per line: {squeezed}"


def assert_accessible(page) -> None:
    """axe-core (from the npm package) finds nothing serious or critical. The page's context
    must bypass CSP: the script is injected inline."""
    page.add_script_tag(path=str(AXE))
    violations = page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']})).violations
        .filter(v => v.impact === 'serious' || v.impact === 'critical')
        .map(v => `${v.id} (${v.impact}): ${v.help} -> ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')}`)""")
    assert violations == [], "\n".join(violations)
