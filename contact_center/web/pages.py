"""The manager's workplace page (live call pop-ups) and its static files."""

from __future__ import annotations

import html
import json
from pathlib import Path

from aiohttp import web

from contact_center.http.api import USER
from contact_center.http.auth import AUTH_KIND
from contact_center.i18n import pick_language, table, translator
from contact_center.keys import SETTINGS
from crm_core.users.model import TokenKind

STATIC = Path(__file__).parent / "static"

_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — {app}</title>
<link rel="stylesheet" href="/static/app.css">
</head><body>
<header><h1>{app}</h1>
<span id="ws-state" class="status down">{offline}</span>
<span>{name} · {role}{exts}</span>
<a href="?lang={other}">{switch}</a>
<form method="post" action="/logout"><button>{logout}</button></form>
</header>
<main>
{warn}
<section><h2>{calls}</h2>
<table><thead><tr><th>{time}</th><th>{number}</th><th>{event}</th></tr></thead>
<tbody id="call-log"></tbody></table>
<p class="muted" id="call-empty">{waiting}</p>
</section>
</main>
<div id="pops" aria-live="polite"></div>
<script>window.CC_I18N = {i18n};</script>
<script src="/static/app.js"></script>
</body></html>"""


async def home(request: web.Request) -> web.StreamResponse:
    user = request.get(USER)
    if user is None or request.get(AUTH_KIND) is not TokenKind.SESSION:
        raise web.HTTPSeeOther("/login")
    lang = pick_language(request, request.app[SETTINGS].locale.default, user.locale)
    t = translator(lang)
    exts = ", ".join(e.extension for e in user.extensions)
    warn = (
        f'<section class="muted">{t("home.change_password")}</section>'
        if user.must_change_password
        else ""
    )
    text = _PAGE.format(
        lang=lang,
        title=t("home.title"),
        app=t("app.title"),
        offline=t("ws.offline"),
        name=html.escape(user.display_name),
        role=t("role." + user.role),
        exts=f" · {t('home.extensions')}: {html.escape(exts)}" if exts else "",
        other="en" if lang == "ru" else "ru",
        switch=t("lang.switch"),
        logout=t("home.logout"),
        warn=warn,
        calls=t("home.calls"),
        time=t("home.time"),
        number=t("home.number"),
        event=t("home.event"),
        waiting=t("home.waiting"),
        i18n=json.dumps(table(lang), ensure_ascii=False).replace("</", "<\\/"),
    )
    resp = web.Response(text=text, content_type="text/html")
    if request.query.get("lang") == lang:
        resp.set_cookie("cc_lang", lang, max_age=365 * 86400, samesite="Lax", httponly=True)
    return resp


def setup(app: web.Application) -> None:
    app.router.add_get("/", home)
    app.router.add_static("/static/", STATIC, append_version=False)
