"""list pages: the client name index carries what the lists filter on; tasks by due time

Client lists. A client list is sorted by name; its first page walks the name index until 50 rows match the
search and the filters. With the index on ``name_search`` alone every row walked was read
from the table to test the responsible, the merge, the client type…: the head's search for a
common surname ("смирнов", 40,000 of 1,000,000 contacts, clustered under a few first names)
read 84,000 rows, ~600 ms. ``(name_search, id)`` with those columns included (PostgreSQL's
``INCLUDE``) tests them in the index alone (an index-only scan: ~20-50 ms for the same walk),
and the list reads only its 50 rows from the table. It replaces the ``name_search`` index,
whose queries it serves as well. The ``(responsible_id, id)`` index carries the same columns:
a manager's filtered total ("оптовики в Санкт-Петербурге") counted his 50,000 contacts from
the table (~280-470 ms), now from the index (~11 ms). SQLite has no ``INCLUDE``: there the
indexes have their key columns only.

Tasks. The task list shows open tasks soonest due first. Without an index in that order
PostgreSQL read every open task of a manager's scope (his, and those on his clients: an ``OR``
of four subqueries no index serves) and sorted them: ~230 ms on 200,000 tasks.
``(status, due_at, id)`` is read in order until 50 match (~460 rows walked).

Cards. Every contact, company and deal card asks for the leads converted into it (their calls
and comments are the client's history): ``leads.contact_id``, ``company_id`` and ``deal_id``
had no index, so each card read all 100,000 leads (~13 ms, and more under load).

Lead kanban. Its columns' counts and sums (one GROUP BY over the leads a user may read) read
all 100,000 leads from the table for the head (~210 ms under load); ``ix_leads_stage`` now
carries ``potential_amount`` and ``responsible_id`` (INCLUDE): an index-only scan, ~50 ms.

Building them locks writes to these tables for a few seconds per million rows.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("contacts", "companies")
FILTERS = ("merged_into_id", "client_type", "region_id", "source_id", "purchase_mode")


LEAD_LINKS = ("contact_id", "company_id", "deal_id")


def upgrade() -> None:
    op.create_index("ix_tasks_status_due", "tasks", ["status", "due_at", "id"])
    for column in LEAD_LINKS:
        op.create_index(f"ix_leads_{column}", "leads", [column])
    op.drop_index("ix_leads_stage", table_name="leads")
    op.create_index(
        "ix_leads_stage",
        "leads",
        ["stage"],
        postgresql_include=["potential_amount", "responsible_id"],
    )
    for table in TABLES:
        op.create_index(
            f"ix_{table}_name_search_id",
            table,
            ["name_search", "id"],
            postgresql_include=["responsible_id", *FILTERS],
        )
        op.drop_index(f"ix_{table}_name_search", table_name=table)
        op.drop_index(f"ix_{table}_responsible_id_id", table_name=table)
        op.create_index(
            f"ix_{table}_responsible_id_id",
            table,
            ["responsible_id", "id"],
            postgresql_include=list(FILTERS),
        )


def downgrade() -> None:
    for table in TABLES:
        op.create_index(f"ix_{table}_name_search", table, ["name_search"])
        op.drop_index(f"ix_{table}_name_search_id", table_name=table)
        op.drop_index(f"ix_{table}_responsible_id_id", table_name=table)
        op.create_index(f"ix_{table}_responsible_id_id", table, ["responsible_id", "id"])
    op.drop_index("ix_leads_stage", table_name="leads")
    op.create_index("ix_leads_stage", "leads", ["stage"])
    for column in LEAD_LINKS:
        op.drop_index(f"ix_leads_{column}", table_name="leads")
    op.drop_index("ix_tasks_status_due", table_name="tasks")
