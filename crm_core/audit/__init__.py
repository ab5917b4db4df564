"""Audit log: who did or saw what, when."""
