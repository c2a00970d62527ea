"""Persistence: settings, the database connection, peewee models and schema migrations."""
