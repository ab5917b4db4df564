"""The dependency rules of DESIGN.md, checked on the import graph."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DESIGN_CARD = ["contact_center", "ami", "channels", "routing", "recordings", "crm_core"]
NOT_SHIPPED = {"tests", "bench"}


def _discover() -> list[str]:
    """The project's top-level packages: every folder at the root with an ``__init__.py``."""
    return sorted(
        path.parent.name
        for path in ROOT.glob("*/__init__.py")
        if path.parent.name not in NOT_SHIPPED and not path.parent.name.startswith(".")
    )


PACKAGES = _discover()
# Everything but the composition root and the domain is an adapter at the edge.
ADAPTERS = [p for p in PACKAGES if p not in ("contact_center", "crm_core")]
TRANSPORTS = [
    "aiohttp",
    "panoramisk",
    "pywa",
    "aiosmtplib",
    "aioimaplib",
    "httpx",
    "nh3",
    "redis",
    "pydub",
]
# The HTTP slices: they register routes and read services through contact_center.keys.
SLICES = ["contact_center/api", "contact_center/http", "contact_center/web"]


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
    for package in DESIGN_CARD:
        assert package in PACKAGES, package
    assert (ROOT / "config.yaml").is_file()


def _service_installs(tree: ast.AST) -> list[str]:
    """What in a module builds or installs runtime state on the application: lifecycle hooks
    that start things, assignments to ``app[...]``, run-time ``app.get(...)`` lookups."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in (
            "cleanup_ctx",
            "on_startup",
            "on_cleanup",
        ):
            found.append(f"line {node.lineno}: {node.attr}")
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store):
            target = ast.unparse(node.value)
            if target == "app" or target.endswith(".app"):
                found.append(f"line {node.lineno}: {ast.unparse(node)} = ...")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and (
                ast.unparse(node.func.value) == "app"
                or ast.unparse(node.func.value).endswith(".app")
            )
        ):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setup"
        ):  # another module's set-up, run from here
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_http_slices_install_no_services() -> None:
    """Services are built by the composition root (contact_center/app.py) and handed on; a
    slice only registers routes and reads its service through a typed key."""
    offenders = {}
    for folder in SLICES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            if found := _service_installs(tree):
                offenders[str(path.relative_to(ROOT))] = found
    assert offenders == {}


def test_the_composition_root_is_the_only_builder_of_the_runtime() -> None:
    """Outside contact_center/app.py no module adds cleanup contexts or start-up hooks."""
    offenders = {}
    for path in sorted((ROOT / "contact_center").rglob("*.py")):
        if path.name == "app.py" and path.parent.name == "contact_center":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        hooks = [f for f in _service_installs(tree) if "cleanup_ctx" in f or "on_startup" in f]
        if hooks:
            offenders[str(path.relative_to(ROOT))] = hooks
    assert offenders == {}


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


# ---------------------------------------------------------------- import cycles


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in the file (an import inside a
    function is a dependency too: it merely hides a cycle until the call)."""

    def resolve(name: str) -> str | None:
        # ``from a.b import c``: the module a.b.c if there is one, else a.b (c is a name in it).
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        graph[module] = set()
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([base] if base else [])])
                names = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                target = resolve(name)
                if target is not None and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The import cycles: every strongly connected set of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_resolves_modules_and_names() -> None:
    graph = import_graph(module_files())
    assert "crm_core.clients.records" in graph["crm_core.clients.contacts"]  # a name in it
    assert "crm_core.clients.service" in graph["contact_center.api.clients"]  # a module
    assert "crm_core.access" in graph["crm_core.clients.records"]


@pytest.mark.parametrize("scope", ["crm_core", "the whole project"])
def test_no_import_cycles(scope: str) -> None:
    """Modules depend on each other one way: a cycle makes a module's meaning depend on
    import order and hides it behind function-level imports."""
    graph = import_graph(module_files())
    if scope == "crm_core":
        graph = {
            m: {t for t in targets if t.startswith("crm_core.")}
            for m, targets in graph.items()
            if m.startswith("crm_core.")
        }
    assert cycles(graph) == []
