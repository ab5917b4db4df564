"""Authentication: bearer tokens for the API and /ws, a session cookie for the web UI,
the login page, and the users API."""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from yarl import URL

from contact_center.http.api import AUTH_KIND, USER, Api
from contact_center.i18n import pick_language, translator
from contact_center.keys import BUS, SESSIONS, SETTINGS
from crm_core.errors import NotFound, PermissionDenied, RateLimited
from crm_core.users import service as users
from crm_core.users.errors import InvalidCredentials
from crm_core.users.model import Role, TokenKind, User

log = logging.getLogger(__name__)
api = Api()

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class LoginThrottle:
    """Failed sign-ins per (remote address, login) in a sliding 15-minute window.

    In-process: with several instances each counts its own, which still bounds guessing.
    """

    WINDOW_S = 15 * 60

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        q = self._failures[key]
        while q and now - q[0] > self.WINDOW_S:
            q.popleft()
        return q

    def check(self, remote: str, login: str) -> None:
        key = (remote, login.lower())
        if len(self._recent(key, time.monotonic())) >= self.limit:
            raise RateLimited(
                "too many failed sign-ins; try again later",
                details={"retry_after_s": self.WINDOW_S},
            )

    def failed(self, remote: str, login: str) -> None:
        self._recent((remote, login.lower()), time.monotonic()).append(time.monotonic())
        if len(self._failures) > 100_000:  # bound memory under a spray of logins
            self._failures.clear()

    def succeeded(self, remote: str, login: str) -> None:
        self._failures.pop((remote, login.lower()), None)


THROTTLE = web.AppKey("login_throttle", LoginThrottle)


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Put the user of a valid bearer token or session cookie on ``request[USER]``."""
    settings = request.app[SETTINGS]
    secret: str | None = None
    kind = TokenKind.API
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        secret = header[7:].strip()
    elif settings.auth.cookie_name in request.cookies:
        secret = request.cookies[settings.auth.cookie_name]
        kind = TokenKind.SESSION
    if secret and not request.path.startswith("/static/"):
        async with request.app[SESSIONS]() as session:
            user = await users.resolve_token(session, secret, kind=kind)
            await session.commit()
        if user is not None:
            if kind is TokenKind.SESSION and request.method not in SAFE_METHODS:
                _check_same_origin(request)
            request[USER] = user
            request[AUTH_KIND] = kind
        elif kind is TokenKind.API:
            raise InvalidCredentials("invalid, expired or revoked token")
    return await handler(request)


def _check_same_origin(request: web.Request) -> None:
    # SameSite=Lax already keeps the cookie off cross-site POSTs; this refuses what slips through.
    origin = request.headers.get("Origin")
    if origin and origin != "null" and URL(origin).authority != request.host:
        raise PermissionDenied(f"cross-origin request from {origin} refused")


def current_user(request: web.Request) -> User:
    user = request.get(USER)
    if user is None:
        raise InvalidCredentials("authentication required")
    return user


# ---------------------------------------------------------------- schemas


class TokenRequest(BaseModel):
    login: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    name: str = Field("", max_length=100, description="label to recognise the token by")
    ttl_days: float | None = Field(None, gt=0, le=3650, description="default: auth.token_ttl_days")


class TokenResponse(BaseModel):
    token: str
    token_id: int
    expires_at: datetime | None


class TokenInfo(BaseModel):
    id: int
    name: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class UserOut(BaseModel):
    id: int
    login: str
    display_name: str
    email: str | None
    role: Role
    is_active: bool
    must_change_password: bool
    extensions: list[str]

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            login=user.login,
            display_name=user.display_name,
            email=user.email,
            role=Role(user.role),
            is_active=user.is_active,
            must_change_password=user.must_change_password,
            extensions=[e.extension for e in user.extensions],
        )


class UserCreate(BaseModel):
    login: str = Field(min_length=1, max_length=64)
    role: Role
    password: str = Field(min_length=8, max_length=1024)
    display_name: str = Field("", max_length=200)
    email: str | None = Field(None, max_length=320)
    extensions: list[str] = Field(default_factory=list)


class PasswordChange(BaseModel):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=8, max_length=1024)


# ---------------------------------------------------------------- API


@api.route(
    "POST",
    "/auth/token",
    summary="Exchange login and password for a bearer token",
    body=TokenRequest,
    response=TokenResponse,
    status=201,
    public=True,
    tags=["auth"],
    errors={401: "Wrong login or password", 429: "Too many failed attempts"},
)
async def create_token(request: web.Request, body: TokenRequest) -> TokenResponse:
    settings = request.app[SETTINGS]
    remote = request.remote or "?"
    throttle = request.app[THROTTLE]
    throttle.check(remote, body.login)
    async with request.app[SESSIONS]() as session:
        try:
            user = await users.authenticate(
                session, body.login, body.password, scrypt_n=settings.auth.scrypt_n
            )
        except InvalidCredentials:
            throttle.failed(remote, body.login)
            log.warning("failed sign-in for %r from %s", body.login, remote)
            raise
        throttle.succeeded(remote, body.login)
        ttl_days = body.ttl_days or settings.auth.token_ttl_days
        issued = await users.issue_token(
            session,
            user,
            kind=TokenKind.API,
            ttl=timedelta(days=ttl_days) if ttl_days else None,
            name=body.name,
        )
        await session.commit()
    log.info("token %s issued to %s", issued.id, user.login, extra={"user_id": user.id})
    return TokenResponse(token=issued.secret, token_id=issued.id, expires_at=issued.expires_at)


@api.route("GET", "/auth/tokens", summary="My API tokens", tags=["auth"])
async def my_tokens(request: web.Request) -> list[dict[str, Any]]:
    user = current_user(request)
    async with request.app[SESSIONS]() as session:
        tokens = await users.list_tokens(session, user.id)
    return [
        TokenInfo.model_validate(t, from_attributes=True).model_dump(mode="json") for t in tokens
    ]


@api.route(
    "DELETE",
    "/auth/tokens/{token_id}",
    summary="Revoke a token (own; admin: any)",
    status=204,
    tags=["auth"],
    errors={404: "No such live token"},
)
async def revoke_token(request: web.Request) -> None:
    user = current_user(request)
    try:
        token_id = int(request.match_info["token_id"])
    except ValueError as exc:
        raise NotFound("no such token") from exc
    async with request.app[SESSIONS]() as session:
        tokens = await users.list_tokens(session, user.id)
        if user.role != Role.ADMIN and token_id not in {t.id for t in tokens}:
            raise NotFound(f"no token {token_id} of yours")
        if not await users.revoke_token(session, token_id=token_id):
            raise NotFound(f"no live token {token_id}")
        await session.commit()
    log.info("token %s revoked by %s", token_id, user.login)


@api.route("GET", "/me", summary="The signed-in user", response=UserOut, tags=["users"])
async def me(request: web.Request) -> UserOut:
    return UserOut.of(current_user(request))


@api.route(
    "POST",
    "/me/password",
    summary="Change my password (revokes my web sessions)",
    body=PasswordChange,
    status=204,
    tags=["users"],
)
async def change_password(request: web.Request, body: PasswordChange) -> None:
    settings = request.app[SETTINGS]
    user = current_user(request)
    async with request.app[SESSIONS]() as session:
        fresh = await users.authenticate(
            session, user.login, body.current_password, scrypt_n=settings.auth.scrypt_n
        )
        await users.set_password(session, fresh, body.new_password, scrypt_n=settings.auth.scrypt_n)
        await session.commit()


@api.route("GET", "/users", summary="All users", roles=[Role.ADMIN, Role.HEAD], tags=["users"])
async def list_users(request: web.Request) -> list[dict[str, Any]]:
    async with request.app[SESSIONS]() as session:
        return [UserOut.of(u).model_dump(mode="json") for u in await users.list_users(session)]


@api.route(
    "POST",
    "/users",
    summary="Create a user",
    body=UserCreate,
    response=UserOut,
    status=201,
    roles=[Role.ADMIN],
    tags=["users"],
    errors={409: "Login or extension taken"},
)
async def create_user(request: web.Request, body: UserCreate) -> UserOut:
    settings = request.app[SETTINGS]
    async with request.app[SESSIONS]() as session:
        user, event = await users.create_user(
            session,
            login=body.login,
            role=body.role,
            password=body.password,
            display_name=body.display_name,
            email=body.email,
            extensions=body.extensions,
            scrypt_n=settings.auth.scrypt_n,
        )
        await session.commit()
    await request.app[BUS].publish(event)
    return UserOut.of(user)


# ---------------------------------------------------------------- web pages


async def _login_page(
    request: web.Request, error_key: str = "", login: str = "", status: int = 200
) -> web.Response:
    """The sign-in form (template ``account/login.html``), with a translated error."""
    from contact_center.web.shell import render

    t = translator(pick_language(request, request.app[SETTINGS].locale.default))
    return await render(
        "account/login.html",
        request,
        {
            "title": t("login.title"),
            "error": t(error_key) if error_key else "",
            "login": login,
            "next": _safe_next(request.query.get("next")),
        },
        status=status,
    )


def _safe_next(target: str | None) -> str:
    """A local path to go to after signing in (never another site)."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


