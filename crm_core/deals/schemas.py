"""Input and output shapes of pipelines and deals. The services take the inputs; the REST API
validates requests and documents itself with the same models. Amounts are RUB with kopecks,
serialised as strings."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from crm_core.deals.model import Deal, Pipeline, PipelineStage

KOPECK = Decimal("0.01")


def to_kopecks(amount: Decimal | None) -> Decimal | None:
    """An amount with exactly two decimal places, as it comes back from the database."""
    return amount.quantize(KOPECK) if amount is not None else None


Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=15, decimal_places=2, description="RUB"),
    AfterValidator(to_kopecks),
]
StageRef = Annotated[
    str | int, Field(description="a stage code of the deal's pipeline, or a stage id")
]
DealStatus = Literal["open", "won", "lost"]
MILESTONES = ("samples_sent_at", "meeting_at", "exhibition_invited_at", "promotion_offered_at")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DealInput(_Strict):
    """A new deal. The pipeline defaults to the default one, the stage to its first stage and
    the responsible manager to the creator."""

    title: str = Field(min_length=1, max_length=300)
    pipeline: str | None = Field(None, max_length=64, description="pipeline code")
    stage: StageRef | None = None
    reason: str | None = Field(None, max_length=200, description="lost reason, for a lost stage")
    amount: Money | None = None
    margin: Money | None = Field(None, description="expected profit, RUB")
    products: str | None = Field(None, max_length=20_000)
    responsible_id: int | None = None
    source_id: int | None = None
    company_id: int | None = None
    contact_id: int | None = None
    legal_entity_id: int | None = None
    samples_sent_at: AwareDatetime | None = None
    meeting_at: AwareDatetime | None = None
    exhibition_invited_at: AwareDatetime | None = None
    promotion_offered_at: AwareDatetime | None = None


class DealPatch(_Strict):
    """Changes to a deal; only the fields sent change (``null`` clears). A ``stage`` here is a
    move like ``POST /deals/{id}/move``, with ``reason`` for a lost stage. A ``pipeline``
    moves the deal into another pipeline: to its ``stage`` if sent, else to its first stage."""

    title: str | None = Field(None, min_length=1, max_length=300)
    pipeline: str | None = Field(None, min_length=1, max_length=64, description="pipeline code")
    stage: StageRef | None = None
    reason: str | None = Field(None, max_length=200)
    amount: Money | None = None
    margin: Money | None = None
    products: str | None = Field(None, max_length=20_000)
    responsible_id: int | None = None
    source_id: int | None = None
    company_id: int | None = None
    contact_id: int | None = None
    legal_entity_id: int | None = None
    samples_sent_at: AwareDatetime | None = None
    meeting_at: AwareDatetime | None = None
    exhibition_invited_at: AwareDatetime | None = None
    promotion_offered_at: AwareDatetime | None = None


class DealMove(_Strict):
    stage: StageRef
    reason: str | None = Field(
        None, max_length=200, description="required for a lost stage: one of crm.lost_reasons"
    )


# ---------------------------------------------------------------- outputs


class StageOut(BaseModel):
    id: int
    code: str
    name_ru: str
    name_en: str
    kind: str
    sort: int
    is_active: bool = Field(True, description="still in the configuration")

    @classmethod
    def of(cls, stage: PipelineStage, active: bool = True) -> StageOut:
        return cls(
            id=stage.id,
            code=stage.code,
            name_ru=stage.name_ru,
            name_en=stage.name_en,
            kind=stage.kind,
            sort=stage.sort,
            is_active=active,
        )


class PipelineOut(BaseModel):
    id: int
    code: str
    name_ru: str
    name_en: str
    is_default: bool
    is_active: bool
    stages: list[StageOut]


class PipelinesOut(BaseModel):
    items: list[PipelineOut]
    lost_reasons: list[str]


class DealStageChangeOut(BaseModel):
    id: int
    from_stage_id: int | None
    from_stage: str | None = Field(description="stage code")
    to_stage_id: int
    to_stage: str
    user_id: int | None
    at: datetime
    reason: str | None


class DealOut(BaseModel):
    id: int
    title: str
    pipeline_id: int
    pipeline: str = Field(description="pipeline code")
    stage: StageOut
    status: DealStatus = Field(description="the kind of the stage")
    amount: Decimal | None = Field(description="RUB, serialised as a string")
    margin: Decimal | None
    products: str | None
    responsible_id: int | None
    source_id: int | None
    company_id: int | None
    contact_id: int | None
    legal_entity_id: int | None
    lost_reason: str | None
    samples_sent_at: datetime | None
    meeting_at: datetime | None
    exhibition_invited_at: datetime | None
    promotion_offered_at: datetime | None
    stage_changed_at: datetime
    closed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    created_by_id: int | None
    history: list[DealStageChangeOut] | None = Field(
        None, description="stage changes, oldest first (single-deal answers only)"
    )

    @classmethod
    def of(
        cls,
        deal: Deal,
        stage: PipelineStage,
        pipeline: Pipeline,
        history: list[DealStageChangeOut] | None = None,
    ) -> DealOut:
        skip = {"pipeline", "stage", "status", "history"}
        data = {k: getattr(deal, k) for k in cls.model_fields if k not in skip}
        return cls.model_validate(
            {
                **data,
                "pipeline": pipeline.code,
                "stage": StageOut.of(stage),
                "status": stage.kind,
                "history": history,
            }
        )
