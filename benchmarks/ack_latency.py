"""Acknowledgement latency of /deploy under concurrent slash commands.

Serves gonogo's WSGI app two ways on loopback and sends rounds of concurrent, signed
`/deploy` commands to each. One is the Procfile's gunicorn (2 workers, 8 threads each). The
other is a single-threaded wsgiref server, which handles requests one at a time as Bolt's
built-in development server does. Each round targets a fresh environment, so one command creates a
deployment and the others are told the environment is busy. Slack is the loopback stand-in
from tests/support. Run from the repository root:

    python -m benchmarks.ack_latency [--rounds 10] [--concurrency 20] [--storage postgresql]
"""

import argparse
import math
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import yaml

from bot.runtime import Settings
from bot.wsgi import create_application
from tests.support.gonogo_server import PROJECT_DIR, GonogoServer, free_port
from tests.support.postgres import scratch_database
from tests.support.slack_requests import SlackRequester
from tests.support.slack_standin import SlackStandIn

SECRET = "benchmark-signing-secret"
SLACK_DEADLINE = 3.0  # seconds Slack waits for an acknowledgement


def environments_file(directory: Path, rounds: int) -> Path:
    # Hosts are `local` and the first step is a manual check, so no command runs.
    environment = {
        "channel": "C0BENCH",
        "roles": {
            "deployers": ["U0BENCH"],
            "approvers": ["U0APPROVER"],
            "validators": ["U0VALIDATOR"],
        },
        "hosts": {"app": ["local"], "repo": ["local"]},
        "notify_channels": {"operations": "C0OPS", "validators": "C0VAL"},
        "settings": {
            name: "/nonexistent"
            for name in (
                "compose_dir backup_root repo_dir git_remote api_service api_image "
                "postgres_container redis_container db_user db_name health_url api_url "
                "webhooks_url"
            ).split()
        }
        | {
            "prometheus_url": None,
            "grafana_url": None,
            "staging_grafana_url": None,
            "tls_staging": None,
            "tls_production": None,
            "backup_min_free_gb": 0,
        },
        "secrets": {"test_token": "BENCHMARK_TOKEN"},
        "contacts": {role: "U0BENCH" for role in ("operations", "database", "network", "on_call")},
    }
    document = {"environments": {f"bench-{index}": environment for index in range(rounds)}}
    path = directory / "environments.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def measure(url: str, rounds: int, concurrency: int) -> list[float]:
    latencies: list[float] = []
    with SlackRequester(url, SECRET, timeout=30) as requester:

        def send(environment: str) -> float:
            started = time.monotonic()
            try:
                response = requester.command("/deploy", f"v11.0.0 {environment}", user_id="U0BENCH")
                response.raise_for_status()
            except httpx.HTTPError:
                return math.inf  # Slack shows the user an error, as for a timeout
            return time.monotonic() - started

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for index in range(rounds):
                latencies += pool.map(send, [f"bench-{index}"] * concurrency)
    return latencies


def report(name: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)

    def percentile(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    late = sum(1 for latency in ordered if latency > SLACK_DEADLINE)
    failed = sum(1 for latency in ordered if latency == math.inf)
    return (
        f"| {name} | {len(ordered)} | {statistics.median(ordered) * 1000:.0f} | "
        f"{percentile(0.95):.0f} | {percentile(0.99):.0f} | {late} | {failed} |"
    )


@contextmanager
def database(storage: str, sqlite_file: Path) -> Iterator[str]:
    if storage == "sqlite":
        yield f"sqlite:///{sqlite_file}"
        return
    with scratch_database("gonogo_benchmark") as url:
        yield url


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002  (the stdlib's parameter name)
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument(
        "--storage",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="database of gonogo: a SQLite file, or a scratch database on the local PostgreSQL",
    )
    arguments = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as scratch, SlackStandIn() as slack:
        directory = Path(scratch)
        environments = environments_file(directory, arguments.rounds)
        env = {
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": slack.base_url,
            "GONOGO_ENVIRONMENTS": str(environments),
            "GONOGO_RUNBOOK": str(PROJECT_DIR / "runbooks" / "vvb-v11.yml"),
            "GONOGO_HOME": str(directory / "home"),
            "BENCHMARK_TOKEN": "benchmark-token",
        }

        env["DATABASE_URL"] = f"sqlite:///{directory / 'gunicorn.db'}"
        with GonogoServer(directory, env) as server:
            latencies = measure(
                server.url + "/slack/events", arguments.rounds, arguments.concurrency
            )
        rows.append(report("gunicorn, 2 workers x 8 threads", latencies))

        env["DATABASE_URL"] = f"sqlite:///{directory / 'wsgiref.db'}"
        previous = dict(os.environ)
        os.environ.update(env)
        try:
            application = create_application(Settings.from_environ())
        finally:
            os.environ.clear()
            os.environ.update(previous)
        port = free_port()
        server = make_server("127.0.0.1", port, application, handler_class=QuietHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            latencies = measure(
                f"http://127.0.0.1:{port}/slack/events", arguments.rounds, arguments.concurrency
            )
        finally:
            server.shutdown()
            application.runtime.stop()
        rows.append(report("single-threaded wsgiref", latencies))

    print(f"{arguments.rounds} rounds of {arguments.concurrency} concurrent /deploy commands")
    print("| server | requests | p50 ms | p95 ms | p99 ms | over 3 s | failed |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
