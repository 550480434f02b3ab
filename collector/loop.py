"""The event loop every command runs on."""

from __future__ import annotations

import asyncio


def run_on_loop(coro) -> int:
    """Run on uvloop when it is installed (uvicorn[standard] brings it), else asyncio's loop."""
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)
