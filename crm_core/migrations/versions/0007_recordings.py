"""recordings: recordings metadata, legal hold on deals

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "recordings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pbx", sa.String(length=64), nullable=False),
        sa.Column("call_ref", sa.String(length=64), nullable=False),
        sa.Column("call_pk", sa.Integer(), nullable=True),
        sa.Column("activity_id", sa.Integer(), nullable=True),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("storage_key", sa.String(length=200), nullable=True),
        sa.Column("format", sa.String(length=8), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("original_kept", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("stored_at", TS, nullable=True),
        sa.Column("purged_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["call_pk"], ["calls.id"], name=op.f("fk_recordings_call_pk_calls"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["activity_id"],
            ["activities.id"],
            name=op.f("fk_recordings_activity_id_activities"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recordings")),
        sa.UniqueConstraint(
            "pbx", "call_ref", "filename", name=op.f("uq_recordings_pbx_call_ref_filename")
        ),
        sa.UniqueConstraint("storage_key", name=op.f("uq_recordings_storage_key")),
    )
    op.create_index("ix_recordings_state_next", "recordings", ["state", "next_attempt_at"])
    op.create_index(op.f("ix_recordings_call_pk"), "recordings", ["call_pk"])
    op.create_index(op.f("ix_recordings_activity_id"), "recordings", ["activity_id"])
    op.create_index(op.f("ix_recordings_stored_at"), "recordings", ["stored_at"])
    with op.batch_alter_table("deals") as batch:
        batch.add_column(
            sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("deals") as batch:
        batch.drop_column("legal_hold")
    op.drop_index(op.f("ix_recordings_stored_at"), table_name="recordings")
    op.drop_index(op.f("ix_recordings_activity_id"), table_name="recordings")
    op.drop_index(op.f("ix_recordings_call_pk"), table_name="recordings")
    op.drop_index("ix_recordings_state_next", table_name="recordings")
    op.drop_table("recordings")
