"""Typed configuration of each channel kind (pydantic), validated once and passed down.

``config.yaml`` ``channels:`` is a list of ``{code, kind, ...}``; :func:`parse_channel_config`
turns one entry into the model of its kind and :func:`parse_channels` the whole list (codes must
be unique). Errors are :class:`~channels.errors.ChannelConfigInvalid` whose ``problems`` name
each bad key. Secrets are ``SecretStr`` (``.get_secret_value()`` where they are used), so they
never reach a log line or a repr.

The composition root may also embed :data:`ChannelConfig` in its own settings model: it is a
discriminated union on ``kind``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError

from channels.errors import ChannelConfigInvalid

_CODE = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_ADDRESS = r"^[^@\s<>]+@[^@\s<>]+$"
MiB = 1024 * 1024


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    code: str = Field(pattern=_CODE, description="the channel's code: webhook path and label")
    name: str | None = Field(None, description="the label people see (default: the code)")


class WhatsAppConfig(_Channel):
    """WhatsApp Business Cloud API: one business phone number."""

    kind: Literal["whatsapp"]
    phone_number_id: str = Field(pattern=r"^\d{1,32}$")
    access_token: SecretStr
    app_secret: SecretStr
    verify_token: SecretStr
    waba_id: str | None = Field(
        None, pattern=r"^\d{1,32}$", description="WhatsApp Business Account id (template sync)"
    )
    api_url: str = Field("https://graph.facebook.com", pattern=r"^https?://")
    api_version: str = Field("22.0", pattern=r"^\d+\.\d+$")
    media_max_bytes: int = Field(25 * MiB, gt=0)
    timeout_s: float = Field(30.0, gt=0)


class EmailConfig(_Channel):
    """A mailbox: IMAP in, SMTP out. A shared sales@ and each manager's own mailbox are
    separate channels of this kind."""

    kind: Literal["email"]
    address: str = Field(pattern=_ADDRESS, description="the From address of replies")
    display_name: str | None = None
    imap_host: str
    imap_port: int = Field(993, gt=0, lt=65536)
    # aioimaplib has no STARTTLS: implicit TLS (993) or, on a trusted network, plain.
    imap_security: Literal["ssl", "none"] = "ssl"
    imap_user: str | None = Field(None, description="default: address")
    imap_password: SecretStr
    imap_enabled: bool = Field(
        True,
        description="read the mailboxes; off for a mailbox only sent from (the demo hands its "
        "customers' letters to the reader's store function itself)",
    )
    mailboxes: tuple[str, ...] = ("INBOX",)
    idle: bool = Field(True, description="use IMAP IDLE where the server has it")
    poll_interval_s: float = Field(60.0, gt=0)
    idle_renew_s: float = Field(25 * 60.0, gt=0, description="re-issue IDLE before 29 min")
    fetch_batch: int = Field(50, gt=0, le=1000)
    smtp_host: str
    smtp_port: int = Field(587, gt=0, lt=65536)
    smtp_security: Literal["starttls", "ssl", "none"] = "starttls"
    smtp_user: str | None = Field(None, description="default: address")
    smtp_password: SecretStr | None = None
    attachment_max_bytes: int = Field(25 * MiB, gt=0)
    timeout_s: float = Field(30.0, gt=0)
    owner: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="a personal mailbox: the login of the manager it belongs to (his alone); "
        "without it the mailbox is shared and its mail goes by the distribution rules",
    )

    @property
    def login_imap(self) -> str:
        return self.imap_user or self.address

    @property
    def login_smtp(self) -> str:
        return self.smtp_user or self.address


class TelegramConfig(_Channel):
    """A Telegram bot (Bot API) receiving updates through a webhook."""

    kind: Literal["telegram"]
    bot_token: SecretStr
    webhook_secret: SecretStr = Field(
        description="sent by Telegram as X-Telegram-Bot-Api-Secret-Token (setWebhook secret_token)"
    )
    api_url: str = Field("https://api.telegram.org", pattern=r"^https?://")
    media_max_bytes: int = Field(20 * MiB, gt=0, description="the Bot API serves up to 20 MB")
    timeout_s: float = Field(30.0, gt=0)


class SmsConfig(_Channel):
    """An SMS gateway account. ``provider`` is ``smsc`` (SMSC.ru HTTP API)."""

    kind: Literal["sms"]
    provider: Literal["smsc"] = "smsc"
    login: str
    password: SecretStr
    sender: str | None = Field(None, description="an approved sender name (alpha-name)")
    api_url: str = Field("https://smsc.ru", pattern=r"^https?://")
    callback_secret: SecretStr | None = Field(
        None,
        description="the handler password set in the gateway's account: callbacks are signed "
        "with it (md5 field); without it callbacks are accepted unsigned",
    )
    timeout_s: float = Field(30.0, gt=0)


ChannelConfig = Annotated[
    WhatsAppConfig | EmailConfig | TelegramConfig | SmsConfig, Field(discriminator="kind")
]
_ADAPTER: TypeAdapter[WhatsAppConfig | EmailConfig | TelegramConfig | SmsConfig] = TypeAdapter(
    ChannelConfig
)


def _problems(exc: ValidationError) -> dict[str, str]:
    out: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        # a discriminated union puts the kind's tag first: ("whatsapp", "app_secret")
        if loc and loc[0] in ("whatsapp", "email", "telegram", "sms"):
            loc = loc[1:]
        out[".".join(loc) or "kind"] = error["msg"]
    return out


def parse_channel_config(raw: Mapping[str, Any]) -> ChannelConfig:
    """One ``channels:`` entry as the model of its kind, or ``ChannelConfigInvalid``."""
    if not isinstance(raw, Mapping):
        raise ChannelConfigInvalid(
            "a channel must be a mapping", problems={"": f"got {type(raw).__name__}"}
        )
    kind = raw.get("kind")
    if kind not in ("whatsapp", "email", "telegram", "sms"):
        raise ChannelConfigInvalid(
            f"channel {raw.get('code')!r}: unknown kind {kind!r}",
            problems={"kind": "must be one of whatsapp, email, telegram, sms"},
        )
    try:
        return _ADAPTER.validate_python(dict(raw))
    except ValidationError as exc:
        problems = _problems(exc)
        raise ChannelConfigInvalid(
            f"channel {raw.get('code')!r} ({kind}): bad "
            + ", ".join(f"{k} ({v})" for k, v in problems.items()),
            problems=problems,
        ) from None


def parse_channels(raw: Sequence[Mapping[str, Any]] | None) -> list[ChannelConfig]:
    """The whole ``channels:`` list; problems are keyed ``"[index].key"``; codes are unique."""
    configs: list[ChannelConfig] = []
    problems: dict[str, str] = {}
    seen: dict[str, int] = {}
    for index, entry in enumerate(raw or ()):
        try:
            cfg = parse_channel_config(entry)
        except ChannelConfigInvalid as exc:
            problems.update(
                {f"[{index}].{k}" if k else f"[{index}]": v for k, v in exc.problems.items()}
            )
            continue
        if cfg.code in seen:
            problems[f"[{index}].code"] = f"{cfg.code!r} is also the code of entry {seen[cfg.code]}"
            continue
        seen[cfg.code] = index
        configs.append(cfg)
    if problems:
        raise ChannelConfigInvalid(
            "channels: " + "; ".join(f"{k}: {v}" for k, v in problems.items()), problems=problems
        )
    return configs
