"""Reference data: regions and sources (where clients come from)."""
