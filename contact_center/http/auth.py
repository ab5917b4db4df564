"""Authentication: bearer tokens for the API and /ws, a session cookie for the web UI,
the login page, and the users API."""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from pydantic import BaseModel, Field

from contact_center.http import security
from contact_center.http.api import AUTH_KIND, CROSS_ORIGIN, USER, Api, path_id
from contact_center.i18n import pick_language, translator
from contact_center.keys import BUS, SESSIONS, SETTINGS
from crm_core.errors import InvalidInput, NotFound, PermissionDenied, RateLimited
from crm_core.users import service as users
from crm_core.users.errors import InvalidCredentials
from crm_core.users.events import TokensRevoked
from crm_core.users.model import Role, TokenKind, User
from routing.circuit import REDIS_DOWN, Circuit

log = logging.getLogger(__name__)
api = Api()

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class LoginThrottle:
    """Failed sign-ins in a sliding 15-minute window, per (address, login) and per address.

    The pair limit stops guessing one password; the address limit (several times larger)
    stops spraying a few passwords over many logins. Memory is bounded: past ``max_keys``
    entries the oldest that are not throttled are forgotten, never a throttled one (so a
    flood of fresh keys cannot buy the guesser a clean slate). In-process; with Redis,
    :class:`SharedLoginThrottle` shares the counts between instances.
    """

    WINDOW_S = 15 * 60

    def __init__(
        self,
        limit: int,
        *,
        per_address: int | None = None,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.per_address = per_address or limit * 10
        self.max_keys = max_keys
        self._clock = clock
        self._pairs: OrderedDict[tuple[str, str], deque[float]] = OrderedDict()
        self._addresses: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, store: OrderedDict[Any, deque[float]], key: Any, now: float) -> int:
        q = store.get(key)
        if q is None:
            return 0
        while q and now - q[0] > self.WINDOW_S:
            q.popleft()
        if not q:
            del store[key]
            return 0
        return len(q)

    def check(self, remote: str, login: str) -> None:
        """Raise :class:`RateLimited` when this address, or this login from it, is throttled."""
        now = self._clock()
        if (
            self._recent(self._pairs, (remote, login.lower()), now) >= self.limit
            or self._recent(self._addresses, remote, now) >= self.per_address
        ):
            raise RateLimited(
                "too many failed sign-ins; try again later",
                details={"retry_after_s": self.WINDOW_S},
            )

    def failed(self, remote: str, login: str) -> None:
        now = self._clock()
        pair = (remote, login.lower())
        self._recent(self._pairs, pair, now)
        self._pairs.setdefault(pair, deque()).append(now)
        self._pairs.move_to_end(pair)
        self._bound(self._pairs, self.limit, now)
        self._recent(self._addresses, remote, now)
        self._addresses.setdefault(remote, deque()).append(now)
        self._addresses.move_to_end(remote)
        self._bound(self._addresses, self.per_address, now)

    def succeeded(self, remote: str, login: str) -> None:
        self._pairs.pop((remote, login.lower()), None)

    def _bound(self, store: OrderedDict[Any, deque[float]], limit: int, now: float) -> None:
        """Forget the oldest entries that are not throttled until ``max_keys`` remain; a
        throttled one met on the way goes to the young end (it is looked at again once
        its window has passed)."""
        budget = len(store)
        while len(store) > self.max_keys and budget > 0:
            budget -= 1
            key, q = next(iter(store.items()))
            while q and now - q[0] > self.WINDOW_S:
                q.popleft()
            if len(q) >= limit:
                store.move_to_end(key)
            else:
                del store[key]

    def __len__(self) -> int:
        return len(self._pairs)


