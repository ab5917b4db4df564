"""Channel configs: each kind's model, errors naming the keys, secrets kept secret, the registry."""

from __future__ import annotations

import datetime as dt

import pytest

from channels.base import (
    ChannelAdapter,
    MediaFetcher,
    MediaSender,
    Sender,
    TemplateSender,
    WebhookParser,
)
from channels.config import EmailConfig, SmsConfig, TelegramConfig, WhatsAppConfig, parse_channels
from channels.errors import ChannelConfigInvalid
from channels.mail import EmailAdapter
from channels.registry import ADAPTERS, adapter_class, build_adapter
from channels.sms import SmscAdapter
from channels.telegram import TelegramAdapter
from channels.whatsapp import WhatsAppAdapter
from tests.channels.conftest import wa_config

EMAIL = {
    "code": "mail-sales",
    "kind": "email",
    "address": "sales@shop.test",
    "imap_host": "imap.shop.test",
    "imap_password": "p",
    "smtp_host": "smtp.shop.test",
}
TELEGRAM = {"code": "tg", "kind": "telegram", "bot_token": "1:A", "webhook_secret": "s"}
SMS = {"code": "sms", "kind": "sms", "login": "cc", "password": "p"}


def test_every_kind_parses_with_its_defaults() -> None:
    wa, mail, tg, sms = parse_channels([wa_config(), EMAIL, TELEGRAM, SMS])
    assert isinstance(wa, WhatsAppConfig) and wa.api_url == "http://127.0.0.1:9"
    assert isinstance(mail, EmailConfig)
    assert (mail.imap_port, mail.imap_security, mail.smtp_port, mail.smtp_security) == (
        993,
        "ssl",
        587,
        "starttls",
    )
    assert mail.mailboxes == ("INBOX",) and mail.login_imap == "sales@shop.test"
    assert isinstance(tg, TelegramConfig) and tg.api_url == "https://api.telegram.org"
    assert isinstance(sms, SmsConfig) and sms.api_url == "https://smsc.ru"


def test_secrets_never_show() -> None:
    cfg = WhatsAppAdapter.validate_config(wa_config())
    text = repr(cfg) + str(cfg.model_dump())
    for secret in ("wa-token", "app-secret-for-tests", "verify-me"):
        assert secret not in text
    assert cfg.app_secret.get_secret_value() == "app-secret-for-tests"


def test_errors_name_every_bad_key() -> None:
    raw = wa_config()
    del raw["app_secret"]
    raw["phone_number_id"] = "not digits"
    raw["api_url"] = "ftp://x"
    with pytest.raises(ChannelConfigInvalid) as err:
        WhatsAppAdapter.validate_config(raw)
    assert set(err.value.problems) == {"app_secret", "phone_number_id", "api_url"}
    assert "app_secret" in err.value.message


def test_unknown_keys_and_kinds_are_refused() -> None:
    with pytest.raises(ChannelConfigInvalid) as err:
        parse_channels([{**TELEGRAM, "bot_tokne": "typo"}])
    assert "[0].bot_tokne" in err.value.problems
    with pytest.raises(ChannelConfigInvalid) as err:
        parse_channels([{"code": "x", "kind": "viber"}])
    assert err.value.problems == {"[0].kind": "must be one of whatsapp, email, telegram, sms"}


def test_codes_are_unique() -> None:
    with pytest.raises(ChannelConfigInvalid) as err:
        parse_channels([EMAIL, {**EMAIL, "address": "ivanov@shop.test"}])
    assert "[1].code" in err.value.problems


def test_imap_starttls_is_refused_with_a_reason() -> None:
    with pytest.raises(ChannelConfigInvalid) as err:
        EmailAdapter.validate_config({**EMAIL, "imap_security": "starttls"})
    assert "imap_security" in err.value.problems


def test_several_mailboxes_are_several_channels() -> None:
    shared, personal = parse_channels(
        [EMAIL, {**EMAIL, "code": "mail-ivanov", "address": "ivanov@shop.test"}]
    )
    assert (shared.code, personal.code) == ("mail-sales", "mail-ivanov")


async def test_the_registry_builds_each_kind_with_its_capabilities() -> None:
    assert set(ADAPTERS) == {"whatsapp", "email", "telegram", "sms"}
    assert adapter_class("sms") is SmscAdapter
    with pytest.raises(KeyError, match="known: whatsapp"):
        adapter_class("viber")
    adapters = [build_adapter(raw) for raw in (wa_config(), EMAIL, TELEGRAM, SMS)]
    try:
        wa, mail, tg, sms = adapters
        assert isinstance(wa, WhatsAppAdapter) and isinstance(tg, TelegramAdapter)
        for adapter in adapters:
            assert isinstance(adapter, ChannelAdapter)
            assert isinstance(adapter, Sender)
        assert isinstance(wa, TemplateSender) and not isinstance(tg, TemplateSender)
        assert all(isinstance(a, WebhookParser) for a in (wa, tg, sms))
        assert not isinstance(mail, WebhookParser)
        assert all(isinstance(a, MediaFetcher) for a in (wa, tg))
        assert all(isinstance(a, MediaSender) for a in (wa, tg, mail))
        now = dt.datetime(2025, 6, 9, tzinfo=dt.UTC)
        old = now - dt.timedelta(days=3)
        assert [a.messaging_window_open(old, now) for a in adapters] == [False, True, True, True]
    finally:
        for adapter in adapters:
            await adapter.close()
