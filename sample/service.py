"""HTTP service that plays the VVB approval API for release rehearsals.

Run it as ``python -m sample.service --site SITE_DIR --service sample-api``. It reads its port,
database and Redis URLs and bearer token from ``SITE_DIR/site.json``, and ``APP_VERSION`` and
the optional ``SAMPLE_HEALTH=down`` from the compose ``.env`` file once, at start. Request and
lifecycle lines go to ``SITE_DIR/logs/<service>.log``.

Endpoints: ``GET /q/health``, ``GET|POST /api/v11/approvals``, ``GET /webhooks/status`` and
``GET /metrics``. The ``/api`` and ``/webhooks`` endpoints require ``Authorization: Bearer``
when the site sets a token.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from psycopg.conninfo import conninfo_to_dict

from sample.runtime import SiteConfig, SiteError, load_site, read_env_file

logger = logging.getLogger("sample.service")

APPROVAL_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS vvb_approval_request (
    id serial PRIMARY KEY,
    version_id text NOT NULL,
    change_type text NOT NULL,
    total_validators int NOT NULL,
    expiry_deadline timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'PENDING',
    created_at timestamptz NOT NULL DEFAULT now()
)
"""

APPROVAL_COLUMNS = (
    "id, version_id, change_type, total_validators, expiry_deadline, status, created_at"
)

MAX_BODY_BYTES = 1024 * 1024
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
CHECK_TIMEOUT_SECONDS = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", required=True, help="directory of the sample site")
    parser.add_argument("--service", default="sample-api", help="service name in site.json")
    args = parser.parse_args(argv)

    # Threads inherit the blocked mask, so a stop signal stays pending until sigwait below
    # takes it in the main thread, even if it arrives during start-up. A Python-level handler
    # is not enough, because it runs only when the main thread executes bytecode, and the
    # kernel may deliver the signal to a server thread while the main thread waits on a lock.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    try:
        settings = load_settings(load_site(args.site), args.service)
    except SiteError as error:
        print(f"sample.service: {error}", file=sys.stderr)
        return 1
    _configure_logging(settings)

    app = ApprovalService(settings)
    try:
        app.ensure_schema()
    except psycopg.Error as error:
        # Keep serving so that /q/health reports the database as DOWN.
        logger.error("failed to create table vvb_approval_request: %s", error)
    server = ThreadingHTTPServer(("127.0.0.1", settings.port), make_handler(app))
    server.daemon_threads = True

    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="http", daemon=True
    )
    serving.start()
    logger.info(
        "%s %s listening on http://127.0.0.1:%d",
        settings.name,
        settings.version,
        server.server_address[1],
    )
    if settings.forced_down:
        logger.warning("SAMPLE_HEALTH=down is set: /q/health reports DOWN")

    received = signal.sigwait(STOP_SIGNALS)
    logger.info("%s %s stopping on %s", settings.name, settings.version, received.name)
    server.shutdown()
    server.server_close()
    app.close()
    logger.info("%s %s stopped", settings.name, settings.version)
    return 0


@dataclass(frozen=True)
class ServiceSettings:
    """Settings of one service instance, fixed at start."""

    name: str
    version: str
    port: int
    database_url: str
    redis_url: str
    token: str | None
    forced_down: bool
    log_path: str


def load_settings(site: SiteConfig, name: str) -> ServiceSettings:
    """Combine the service's entry in site.json with the compose .env file."""
    service = site.service(name)
    env = read_env_file(site.env_file)
    try:
        return ServiceSettings(
            name=name,
            version=site.app_version(),
            port=int(service["port"]),
            database_url=service["database_url"],
            redis_url=service["redis_url"],
            token=service.get("token") or None,
            forced_down=env.get("SAMPLE_HEALTH", "").strip().lower() == "down",
            log_path=str(site.log_file(name)),
        )
    except KeyError as error:
        raise SiteError(f"service {name!r} in site.json is missing {error.args[0]!r}") from None


class ValidationError(Exception):
    """A request body field is missing or invalid."""


