"""Scratch PostgreSQL databases for tests, one per test, dropped afterwards."""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

logger = logging.getLogger(__name__)

# The server that scratch databases are created on, as the URL of an existing database there.
PG_URL_ENV = "GONOGO_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# PostgreSQL truncates identifiers to 63 bytes. The random suffix takes 13 of them.
_MAX_PREFIX_LENGTH = 50


def server_url() -> str:
    """Return the maintenance database URL from GONOGO_TEST_PG_URL, or the local default."""
    return os.environ.get(PG_URL_ENV) or DEFAULT_PG_URL


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """Create an empty database and yield its URL. Drop it on exit, closing open connections.

    The name is `prefix` (lower-cased, with characters other than letters, digits and
    underscores replaced) followed by a random suffix, so parallel tests do not collide.
    """
    name = _database_name(prefix)
    admin_url = server_url()
    with _admin_connection(admin_url) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    logger.debug("created scratch database %s", name)

    try:
        yield _with_database(admin_url, name)
    finally:
        with _admin_connection(admin_url) as connection:
            # FORCE (PostgreSQL 13+) ends sessions a failed test left open.
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        logger.debug("dropped scratch database %s", name)


def _database_name(prefix: str) -> str:
    cleaned = re.sub(r"[^a-z0-9_]", "_", prefix.lower())[:_MAX_PREFIX_LENGTH] or "test"
    return f"{cleaned}_{uuid.uuid4().hex[:12]}"


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _admin_connection(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as error:
        raise RuntimeError(
            f"cannot connect to PostgreSQL at {_without_password(url)}: {error}. "
            f"Start the server or set {PG_URL_ENV} to a reachable database URL."
        ) from error


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
