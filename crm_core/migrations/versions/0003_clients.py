"""clients slice: case-folded names for search, the last 10 digits of phones for the screen-pop

SQLite's lower() folds ASCII only, so a Cyrillic name search compares a column folded in
Python (crm_core.clients.model.fold_name) with the query folded the same way. phones.last10
lets the screen-pop find a caller with one indexed equality whatever the country code.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("companies", "contacts")


def _fold(text: str | None) -> str:
    # A frozen copy of crm_core.clients.model.fold_name: migrations must not change with it.
    return " ".join((text or "").casefold().replace("ё", "е").split())


def _last10(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())[-10:]


def upgrade() -> None:
    conn = op.get_bind()
    with op.batch_alter_table("phones", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last10", sa.String(length=10), server_default="", nullable=False)
        )
        batch_op.create_index(batch_op.f("ix_phones_last10"), ["last10"])
    phones = sa.table(
        "phones",
        sa.column("id", sa.Integer()),
        sa.column("e164", sa.String()),
        sa.column("last10", sa.String()),
    )
    for row_id, e164 in conn.execute(sa.select(phones.c.id, phones.c.e164)).all():
        conn.execute(phones.update().where(phones.c.id == row_id).values(last10=_last10(e164)))
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("name_search", sa.String(length=300), server_default="", nullable=False)
            )
            batch_op.create_index(batch_op.f(f"ix_{table}_name_search"), ["name_search"])
        t = sa.table(
            table,
            sa.column("id", sa.Integer()),
            sa.column("name", sa.String()),
            sa.column("name_search", sa.String()),
        )
        rows = conn.execute(sa.select(t.c.id, t.c.name)).all()
        for row_id, name in rows:
            conn.execute(t.update().where(t.c.id == row_id).values(name_search=_fold(name)))


def downgrade() -> None:
    with op.batch_alter_table("phones", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_phones_last10"))
        batch_op.drop_column("last10")
    for table in reversed(TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_name_search"))
            batch_op.drop_column("name_search")
