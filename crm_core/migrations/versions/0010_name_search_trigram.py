"""name search: trigram indexes on PostgreSQL (pg_trgm)

Substring search on client and lead names (``name_search LIKE '%…%'``) scanned every row: on
a million contacts ~100-150 ms per query, twice per listing (the page and its total). A GIN
trigram index answers it in milliseconds. pg_trgm ships with PostgreSQL (contrib) and is a
trusted extension (a database owner may create it); where it cannot be had the indexes are
skipped with a warning and search stays correct, only slower. SQLite: nothing to do.

Building the indexes locks writes to these tables for a few seconds per million rows.

Revision ID: 0010
Revises: 0009
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("crm_core.migrations")

TABLES = ("contacts", "companies", "leads")


def _index(table: str) -> str:
    return f"ix_{table}_name_search_trgm"


def _have_trigrams(bind: sa.Connection) -> bool:
    if bind.scalar(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")):
        return True
    if not bind.scalar(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")):
        log.warning("pg_trgm is not installed on the server: name search will scan the tables")
        return False
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        log.warning("cannot create the pg_trgm extension (%s): name search will scan", exc.orig)
        return False
    return True


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _have_trigrams(bind):
        return
    for table in TABLES:
        op.execute(
            f"CREATE INDEX IF NOT EXISTS {_index(table)} ON {table} "
            "USING gin (name_search gin_trgm_ops)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP INDEX IF EXISTS {_index(table)}")