class ApprovalService:
    """Approval storage, health checks and metrics behind the HTTP handler."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.approvals_created = Counter(
            "approval_requests",
            "Approval requests created through the API.",
            registry=self.registry,
        )
        self.http_requests = Counter(
            "http_requests",
            "HTTP requests served, by method, route and status code.",
            ["method", "path", "status"],
            registry=self.registry,
        )
        self.redis = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=CHECK_TIMEOUT_SECONDS,
            socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        )
        self.counter_key = approval_counter_key(settings.database_url)
        self._delivered = 0
        self._delivered_lock = threading.Lock()

    def ensure_schema(self) -> None:
        with self._connect() as connection:
            connection.execute(APPROVAL_TABLE_DDL)

    def close(self) -> None:
        self.redis.close()

    def health(self) -> tuple[HTTPStatus, dict[str, Any]]:
        checks = [
            {"name": "database", "status": self._check("database", self._ping_database)},
            {"name": "redis", "status": self._check("redis", self._ping_redis)},
        ]
        if self.settings.forced_down:
            checks.append(
                {
                    "name": "sample-health",
                    "status": "DOWN",
                    "data": {"reason": "SAMPLE_HEALTH=down in the compose .env file"},
                }
            )
        up = all(check["status"] == "UP" for check in checks)
        body = {
            "status": "UP" if up else "DOWN",
            "version": self.settings.version,
            "checks": checks,
        }
        return (HTTPStatus.OK if up else HTTPStatus.SERVICE_UNAVAILABLE), body

    def list_approvals(self) -> dict[str, Any]:
        with self._connect() as connection:
            rows = connection.execute(
                f"SELECT {APPROVAL_COLUMNS} FROM vvb_approval_request ORDER BY id"
            ).fetchall()
        approvals = [_approval_json(row) for row in rows]
        return {"approvals": approvals, "total": len(approvals)}

    def create_approval(self, payload: Any) -> dict[str, Any]:
        """Validate and insert an approval request, raising ValidationError that names the field."""
        fields = validate_approval(payload)
        with self._connect() as connection:
            row = connection.execute(
                "INSERT INTO vvb_approval_request"
                " (version_id, change_type, total_validators, expiry_deadline)"
                f" VALUES (%s, %s, %s, %s) RETURNING {APPROVAL_COLUMNS}",
                (
                    fields["versionId"],
                    fields["changeType"],
                    fields["totalValidators"],
                    fields["expiryDeadline"],
                ),
            ).fetchone()

        self.approvals_created.inc()
        with self._delivered_lock:
            self._delivered += 1
        try:
            self.redis.incr(self.counter_key)
        except redis.RedisError:
            # The row is stored, so the request succeeds and /q/health shows the Redis failure.
            logger.exception("failed to increment %s for approval %s", self.counter_key, row[0])
        return _approval_json(row)

    def webhook_status(self) -> dict[str, Any]:
        with self._delivered_lock:
            delivered = self._delivered
        return {"status": "OK", "delivered": delivered, "failed": 0}

    def metrics(self) -> bytes:
        return generate_latest(self.registry)

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(
            self.settings.database_url, connect_timeout=CHECK_TIMEOUT_SECONDS, autocommit=True
        )

    def _ping_database(self) -> None:
        with self._connect() as connection:
            connection.execute("SELECT 1")

    def _ping_redis(self) -> None:
        self.redis.ping()

    def _check(self, name: str, ping: Callable[[], None]) -> str:
        try:
            ping()
        except (psycopg.Error, redis.RedisError, OSError) as error:
            logger.warning("health check %s failed: %s", name, error)
            return "DOWN"
        return "UP"


def approval_counter_key(database_url: str) -> str:
    """Return the Redis key that counts approvals created against the database at the URL."""
    database = conninfo_to_dict(database_url).get("dbname", "")
    return f"sample-api:{database}:approvals_created"


def validate_approval(payload: Any) -> dict[str, Any]:
    """Return the approval fields of ``payload``, raising ValidationError that names a bad field."""
    if not isinstance(payload, dict):
        raise ValidationError("request body must be a JSON object")

    for field in ("versionId", "changeType"):
        value = payload.get(field)
        if not isinstance(value, str) or not value.strip():
            raise ValidationError(f"{field} is missing or not a non-empty string")

    validators = payload.get("totalValidators")
    if isinstance(validators, bool) or not isinstance(validators, int) or validators <= 0:
        raise ValidationError("totalValidators is missing or not an integer greater than 0")

    deadline_text = payload.get("expiryDeadline")
    if not isinstance(deadline_text, str):
        raise ValidationError("expiryDeadline is missing or not an ISO-8601 string")
    try:
        deadline = datetime.fromisoformat(deadline_text)
    except ValueError:
        raise ValidationError(
            f"expiryDeadline {deadline_text!r} is not an ISO-8601 date-time"
        ) from None
    if deadline.tzinfo is None:
        # A deadline without an offset is taken as UTC.
        deadline = deadline.replace(tzinfo=UTC)

    return {
        "versionId": payload["versionId"],
        "changeType": payload["changeType"],
        "totalValidators": validators,
        "expiryDeadline": deadline,
    }


def make_handler(app: ApprovalService) -> type[BaseHTTPRequestHandler]:
    """Build the request handler class bound to ``app``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = f"{app.settings.name}/{app.settings.version}"

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            started = time.monotonic()
            path = self.path.split("?", 1)[0]
            route = path if path in ROUTES else "unmatched"
            try:
                status, body, content_type = self._respond(method, path)
            except psycopg.Error as error:
                logger.error("%s %s failed on the database: %s", method, path, error)
                status = HTTPStatus.SERVICE_UNAVAILABLE
                body, content_type = _json_bytes({"error": "database unavailable"})
            except Exception:
                logger.exception("%s %s failed", method, path)
                status = HTTPStatus.INTERNAL_SERVER_ERROR
                body, content_type = _json_bytes({"error": "internal error"})

            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == HTTPStatus.UNAUTHORIZED:
                self.send_header("WWW-Authenticate", "Bearer")
            self.end_headers()
            self.wfile.write(body)

            app.http_requests.labels(method, route, str(int(status))).inc()
            elapsed_ms = (time.monotonic() - started) * 1000
            logger.info(
                "%s %s %s %d %.1fms",
                self.client_address[0],
                method,
                path,
                status,
                elapsed_ms,
            )

        def _respond(self, method: str, path: str) -> tuple[HTTPStatus, bytes, str]:
            allowed = ROUTES.get(path)
            if allowed is None:
                return HTTPStatus.NOT_FOUND, *_json_bytes({"error": f"no route for {path}"})
            if method not in allowed:
                return (
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    *_json_bytes({"error": f"{method} is not allowed on {path}"}),
                )
            if path.startswith(("/api/", "/webhooks/")) and not self._authorized():
                return HTTPStatus.UNAUTHORIZED, *_json_bytes(
                    {"error": "missing or invalid bearer token"}
                )

            if path == "/q/health":
                status, body = app.health()
                return status, *_json_bytes(body)
            if path == "/metrics":
                return HTTPStatus.OK, app.metrics(), CONTENT_TYPE_LATEST
            if path == "/webhooks/status":
                return HTTPStatus.OK, *_json_bytes(app.webhook_status())
            if method == "GET":
                return HTTPStatus.OK, *_json_bytes(app.list_approvals())
            return self._create_approval()

        def _create_approval(self) -> tuple[HTTPStatus, bytes, str]:
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return HTTPStatus.LENGTH_REQUIRED, *_json_bytes(
                    {"error": "Content-Length header is missing or invalid"}
                )
            if length > MAX_BODY_BYTES:
                return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, *_json_bytes(
                    {"error": f"request body exceeds {MAX_BODY_BYTES} bytes"}
                )

            raw = self.rfile.read(length)
            try:
                payload = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as error:
                return HTTPStatus.BAD_REQUEST, *_json_bytes(
                    {"error": f"request body is not valid JSON: {error}"}
                )
            try:
                approval = app.create_approval(payload)
            except ValidationError as error:
                return HTTPStatus.BAD_REQUEST, *_json_bytes({"error": str(error)})
            return HTTPStatus.CREATED, *_json_bytes(approval)

        def _authorized(self) -> bool:
            token = app.settings.token
            if not token:
                return True
            header = self.headers.get("Authorization", "")
            scheme, _, supplied = header.partition(" ")
            if scheme.lower() != "bearer":
                return False
            return hmac.compare_digest(supplied.strip().encode(), token.encode())

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            # _dispatch logs each request with its duration instead.
            pass

        def log_error(self, format: str, *args: Any) -> None:
            logger.warning("%s %s", self.client_address[0], format % args)

    return Handler


# Methods allowed on each path.
ROUTES: dict[str, tuple[str, ...]] = {
    "/q/health": ("GET",),
    "/metrics": ("GET",),
    "/api/v11/approvals": ("GET", "POST"),
    "/webhooks/status": ("GET",),
}


def _approval_json(row: tuple) -> dict[str, Any]:
    approval_id, version_id, change_type, validators, deadline, status, created_at = row
    return {
        "id": approval_id,
        "versionId": version_id,
        "changeType": change_type,
        "totalValidators": validators,
        "expiryDeadline": deadline.isoformat(),
        "status": status,
        "createdAt": created_at.isoformat(),
    }


def _json_bytes(body: dict[str, Any]) -> tuple[bytes, str]:
    return json.dumps(body).encode(), "application/json"


def _configure_logging(settings: ServiceSettings) -> None:
    handler = logging.FileHandler(settings.log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
