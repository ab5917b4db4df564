"""Use cases of the users slice. Every function takes the caller's session; the caller commits."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from crm_core.db import rowcount, utcnow
from crm_core.users.errors import ExtensionTaken, InvalidCredentials, InvalidUser, LoginTaken
from crm_core.users.events import TokensRevoked, UserCreated
from crm_core.users.model import AuthToken, Role, TokenKind, User, UserExtension
from crm_core.users.passwords import (
    hash_password,
    hash_token,
    needs_rehash,
    new_password,
    new_token,
    verify_password,
)

_LOGIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_EXTENSION_RE = re.compile(r"^[0-9*#+]{1,32}$")
MIN_PASSWORD_LENGTH = 8


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token: ``secret`` is shown to its owner once and never stored."""

    id: int
    secret: str
    expires_at: datetime | None


async def create_user(
    session: AsyncSession,
    *,
    login: str,
    role: Role | str,
    password: str,
    extensions: Iterable[str] = (),
    display_name: str = "",
    email: str | None = None,
    pbx: str = "",
    must_change_password: bool = False,
    scrypt_n: int = 2**15,
) -> tuple[User, UserCreated]:
    """Create a user; refuse a taken login or extension, a bad role or a short password."""
    problems: dict[str, str] = {}
    if not _LOGIN_RE.match(login):
        problems["login"] = "1-64 letters, digits, _ . @ -, starting with a letter or digit"
    try:
        role = Role(role)
    except ValueError:
        problems["role"] = f"one of {', '.join(r.value for r in Role)}"
    if len(password) < MIN_PASSWORD_LENGTH:
        problems["password"] = f"at least {MIN_PASSWORD_LENGTH} characters"
    exts = list(dict.fromkeys(e.strip() for e in extensions))
    bad = [e for e in exts if not _EXTENSION_RE.match(e)]
    if bad:
        problems["extensions"] = f"digits only, got {', '.join(map(repr, bad))}"
    if problems:
        raise InvalidUser(
            "invalid user: " + "; ".join(f"{k}: {v}" for k, v in problems.items()),
            details={"fields": problems},
        )
    if await session.scalar(select(User.id).where(func.lower(User.login) == login.lower())):
        raise LoginTaken(f"login {login!r} is taken", details={"login": login})
    if exts:
        owner = await session.execute(
            select(UserExtension.extension, User.login)
            .join(User)
            .where(UserExtension.pbx == pbx, UserExtension.extension.in_(exts))
        )
        taken = owner.first()
        if taken:
            raise ExtensionTaken(
                f"extension {taken[0]} already belongs to {taken[1]!r}",
                details={"extension": taken[0], "owner": taken[1]},
            )
    hashed = await asyncio.to_thread(hash_password, password, n=scrypt_n)
    user = User(
        login=login,
        role=str(role),
        password_hash=hashed,
        display_name=display_name or login,
        email=email,
        must_change_password=must_change_password,
        extensions=[UserExtension(extension=e, pbx=pbx) for e in exts],
    )
    session.add(user)
    await session.flush()
    event = UserCreated(user_id=user.id, login=user.login, role=user.role, extensions=tuple(exts))
    return user, event


async def count_users(session: AsyncSession) -> int:
    return int(await session.scalar(select(func.count()).select_from(User)) or 0)


async def ensure_bootstrap_admin(
    session: AsyncSession, *, login: str, scrypt_n: int
) -> tuple[User, str] | None:
    """On an empty database create the first admin with a one-time password and return both."""
    if await count_users(session):
        return None
    password = new_password()
    user, _ = await create_user(
        session,
        login=login,
        role=Role.ADMIN,
        password=password,
        display_name="Администратор",
        must_change_password=True,
        scrypt_n=scrypt_n,
    )
    return user, password


@functools.lru_cache(maxsize=4)
def _dummy_hash(n: int) -> str:
    """Compared when the login does not exist, so a miss costs as much as a wrong password."""
    return hash_password("not-a-real-password", n=n)


