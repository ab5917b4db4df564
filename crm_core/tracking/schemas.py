"""Input and output shapes of the tracking configuration (sites, pools, numbers)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, cast
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crm_core.phones import normalize_phone
from crm_core.tracking.model import (
    SITE_CODE_PATTERN,
    NumberKind,
    TrackingNumber,
    TrackingPool,
    TrackingSite,
)

NumberKindText = Literal["static", "pool", "default"]  # crm_core.tracking.model.NumberKind
KINDS = Literal["paid", "organic", "social", "referral", "direct", "email", "campaign"]


def normalize_origin(value: str) -> str:
    """``https://Shop.ru/`` → ``https://shop.ru``: scheme and host (and port) only."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not an origin: {value!r}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an origin (scheme://host[:port]): {value!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"an origin has no path: {value!r}")
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port else "")


class SiteInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(pattern=SITE_CODE_PATTERN, description="the data-site of the script tag")
    name: str = Field(min_length=1, max_length=200)
    origins: list[str] = Field(
        default_factory=list, max_length=50, description="origins allowed by CORS"
    )
    form_key: str | None = Field(
        None, min_length=16, max_length=200, description="the site forms' key (stored hashed)"
    )
    default_region_id: int | None = None
    is_active: bool = True

    @field_validator("origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return sorted({normalize_origin(v) for v in value})


class SiteOut(BaseModel):
    id: int
    code: str
    name: str
    origins: list[str]
    has_form_key: bool
    default_region_id: int | None
    is_active: bool
    created_at: datetime

    @classmethod
    def of(cls, s: TrackingSite) -> SiteOut:
        return cls(
            id=s.id,
            code=s.code,
            name=s.name,
            origins=list(s.origins or []),
            has_form_key=bool(s.form_key_hash),
            default_region_id=s.default_region_id,
            is_active=s.is_active,
            created_at=s.created_at,
        )


class PoolInput(BaseModel):
    """A dynamic pool of a site for a (source, region) pair; null channel/kind/region: any."""

    model_config = ConfigDict(extra="forbid")

    site_id: int
    code: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    name: str = Field(min_length=1, max_length=200)
    channel: str | None = Field(
        None, pattern=r"^[a-z0-9_.-]{1,64}$", description="e.g. yandex_direct, google_ads, vk"
    )
    kind: KINDS | None = None
    region_id: int | None = None
    source_id: int | None = Field(None, description="the source calls to the pool carry")
    is_active: bool = True


class PoolOut(PoolInput):
    id: int
    dids: list[str]
    created_at: datetime

    @classmethod
    def of(cls, p: TrackingPool, dids: list[str]) -> PoolOut:
        return cls(
            id=p.id,
            site_id=p.site_id,
            code=p.code,
            name=p.name,
            channel=p.channel,
            kind=cast(KINDS | None, p.kind),  # stored as text, written through KINDS
            region_id=p.region_id,
            source_id=p.source_id,
            is_active=p.is_active,
            dids=dids,
            created_at=p.created_at,
        )


class NumberInput(BaseModel):
    """``static``: needs ``source_id``; ``pool``: needs ``pool_id``; ``default``: needs
    ``site_id`` (``region_id`` null: the site's number for any region)."""

    model_config = ConfigDict(extra="forbid")

    did: str = Field(min_length=3, max_length=32, description="the DID, stored in E.164")
    kind: NumberKindText
    site_id: int | None = None
    pool_id: int | None = None
    source_id: int | None = None
    region_id: int | None = None
    campaign: str | None = Field(None, max_length=200)
    comment: str | None = Field(None, max_length=500)
    is_active: bool = True

    @field_validator("did")
    @classmethod
    def _did(cls, value: str) -> str:
        return normalize_phone(value)

    @model_validator(mode="after")
    def _kind_needs(self) -> NumberInput:
        needs = {
            NumberKind.STATIC: "source_id",
            NumberKind.POOL: "pool_id",
            NumberKind.DEFAULT: "site_id",
        }[NumberKind(self.kind)]
        if getattr(self, needs) is None:
            raise ValueError(f"{needs}: a {self.kind} number needs it")
        if NumberKind(self.kind) is not NumberKind.POOL and self.pool_id is not None:
            raise ValueError(f"pool_id: only a pool number belongs to a pool, not a {self.kind}")
        return self


class NumberOut(NumberInput):
    id: int
    created_at: datetime

    @classmethod
    def of(cls, n: TrackingNumber) -> NumberOut:
        return cls.model_construct(
            id=n.id,
            did=n.did,
            kind=cast(NumberKindText, n.kind),
            site_id=n.site_id,
            pool_id=n.pool_id,
            source_id=n.source_id,
            region_id=n.region_id,
            campaign=n.campaign,
            comment=n.comment,
            is_active=n.is_active,
            created_at=n.created_at,
        )


class PoolStatsOut(BaseModel):
    pool_id: int
    code: str
    size: int
    leased: int
    peak_leased: int
    peak_sessions: int = Field(description="concurrent sessions at the peak")
    exhausted: int = Field(description="requests that found no free number")
    size_to_cover_peak: int = Field(description="the pool size that would have covered the peak")
