"""conversations: a client's thread on a messaging channel, its messages, mailbox cursors

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
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
        nullable=ondelete == "SET NULL",
    )


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("channel_kind", sa.String(length=16), nullable=False),
        sa.Column("identity_kind", sa.String(length=16), nullable=False),
        sa.Column("identity_value", sa.String(length=320), nullable=False),
        sa.Column("thread_key", sa.String(length=300), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("phone", sa.String(length=16), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        _fk("conversations", "assignee_id", "users"),
        _fk("conversations", "contact_id", "contacts"),
        _fk("conversations", "company_id", "companies"),
        _fk("conversations", "lead_id", "leads"),
        sa.Column("unread", sa.Integer(), nullable=False),
        sa.Column("last_message_at", TS, nullable=True),
        sa.Column("last_inbound_at", TS, nullable=True),
        sa.Column("preview", sa.String(length=200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        sa.UniqueConstraint(
            "channel",
            "identity_kind",
            "identity_value",
            "thread_key",
            name="uq_conversations_identity",
        ),
    )
    with op.batch_alter_table("conversations") as batch:
        batch.create_index(batch.f("ix_conversations_contact_id"), ["contact_id"])
        batch.create_index(batch.f("ix_conversations_company_id"), ["company_id"])
        batch.create_index(batch.f("ix_conversations_lead_id"), ["lead_id"])
        batch.create_index(
            "ix_conversations_assignee_status", ["assignee_id", "status", "last_message_at"]
        )
        batch.create_index("ix_conversations_status_last", ["status", "last_message_at"])
        batch.create_index("ix_conversations_identity_value", ["identity_value", "identity_kind"])
    op.create_table(
        "conversation_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        _fk("conversation_messages", "conversation_id", "conversations", "CASCADE"),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("author_kind", sa.String(length=16), nullable=False),
        _fk("conversation_messages", "author_id", "users"),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("provider_message_id", sa.String(length=200), nullable=True),
        sa.Column("reply_to", sa.String(length=200), nullable=True),
        sa.Column("attachments", JSON, nullable=False),
        sa.Column("payload", JSON, nullable=True),
        sa.Column("sent_at", TS, nullable=False),
        sa.Column("status_at", TS, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation_messages")),
        sa.UniqueConstraint(
            "channel", "provider_message_id", name="uq_conversation_messages_provider_id"
        ),
    )
    op.create_index(
        "ix_conversation_messages_conv_at", "conversation_messages", ["conversation_id", "id"]
    )
    op.create_table(
        "mailbox_cursors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("mailbox", sa.String(length=200), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailbox_cursors")),
        sa.UniqueConstraint("channel", "mailbox", name="uq_mailbox_cursors_box"),
    )


def downgrade() -> None:
    op.drop_table("mailbox_cursors")
    op.drop_table("conversation_messages")
    op.drop_table("conversations")
