"""private letters: a personal mailbox's letters on a client's timeline are read only by that
mailbox's manager, the one the conversation was handed to and the head

Revision ID: 0019
Revises: 0018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("activities") as batch:
        batch.add_column(sa.Column("private_to_id", sa.Integer(), nullable=True))
    # Letters stored before: the conversations of personal mailboxes name their manager.
    op.execute(
        """
        UPDATE activities SET private_to_id = (
            SELECT c.owner_id FROM conversation_messages m
            JOIN conversations c ON c.id = m.conversation_id
            WHERE m.id = CAST(SUBSTR(activities.external_id, 9) AS INTEGER)
        )
        WHERE external_id LIKE 'message:%' AND kind = 'email'
        """
    )


def downgrade() -> None:
    with op.batch_alter_table("activities") as batch:
        batch.drop_column("private_to_id")
