"""The dependency rules of DESIGN.md, checked on the import graph."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["contact_center", "ami", "channels", "routing", "recordings", "crm_core"]
ADAPTERS = ["ami", "channels", "routing", "recordings"]
TRANSPORTS = ["aiohttp", "panoramisk", "pywa", "aiosmtplib", "redis", "pydub"]


def imported_top_levels(package: str) -> dict[str, set[str]]:
    """Module file -> top-level names it imports (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_every_package_of_the_design_card_exists() -> None:
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), package
    assert (ROOT / "config.yaml").is_file()


def test_crm_core_imports_no_other_package_and_no_transport() -> None:
    forbidden = (set(PACKAGES) - {"crm_core"}) | set(TRANSPORTS)
    offenders = {
        module: sorted(names & forbidden)
        for module, names in imported_top_levels("crm_core").items()
        if names & forbidden
    }
    assert offenders == {}


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapters_import_neither_each_other_nor_the_composition_root(adapter: str) -> None:
    forbidden = (set(ADAPTERS) - {adapter}) | {"contact_center"}
    offenders = {
        module: sorted(names & forbidden)
        for module, names in imported_top_levels(adapter).items()
        if names & forbidden
    }
    assert offenders == {}
