"""This signal-edge's version, as installed (pyproject.toml's, through the package metadata)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version


def version() -> str:
    try:
        return _version("signal-edge")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "0+unknown"
