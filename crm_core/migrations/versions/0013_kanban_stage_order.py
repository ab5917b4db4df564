"""kanban: the cards of a stage, most recently moved first, from an index

A kanban column shows the first cards of a stage by ``stage_changed_at DESC, id DESC``. With
only ``stage_id`` indexed, a won or lost column of 20,000 deals read and sorted them all for
each page (~40 ms per column); ``(stage_id, stage_changed_at, id)`` reads the first 20
backwards. The same for leads by ``stage``.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_deals_stage_moved", "deals", ["stage_id", "stage_changed_at", "id"])
    op.create_index("ix_leads_stage_moved", "leads", ["stage", "stage_changed_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_leads_stage_moved", table_name="leads")
    op.drop_index("ix_deals_stage_moved", table_name="deals")
