"""calls: the call log

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TS = sa.DateTime(timezone=True)


def _fk(column: str, table: str) -> "sa.Column[int]":
    return sa.Column(
        column,
        sa.Integer(),
        sa.ForeignKey(f"{table}.id", name=op.f(f"fk_calls_{column}_{table}"), ondelete="SET NULL"),
        nullable=True,
    )


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pbx", sa.String(length=64), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("caller", sa.String(length=64), nullable=True),
        sa.Column("callee", sa.String(length=64), nullable=True),
        sa.Column("did", sa.String(length=32), nullable=True),
        sa.Column("queue", sa.String(length=64), nullable=True),
        sa.Column("extension", sa.String(length=32), nullable=True),
        sa.Column("rang", JSON, nullable=False),
        sa.Column("disposition", sa.String(length=16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("answered_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=False),
        sa.Column("ring_seconds", sa.Float(), nullable=False),
        sa.Column("talk_seconds", sa.Float(), nullable=False),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.Column("transfers", JSON, nullable=False),
        sa.Column("recording", sa.String(length=500), nullable=True),
        sa.Column("hangup_cause", sa.Integer(), nullable=True),
        _fk("user_id", "users"),
        _fk("contact_id", "contacts"),
        _fk("company_id", "companies"),
        _fk("lead_id", "leads"),
        _fk("deal_id", "deals"),
        _fk("source_id", "sources"),
        _fk("region_id", "regions"),
        sa.Column("tracking", JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
        sa.UniqueConstraint("pbx", "call_id", name=op.f("uq_calls_pbx_call_id")),
    )
    with op.batch_alter_table("calls") as batch:
        batch.create_index(batch.f("ix_calls_caller"), ["caller"])
        batch.create_index(batch.f("ix_calls_did"), ["did"])
        batch.create_index(batch.f("ix_calls_started_at"), ["started_at"])
        batch.create_index(batch.f("ix_calls_lead_id"), ["lead_id"])
        batch.create_index("ix_calls_user_started", ["user_id", "started_at"])
        batch.create_index("ix_calls_company_started", ["company_id", "started_at"])
        batch.create_index("ix_calls_contact_started", ["contact_id", "started_at"])


def downgrade() -> None:
    op.drop_table("calls")
