"""The admin's journey as one continuous browser session (issue 12): he signs in, creates a
user (the one-time password shown once), resets that password (a new one replaces it), signs
out; the new user signs in with it and must choose his own before anything else, then works
with it. A screenshot of every step at 1440×900 goes to
docs/screenshots/journey-admin-NN-<step>.png."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from contact_center.keys import SESSIONS
from crm_core.users.model import User, UserExtension
from tests.browser._journey import journey, make_user


async def _sign_out(page: Any) -> None:
    await page.click("details.user-menu > summary")
    await page.click("details.user-menu button[type=submit]")
    await page.wait_for_url(re.compile(r".*/login$"))


async def test_the_admin_creates_a_user_resets_his_password_and_he_must_change_it(
    client: Any, browser: Any
) -> None:
    await make_user(client, "root", "admin", "Администратор")
    j = await journey(browser, client, "admin")
    page = j.page

    await page.goto(f"{j.base}/login")
    assert "Вход" in await page.inner_text("main")
    await j.shot("login")
    await j.sign_in("root")
    assert page.url == f"{j.base}/"
    await j.shot("home")

    # Users: from the menu, a new manager with an extension.
    await page.click("nav a[href='/users']")
    await page.wait_for_url(f"{j.base}/users")
    assert "Пользователи" in await page.inner_text("h1")
    await j.shot("users")
    await page.fill("#create-user input[name=login]", "petr")
    await page.fill("#create-user input[name=display_name]", "Пётр Соколов")
    await page.select_option("#create-user select[name=role]", label="Менеджер")
    await page.fill("#create-user input[name=extensions]", "105")
    await page.click("#create-user button[type=submit]")
    await page.locator("#one-time").wait_for()
    assert "Пётр Соколов: временный пароль" in await page.inner_text("#one-time")
    first = (await page.inner_text("#issued-password")).strip()
    row = page.locator("#user-petr")
    cells = await row.inner_text()
    assert "Пётр Соколов" in cells and "Менеджер" in cells and "105" in cells
    await j.shot("user-created")
    async with client.app[SESSIONS]() as s:
        petr = await s.scalar(select(User).where(User.login == "petr"))
        assert petr is not None and petr.role == "manager"
        exts = list(await s.scalars(select(UserExtension.extension)))
        assert "105" in exts

    # He lost it: a reset issues another; the first no longer works.
    await row.locator("button", has_text="Сбросить пароль").click()
    await page.locator("#one-time").wait_for()
    password = (await page.inner_text("#issued-password")).strip()
    assert password and password != first
    await j.shot("password-reset")
    await _sign_out(page)

    await j.sign_in("petr", first)
    assert page.url.endswith("/login")
    assert "Неверный логин или пароль" in await page.inner_text("main")

    # First sign-in with the one-time password: a new one before anything else.
    await j.sign_in("petr", password)
    assert page.url.endswith("/settings/password")
    assert "Новый пароль" in await page.inner_text("h1")
    assert "вы вошли с временным паролем" in await page.inner_text("main")
    await j.shot("first-sign-in-new-password")
    await page.goto(f"{j.base}/leads")  # typed in the address bar: still the password first
    assert page.url.endswith("/settings/password")
    await page.fill("#current_password", password)
    await page.fill("#new_password", "my-own-password")
    await page.fill("#new_password_again", "my-other-password")
    await page.click("button.primary")
    assert page.url.endswith("/settings/password")
    assert "не совпадают" in await page.inner_text("main")
    await page.fill("#current_password", password)
    await page.fill("#new_password", "my-own-password")
    await page.fill("#new_password_again", "my-own-password")
    await page.click("button.primary")
    await page.wait_for_url(f"{j.base}/")
    assert "Мой день" in await page.inner_text("h1")
    await j.shot("my-day-after-new-password")
    await _sign_out(page)

    await j.sign_in("petr", "my-own-password")
    assert page.url == f"{j.base}/"
    await page.click("nav a[href='/leads']")
    await page.wait_for_url(re.compile(r".*/leads$"))
    await j.shot("leads")
    assert j.problems == []
