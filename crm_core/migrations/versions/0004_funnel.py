"""funnel slice: lead name search column, English pipeline names, funnel indexes

``leads.name_search`` holds the contact and company names folded in Python, so a Cyrillic
search is case-insensitive on SQLite too. ``pipelines.name_en`` carries the English label next to
the Russian ``name``. The indexes serve the deal listings by close date and the per-lead history.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _fold(text: str | None) -> str:
    # A frozen copy of crm_core.clients.model.fold_name: migrations must not change with it.
    return " ".join((text or "").casefold().replace("ё", "е").split())


def upgrade() -> None:
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("name_search", sa.String(length=601), server_default="", nullable=False)
        )
        batch_op.create_index(batch_op.f("ix_leads_created_at"), ["created_at"], unique=False)
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("name_en", sa.String(length=200), server_default="", nullable=False)
        )
    with op.batch_alter_table("deals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deals_closed_at"), ["closed_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_deals_created_at"), ["created_at"], unique=False)
    conn = op.get_bind()
    leads = sa.table(
        "leads",
        sa.column("id", sa.Integer()),
        sa.column("contact_name", sa.String()),
        sa.column("company_name", sa.String()),
        sa.column("name_search", sa.String()),
    )
    rows = conn.execute(sa.select(leads.c.id, leads.c.contact_name, leads.c.company_name)).all()
    for row_id, contact_name, company_name in rows:
        conn.execute(
            leads.update()
            .where(leads.c.id == row_id)
            .values(name_search=_fold(f"{contact_name or ''} {company_name or ''}"))
        )


def downgrade() -> None:
    with op.batch_alter_table("deals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deals_created_at"))
        batch_op.drop_index(batch_op.f("ix_deals_closed_at"))
    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("name_en")
    with op.batch_alter_table("leads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_leads_created_at"))
        batch_op.drop_column("name_search")
