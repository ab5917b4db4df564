"""The workspace's pages, declared in one place.

``setup(app)`` installs the template engine (Jinja2 through aiohttp-jinja2, autoescaping every
template), the static files and every page module in :data:`MODULES`. A module brings its
routes (``setup(app)``) and its menu entries (``MENU``); a later page (the inbox, robots,
reports, the CRM start) is one more module in this list.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from contact_center.web import (
    account,
    calls,
    cards,
    clients,
    deals,
    distribution,
    invoices,
    leads,
    plans,
    tasks,
    today,
    tracking,
    users,
)
from contact_center.web.shell import MENU_KEY, build_menu

STATIC = Path(__file__).parent / "static"

MODULES = (
    account,
    today,
    leads,
    deals,
    clients,
    tasks,
    calls,
    invoices,
    plans,
    distribution,
    tracking,
    users,
    cards,
)


def setup(app: web.Application) -> None:
    """Install the templates, the static files and every page of the workspace."""
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("contact_center.web", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["zip"] = zip
    app[MENU_KEY] = build_menu(MODULES)
    for module in MODULES:
        module.setup(app)
    app.router.add_static("/static/", STATIC, append_version=False)
