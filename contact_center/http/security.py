"""What the browser is told and asked: security headers on every response, and whether a
request comes from one of our own pages.

Headers: a strict Content-Security-Policy (scripts, styles, images, audio and connections from
our own origin only, no inline script or style, no framing, no plugins), ``X-Frame-Options``,
``Referrer-Policy`` and ``X-Content-Type-Options``, set on every response (errors, static files
and the WebSocket upgrade included) by a response-prepare hook.

Same origin: a cookie rides along on requests other sites make, so every unsafe request that
signs in by cookie, and every ``/ws`` upgrade, must come from one of our pages. Modern browsers
say where a request comes from in ``Sec-Fetch-Site`` (``same-origin``; ``none`` for what the
user typed) and ``Origin``; both are checked when present. ``Origin: null`` (a redirected
request, a sandboxed frame, a ``data:`` page) is never ours. A request carrying neither header
does not come from a browser (curl, a script): it is let through, as Go's
``http.CrossOriginProtection`` does. Our origin is the scheme and host the client used: behind
``server.trusted_proxies`` the forwarded ones (see :mod:`contact_center.http.proxies`), and
``server.public_url``'s when it is set.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import hdrs, web
from yarl import URL

from contact_center.http.api import CrossOriginRefused
from contact_center.keys import SETTINGS

__all__ = ["CrossOriginRefused", "from_own_page", "require_own_page", "script_json"]

CSP_BASE = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "media-src 'self'",
    "font-src 'self'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)
STATIC_HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def own_origin(request: web.Request) -> str:
    """``scheme://host[:port]`` as the client addressed us (forwarded ones behind a trusted
    proxy: the proxy middleware has put them on the request)."""
    return f"{request.scheme}://{request.host}".lower()


def _origin_of(url: str) -> str | None:
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return None
    if not parsed.scheme or not parsed.host:
        return None
    default = {"http": 80, "https": 443}.get(parsed.scheme)
    port = "" if parsed.port in (None, default) else f":{parsed.port}"
    return f"{parsed.scheme}://{parsed.host}{port}".lower()


def allowed_origins(request: web.Request) -> set[str]:
    """Our origins: the one this request addressed, and ``server.public_url``'s."""
    origins = {_origin_of(own_origin(request)) or own_origin(request)}
    public = request.app[SETTINGS].server.public_url
    if public:
        origin = _origin_of(public)
        if origin:
            origins.add(origin)
    return origins


def from_own_page(request: web.Request) -> bool:
    """False when the browser says the request was made by another site's page."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return False
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None:
        return _origin_of(origin.strip()) in allowed_origins(request)
    return True


def require_own_page(request: web.Request) -> None:
    """Raise :class:`CrossOriginRefused` for a request another site's page made."""
    if not from_own_page(request):
        origin = request.headers.get(hdrs.ORIGIN) or request.headers.get("Sec-Fetch-Site")
        raise CrossOriginRefused(
            f"cross-origin request refused (from {origin!r})",
            details={"origin": request.headers.get(hdrs.ORIGIN)},
        )


def secure_cookies(request: web.Request) -> bool:
    """Whether cookies get the ``Secure`` flag: always with ``auth.cookie_secure``, else when
    the client reached us over HTTPS (the forwarded scheme behind a trusted proxy)."""
    return bool(request.app[SETTINGS].auth.cookie_secure) or request.scheme == "https"


def content_security_policy(request: web.Request) -> str:
    """The policy; connections to our own WebSocket are named explicitly, since older browsers
    do not count ``ws:``/``wss:`` as ``'self'``."""
    host = request.host
    sockets = f"ws://{host} wss://{host}"
    return "; ".join((*CSP_BASE, f"connect-src 'self' {sockets}"))


async def _add_headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    for name, value in STATIC_HEADERS.items():
        headers.setdefault(name, value)
    headers.setdefault("Content-Security-Policy", content_security_policy(request))


def script_json(value: Any) -> str:
    """JSON to put inside a ``<script type="application/json">`` element.

    The HTML parser ends a script element at ``</script`` and treats ``<!--`` followed by
    ``<script`` as the start of an "escaped" section in which ``</script>`` no longer ends it
    (so a source named ``<!--<script>`` swallowed the rest of the page). Escaping every ``<``,
    ``>`` and ``&`` as a JSON ``\\u`` escape leaves nothing the parser reacts to; U+2028/2029
    are escaped for old JavaScript parsers."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def setup(app: web.Application) -> None:
    """Security headers on every response of ``app``."""
    app.on_response_prepare.append(_add_headers)
