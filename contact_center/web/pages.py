"""The manager's workplace page (live call pop-ups) and its static files."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import select

from contact_center.http.api import USER
from contact_center.http.auth import AUTH_KIND
from contact_center.http.security import script_json
from contact_center.i18n import pick_language, table, translator
from contact_center.keys import RULES, SESSIONS, SETTINGS
from crm_core.reference.model import Region, Source
from crm_core.users.model import TokenKind, User

STATIC = Path(__file__).parent / "static"

_LAYOUT = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — {app}</title>
<link rel="stylesheet" href="/static/app.css">
</head><body>
<header><h1><a class="home" href="/">{app}</a></h1>
<span id="ws-state" class="status down">{offline}</span>
<span>{name} · {role}{exts}</span>
<a href="?lang={other}">{switch}</a>
<form method="post" action="/logout"><button>{logout}</button></form>
</header>
<main>
{main}
</main>
<div id="pops" aria-live="polite"></div>
<div id="toasts" aria-live="polite"></div>
<script type="application/json" id="cc-i18n">{i18n}</script>
<script type="application/json" id="cc-page">{page}</script>
{scripts}
</body></html>"""

_HOME = """{warn}
<section><h2>{calls}</h2>
<table><thead><tr><th>{time}</th><th>{number}</th><th>{event}</th></tr></thead>
<tbody id="call-log"></tbody></table>
<p class="muted" id="call-empty">{waiting}</p>
</section>"""

_CARD = """<p><a href="/">← {back}</a></p>
<div id="card" data-kind="{kind}" data-id="{id}"><p class="muted">{loading}</p></div>"""

CARD_KINDS = ("contact", "company", "lead")


def _session_user(request: web.Request) -> User:
    user = request.get(USER)
    if user is None or request.get(AUTH_KIND) is not TokenKind.SESSION:
        raise web.HTTPSeeOther("/login")
    return user


def _render(
    request: web.Request,
    user: User,
    *,
    title_key: str,
    main: Callable[[Callable[[str], str]], str],
    page: dict[str, Any],
    scripts: tuple[str, ...],
) -> web.Response:
    """A page of the web UI in the user's language: header, ``main``, pop-ups and toasts."""
    lang = pick_language(request, request.app[SETTINGS].locale.default, user.locale)
    t = translator(lang)
    exts = ", ".join(e.extension for e in user.extensions)
    text = _LAYOUT.format(
        lang=lang,
        title=t(title_key),
        app=t("app.title"),
        offline=t("ws.offline"),
        name=html.escape(user.display_name),
        role=t("role." + user.role),
        exts=f" · {t('home.extensions')}: {html.escape(exts)}" if exts else "",
        other="en" if lang == "ru" else "ru",
        switch=t("lang.switch"),
        logout=t("home.logout"),
        main=main(t),
        i18n=script_json(table(lang)),
        page=script_json({"user_id": user.id, "role": user.role, "lang": lang, **page}),
        scripts="\n".join(f'<script src="/static/{name}"></script>' for name in scripts),
    )
    resp = web.Response(text=text, content_type="text/html")
    if request.query.get("lang") == lang:
        resp.set_cookie("cc_lang", lang, max_age=365 * 86400, samesite="Lax", httponly=True)
    return resp


async def home(request: web.Request) -> web.StreamResponse:
    user = _session_user(request)

    def main(t: Callable[[str], str]) -> str:
        warn = (
            f'<section class="muted">{t("home.change_password")}</section>'
            if user.must_change_password
            else ""
        )
        return _HOME.format(
            warn=warn,
            calls=t("home.calls"),
            time=t("home.time"),
            number=t("home.number"),
            event=t("home.event"),
            waiting=t("home.waiting"),
        )

    return _render(
        request, user, title_key="home.title", main=main, page={"view": "home"}, scripts=("app.js",)
    )


async def client_card(request: web.Request) -> web.StreamResponse:
    """The full client card (contact, company or lead): fields, deals, tasks, timeline.

    The page is a shell; ``card.js`` reads the card from the REST API with the session, so
    access rules are the API's. Names of regions, sources, users and stages come with the
    page (short reference tables) so the card shows names, not ids.
    """
    user = _session_user(request)
    kind = request.match_info["kind"]
    card_id = int(request.match_info["id"])
    async with request.app[SESSIONS]() as session:
        names = {
            "regions": dict((await session.execute(select(Region.id, Region.name))).all()),
            "sources": dict((await session.execute(select(Source.id, Source.name))).all()),
            "users": dict((await session.execute(select(User.id, User.display_name))).all()),
        }
    lang = pick_language(request, request.app[SETTINGS].locale.default, user.locale)
    rules = request.app[RULES]
    names["stages"] = {
        s.code: (s.name_en or s.name_ru) if lang == "en" else s.name_ru for s in rules.lead_stages
    }

    def main(t: Callable[[str], str]) -> str:
        return _CARD.format(kind=kind, id=card_id, back=t("card.back"), loading=t("card.loading"))

    return _render(
        request,
        user,
        title_key=f"card.title.{kind}",
        main=main,
        page={"view": "card", "kind": kind, "id": card_id, "names": names},
        scripts=("app.js", "card.js"),
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/", home)
    app.router.add_get(r"/clients/{kind:contact|company|lead}/{id:\d{1,18}}", client_card)
    app.router.add_static("/static/", STATIC, append_version=False)
