"""webhook deliveries: a provider's delivery stored as it arrived, processed after the answer

The webhook answers once the raw delivery is stored (one INSERT); a worker processes stored
deliveries in batches and deletes them in the same transaction. A delivery stored and not
processed (a crash) is processed after a restart.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("headers", JSON, nullable=False),
        sa.Column("query", JSON, nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("next_at", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint("channel", "key", name="uq_webhook_deliveries_key"),
    )
    op.create_index("ix_webhook_deliveries_next_at", "webhook_deliveries", ["next_at", "id"])


def downgrade() -> None:
    op.drop_table("webhook_deliveries")
