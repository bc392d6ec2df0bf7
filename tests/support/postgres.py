"""Placeholder: the database adapter issue provides the PostgreSQL fixtures."""
