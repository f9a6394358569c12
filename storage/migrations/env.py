"""Alembic environment for gonogo's tables (storage.models)."""

import os

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from storage import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from storage.db import normalize_url

target_metadata = SQLModel.metadata


def run_migrations(connection) -> None:
    # Batch mode lets later migrations alter tables on SQLite, which lacks most ALTER TABLE.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    url = normalize_url(os.environ.get("DATABASE_URL", "sqlite:///gonogo-migrations.db"))
    with create_engine(url).connect() as standalone:
        run_migrations(standalone)
