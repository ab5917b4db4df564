"""Users, passwords and tokens on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.users import service as users
from crm_core.users.errors import ExtensionTaken, InvalidCredentials, InvalidUser, LoginTaken
from crm_core.users.model import Role, TokenKind
from crm_core.users.passwords import hash_password, needs_rehash, verify_password

N = 1024  # fast scrypt for tests


def test_password_hash_is_salted_scrypt_and_verifies() -> None:
    a, b = hash_password("correct horse", n=N), hash_password("correct horse", n=N)
    assert a.startswith("scrypt$1024$8$1$") and a != b
    assert verify_password("correct horse", a)
    assert not verify_password("correct horsE", a)
    assert not verify_password("x", "garbage")
    assert needs_rehash(a, n=2048) and not needs_rehash(a, n=N)


async def test_create_user_with_extensions(session: AsyncSession) -> None:
    user, event = await users.create_user(
        session,
        login="ivan",
        role="manager",
        password="password1",
        extensions=["101", "102"],
        display_name="Иван Петров",
        scrypt_n=N,
    )
    await session.commit()
    assert [e.extension for e in user.extensions] == ["101", "102"]
    assert event.name == "user.created" and event.user_id == user.id
    assert event.extensions == ("101", "102")
    assert "password1" not in user.password_hash


async def test_login_and_extension_are_unique(session: AsyncSession) -> None:
    await users.create_user(
        session, login="anna", role="manager", password="password1", extensions=["102"], scrypt_n=N
    )
    with pytest.raises(LoginTaken):
        await users.create_user(
            session, login="ANNA", role="head", password="password1", scrypt_n=N
        )
    with pytest.raises(ExtensionTaken) as info:
        await users.create_user(
            session,
            login="petr",
            role="manager",
            password="password1",
            extensions=["102"],
            scrypt_n=N,
        )
    assert info.value.details == {"extension": "102", "owner": "anna"}


async def test_bad_user_input_names_every_field(session: AsyncSession) -> None:
    with pytest.raises(InvalidUser) as info:
        await users.create_user(
            session,
            login="bad login",
            role="boss",
            password="short",
            extensions=["1O1"],
            scrypt_n=N,
        )
    assert set(info.value.details["fields"]) == {"login", "role", "password", "extensions"}


async def test_authenticate(session: AsyncSession) -> None:
    await users.create_user(session, login="head", role=Role.HEAD, password="password1", scrypt_n=N)
    await session.commit()
    user = await users.authenticate(session, "HEAD", "password1", scrypt_n=N)
    assert user.login == "head"
    with pytest.raises(InvalidCredentials):
        await users.authenticate(session, "head", "wrong-password", scrypt_n=N)
    with pytest.raises(InvalidCredentials):
        await users.authenticate(session, "nobody", "password1", scrypt_n=N)
    user.is_active = False
    await session.commit()
    with pytest.raises(InvalidCredentials):
        await users.authenticate(session, "head", "password1", scrypt_n=N)


async def test_authenticate_upgrades_an_old_hash(session: AsyncSession) -> None:
    user, _ = await users.create_user(
        session, login="old", role="manager", password="password1", scrypt_n=N
    )
    await session.commit()
    await users.authenticate(session, "old", "password1", scrypt_n=2 * N)
    assert user.password_hash.startswith("scrypt$2048$")


async def test_tokens_are_stored_hashed_expire_and_revoke(session: AsyncSession) -> None:
    user, _ = await users.create_user(
        session, login="api", role="manager", password="password1", scrypt_n=N
    )
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    issued = await users.issue_token(
        session, user, kind=TokenKind.API, ttl=timedelta(hours=1), now=now
    )
    await session.commit()
    tokens = await users.list_tokens(session, user.id)
    assert [t.id for t in tokens] == [issued.id]
    assert tokens[0].token_hash != issued.secret and issued.secret not in tokens[0].token_hash

    found = await users.resolve_token(session, issued.secret, kind=TokenKind.API, now=now)
    assert found is not None and found.id == user.id
    # A session token is not a bearer token and the other way round.
    assert (
        await users.resolve_token(session, issued.secret, kind=TokenKind.SESSION, now=now) is None
    )
    later = now + timedelta(hours=1, seconds=1)
    assert await users.resolve_token(session, issued.secret, kind=TokenKind.API, now=later) is None

    assert await users.revoke_token(session, token_id=issued.id)
    assert not await users.revoke_token(session, token_id=issued.id)
    await session.commit()
    assert await users.resolve_token(session, issued.secret, kind=TokenKind.API, now=now) is None


async def test_password_change_revokes_web_sessions_and_api_tokens(session: AsyncSession) -> None:
    user, _ = await users.create_user(
        session, login="web", role="manager", password="password1", scrypt_n=N
    )
    web = await users.issue_token(session, user, kind=TokenKind.SESSION, ttl=timedelta(hours=1))
    api = await users.issue_token(session, user, kind=TokenKind.API, ttl=None)
    await session.commit()
    revoked = await users.set_password(session, user, "password2", scrypt_n=N)
    await session.commit()
    assert revoked.user_id == user.id and revoked.token_ids == ()  # every token
    assert await users.resolve_token(session, web.secret, kind=TokenKind.SESSION) is None
    # Whoever learnt the old password may have taken an API token with it.
    assert await users.resolve_token(session, api.secret, kind=TokenKind.API) is None
    assert (await users.authenticate(session, "web", "password2", scrypt_n=N)).id == user.id


async def test_bootstrap_admin_only_on_empty_database(session: AsyncSession) -> None:
    created = await users.ensure_bootstrap_admin(session, login="admin", scrypt_n=N)
    await session.commit()
    assert created is not None
    admin, password = created
    assert admin.role == "admin" and admin.must_change_password
    assert (await users.authenticate(session, "admin", password, scrypt_n=N)).id == admin.id
    assert await users.ensure_bootstrap_admin(session, login="admin", scrypt_n=N) is None


async def test_deactivation_revokes_every_token(session: AsyncSession) -> None:
    user, _ = await users.create_user(
        session, login="gone", role="manager", password="password1", scrypt_n=N
    )
    api = await users.issue_token(session, user, kind=TokenKind.API, ttl=None)
    await session.commit()
    revoked = await users.set_active(session, user, False)
    await session.commit()
    assert revoked is not None and revoked.user_id == user.id
    await users.set_active(session, user, True)
    await session.commit()
    # Reactivated, the old token stays dead: it was revoked, not merely refused.
    assert await users.resolve_token(session, api.secret, kind=TokenKind.API) is None
