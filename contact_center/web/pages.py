"""The workspace's pages, declared in one place.

``routes(app)`` adds the static files and every page module in :data:`MODULES`; the
composition root installs the template engine (with ``TEMPLATES``) and the menu
(:func:`menu`). A module brings its routes (``routes(app)``) and its menu entries (``MENU``);
a later page (the inbox, robots, reports, the CRM start) is one more module in this list.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from contact_center.web import (
    account,
    calls,
    cards,
    clients,
    deal_card,
    deals,
    distribution,
    inbox,
    invoices,
    kanban,
    leads,
    notifications,
    plans,
    tasks,
    today,
    tracking,
    users,
)
from contact_center.web.shell import MenuEntry, build_menu

STATIC = Path(__file__).parent / "static"
TEMPLATES = ("contact_center.web", "templates")  # the package and folder of the templates

MODULES = (
    account,
    today,
    leads,
    deals,
    clients,
    tasks,
    inbox,
    calls,
    invoices,
    plans,
    distribution,
    tracking,
    users,
    cards,
    deal_card,
    kanban,
    notifications,
)


def menu() -> tuple[MenuEntry, ...]:
    """The menu of every page module, by role."""
    return build_menu(MODULES)


def routes(app: web.Application) -> None:
    """The static files and every page of the workspace."""
    for module in MODULES:
        module.routes(app)
    app.router.add_static("/static/", STATIC, append_version=False)