async def login_page(request: web.Request) -> web.Response:
    return await _login_page(request)


async def login_submit(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    form = await request.post()
    login = str(form.get("login", ""))[:64]
    password = str(form.get("password", ""))[:1024]
    remote = request.remote or "?"
    throttle = request.app[THROTTLE]
    try:
        throttle.check(remote, login)
    except RateLimited:
        return await _login_page(request, "login.throttled", login, status=429)
    async with request.app[SESSIONS]() as session:
        try:
            user = await users.authenticate(
                session, login, password, scrypt_n=settings.auth.scrypt_n
            )
        except InvalidCredentials:
            throttle.failed(remote, login)
            log.warning("failed sign-in for %r from %s", login, remote)
            return await _login_page(request, "login.failed", login, status=401)
        throttle.succeeded(remote, login)
        ttl = timedelta(hours=settings.auth.session_ttl_hours)
        issued = await users.issue_token(session, user, kind=TokenKind.SESSION, ttl=ttl)
        await session.commit()
    target = _safe_next(str(form.get("next", ""))) or "/"
    if user.must_change_password:
        target = "/settings/password"
    resp = web.HTTPSeeOther(target)
    resp.set_cookie(
        settings.auth.cookie_name,
        issued.secret,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        samesite="Lax",
        secure=settings.auth.cookie_secure,
        path="/",
    )
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    secret = request.cookies.get(settings.auth.cookie_name)
    if secret:
        async with request.app[SESSIONS]() as session:
            await users.revoke_token(session, secret=secret)
            await session.commit()
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(settings.auth.cookie_name, path="/")
    raise resp


def routes(app: web.Application) -> None:
    """The sign-in form and sign-out (the throttle is built by the composition root)."""
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
