"""distribution: region managers, distribution, website requests

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TS = sa.DateTime(timezone=True)


def _fk(table: str, column: str, target: str, ondelete: str = "SET NULL") -> "sa.Column[int]":
    return sa.Column(
        column,
        sa.Integer(),
        sa.ForeignKey(
            f"{target}.id", name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
        ),
        nullable=ondelete == "SET NULL",
    )


def upgrade() -> None:
    op.create_table(
        "distribution_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column(
            "region_id",
            sa.Integer(),
            sa.ForeignKey(
                "regions.id",
                name=op.f("fk_distribution_rules_region_id_regions"),
                ondelete="CASCADE",
            ),
            nullable=True,
        ),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("turn", sa.Integer(), server_default="0", nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_distribution_rules")),
        sa.UniqueConstraint("region_id", name=op.f("uq_distribution_rules_region_id")),
    )
    op.create_table(
        "distribution_managers",
        sa.Column("id", sa.Integer(), nullable=False),
        _fk("distribution_managers", "rule_id", "distribution_rules", "CASCADE"),
        _fk("distribution_managers", "user_id", "users", "CASCADE"),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("hours", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_distribution_managers")),
        sa.UniqueConstraint(
            "rule_id", "user_id", name=op.f("uq_distribution_managers_rule_id_user_id")
        ),
    )
    with op.batch_alter_table("distribution_managers") as batch:
        batch.create_index(batch.f("ix_distribution_managers_rule_id"), ["rule_id"])
        batch.create_index(batch.f("ix_distribution_managers_user_id"), ["user_id"])
    op.create_table(
        "web_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("visitor_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("form", JSON, nullable=False),
        sa.Column("attribution", JSON, nullable=True),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("is_spam", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        _fk("web_requests", "region_id", "regions"),
        _fk("web_requests", "source_id", "sources"),
        _fk("web_requests", "lead_id", "leads"),
        _fk("web_requests", "contact_id", "contacts"),
        _fk("web_requests", "company_id", "companies"),
        _fk("web_requests", "responsible_id", "users"),
        _fk("web_requests", "task_id", "tasks"),
        _fk("web_requests", "assigned_by_id", "users"),
        sa.Column("assigned_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_requests")),
    )
    with op.batch_alter_table("web_requests") as batch:
        batch.create_index(batch.f("ix_web_requests_lead_id"), ["lead_id"])
        batch.create_index("ix_web_requests_created_at", ["created_at"])
        batch.create_index("ix_web_requests_site_visitor", ["site", "visitor_id"])
        batch.create_index("ix_web_requests_status_created", ["status", "created_at"])


def downgrade() -> None:
    op.drop_table("web_requests")
    op.drop_table("distribution_managers")
    op.drop_table("distribution_rules")
