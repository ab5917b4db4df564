"""REST API slices. Each module here exposes ``api`` (an :class:`~contact_center.http.api.Api`)
and optionally ``routes(app)`` for routes outside the API (a script, a CORS preflight);
:func:`install` picks every module up, so a new slice is one new file. Slices only register
routes: the services they use are built by the composition root (``contact_center.app``) and
read through the typed keys of ``contact_center.keys``."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from aiohttp import web

from contact_center.http.api import Api


def slices() -> list[ModuleType]:
    modules = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "common":
            continue
        modules.append(importlib.import_module(f"{__name__}.{info.name}"))
    return modules


def install(app: web.Application, api: Api) -> None:
    """Add every slice's operations to ``api`` and its other routes to ``app``."""
    for module in slices():
        module_api = getattr(module, "api", None)
        if isinstance(module_api, Api):
            api.operations.extend(module_api.operations)
        routes = getattr(module, "routes", None)
        if callable(routes):
            routes(app)
