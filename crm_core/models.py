"""Imports every model module so ``Base.metadata`` describes the whole schema."""

from crm_core.db import Base
from crm_core.users import model as users_model

__all__ = ["Base", "users_model"]
