"""Lay out, start and remove a target host for the sample approval API.

A site is one directory that plays a release host: a compose project, a backups folder, a git
checkout with a local ``origin``, logs, pid files and ``site.json``, which the ``docker`` and
``docker-compose`` stand-ins in ``sample/bin`` read through ``GONOGO_SAMPLE_SITE``. The
database and Redis are the machine's own servers, named by URL.

Typical use::

    site = prepare(tmp_path / "host", database_url=url, redis_url=redis_url, api_port=port)
    start(site.root)
    ...
    teardown(site.root)
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
import redis
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sample import runtime
from sample.runtime import API_IMAGE, API_SERVICE, SITE_ENV_VAR, SiteError
from sample.service import APPROVAL_TABLE_DDL, approval_counter_key

logger = logging.getLogger(__name__)

BIN_DIR = Path(__file__).resolve().parent / "bin"
DEFAULT_VERSION = "v10.4.2"
START_TIMEOUT = 15.0

POSTGRES_CONTAINER = "sample-postgres"
REDIS_CONTAINER = "sample-redis"
API_CONTAINER = API_SERVICE


@dataclass(frozen=True)
class Site:
    """Paths and settings of a prepared site."""

    root: Path
    database_url: str
    redis_url: str
    api_port: int
    token: str | None
    python: str

    @property
    def site_file(self) -> Path:
        return self.root / "site.json"

    @property
    def compose_dir(self) -> Path:
        return self.root / "compose"

    @property
    def compose_file(self) -> Path:
        return self.compose_dir / "docker-compose.yml"

    @property
    def env_file(self) -> Path:
        return self.compose_dir / ".env"

    @property
    def config_file(self) -> Path:
        return self.compose_dir / "config" / "app.properties"

    @property
    def backups_dir(self) -> Path:
        return self.root / "backups"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / f"{API_SERVICE}.log"

    @property
    def repo_dir(self) -> Path:
        return self.root / "repo"

    @property
    def origin_dir(self) -> Path:
        return self.root / "origin.git"

    @property
    def database(self) -> str:
        return conninfo_to_dict(self.database_url).get("dbname", "")

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def version(self) -> str:
        """APP_VERSION currently written in the compose .env file."""
        return runtime.load_site(self.root).app_version()

    def standin_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Return a copy of ``base`` (default os.environ) set up to run the stand-ins on this site.

        The copy has ``sample/bin`` first on PATH and GONOGO_SAMPLE_SITE set to the site root.
        """
        env = dict(os.environ if base is None else base)
        env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', os.defpath)}"
        env[SITE_ENV_VAR] = str(self.root)
        return env


def prepare(
    root: Path,
    *,
    database_url: str,
    redis_url: str,
    api_port: int,
    version: str = DEFAULT_VERSION,
    token: str | None = None,
    python: str = sys.executable,
) -> Site:
    """Create the site files, git repositories and database at ``root``, then return the Site.

    Safe to run again on the same root: files are rewritten, an existing git checkout is kept,
    and seed rows are inserted only into an empty table. Does not start the service.
    """
    site = Site(
        root=Path(root).resolve(),
        database_url=database_url,
        redis_url=redis_url,
        api_port=api_port,
        token=token,
        python=python,
    )
    for directory in (site.config_file.parent, site.backups_dir, site.logs_dir, site.run_dir):
        directory.mkdir(parents=True, exist_ok=True)

    site.site_file.write_text(json.dumps(_site_json(site), indent=2) + "\n")
    site.compose_file.write_text(_compose_yaml(site))
    site.env_file.write_text(f"APP_VERSION={version}\n")
    site.config_file.write_text(_app_properties(site))
    runtime.record_image(runtime.load_site(site.root), API_IMAGE, version)

    if not (site.repo_dir / ".git").exists():
        _create_repositories(site)
    _create_database(site)
    return site


def load(root: Path) -> Site:
    """Return the Site prepared at ``root``, raising SiteError if there is none."""
    config = runtime.load_site(root)
    service = config.service(API_SERVICE)
    return Site(
        root=config.root,
        database_url=service["database_url"],
        redis_url=service["redis_url"],
        api_port=int(service["port"]),
        token=service.get("token") or None,
        python=config.python,
    )


