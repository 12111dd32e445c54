"""The one-way layering of docs/design.md, checked on the source: the pure core (the engine,
the types, the models, the ledger, durations and command parsing) imports nothing that does
I/O: no adapter, router, reconciler, operator or CLI module, and no HTTP, Kubernetes, kopf,
asyncio, clock or environment library. scripts/test.sh runs it before the other tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "canary"

PURE = ("canary.engine", "canary.types", "canary.models", "canary.ledger", "canary.duration", "canary.commands",
        "canary.text", "canary.judge")
"""Modules (and packages) of the pure core: they may import each other and nothing else of canary."""

FORBIDDEN = {
    "httpx", "kopf", "kubernetes", "urllib3", "requests", "aiohttp", "prometheus_api_client", "prometheus_client",
    "tenacity", "asyncio", "socket", "subprocess", "threading", "time", "os", "urllib", "http", "yaml", "random",
}
"""Third-party and standard libraries the pure core must not import (I/O, clocks, environment)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_pure(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in PURE)


def imports(source: str, module: str, is_package: bool) -> list[str]:
    """Every module a source imports (relative imports resolved), TYPE_CHECKING ones included."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base)
                name = f"{prefix}.{node.module}" if node.module else prefix
            else:
                name = node.module or ""
            out.append(name)
            # `from canary import ledger` imports canary.ledger
            out.extend(f"{name}.{alias.name}" for alias in node.names if name == "canary")
    return out


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    found = []
    for name in imports(source, module, is_package):
        top = name.split(".")[0]
        if top == "canary":
            if name != "canary" and not is_pure(name):
                found.append(f"{module} imports {name}, which is not in the pure core")
        elif top in FORBIDDEN:
            found.append(f"{module} imports {name}")
    return found


def pure_files() -> list[Path]:
    files = [p for p in PACKAGE.rglob("*.py") if is_pure(module_name(p))]
    assert len(files) >= 10, files  # the engine package and the modules above
    return sorted(files)


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_pure_core_imports_no_io(path):
    assert violations(path.read_text(), module_name(path), path.name == "__init__.py") == []


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("import httpx", True),
        ("from kubernetes import client", True),
        ("import asyncio", True),
        ("from canary.adapters import prometheus", True),
        ("from canary import reconciler", True),
        ("from ..routers import base", True),  # relative, from canary.engine.x
        ("from canary.cli.views import View", True),
        ("if TYPE_CHECKING:\n    from canary.adapters.kube import Kube", True),
        ("from canary import ledger\nfrom canary.models import Canary\nfrom .tick import Tick", False),
        ("import json, math, hashlib\nfrom datetime import datetime", False),
    ],
)
def test_the_checker_catches_what_it_should(source, bad):
    assert bool(violations(source, "canary.engine.example")) is bad
