"""User, extension and token tables."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from crm_core.db import Base, utcnow


class Role(enum.StrEnum):
    """What a user may see and do."""

    ADMIN = "admin"
    HEAD = "head"  # head of sales: sees and plans for everyone
    MANAGER = "manager"  # sees own clients and calls


class TokenKind(enum.StrEnum):
    API = "api"  # Authorization: Bearer
    SESSION = "session"  # web UI cookie


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(default=True)
    must_change_password: Mapped[bool] = mapped_column(default=False)
    locale: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    extensions: Mapped[list[UserExtension]] = relationship(
        back_populates="user", cascade="all, delete-orphan", lazy="selectin"
    )

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, login={self.login!r}, role={self.role!r})"


class UserExtension(Base):
    """A PBX extension a user owns; ``pbx`` is the PBX name from config ("" = any PBX)."""

    __tablename__ = "user_extensions"
    __table_args__ = (UniqueConstraint("pbx", "extension"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    pbx: Mapped[str] = mapped_column(String(64), default="")
    extension: Mapped[str] = mapped_column(String(32))

    user: Mapped[User] = relationship(back_populates="extensions", lazy="raise")


class AuthToken(Base):
    """A bearer or session token; only its SHA-256 is stored."""

    __tablename__ = "auth_tokens"
    __table_args__ = (Index("ix_auth_tokens_user_kind", "user_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="raise")