def start(root: Path, *, timeout: float = START_TIMEOUT) -> int:
    """Start the API at the version in .env unless it runs, and wait until it accepts connections.

    Starts it the same way as ``docker-compose up -d``. Returns the pid. Raises SiteError with
    the end of the service log if the process exits or does not listen within ``timeout``
    seconds.
    """
    config = runtime.load_site(root)
    pid = runtime.service_pid(config)
    if pid is None:
        pid, _ = runtime.start_service(config)

    port = int(config.service(API_SERVICE)["port"])
    deadline = time.monotonic() + timeout
    while not runtime.address_reachable("127.0.0.1", port):
        if not runtime.process_alive(pid):
            raise SiteError(f"{API_SERVICE} exited during start:\n{_log_tail(config)}")
        if time.monotonic() > deadline:
            raise SiteError(
                f"{API_SERVICE} did not listen on port {port} within {timeout:.0f} s:\n"
                f"{_log_tail(config)}"
            )
        time.sleep(0.05)
    return pid


def stop(root: Path) -> bool:
    """Stop the API if it runs, and return whether it was running."""
    return runtime.stop_service(runtime.load_site(root))


def teardown(root: Path, drop_database: bool = True) -> None:
    """Stop the API and, with ``drop_database``, drop its database and Redis counter."""
    site = load(root)
    stop(site.root)
    if not drop_database:
        return

    with psycopg.connect(_admin_conninfo(site), autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(site.database))
        )
    key = approval_counter_key(site.database_url)
    try:
        with redis.Redis.from_url(site.redis_url) as client:
            client.delete(key)
    except redis.RedisError as error:
        # The key only counts approvals, so a site whose Redis is gone can still be torn down.
        logger.warning("failed to delete Redis key %s at %s: %s", key, site.redis_url, error)


def _site_json(site: Site) -> dict:
    database = conninfo_to_dict(site.database_url)
    postgres_env = {
        "PGHOST": database.get("host", ""),
        "PGPORT": database.get("port", "5432"),
        "PGUSER": database.get("user", getpass.getuser()),
        # An empty password makes libpq fall back to ~/.pgpass instead of a password
        # inherited from the caller's environment.
        "PGPASSWORD": database.get("password", ""),
        "PGDATABASE": database.get("dbname", ""),
    }
    if not postgres_env["PGHOST"]:
        del postgres_env["PGHOST"]

    redis_parts = urlsplit(site.redis_url)
    redis_host = redis_parts.hostname or "127.0.0.1"
    redis_port = redis_parts.port or 6379
    redis_db = redis_parts.path.strip("/") or "0"
    # redis-cli reads no host, port or database from the environment, so the stand-in
    # inserts these arguments after the program name.
    redis_cli_args = ["-h", redis_host, "-p", str(redis_port)]
    if redis_db != "0":
        redis_cli_args += ["-n", redis_db]
    if redis_parts.username:
        redis_cli_args += ["--user", unquote(redis_parts.username)]
    redis_env = {}
    if redis_parts.password:
        redis_env["REDISCLI_AUTH"] = unquote(redis_parts.password)

    return {
        "python": site.python,
        "compose_dir": str(site.compose_dir),
        "containers": {
            POSTGRES_CONTAINER: {
                "image": "postgres:15",
                "env": postgres_env,
                "address": {
                    "host": database.get("host", "127.0.0.1"),
                    "port": int(postgres_env["PGPORT"]),
                },
            },
            REDIS_CONTAINER: {
                "image": "redis:7",
                "env": redis_env,
                "args": {"redis-cli": redis_cli_args},
                "address": {"host": redis_host, "port": redis_port},
            },
        },
        "services": {
            API_SERVICE: {
                "port": site.api_port,
                "database_url": site.database_url,
                "redis_url": site.redis_url,
                "token": site.token,
            }
        },
    }


