"""Input and output shapes of distribution rules, website requests and their statistics."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crm_core.distribution.model import DistributionRule, RuleManager, Strategy, WebRequest
from crm_core.distribution.service import hours_are_valid

StrategyLiteral = Literal["fixed", "round_robin", "least_loaded", "manual"]


class ManagerInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: int
    weight: int = Field(1, ge=1, le=100, description="share of round-robin turns")
    timezone: str | None = Field(
        None, description="IANA zone of the hours; default: the region's, else locale.timezone"
    )
    hours: dict[str, list[str]] | None = Field(
        None,
        description='working hours per weekday, e.g. {"mon": ["09:00-18:00"]}; null: any time',
        examples=[{"mon": ["09:00-13:00", "14:00-18:00"], "sat": ["10:00-14:00"]}],
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        if value is not None:
            hours_are_valid(value)
        return value


class RuleInput(BaseModel):
    """A region's rule (``region_id`` null: the default rule). ``fixed`` takes exactly one
    manager; ``manual`` none."""

    model_config = ConfigDict(extra="forbid")

    region_id: int | None = None
    strategy: StrategyLiteral = "round_robin"
    is_active: bool = True
    managers: list[ManagerInput] = Field(default_factory=list, max_length=200)

    @model_validator(mode="after")
    def _managers_fit_strategy(self) -> RuleInput:
        ids = [m.user_id for m in self.managers]
        if len(set(ids)) != len(ids):
            raise ValueError("managers: a user appears twice")
        if Strategy(self.strategy) is Strategy.FIXED and len(ids) != 1:
            raise ValueError("managers: a fixed rule has exactly one manager")
        if Strategy(self.strategy) is not Strategy.MANUAL and not ids:
            raise ValueError(f"managers: a {self.strategy} rule needs at least one manager")
        return self


class ManagerOut(ManagerInput):
    @classmethod
    def of(cls, m: RuleManager) -> ManagerOut:
        return cls(user_id=m.user_id, weight=m.weight, timezone=m.timezone, hours=m.hours)


class RuleOut(BaseModel):
    id: int
    region_id: int | None
    region: str | None = Field(None, description="the region's code")
    strategy: StrategyLiteral
    is_active: bool
    managers: list[ManagerOut]
    updated_at: datetime

    @classmethod
    def of(cls, rule: DistributionRule, managers: list[RuleManager], region: str | None) -> RuleOut:
        return cls(
            id=rule.id,
            region_id=rule.region_id,
            region=region,
            strategy=cast(StrategyLiteral, rule.strategy),  # stored as text
            is_active=rule.is_active,
            managers=[ManagerOut.of(m) for m in managers],
            updated_at=rule.updated_at,
        )


class WebForm(BaseModel):
    """What a website form sends; a phone or an e-mail is required (checked with them)."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    name: str | None = Field(None, max_length=300)
    phone: str | None = Field(None, max_length=64)
    email: str | None = Field(None, max_length=320)
    comment: str | None = Field(None, max_length=5000)
    region: str | None = Field(None, max_length=32, description="region code, e.g. RU-SPE")
    visitor_id: str | None = Field(None, max_length=64)
    page: str | None = Field(None, max_length=2000, description="the page of the form")


class WebRequestOut(BaseModel):
    id: int
    site: str
    status: str
    reason: str | None
    visitor_id: str | None
    name: str | None
    phone: str | None
    email: str | None
    comment: str | None
    region_id: int | None
    source_id: int | None
    attribution: dict[str, Any] | None
    lead_id: int | None
    contact_id: int | None
    company_id: int | None
    responsible_id: int | None
    task_id: int | None
    assigned_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, r: WebRequest) -> WebRequestOut:
        return cls.model_validate(r, from_attributes=True)


class AssignInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: int


class StatsRow(BaseModel):
    key: str | None = Field(description="region code or source name; null: unknown")
    id: int | None
    requests: int
    leads: int
    qualified: int
    deals: int
    won: int
    lead_rate: float | None = Field(description="leads / requests")
    qualified_rate: float | None = Field(description="qualified / leads")
    deal_rate: float | None = Field(description="deals / qualified")
    won_rate: float | None = Field(description="won / deals")
    overall_rate: float | None = Field(description="won / requests")
