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
        "home.calls": "Звонки",
        "home.time": "Время",
        "home.number": "Номер",
        "home.event": "Событие",
        "home.waiting": "Ожидание звонков…",
        "ws.online": "на связи",
        "ws.offline": "нет связи, переподключение…",
        "pop.incoming": "Входящий звонок",
        "pop.hidden_number": "номер скрыт",
        "pop.no_name": "Без имени",
        "pop.open_card": "Открыть карточку",
        "pop.new_client": "Новый клиент",
        "pop.did": "Номер линии",
        "pop.contact_name": "Имя контакта",
        "pop.company_name": "Компания",
        "pop.comment": "Комментарий",
        "pop.create_lead": "Создать лид",
        "pop.lead_created": "Лид создан",
        "pop.lead_failed": "Не удалось создать лид",
        "pop.close": "Закрыть",
        "card.company": "Компания",
        "card.client_type": "Тип клиента",
        "card.potential": "Потенциал",
        "card.responsible": "Ответственный",
        "card.region": "Регион",
        "card.source": "Источник",
        "card.call_source": "Источник звонка",
        "card.deals": "Открытые сделки",
        "card.tasks": "Задачи",
        "card.activities": "Последние события",
        "log.ringing": "звонит на",
        "log.answered": "ответил",
        "log.seconds": "с",
        "disposition.answered": "разговор окончен",
        "disposition.missed": "пропущен",
        "disposition.abandoned": "абонент не дождался",
        "disposition.busy": "занято",
        "disposition.failed": "не удался",
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
        "home.calls": "Calls",
        "home.time": "Time",
        "home.number": "Number",
        "home.event": "Event",
        "home.waiting": "Waiting for calls…",
        "ws.online": "online",
        "ws.offline": "offline, reconnecting…",
        "pop.incoming": "Incoming call",
        "pop.hidden_number": "number withheld",
        "pop.no_name": "No name",
        "pop.open_card": "Open the card",
        "pop.new_client": "New client",
        "pop.did": "Line",
        "pop.contact_name": "Contact name",
        "pop.company_name": "Company",
        "pop.comment": "Comment",
        "pop.create_lead": "Create lead",
        "pop.lead_created": "Lead created",
        "pop.lead_failed": "Could not create the lead",
        "pop.close": "Close",
        "card.company": "Company",
        "card.client_type": "Client type",
        "card.potential": "Potential",
        "card.responsible": "Responsible",
        "card.region": "Region",
        "card.source": "Source",
        "card.call_source": "Call source",
        "card.deals": "Open deals",
        "card.tasks": "Tasks",
        "card.activities": "Recent activity",
        "log.ringing": "ringing at",
        "log.answered": "answered by",
        "log.seconds": "s",
        "disposition.answered": "call ended",
        "disposition.missed": "missed",
        "disposition.abandoned": "caller gave up",
        "disposition.busy": "busy",
        "disposition.failed": "failed",
    },
}


def pick_language(request: web.Request, default: str, user_locale: str | None = None) -> str:
    """``?lang=`` beats the ``cc_lang`` cookie, which beats the user's setting and the default."""
    for candidate in (request.query.get("lang"), request.cookies.get("cc_lang"), user_locale):
        if candidate in LANGUAGES:
            return candidate
    return default if default in LANGUAGES else "ru"


def table(lang: str) -> dict[str, str]:
    """Every text of ``lang`` (English filling any gap), for the browser."""
    return {**MESSAGES["en"], **MESSAGES.get(lang, MESSAGES["ru"])}


def translator(lang: str):  # type: ignore[no-untyped-def]
    table = MESSAGES.get(lang, MESSAGES["ru"])

    def t(key: str, **kwargs: object) -> str:
        text = table.get(key) or MESSAGES["en"].get(key) or key
        return text.format(**kwargs) if kwargs else text

    return t
