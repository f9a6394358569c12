"""The migrations build exactly the tables the models describe, on SQLite and PostgreSQL."""

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from storage.db import Database
from tests.support.postgres import scratch_database


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gonogo.db'}"
        return
    with scratch_database("gonogo_migrations") as url:
        yield url


def schema_differences(db: Database) -> list:
    with db.engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)


def test_migrations_match_models(database_url):
    db = Database(database_url)
    db.migrate()
    differences = schema_differences(db)
    db.dispose()
    assert differences == []


def test_migrate_twice_changes_nothing(database_url):
    db = Database(database_url)
    db.migrate()
    db.migrate()
    differences = schema_differences(db)
    db.dispose()
    assert differences == []


def test_concurrent_migrations_on_postgresql():
    with scratch_database("gonogo_migrations") as url:
        databases = [Database(url) for _ in range(3)]
        errors: list[BaseException] = []

        def migrate(db: Database) -> None:
            try:
                db.migrate()
            except BaseException as error:  # collected and asserted below
                errors.append(error)

        threads = [threading.Thread(target=migrate, args=(db,)) for db in databases]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        differences = schema_differences(databases[0])
        for db in databases:
            db.dispose()
    assert errors == []
    assert differences == []
