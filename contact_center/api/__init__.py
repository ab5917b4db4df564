"""REST API slices. Each module here exposes ``api`` (an :class:`~contact_center.http.api.Api`)
and optionally ``setup(app)``; :func:`install` picks every module up, so a new slice is one new
file."""

from __future__ import annotations

import importlib
import pkgutil

from aiohttp import web

from contact_center.http.api import Api


def slices() -> list[object]:
    modules = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "common":
            continue
        modules.append(importlib.import_module(f"{__name__}.{info.name}"))
    return modules


def install(app: web.Application, api: Api) -> None:
    """Add every slice's operations to ``api`` and run its ``setup(app)``."""
    for module in slices():
        module_api = getattr(module, "api", None)
        if isinstance(module_api, Api):
            api.operations.extend(module_api.operations)
        setup = getattr(module, "setup", None)
        if callable(setup):
            setup(app)