def _compose_yaml(site: Site) -> str:
    port = site.api_port
    return f"""\
# VVB approval API with its database and cache.
services:
  {API_SERVICE}:
    image: {API_IMAGE}:${{APP_VERSION}}
    container_name: {API_CONTAINER}
    env_file: .env
    ports:
      - "127.0.0.1:{port}:{port}"
    volumes:
      - ./config:/app/config:ro
    depends_on:
      - {POSTGRES_CONTAINER}
      - {REDIS_CONTAINER}
    healthcheck:
      test: ["CMD", "curl", "-f", "http://localhost:{port}/q/health"]
      interval: 10s
      retries: 3
    restart: unless-stopped

  {POSTGRES_CONTAINER}:
    image: postgres:15
    container_name: {POSTGRES_CONTAINER}
    environment:
      POSTGRES_DB: {site.database}
    volumes:
      - postgres-data:/var/lib/postgresql/data

  {REDIS_CONTAINER}:
    image: redis:7
    container_name: {REDIS_CONTAINER}

volumes:
  postgres-data:
"""


def _app_properties(site: Site) -> str:
    database = conninfo_to_dict(site.database_url)
    host = database.get("host", "localhost")
    port = database.get("port", "5432")
    return f"""\
http.port={site.api_port}
datasource.url=jdbc:postgresql://{host}:{port}/{site.database}
redis.url={site.redis_url}
approval.default-validators=3
approval.expiry-hours=72
webhook.retry-attempts=3
"""


def _create_repositories(site: Site) -> None:
    """Create the checkout with one commit and push it to a bare ``origin`` beside it."""
    _git("init", "--quiet", "--bare", "--initial-branch=main", str(site.origin_dir))
    _git("init", "--quiet", "--initial-branch=main", str(site.repo_dir))
    for key, value in (
        ("user.name", "Sample Release"),
        ("user.email", "release@sample.invalid"),
        ("commit.gpgsign", "false"),
        ("tag.gpgsign", "false"),
    ):
        _git("config", key, value, cwd=site.repo_dir)

    (site.repo_dir / "README.md").write_text(
        "# VVB approval system\n\nApproval API for validator sign-off on version changes.\n"
    )
    _git("add", "README.md", cwd=site.repo_dir)
    _git("commit", "--quiet", "-m", "Import VVB approval system", cwd=site.repo_dir)
    _git("remote", "add", "origin", str(site.origin_dir), cwd=site.repo_dir)
    _git("push", "--quiet", "--set-upstream", "origin", "main", cwd=site.repo_dir)


def _git(*args: str, cwd: Path | None = None) -> None:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SiteError(f"git {' '.join(args)} failed ({result.returncode}): {result.stderr}")


def _create_database(site: Site) -> None:
    """Create the database if missing, then the approval table and, if it is empty, seed rows."""
    with psycopg.connect(_admin_conninfo(site), autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (site.database,)
        ).fetchone()
        if not exists:
            try:
                connection.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(site.database))
                )
            except psycopg.errors.DuplicateDatabase:
                pass

    with psycopg.connect(site.database_url, autocommit=True) as connection:
        connection.execute(APPROVAL_TABLE_DDL)
        count = connection.execute("SELECT count(*) FROM vvb_approval_request").fetchone()[0]
        if count == 0:
            now = datetime.now(UTC)
            with connection.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO vvb_approval_request"
                    " (version_id, change_type, total_validators, expiry_deadline, status)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    [
                        ("v10.4.0", "MINOR", 3, now - timedelta(days=30), "APPROVED"),
                        ("v10.4.2", "PATCH", 3, now - timedelta(days=7), "APPROVED"),
                        ("v11.0.0", "MAJOR", 5, now + timedelta(days=3), "PENDING"),
                    ],
                )


def _admin_conninfo(site: Site) -> str:
    """Return the conninfo of the ``postgres`` database on the site's server."""
    return make_conninfo(site.database_url, dbname="postgres")


def _log_tail(config: runtime.SiteConfig, lines: int = 20) -> str:
    try:
        text = config.log_file(API_SERVICE).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
