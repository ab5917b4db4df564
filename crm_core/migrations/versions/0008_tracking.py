"""tracking: call tracking sites, numbers, pools, visitors, sessions

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
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
        nullable=True,
    )


def _site(table: str, *, nullable: bool = False) -> "sa.Column[int]":
    column = _fk(table, "site_id", "tracking_sites", "CASCADE")
    column.nullable = nullable
    return column


def upgrade() -> None:
    op.create_table(
        "tracking_sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("origins", JSON, nullable=False),
        sa.Column("form_key_hash", sa.String(length=64), nullable=True),
        _fk("tracking_sites", "default_region_id", "regions"),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_sites")),
        sa.UniqueConstraint("code", name=op.f("uq_tracking_sites_code")),
    )
    op.create_table(
        "tracking_pools",
        sa.Column("id", sa.Integer(), nullable=False),
        _site("tracking_pools"),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=True),
        _fk("tracking_pools", "region_id", "regions"),
        _fk("tracking_pools", "source_id", "sources"),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_pools")),
        sa.UniqueConstraint("site_id", "code", name=op.f("uq_tracking_pools_site_id_code")),
    )
    op.create_table(
        "tracking_numbers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("did", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        _site("tracking_numbers", nullable=True),
        _fk("tracking_numbers", "pool_id", "tracking_pools", "CASCADE"),
        _fk("tracking_numbers", "source_id", "sources"),
        _fk("tracking_numbers", "region_id", "regions"),
        sa.Column("campaign", sa.String(length=200), nullable=True),
        sa.Column("comment", sa.String(length=500), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_numbers")),
        sa.UniqueConstraint("did", name=op.f("uq_tracking_numbers_did")),
    )
    op.create_table(
        "tracking_visitors",
        sa.Column("id", sa.Integer(), nullable=False),
        _site("tracking_visitors"),
        sa.Column("visitor_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        _fk("tracking_visitors", "source_id", "sources"),
        sa.Column("campaign", sa.String(length=200), nullable=True),
        sa.Column("utm", JSON, nullable=False),
        sa.Column("landing_page", sa.String(length=2000), nullable=True),
        sa.Column("referrer", sa.String(length=2000), nullable=True),
        _fk("tracking_visitors", "region_id", "regions"),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("touched_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_visitors")),
        sa.UniqueConstraint(
            "site_id", "visitor_id", name=op.f("uq_tracking_visitors_site_id_visitor_id")
        ),
    )
    op.create_table(
        "tracking_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=36), nullable=False),
        _site("tracking_sessions"),
        sa.Column("visitor_id", sa.String(length=64), nullable=True),
        _fk("tracking_sessions", "number_id", "tracking_numbers"),
        _fk("tracking_sessions", "pool_id", "tracking_pools"),
        sa.Column("did", sa.String(length=32), nullable=True),
        sa.Column("low_confidence", sa.Boolean(), nullable=False),
        sa.Column("page", sa.String(length=2000), nullable=True),
        sa.Column("attribution", JSON, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("ended_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_sessions")),
        sa.UniqueConstraint("key", name=op.f("uq_tracking_sessions_key")),
    )
    with op.batch_alter_table("tracking_pools") as batch:
        batch.create_index(batch.f("ix_tracking_pools_site_id"), ["site_id"])
    with op.batch_alter_table("tracking_numbers") as batch:
        batch.create_index(batch.f("ix_tracking_numbers_site_id"), ["site_id"])
        batch.create_index(batch.f("ix_tracking_numbers_pool_id"), ["pool_id"])
    with op.batch_alter_table("tracking_sessions") as batch:
        batch.create_index("ix_tracking_sessions_site_visitor", ["site_id", "visitor_id"])
        batch.create_index("ix_tracking_sessions_did_started", ["did", "started_at"])


def downgrade() -> None:
    op.drop_table("tracking_sessions")
    op.drop_table("tracking_visitors")
    op.drop_table("tracking_numbers")
    op.drop_table("tracking_pools")
    op.drop_table("tracking_sites")