class SharedLoginThrottle:
    """The login throttle every instance shares through Redis, with the same two limits.

    Each failure is a member of a sorted set scored by its time, one set per (address, login)
    and one per address; a check trims what has left the 15-minute window and counts the rest.
    Behind a load balancer each instance would otherwise count only the attempts it happened
    to receive, multiplying the guesses an attacker gets by the number of instances.

    The in-process :class:`LoginThrottle` always counts as well: while Redis is away (its
    circuit open) it alone decides, and what it counted during the outage still applies once
    Redis is back. Without Redis (the embedded mode) this is the in-process throttle.
    """

    def __init__(
        self,
        local: LoginThrottle,
        redis: aioredis.Redis | None,
        prefix: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.local = local
        self._redis = redis
        self._prefix = prefix
        self._clock = clock
        self.circuit = Circuit("login throttle")

    def _keys(self, remote: str, login: str) -> tuple[str, str]:
        return (
            f"{self._prefix}:login-fail:{remote}:{login.lower()}",
            f"{self._prefix}:login-fail-addr:{remote}",
        )

    def _shared(self) -> aioredis.Redis | None:
        return self._redis if self._redis is not None and self.circuit.allows() else None

    async def check(self, remote: str, login: str) -> None:
        """Raise :class:`RateLimited` when this address, or this login from it, is throttled
        on any instance."""
        self.local.check(remote, login)
        redis = self._shared()
        if redis is None:
            return
        pair, address = self._keys(remote, login)
        oldest = self._clock() - self.local.WINDOW_S
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zremrangebyscore(pair, "-inf", oldest)
                pipe.zcard(pair)
                pipe.zremrangebyscore(address, "-inf", oldest)
                pipe.zcard(address)
                _, pair_count, _, address_count = await pipe.execute()
        except REDIS_DOWN as exc:
            self.circuit.failed(exc)
            return
        self.circuit.succeeded()
        if int(pair_count) >= self.local.limit or int(address_count) >= self.local.per_address:
            raise RateLimited(
                "too many failed sign-ins; try again later",
                details={"retry_after_s": self.local.WINDOW_S},
            )

    async def failed(self, remote: str, login: str) -> None:
        self.local.failed(remote, login)
        redis = self._shared()
        if redis is None:
            return
        now = self._clock()
        member = f"{now:.6f}:{uuid.uuid4().hex[:8]}"
        window = self.local.WINDOW_S
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for key in self._keys(remote, login):
                    pipe.zadd(key, {member: now})
                    pipe.expire(key, window)
                await pipe.execute()
        except REDIS_DOWN as exc:
            self.circuit.failed(exc)
        else:
            self.circuit.succeeded()

    async def succeeded(self, remote: str, login: str) -> None:
        self.local.succeeded(remote, login)
        redis = self._shared()
        if redis is None:
            return
        try:
            await redis.delete(self._keys(remote, login)[0])
        except REDIS_DOWN as exc:
            self.circuit.failed(exc)
        else:
            self.circuit.succeeded()


THROTTLE = web.AppKey("login_throttle", SharedLoginThrottle)


TOKEN_ID = web.RequestKey("token_id", int)  # the token USER signed in with
# What a user who must change his one-time password may still do: see and change it, sign out.
PASSWORD_CHANGE_PATHS = frozenset(
    {
        ("GET", "/api/v1/me"),
        ("POST", "/api/v1/me/password"),
        ("POST", "/api/v1/auth/token"),
        ("GET", "/settings/password"),
        ("POST", "/settings/password"),
        ("POST", "/logout"),
        ("GET", "/login"),
        ("POST", "/login"),
    }
)


class PasswordChangeRequired(PermissionDenied):
    error_id = "password-change-required"


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Put the user of a valid bearer token or session cookie on ``request[USER]``.

    A request signed in by cookie that changes something counts as signed in only when it
    comes from one of our pages (:func:`security.from_own_page`): from another site's page it
    goes on anonymous (a website form on a sibling domain still reaches its public endpoint)
    and whatever needs the user refuses it. A user who must change his one-time password gets
    nothing but the password change until he has."""
    settings = request.app[SETTINGS]
    secret: str | None = None
    kind = TokenKind.API
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        secret = header[7:].strip()
    elif settings.auth.cookie_name in request.cookies:
        secret = request.cookies[settings.auth.cookie_name]
        kind = TokenKind.SESSION
    if secret:
        async with request.app[SESSIONS]() as session:
            found = await users.resolve(session, secret, kind=kind)
            await session.commit()
        if found is not None:
            user, token_id = found
            if (
                kind is TokenKind.SESSION
                and request.method not in SAFE_METHODS
                and not security.from_own_page(request)
            ):
                request[CROSS_ORIGIN] = request.headers.get("Origin") or "another site"
                passed: web.StreamResponse = await handler(request)
                return passed
            if user.must_change_password and not _password_change_allowed(request):
                return _password_change_first(request)
            request[USER] = user
            request[TOKEN_ID] = token_id
            request[AUTH_KIND] = kind
        elif kind is TokenKind.API:
            raise InvalidCredentials("invalid, expired or revoked token")
    response: web.StreamResponse = await handler(request)
    return response


def _password_change_allowed(request: web.Request) -> bool:
    path = request.path
    return (
        (request.method, path) in PASSWORD_CHANGE_PATHS
        or path.startswith("/static/")
        or path in ("/healthz", "/metrics", "/api/v1/openapi.json")
    )


def _password_change_first(request: web.Request) -> web.StreamResponse:
    if request.path.startswith("/api/") or request.path == "/ws":
        raise PasswordChangeRequired(
            "change the one-time password first (POST /api/v1/me/password)",
            details={"change_password": "/api/v1/me/password"},
        )
    raise web.HTTPSeeOther("/settings/password")


def current_user(request: web.Request) -> User:
    user: User | None = request.get(USER)
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
    await throttle.check(remote, body.login)
    async with request.app[SESSIONS]() as session:
        try:
            user = await users.authenticate(
                session, body.login, body.password, scrypt_n=settings.auth.scrypt_n
            )
        except InvalidCredentials:
            await throttle.failed(remote, body.login)
            log.warning("failed sign-in for %r from %s", body.login, remote)
            raise
        await throttle.succeeded(remote, body.login)
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
    token_id = path_id(request, "token_id", "token")
    async with request.app[SESSIONS]() as session:
        tokens = await users.list_tokens(session, user.id)
        if user.role != Role.ADMIN and token_id not in {t.id for t in tokens}:
            raise NotFound(f"no token {token_id} of yours")
        owner = await users.token_owner(session, token_id)
        if owner is None or not await users.revoke_token(session, token_id=token_id):
            raise NotFound(f"no live token {token_id}")
        await session.commit()
    await request.app[BUS].publish(TokensRevoked(user_id=owner, token_ids=(token_id,)))
    log.info("token %s revoked by %s", token_id, user.login)


@api.route("GET", "/me", summary="The signed-in user", response=UserOut, tags=["users"])
async def me(request: web.Request) -> UserOut:
    return UserOut.of(current_user(request))


@api.route(
    "POST",
    "/me/password",
    summary="Change my password (revokes every token and web session I hold, this one too)",
    body=PasswordChange,
    status=204,
    tags=["users"],
    errors={401: "Wrong current password"},
)
async def change_password(request: web.Request, body: PasswordChange) -> None:
    settings = request.app[SETTINGS]
    user = current_user(request)
    async with request.app[SESSIONS]() as session:
        fresh = await users.authenticate(
            session, user.login, body.current_password, scrypt_n=settings.auth.scrypt_n
        )
        revoked = await users.set_password(
            session, fresh, body.new_password, scrypt_n=settings.auth.scrypt_n
        )
        await session.commit()
    await request.app[BUS].publish(revoked)
    log.info("password changed by %s; every token revoked", user.login)


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


class UserUpdate(BaseModel):
    is_active: bool | None = Field(None, description="false: the user can no longer sign in")
    display_name: str | None = Field(None, min_length=1, max_length=200)


@api.route(
    "PATCH",
    "/users/{user_id}",
    summary="Rename, deactivate (revokes every token and closes his sockets) or reactivate",
    body=UserUpdate,
    response=UserOut,
    roles=[Role.ADMIN],
    tags=["users"],
    errors={404: "No such user"},
)
async def update_user(request: web.Request, body: UserUpdate) -> UserOut:
    admin = current_user(request)
    user_id = path_id(request, "user_id", "user")
    revoked = None
    async with request.app[SESSIONS]() as session:
        user = await users.get_user(session, user_id)
        if user is None:
            raise NotFound(f"no user {user_id}", details={"user_id": user_id})
        if body.is_active is False and user.id == admin.id:
            raise InvalidInput(
                "is_active: an administrator cannot deactivate himself",
                details={"fields": {"is_active": "not yourself"}},
            )
        if body.display_name is not None:
            user.display_name = body.display_name
        if body.is_active is not None and body.is_active != user.is_active:
            revoked = await users.set_active(session, user, body.is_active)
        await session.commit()
    if revoked is not None:
        await request.app[BUS].publish(revoked)
        log.info("user %s deactivated by %s; every token revoked", user.login, admin.login)
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


def _has_nul(*values: str) -> bool:
    return any("\x00" in v for v in values)


async def _form(request: web.Request) -> dict[str, str] | None:
    """The posted form's text fields; None when the body is over the limit."""
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        return None
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def login_submit(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]

    async def refuse(status: int, key: str, login: str = "") -> web.Response:
        return await _login_page(request, key, login, status=status)

    # Signing a victim in to the attacker's account (login CSRF) is refused like any other
    # cross-site form.
    if not security.from_own_page(request):
        return await refuse(403, "login.cross_origin")
    form = await _form(request)
    if form is None:
        return await refuse(413, "login.too_large")
    login = form.get("login", "")[:64]
    password = form.get("password", "")[:1024]
    if _has_nul(login, password):
        return await refuse(422, "login.bad_input")
    remote = request.remote or "?"
    throttle = request.app[THROTTLE]
    try:
        await throttle.check(remote, login)
    except RateLimited:
        return await refuse(429, "login.throttled", login)
    async with request.app[SESSIONS]() as session:
        try:
            user = await users.authenticate(
                session, login, password, scrypt_n=settings.auth.scrypt_n
            )
        except InvalidCredentials:
            await throttle.failed(remote, login)
            log.warning("failed sign-in for %r from %s", login, remote)
            return await refuse(401, "login.failed", login)
        await throttle.succeeded(remote, login)
        ttl = timedelta(hours=settings.auth.session_ttl_hours)
        issued = await users.issue_token(session, user, kind=TokenKind.SESSION, ttl=ttl)
        await session.commit()
    target = _safe_next(form.get("next", "")) or "/"
    if user.must_change_password:
        target = "/settings/password"
    resp = web.HTTPSeeOther(target)
    set_session_cookie(request, resp, issued.secret, ttl)
    raise resp


def set_session_cookie(
    request: web.Request, resp: web.StreamResponse, secret: str, ttl: timedelta
) -> None:
    """The session cookie: HttpOnly, SameSite=Lax, Secure when the (forwarded) scheme is https."""
    settings = request.app[SETTINGS]
    resp.set_cookie(
        settings.auth.cookie_name,
        secret,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        samesite="Lax",
        secure=security.secure_cookies(request),
        path="/",
    )


async def logout(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    user, token_id = request.get(USER), request.get(TOKEN_ID)
    if user is not None and token_id is not None and request.get(AUTH_KIND) is TokenKind.SESSION:
        async with request.app[SESSIONS]() as session:
            await users.revoke_token(session, token_id=token_id)
            await session.commit()
        await request.app[BUS].publish(TokensRevoked(user_id=user.id, token_ids=(token_id,)))
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(settings.auth.cookie_name, path="/")
    raise resp


def routes(app: web.Application) -> None:
    """The sign-in form and sign-out (the throttle is built by the composition root; the
    password pages are the workspace's /settings/password and /settings/profile)."""
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login_submit)
    app.router.add_post("/logout", logout)
