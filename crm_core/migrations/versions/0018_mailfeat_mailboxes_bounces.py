"""mailboxes and bounces: a personal mailbox's conversations belong to its manager; the
addresses our mail could not reach

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_conversations_owner_id_users"),
            "users",
            ["owner_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(batch.f("ix_conversations_owner_id"), ["owner_id"])
    op.create_table(
        "email_bounces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("bounced_at", TS, nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_bounces")),
        sa.UniqueConstraint("address", name="uq_email_bounces_address"),
    )


def downgrade() -> None:
    op.drop_table("email_bounces")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index(batch.f("ix_conversations_owner_id"))
        batch.drop_constraint(batch.f("fk_conversations_owner_id_users"), type_="foreignkey")
        batch.drop_column("owner_id")
