"""Interface texts. Russian is the default language of the web UI; English is available."""

from __future__ import annotations

from aiohttp import web

LANGUAGES = ("ru", "en")

MESSAGES: dict[str, dict[str, str]] = {
    "ru": {
        "app.title": "Контакт-центр",
        "login.title": "Вход",
        "login.login": "Логин",
        "login.password": "Пароль",
        "login.submit": "Войти",
        "login.failed": "Неверный логин или пароль",
        "login.throttled": "Слишком много попыток входа. Попробуйте позже.",
        "home.title": "Рабочее место",
        "home.greeting": "Здравствуйте, {name}",
        "home.role": "Роль",
        "home.extensions": "Внутренние номера",
        "home.none": "нет",
        "home.logout": "Выйти",
        "home.change_password": "Смените пароль, выданный при первом запуске.",
        "role.admin": "администратор",
        "role.head": "руководитель отдела продаж",
        "role.manager": "менеджер",
        "lang.switch": "English",
    },
    "en": {
        "app.title": "Contact center",
        "login.title": "Sign in",
        "login.login": "Login",
        "login.password": "Password",
        "login.submit": "Sign in",
        "login.failed": "Wrong login or password",
        "login.throttled": "Too many sign-in attempts. Try again later.",
        "home.title": "Workplace",
        "home.greeting": "Hello, {name}",
        "home.role": "Role",
        "home.extensions": "Extensions",
        "home.none": "none",
        "home.logout": "Sign out",
        "home.change_password": "Change the password issued at first start.",
        "role.admin": "administrator",
        "role.head": "head of sales",
        "role.manager": "manager",
        "lang.switch": "Русский",
    },
}


def pick_language(request: web.Request, default: str, user_locale: str | None = None) -> str:
    """``?lang=`` beats the ``cc_lang`` cookie, which beats the user's setting and the default."""
    for candidate in (request.query.get("lang"), request.cookies.get("cc_lang"), user_locale):
        if candidate in LANGUAGES:
            return candidate
    return default if default in LANGUAGES else "ru"


def translator(lang: str):  # type: ignore[no-untyped-def]
    table = MESSAGES.get(lang, MESSAGES["ru"])

    def t(key: str, **kwargs: object) -> str:
        text = table.get(key) or MESSAGES["en"].get(key) or key
        return text.format(**kwargs) if kwargs else text

    return t
