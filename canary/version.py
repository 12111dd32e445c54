"""The installed package's version (from its metadata, not a constant in the code)."""

from __future__ import annotations

from importlib import metadata

PACKAGE = "canary-operator"


def version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"
