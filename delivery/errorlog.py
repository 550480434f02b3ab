"""Failures in the log: one line each, the traceback once per distinct error per minute.

A flood of bad requests or a storage fault that lasts must not write thousands of
tracebacks; a person reading the log still needs one of each to find the bug. A storage
fault (StorageError) is the environment's, not a bug: its line says all there is, and it
never gets a traceback.
"""

from __future__ import annotations

import logging
import secrets
import time
import traceback

from delivery.store import StorageError

TRACEBACK_EVERY = 60.0  # seconds between tracebacks of the same error
_MAX_KEYS = 1024


def failure_id() -> str:
    """A short id that the log line and the error answer share."""
    return secrets.token_hex(4)


class ErrorLog:
    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._last: dict[tuple, float] = {}

    def failure(self, message: str, exc: BaseException, level: int = logging.ERROR) -> None:
        """Log `message` and the error in one line; add the traceback when this error (its type
        and where it was raised) has not had one in the last minute."""
        line = f"{message}: {type(exc).__name__}: {exc}"
        if isinstance(exc, StorageError):
            self.logger.log(level, line)
            return
        key = _where(exc)
        now = time.monotonic()
        if now - self._last.get(key, -TRACEBACK_EVERY) >= TRACEBACK_EVERY:
            if len(self._last) >= _MAX_KEYS:
                self._last.clear()
            self._last[key] = now
            self.logger.log(level, line, exc_info=exc)
        else:
            self.logger.log(level, "%s (traceback shown at most once a minute; more at debug level)", line)
            self.logger.debug("traceback", exc_info=exc)


def _where(exc: BaseException) -> tuple:
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return type(exc), last.filename if last else None, last.lineno if last else None


def describe(exc: BaseException) -> str:
    """The error in a few words, for a record or a dead letter."""
    return f"{type(exc).__name__}: {str(exc)[:200]}"
