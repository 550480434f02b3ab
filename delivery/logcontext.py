"""What a log line is about, beside its message: the request, integration and source it belongs
to. Kept in a context variable, so a task (an integration's delivery worker, a request) says it
once and every line logged under it carries it; `collector/logs.py` writes the fields."""

from __future__ import annotations

from contextvars import ContextVar

FIELDS = ("request_id", "integration", "source")
_context: ContextVar[dict[str, str] | None] = ContextVar("signal_edge_log_context", default=None)


def bind(**fields: str | None) -> None:
    """Add `fields` to the current task's log context (tasks it starts inherit them)."""
    current = _context.get() or {}
    _context.set({**current, **{k: v for k, v in fields.items() if v is not None}})


def current() -> dict[str, str]:
    return _context.get() or {}
