"""Alembic migrations of the whole schema, runnable on SQLite and PostgreSQL.

``upgrade(connection)`` applies them on a synchronous SQLAlchemy connection (the composition root
runs it through ``AsyncConnection.run_sync``), so no ``alembic.ini`` is needed at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

HERE = Path(__file__).parent


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Bring the schema on ``connection`` up to ``revision``."""
    command.upgrade(alembic_config(connection), revision)


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


TRIGRAM_SUFFIX = "_trgm"
"""Trigram indexes (PostgreSQL with pg_trgm) serve substring name search. They are created by
the migrations when the extension can be had and are not in the models: a database without
them is as correct, only slower to search."""


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Autogenerate's filter: the optional trigram indexes are not drift."""
    return not (type_ == "index" and reflected and (name or "").endswith(TRIGRAM_SUFFIX))
