"""Alembic migrations: the only way the tracker's schema changes."""
