"""The registry: a channel ``kind`` to its adapter class, and building adapters from config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from channels.base import ChannelKind
from channels.config import ChannelConfig, EmailConfig, SmsConfig, TelegramConfig, WhatsAppConfig
from channels.config import parse_channel_config as parse_channel_config
from channels.mail import EmailAdapter
from channels.sms import SmscAdapter
from channels.telegram import TelegramAdapter
from channels.whatsapp import WhatsAppAdapter

Adapter = WhatsAppAdapter | EmailAdapter | TelegramAdapter | SmscAdapter

ADAPTERS: dict[ChannelKind, type[Adapter]] = {
    "whatsapp": WhatsAppAdapter,
    "email": EmailAdapter,
    "telegram": TelegramAdapter,
    "sms": SmscAdapter,
}

CONFIGS: dict[ChannelKind, type[Any]] = {
    "whatsapp": WhatsAppConfig,
    "email": EmailConfig,
    "telegram": TelegramConfig,
    "sms": SmsConfig,
}


def adapter_class(kind: str) -> type[Adapter]:
    """The adapter class of ``kind``; ``KeyError`` naming the known kinds otherwise."""
    try:
        return ADAPTERS[cast(ChannelKind, kind)]
    except KeyError:
        raise KeyError(f"unknown channel kind {kind!r} (known: {', '.join(ADAPTERS)})") from None


def build_adapter(config: ChannelConfig | Mapping[str, Any]) -> Adapter:
    """An adapter for one channel, from its validated config (or a raw ``{code, kind, ...}``
    mapping, validated here). The caller owns it: ``await adapter.close()`` at shutdown."""
    cfg = config if not isinstance(config, Mapping) else parse_channel_config(config)
    if isinstance(cfg, WhatsAppConfig):
        return WhatsAppAdapter(cfg)
    if isinstance(cfg, EmailConfig):
        return EmailAdapter(cfg)
    if isinstance(cfg, TelegramConfig):
        return TelegramAdapter(cfg)
    return SmscAdapter(cfg)