async def authenticate(
    session: AsyncSession, login: str, password: str, *, scrypt_n: int = 2**15
) -> User:
    """Return the active user with this login and password, or raise ``InvalidCredentials``."""
    user = await session.scalar(select(User).where(func.lower(User.login) == login.lower()))
    encoded = user.password_hash if user is not None else _dummy_hash(scrypt_n)
    ok = await asyncio.to_thread(verify_password, password, encoded)
    if user is None or not ok or not user.is_active:
        raise InvalidCredentials("wrong login or password")
    if needs_rehash(user.password_hash, n=scrypt_n):
        user.password_hash = await asyncio.to_thread(hash_password, password, n=scrypt_n)
    return user


async def set_password(
    session: AsyncSession, user: User, password: str, *, scrypt_n: int = 2**15
) -> TokensRevoked:
    """Change a password and revoke every token of the user (sessions and API tokens: whoever
    learnt the old password may have taken a token with it)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidUser(
            f"password: at least {MIN_PASSWORD_LENGTH} characters",
            details={"fields": {"password": f"at least {MIN_PASSWORD_LENGTH} characters"}},
        )
    user.password_hash = await asyncio.to_thread(hash_password, password, n=scrypt_n)
    user.must_change_password = False
    return await revoke_all_tokens(session, user.id)


async def revoke_all_tokens(session: AsyncSession, user_id: int) -> TokensRevoked:
    """Revoke every live token of the user, web sessions and API tokens alike; the event
    tells the WebSocket hubs to close what they opened (publish it after the commit)."""
    await session.execute(
        update(AuthToken)
        .where(AuthToken.user_id == user_id, AuthToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return TokensRevoked(user_id=user_id)


async def set_active(session: AsyncSession, user: User, active: bool) -> TokensRevoked | None:
    """(De)activate a user; deactivating revokes every token he holds."""
    user.is_active = active
    if active:
        return None
    return await revoke_all_tokens(session, user.id)


async def issue_token(
    session: AsyncSession,
    user: User,
    *,
    kind: TokenKind,
    ttl: timedelta | None,
    name: str = "",
    now: datetime | None = None,
) -> IssuedToken:
    """Create a token for ``user``; only its hash is stored."""
    now = now or utcnow()
    secret = new_token()
    token = AuthToken(
        user_id=user.id,
        kind=kind.value,
        token_hash=hash_token(secret),
        name=name[:100],
        created_at=now,
        expires_at=now + ttl if ttl else None,
    )
    session.add(token)
    await session.flush()
    return IssuedToken(id=token.id, secret=secret, expires_at=token.expires_at)


async def resolve_token(
    session: AsyncSession, secret: str, *, kind: TokenKind, now: datetime | None = None
) -> User | None:
    """The active user a live, unrevoked token of ``kind`` belongs to, else None."""
    found = await resolve(session, secret, kind=kind, now=now)
    return found[0] if found is not None else None


# Every authenticated request asks this: the user's extensions come in the same round trip
# (joined), not in a second query as the relationship's own "selectin" would.
_RESOLVE = (
    select(AuthToken, User)
    .join(User, User.id == AuthToken.user_id)
    .options(joinedload(User.extensions))
    .where(
        AuthToken.token_hash == bindparam("digest"),
        AuthToken.kind == bindparam("kind"),
        AuthToken.revoked_at.is_(None),
    )
)


async def resolve(
    session: AsyncSession, secret: str, *, kind: TokenKind, now: datetime | None = None
) -> tuple[User, int] | None:
    """(user, token id) of a live, unrevoked token of ``kind`` of an active user, else None."""
    now = now or utcnow()
    try:
        digest = hash_token(secret)
    except UnicodeEncodeError:
        return None
    row = (await session.execute(_RESOLVE, {"digest": digest, "kind": kind.value})).unique().first()
    if row is None:
        return None
    token, user = row
    if (token.expires_at is not None and token.expires_at <= now) or not user.is_active:
        return None
    # Write last use at most once a minute, so a busy API client does not write on every call.
    if token.last_used_at is None or now - token.last_used_at > timedelta(minutes=1):
        token.last_used_at = now
    return user, token.id


async def revoke_token(
    session: AsyncSession, *, token_id: int | None = None, secret: str | None = None
) -> bool:
    """Revoke a token by id or by its secret; True when one was live."""
    cond = (
        AuthToken.id == token_id
        if token_id is not None
        else (AuthToken.token_hash == hash_token(secret or ""))
    )
    result = await session.execute(
        update(AuthToken).where(cond, AuthToken.revoked_at.is_(None)).values(revoked_at=utcnow())
    )
    return rowcount(result) > 0


async def token_owner(session: AsyncSession, token_id: int) -> int | None:
    """The id of the user a token belongs to, or None for no such token."""
    owner = await session.scalar(select(AuthToken.user_id).where(AuthToken.id == token_id))
    return int(owner) if owner is not None else None


async def list_tokens(session: AsyncSession, user_id: int) -> list[AuthToken]:
    result = await session.scalars(
        select(AuthToken)
        .where(AuthToken.user_id == user_id, AuthToken.kind == TokenKind.API.value)
        .order_by(AuthToken.id)
    )
    return list(result)


async def get_user(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def list_users(session: AsyncSession) -> list[User]:
    return list(await session.scalars(select(User).order_by(User.id)))


async def update_user(
    session: AsyncSession,
    user: User,
    *,
    actor_id: int | None = None,
    display_name: str | None = None,
    role: Role | str | None = None,
    is_active: bool | None = None,
    extensions: Iterable[str] | None = None,
    pbx: str = "",
    locale: str | None = None,
) -> User:
    """Change what is given of ``user``. Refuses a bad role or extension, an extension another
    user owns, and an administrator taking his own admin role or activity away (the last way
    back into the system)."""
    problems: dict[str, str] = {}
    if role is not None:
        try:
            role = Role(role)
        except ValueError:
            problems["role"] = f"one of {', '.join(r.value for r in Role)}"
    exts: list[str] | None = None
    if extensions is not None:
        exts = list(dict.fromkeys(e.strip() for e in extensions if e.strip()))
        bad = [e for e in exts if not _EXTENSION_RE.match(e)]
        if bad:
            problems["extensions"] = f"digits only, got {', '.join(map(repr, bad))}"
    if actor_id == user.id and (is_active is False or (role is not None and role != Role.ADMIN)):
        problems["role" if role is not None else "is_active"] = "you may not demote yourself"
    if locale is not None and locale not in ("ru", "en"):
        problems["locale"] = "ru or en"
    if problems:
        raise InvalidUser(
            "invalid user: " + "; ".join(f"{k}: {v}" for k, v in problems.items()),
            details={"fields": problems, "field": next(iter(problems))},
        )
    if exts is not None:
        owner = await session.execute(
            select(UserExtension.extension, User.login)
            .join(User)
            .where(
                UserExtension.pbx == pbx,
                UserExtension.extension.in_(exts),
                UserExtension.user_id != user.id,
            )
        )
        taken = owner.first()
        if taken:
            raise ExtensionTaken(
                f"extension {taken[0]} already belongs to {taken[1]!r}",
                details={"extension": taken[0], "owner": taken[1], "field": "extensions"},
            )
        keep = [e for e in user.extensions if e.pbx != pbx or e.extension in exts]
        have = {e.extension for e in keep if e.pbx == pbx}
        keep.extend(UserExtension(extension=e, pbx=pbx) for e in exts if e not in have)
        user.extensions = keep
    if display_name is not None:
        user.display_name = display_name.strip() or user.login
    if role is not None:
        user.role = str(role)
    if is_active is not None:
        user.is_active = is_active
    if locale is not None:
        user.locale = locale
    await session.flush()
    return user


async def reset_password(
    session: AsyncSession, user: User, *, scrypt_n: int = 2**15
) -> tuple[str, TokensRevoked]:
    """Give ``user`` a new one-time password (returned once, never stored in clear): he must
    change it at his next sign-in; every token he held is revoked (publish the event after
    the commit: his open pages are closed)."""
    password = new_password()
    revoked = await set_password(session, user, password, scrypt_n=scrypt_n)
    user.must_change_password = True
    await session.flush()
    return password, revoked
