"""Typed, validated configuration.

Layers, lowest first: built-in defaults, ``config.yaml``, environment variables. Every leaf key
``a.b.c`` can be overridden by ``CC_A_B_C`` (``database.url`` -> ``CC_DATABASE_URL``); list and
mapping values (``pbx``, ``tracking.sites``) take JSON or YAML in the variable. The settings are
loaded once by the CLI and handed down; no other module reads the environment.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from channels.config import ChannelConfig
from crm_core import phones, rules
from crm_core.tracking.schemas import KINDS as SourceClass

ENV_PREFIX = "CC_"
_MAX_INDEXED = 16  # list entries addressable by CC_<LIST>_<i>_<KEY>
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/contact_center.sqlite3"


class ConfigError(Exception):
    """Configuration that cannot be used; ``lines`` name each offending key."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def _ip_networks(value: list[str]) -> list[str]:
    from contact_center.http.proxies import networks

    networks(value)  # raises ValueError naming the entry
    return value


IpNetworks = Annotated[list[str], AfterValidator(_ip_networks)]
"""Addresses or CIDR networks, each checked."""


CardKind = Literal["lead", "contact", "company"]


def _every_card_kind() -> list[CardKind]:
    return ["lead", "contact", "company"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    shutdown_timeout_s: float = Field(10.0, gt=0, le=300)
    trusted_proxies: IpNetworks = Field(default_factory=list)


class DatabaseSettings(_Section):
    url: str = DEFAULT_DATABASE_URL
    migrate_on_start: bool = True
    pool_size: int = Field(10, ge=1, le=200)
    connect_retry_max_s: float = Field(30.0, gt=0)
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("expected a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
        return value


class RedisSettings(_Section):
    url: str | None = None
    prefix: str = Field("cc", pattern=r"^[A-Za-z0-9_.:-]+$")
    max_connections: int = Field(64, ge=2, le=10_000)
    pool_timeout_s: float = Field(2.0, gt=0, le=60)
    socket_timeout_s: float = Field(2.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected a redis://, rediss:// or unix:// URL")
        return value


class CdrSettings(_Section):
    """Where this PBX writes its CDR (issue 14): ``csv`` (the path of cdr_csv's Master.csv as
    this server sees it) or ``url`` + ``table`` (a cdr_pgsql / cdr_adaptive_odbc table with a
    ``linkedid`` column). Read after every reconnect and at start-up for the calls the AMI link
    did not see."""

    csv: str | None = None
    columns: list[str] | None = None  # Master.csv's column order when not cdr_csv's default
    url: str | None = None
    table: str = Field("cdr", pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
    timezone: str = "UTC"  # the zone the CDR's times are written in (cdr.conf usegmtime = no)
    lookback_h: float = Field(24.0, gt=0, le=24 * 31)  # at start-up, at most this far back
    settle_s: float = Field(5.0, ge=0, le=600)  # a call with estimated times: CDR read after

    @field_validator("url")
    @classmethod
    def _cdr_driver(cls, value: str | None) -> str | None:
        if value and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("expected a sqlite+aiosqlite:// or postgresql+asyncpg:// URL")
        return value or None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value.upper() != "UTC":
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class PbxSettings(_Section):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    host: str = "127.0.0.1"
    port: int = Field(5038, ge=1, le=65535)
    username: str = Field(min_length=1)
    secret: SecretStr
    trunks: list[str] = Field(default_factory=list)
    extension_pattern: str = r"^\d{3}$"
    enabled: bool = True
    originate_tech: str = Field("PJSIP", pattern=r"^[A-Za-z0-9]+$")
    originate_context: str = Field("internal", min_length=1)
    originate_exten: str = "{e164}"
    cdr: CdrSettings | None = None

    @field_validator("cdr")
    @classmethod
    def _one_cdr_source(cls, value: CdrSettings | None) -> CdrSettings | None:
        if value is not None and (value.csv is None) == (value.url is None):
            raise ValueError("cdr: give either csv (a Master.csv path) or url (a CDR table)")
        return value

    @field_validator("extension_pattern")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"expected a regular expression ({exc})") from exc
        return value


class TelephonySettings(_Section):
    count_threshold_s: float = Field(60.0, ge=0)
    callback_due_minutes: int = Field(30, ge=1)
    # With Redis, one instance follows each PBX under a lease of this length, renewed every
    # third of it: another instance takes over within about this long after the holder dies.
    pbx_lease_ttl_s: float = Field(3.0, ge=1.0, le=300.0)


class SchedulerSettings(_Section):
    interval_s: float = Field(1.0, gt=0, le=3600)
    batch: int = Field(20, ge=1, le=1000)
    # Jobs run at once per instance (a slow provider holds up no more than its own sends).
    concurrency: int = Field(8, ge=1, le=256)
    # How long a claimed job is its worker's: a job whose worker died (kill -9, a lost
    # machine) runs again this long after it was claimed. Longer than any job takes.
    lease_s: float = Field(120.0, ge=1, le=86400)


class StageSettings(_Section):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    name_ru: str
    name_en: str = ""
    kind: Literal["open", "won", "lost"] = "open"


class PipelineSettings(_Section):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    name_ru: str
    name_en: str = ""
    is_default: bool = False
    stages: list[StageSettings] = Field(min_length=2)


class CustomFieldOption(_Section):
    """One choice of an enum field: the value stored, and what a person reads."""

    value: str = Field(min_length=1, max_length=200)
    label_ru: str = ""
    label_en: str = ""


class CustomFieldSettings(_Section):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    type: Literal["string", "number", "date", "enum", "bool"]
    label_ru: str = ""
    label_en: str = ""
    # An enum's choices: a plain value (shown as it is) or {value, label_ru, label_en}.
    options: list[str | CustomFieldOption] = Field(default_factory=list)
    applies_to: list[CardKind] = Field(default_factory=_every_card_kind)


class CrmSettings(_Section):
    default_region: str = Field("RU", min_length=2, max_length=2)
    currency: Literal["RUB"] = "RUB"
    client_types: list[str] = Field(default_factory=lambda: list(rules.DEFAULT_CLIENT_TYPES))
    lead_stages: list[StageSettings] = Field(default_factory=list)
    lead_gate: dict[str, list[str]] | None = None
    pipelines: list[PipelineSettings] = Field(default_factory=list)
    lost_reasons: list[str] = Field(default_factory=lambda: list(rules.DEFAULT_LOST_REASONS))
    junk_reasons: list[str] = Field(default_factory=lambda: list(rules.DEFAULT_JUNK_REASONS))
    custom_fields: list[CustomFieldSettings] = Field(default_factory=list)
    invoice_reminder_days: list[int] = Field(default_factory=lambda: [3, 0])
    managers_read_all: bool = False
    lookups_per_minute: int = Field(60, ge=1)

    @field_validator("lead_gate")
    @classmethod
    def _known_requirements(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for stage, reqs in (value or {}).items():
            for req in reqs:
                if req not in rules.GATE_REQUIREMENTS and not req.startswith("custom."):
                    known = ", ".join(rules.GATE_REQUIREMENTS)
                    raise ValueError(
                        f"{stage}: unknown requirement {req!r}; expected one of {known}"
                    )
        return value

    def rules(self) -> rules.CrmRules:
        """The business rules the CRM services take."""
        return rules.CrmRules.from_mapping(self.model_dump())


def _e164(value: str) -> str:
    """A DID of config.yaml in E.164 (``8 (812) 555-01-01`` → ``+78125550101``)."""
    try:
        return phones.normalize_phone(value, "RU")
    except phones.InvalidPhone as exc:
        raise ValueError(
            f"expected a phone number (E.164 or Russian format), got {value!r}"
        ) from exc


Did = Annotated[str, AfterValidator(_e164)]
_CODE = r"^[a-z0-9_-]{1,64}$"
_REGION = Field(None, min_length=1, max_length=32)


class TrackingNumberSettings(_Section):
    """A static number of a site: every call to it carries ``source``."""

    did: Did
    source: str = Field(min_length=1, max_length=200, description="a source's code or name")
    campaign: str | None = Field(None, max_length=200)
    region: str | None = _REGION


class TrackingPoolSettings(_Section):
    """Numbers leased to the site's visitors of one source (and region; None: any)."""

    source: str = Field(min_length=1, max_length=200, description="a source's code or name")
    region: str | None = _REGION
    numbers: list[Did] = Field(min_length=1)
    code: str | None = Field(None, pattern=_CODE)  # default: <source code>-<region or any>
    name: str | None = Field(None, min_length=1, max_length=200)
    # The visitors the pool serves: by default the source's code is the channel
    # (yandex_direct, google_ads, vk_ads ...), or the kind when it names one (organic ...).
    channel: str | None = Field(None, pattern=r"^[a-z0-9_.-]{1,64}$")
    kind: SourceClass | None = None


class TrackingSiteSettings(_Section):
    """A site declared in config.yaml with its numbers; created or updated in the database at
    start (what the API added is never deleted)."""

    code: str = Field(pattern=_CODE)
    name: str = Field(min_length=1, max_length=200)
    origins: list[str] = Field(default_factory=list)
    numbers: list[TrackingNumberSettings] = Field(default_factory=list)
    # region code ("*": any other region) -> the site's number for visitors no pool covers
    defaults: dict[str, Did] = Field(default_factory=dict)
    pools: list[TrackingPoolSettings] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_pools(self) -> TrackingSiteSettings:
        seen: dict[Any, int] = {}
        for i, pool in enumerate(self.pools):
            key = pool.code or (pool.source, pool.region)
            if key in seen:
                what = f"code {pool.code!r}" if pool.code else "source and region"
                raise ValueError(f"pools[{i}]: the same {what} as pools[{seen[key]}]")
            seen[key] = i
        return self


class TrackingSettings(_Section):
    lease_minutes: int = Field(30, ge=1)
    release_cooldown_minutes: float = Field(10, ge=0)
    exhaustion: Literal["reuse", "static"] = "reuse"
    heartbeat_s: int = Field(60, ge=5)
    sessions_per_ip: int = Field(120, ge=1)
    sessions_per_visitor: int = Field(30, ge=1)
    beats_per_session: int = Field(20, ge=1)
    rate_window_s: int = Field(60, ge=1)
    directory_cache_s: float = Field(60.0, ge=0)
    flush_interval_s: float = Field(0.2, gt=0, le=60)
    sites: list[TrackingSiteSettings] = Field(default_factory=list)
    ip_regions_file: str | None = None  # CSV of network,region_code; None: no IP lookup

    @field_validator("sites")
    @classmethod
    def _distinct_dids(cls, sites: list[TrackingSiteSettings]) -> list[TrackingSiteSettings]:
        """One DID is one number: declared twice, it would flip between meanings."""
        first: dict[str, str] = {}
        for i, site in enumerate(sites):
            places = [(f"numbers[{j}].did", n.did) for j, n in enumerate(site.numbers)]
            places += [(f"defaults.{region}", did) for region, did in site.defaults.items()]
            places += [
                (f"pools[{j}].numbers[{k}]", did)
                for j, pool in enumerate(site.pools)
                for k, did in enumerate(pool.numbers)
            ]
            for where, did in places:
                here = f"tracking.sites[{i}].{where}"
                if did in first:
                    raise ValueError(f"{here} = {did}: already declared at {first[did]}")
                first[did] = here
        return sites


class DistributionSettings(_Section):
    default_strategy: Literal["fixed", "round_robin", "least_loaded", "manual"] = "round_robin"
    # Open conversations (messengers, mail) a manager gets from the rules at most; past it a
    # new client's conversation waits unassigned. None: no cap.
    max_open_conversations: int | None = Field(None, ge=1)
    # Sent to a client who writes first while no manager of the rules is on duty; None: none.
    off_hours_reply: str | None = Field(None, min_length=1, max_length=1000)
    default_region: str | None = Field(None, max_length=32)
    did_regions: dict[str, str] = Field(default_factory=dict)
    # "" (the default): the dialplan gets nothing and goes on to its queue (issue 14: "0"
    # made every unrouted call run Dial(PJSIP/0)).
    default_extension: str = Field("", max_length=32, pattern=r"^[0-9A-Za-z*#_+-]*$")
    dial_timeout_ms: int = Field(300, ge=10, le=5000)
    dial_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    dial_allow_from: IpNetworks = Field(default_factory=list)
    rule_cache_s: float = Field(30.0, ge=0, le=3600)
    callback_minutes: int = Field(15, ge=1)
    queue_audience: list[str] = Field(default_factory=lambda: ["role:head", "role:admin"])
    qualified_stages: list[str] = Field(default_factory=lambda: ["qualified"])
    honeypot_field: str = Field("website", min_length=1, max_length=64)
    requests_per_ip: int = Field(10, ge=1)
    requests_per_visitor: int = Field(5, ge=1)
    rate_window_s: int = Field(600, ge=1)


class S3Settings(_Section):
    bucket: str | None = None
    prefix: str = "recordings"
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None


class RecordingsSettings(_Section):
    enabled: bool = True
    spool_dir: str = "/var/spool/asterisk/monitor"
    storage: Literal["local", "s3"] = "local"
    storage_dir: str = "./data/recordings"
    work_dir: str = "./data/recordings-work"
    format: Literal["mp3", "ogg", "wav"] = "mp3"
    bitrate: str = Field("32k", pattern=r"^\d+k$")
    keep_original: bool = False
    ffmpeg: str | None = "ffmpeg"
    retention_days: int = Field(365, ge=0)
    purge_at: dt.time = dt.time(3, 0)  # local time (locale.timezone) of the daily retention run
    wait_minutes: int = Field(10, ge=0)
    workers: int = Field(2, ge=1, le=64)
    niceness: int = Field(10, ge=0, le=19)
    max_upload_mb: int = Field(512, ge=1)
    upload_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    s3: S3Settings = Field(default_factory=S3Settings)

    @field_validator("purge_at", mode="before")
    @classmethod
    def _clock_time(cls, value: Any) -> Any:
        # YAML reads an unquoted 22:30 as the number 1350 (base 60), which would mean 00:22:30.
        if isinstance(value, int | float):
            raise ValueError(
                "expected a quoted time of day such as '03:00' (YAML reads 22:30 as a number)"
            )
        return value


class AuthSettings(_Section):
    session_ttl_hours: float = Field(12.0, gt=0)
    token_ttl_days: float | None = Field(None, gt=0)
    cookie_name: str = Field("cc_session", pattern=r"^[A-Za-z0-9_-]+$")
    cookie_secure: bool = False
    bootstrap_admin_login: str = Field("admin", min_length=1)
    # scrypt cost; 2**15 with r=8 takes 32 MiB per hash. Lower only for tests.
    scrypt_n: int = Field(2**15, ge=2**10, le=2**20)
    login_attempts_per_15min: int = Field(10, ge=1)
    # failed sign-ins from one address over all logins (password spraying)
    login_attempts_per_address_15min: int = Field(100, ge=1)

    @field_validator("scrypt_n")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("expected a power of two")
        return value


class LocaleSettings(_Section):
    default: Literal["ru", "en"] = "ru"
    timezone: str = "Europe/Moscow"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("expected an IANA time zone such as Europe/Moscow") from exc
        return value


class InboxSettings(_Section):
    # A webhook delivery is stored before it is answered; the answer then waits for it to be
    # processed at most this long. 0 (the default): answered as soon as it is stored, as the
    # providers ask (a slow answer is delivered again); the stored delivery is ours to process
    # whatever happens, so waiting adds nothing but holds the provider's connections.
    ack_wait_s: float = Field(0.0, ge=0, le=30)
    batch: int = Field(200, ge=1, le=5000)  # deliveries processed in one transaction at most
    # While the worker keeps up, the deliveries are processed at once (their transaction
    # stores them) and answered after it: the message reaches the manager sooner and costs the
    # database less. From direct_below waiting, or one waiting direct_wait_s (the worker is
    # busy: a burst), they are stored and answered at once, and processed in batches as large
    # as the backlog (a higher rate). direct_below 0: always stored first, then processed.
    direct_below: int = Field(16, ge=0, le=5000)
    direct_wait_s: float = Field(0.01, ge=0, le=5)  # 0: no time limit, direct_below only


class Settings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    pbx: list[PbxSettings] = Field(default_factory=list)
    telephony: TelephonySettings = Field(default_factory=TelephonySettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    crm: CrmSettings = Field(default_factory=CrmSettings)
    tracking: TrackingSettings = Field(default_factory=TrackingSettings)
    distribution: DistributionSettings = Field(default_factory=DistributionSettings)
    # Messengers and mail: a list of {code, kind, ...} (channels.config), also CC_CHANNELS as
    # JSON; each key of an entry from CC_CHANNELS_<i>_<KEY> (CC_CHANNELS_0_APP_SECRET).
    channels: list[ChannelConfig] = Field(default_factory=list)
    inbox: InboxSettings = Field(default_factory=InboxSettings)
    recordings: RecordingsSettings = Field(default_factory=RecordingsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    locale: LocaleSettings = Field(default_factory=LocaleSettings)

    @field_validator("pbx")
    @classmethod
    def _unique_pbx_names(cls, value: list[PbxSettings]) -> list[PbxSettings]:
        names = [p.name for p in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"expected unique PBX names, got {', '.join(dupes)} twice")
        return value

    @field_validator("channels")
    @classmethod
    def _unique_channel_codes(cls, value: list[ChannelConfig]) -> list[ChannelConfig]:
        codes = [c.code for c in value]
        dupes = sorted({c for c in codes if codes.count(c) > 1})
        if dupes:
            raise ValueError(f"expected unique channel codes, got {', '.join(dupes)} twice")
        return value


def _list_item_models(item: Any) -> list[type[BaseModel]]:
    """The section models a list's items may be: one model, or a union of models (the
    channels, discriminated on ``kind``)."""
    if isinstance(item, type) and issubclass(item, BaseModel):
        return [item]
    if get_origin(item) is Annotated:
        item = get_args(item)[0]
    members = [a for a in get_args(item) if isinstance(a, type) and issubclass(a, BaseModel)]
    return members if members and len(members) == len(get_args(item)) else []


def _env_overrides(
    model: type[BaseModel], env: Mapping[str, str], path: tuple[str, ...] = ()
) -> dict[str, tuple[Any, str]]:
    """Map dotted key -> (raw value, variable name) for every variable that names a leaf."""
    found: dict[str, tuple[Any, str]] = {}
    for name, field in model.model_fields.items():
        key = (*path, name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.update(_env_overrides(annotation, env, key))
            continue
        var = ENV_PREFIX + "_".join(key).upper()
        if _allows_none(annotation):  # Optional[X]: parse as X
            inner = [a for a in get_args(annotation) if a is not type(None)]
            annotation = inner[0] if len(inner) == 1 else annotation
        origin = getattr(annotation, "__origin__", None)
        item = (getattr(annotation, "__args__", None) or (None,))[0]
        if origin is list and (models := _list_item_models(item)):
            # CC_PBX_0_SECRET overrides one key of one entry of a list of sections.
            for index in range(_MAX_INDEXED):
                for member in models:
                    found.update(_env_overrides(member, env, (*key, str(index))))
        if var not in env:
            continue
        raw: Any = env[var]
        if origin in (list, dict):
            try:
                if raw.strip():
                    raw = yaml.safe_load(raw)
                else:
                    raw = None if _allows_none(field.annotation) else ([] if origin is list else {})
            except yaml.YAMLError as exc:
                raise ConfigError([f"{var}: cannot parse as JSON/YAML ({exc})"]) from exc
        elif raw == "" and not field.is_required():
            raw = None if _allows_none(field.annotation) else raw
        found[".".join(key)] = (raw, var)
    return found


def _allows_none(annotation: Any) -> bool:
    return type(None) in getattr(annotation, "__args__", ())


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node: Any = data
    for part, following in itertools.pairwise(parts):
        if isinstance(node, list):
            index = int(part)
            while len(node) <= index:
                node.append({})
            node = node[index]
            continue
        child = node.get(part)
        wanted = list if following.isdigit() else dict
        if not isinstance(child, wanted):
            child = wanted()
            node[part] = child
        node = child
    if isinstance(node, list):
        index = int(parts[-1])
        while len(node) <= index:
            node.append({})
        node[index] = value
    else:
        node[parts[-1]] = value


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Load settings from ``path`` and ``env``; raise ``ConfigError`` naming each bad key.

    With ``path`` None, ``$CC_CONFIG`` or ``./config.yaml`` is used if it exists; with no file at
    all the embedded defaults apply.
    """
    env = os.environ if env is None else env
    source = "defaults"
    data: dict[str, Any] = {}
    if path is None:
        default = "config.yaml" if Path("config.yaml").exists() else None
        path = env.get("CC_CONFIG") or default
    if path is not None:
        file = Path(path)
        source = str(file)
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError([f"{file}: no such configuration file"]) from exc
        except yaml.YAMLError as exc:
            raise ConfigError([f"{file}: not valid YAML: {exc}"]) from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"{file}: expected a mapping of sections at the top level"])
        data = loaded
    overrides = _env_overrides(Settings, env)
    # A whole list (CC_CHANNELS) first, then the keys of its entries (CC_CHANNELS_0_APP_SECRET).
    for dotted, (raw, _var) in sorted(overrides.items(), key=lambda kv: kv[0].count(".")):
        _set_dotted(data, dotted, raw)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            dotted = ""
            for part in err["loc"]:
                dotted += f"[{part}]" if isinstance(part, int) else f".{part}"
            dotted = dotted.lstrip(".")
            flat = re.sub(r"\[(\d+)\]", r".\1", dotted)
            var = next((v for k, (_, v) in overrides.items() if flat.startswith(k)), None)
            origin = f"from {var}" if var else f"in {source}"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                lines.append(f"config: unknown key {dotted} ({origin})")
            elif err["type"] == "missing":
                lines.append(f"config: {dotted} is required ({origin})")
            elif err["type"] == "value_error" and isinstance(err.get("input"), dict | list):
                # a check of a whole section (duplicates): the message names the entries
                lines.append(f"config: {dotted}: {msg} ({origin})")
            else:
                secret = any(w in dotted for w in ("secret", "password", "token"))
                value = "'***'" if secret else _describe(err.get("input"))
                lines.append(f"config: {dotted} = {value}: {msg} ({origin})")
        raise ConfigError(lines) from exc
