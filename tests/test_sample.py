"""Sample approval API and the docker / docker-compose stand-ins, against real PostgreSQL and Redis.

Each test gets its own site in a temporary directory, a scratch database that is dropped
afterwards and a free port. The stand-ins run as subprocesses with ``sample/bin`` first on PATH.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from sample import site as sample_site
from sample.site import Site

POSTGRES_URL = os.environ.get("GONOGO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
REDIS_HOST_URL = os.environ.get("GONOGO_TEST_REDIS_URL", "redis://127.0.0.1:6379")
# A non-zero Redis database checks that redis-cli in `docker exec` gets -n as well as -h and -p.
REDIS_DB = 3
TOKEN = "sample-token"
WAIT_SECONDS = 20.0


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with prepared_site(tmp_path / "host") as prepared:
        yield prepared


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """Client of one running site for the request-validation tests, which store nothing."""
    with prepared_site(tmp_path_factory.mktemp("shared") / "host") as shared_site:
        sample_site.start(shared_site.root)
        with api_client(shared_site) as client:
            yield client


@pytest.fixture
def running(site: Site) -> Site:
    sample_site.start(site.root)
    return site


@pytest.fixture
def api(running: Site) -> Iterator[httpx.Client]:
    with api_client(running) as client:
        yield client


# Service


def test_health_reports_prepared_version(api: httpx.Client) -> None:
    response = api.get("/q/health")

    assert response.status_code == 200
    assert response.json() == {
        "status": "UP",
        "version": "v10.4.2",
        "checks": [{"name": "database", "status": "UP"}, {"name": "redis", "status": "UP"}],
    }


def test_approvals_list_seed_rows(api: httpx.Client) -> None:
    body = api.get("/api/v11/approvals").json()

    assert body["total"] == 3
    assert [row["versionId"] for row in body["approvals"]] == ["v10.4.0", "v10.4.2", "v11.0.0"]


def test_approval_create_and_list(api: httpx.Client) -> None:
    response = api.post("/api/v11/approvals", json=APPROVAL)

    assert response.status_code == 201
    created = response.json()
    assert isinstance(created["id"], int)
    assert created["status"] == "PENDING"
    assert created["versionId"] == "v11.0.0"
    assert created["changeType"] == "MAJOR"
    assert created["totalValidators"] == 5
    assert created["expiryDeadline"] == "2031-06-30T12:00:00+00:00"

    listed = api.get("/api/v11/approvals").json()
    assert listed["total"] == 4
    assert listed["approvals"][-1] == created


def test_approval_counts_in_redis_and_webhooks(running: Site, api: httpx.Client) -> None:
    for _ in range(2):
        assert api.post("/api/v11/approvals", json=APPROVAL).status_code == 201

    assert api.get("/webhooks/status").json() == {"status": "OK", "delivered": 2, "failed": 0}
    with redis.Redis.from_url(running.redis_url) as client:
        keys = client.keys("sample-api:*:approvals_created")
        assert keys == [f"sample-api:{running.database}:approvals_created".encode()]
        assert client.get(keys[0]) == b"2"


@pytest.mark.parametrize(
    "path,method",
    [
        ("/api/v11/approvals", "GET"),
        ("/api/v11/approvals", "POST"),
        ("/webhooks/status", "GET"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}"])
def test_protected_routes_need_token(
    shared_api: httpx.Client, path: str, method: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with httpx.Client(base_url=shared_api.base_url, trust_env=False) as client:
        response = client.request(method, path, headers=headers, json=APPROVAL)

    assert response.status_code == 401
    assert "error" in response.json()


def test_health_and_metrics_need_no_token(running: Site) -> None:
    with httpx.Client(base_url=running.api_url, trust_env=False) as client:
        assert client.get("/q/health").status_code == 200
        assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"versionId": None}, "versionId"),
        ({"versionId": ""}, "versionId"),
        ({"changeType": 7}, "changeType"),
        ({"totalValidators": 0}, "totalValidators"),
        ({"totalValidators": -2}, "totalValidators"),
        ({"totalValidators": "5"}, "totalValidators"),
        ({"totalValidators": True}, "totalValidators"),
        ({"totalValidators": 2.5}, "totalValidators"),
        ({"expiryDeadline": None}, "expiryDeadline"),
        ({"expiryDeadline": "next Tuesday"}, "expiryDeadline"),
        ({"expiryDeadline": 1700000000}, "expiryDeadline"),
    ],
)
def test_approval_rejects_bad_field(shared_api: httpx.Client, changes: dict, field: str) -> None:
    payload = {key: value for key, value in {**APPROVAL, **changes}.items() if value is not None}

    response = shared_api.post("/api/v11/approvals", json=payload)

    assert response.status_code == 400
    assert field in response.json()["error"]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_approval_rejects_bad_body(shared_api: httpx.Client, body: bytes) -> None:
    response = shared_api.post(
        "/api/v11/approvals", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"]


def test_approval_rejects_bad_request_without_storing(api: httpx.Client) -> None:
    api.post("/api/v11/approvals", json={**APPROVAL, "totalValidators": 0})

    assert api.get("/api/v11/approvals").json()["total"] == 3


def test_metrics_count_approvals(api: httpx.Client) -> None:
    api.post("/api/v11/approvals", json=APPROVAL)

    text = api.get("/metrics").text

    assert "approval_requests_total 1.0" in text
    assert 'http_requests_total{method="POST",path="/api/v11/approvals",status="201"} 1.0' in text


def test_unknown_route_returns_404(api: httpx.Client) -> None:
    response = api.get("/api/v12/approvals")

    assert response.status_code == 404
    assert "/api/v12/approvals" in response.json()["error"]


def test_health_down_when_forced(running: Site) -> None:
    running.env_file.write_text("APP_VERSION=v10.4.2\nSAMPLE_HEALTH=down\n")

    result = compose(running, "up", "-d")

    assert result.returncode == 0, result.stderr
    status, body = wait_for_health(running, lambda status, _: status == 503)
    assert body["status"] == "DOWN"
    checks = {check["name"]: check["status"] for check in body["checks"]}
    assert checks == {"database": "UP", "redis": "UP", "sample-health": "DOWN"}


def test_health_down_when_redis_unreachable(running: Site) -> None:
    settings = json.loads(running.site_file.read_text())
    settings["services"]["sample-api"]["redis_url"] = f"redis://127.0.0.1:{free_port()}/0"
    running.site_file.write_text(json.dumps(settings))

    assert compose(running, "up", "-d", "--no-deps", "sample-api").returncode == 0

    _, body = wait_for_health(running, lambda status, _: status == 503)
    assert body["status"] == "DOWN"
    checks = {check["name"]: check["status"] for check in body["checks"]}
    assert checks == {"database": "UP", "redis": "DOWN"}


def test_service_logs_start_and_requests(running: Site, api: httpx.Client) -> None:
    api.get("/q/health")
    sample_site.stop(running.root)

    log = running.log_file.read_text()

    assert f"sample-api v10.4.2 listening on http://127.0.0.1:{running.api_port}" in log
    assert "GET /q/health 200" in log
    assert "sample-api v10.4.2 stopped" in log


def test_start_and_stop_are_idempotent(site: Site) -> None:
    first = sample_site.start(site.root)

    assert sample_site.start(site.root) == first
    assert sample_site.stop(site.root) is True
    assert sample_site.stop(site.root) is False
    assert not (site.run_dir / "sample-api.pid").exists()
    assert not port_open(site.api_port)


# docker exec


def test_pg_dump_through_exec(running: Site) -> None:
    dump = running.backups_dir / "db_backup.sql"

    result = shell(
        running, f"docker exec sample-postgres pg_dump -U postgres {running.database} > {dump}"
    )

    assert result.returncode == 0, result.stderr
    assert dump.stat().st_size > 0
    assert "CREATE TABLE public.vvb_approval_request" in dump.read_text()


def test_failing_pg_dump_exits_nonzero(running: Site) -> None:
    result = standin(running, "docker", "exec", "sample-postgres", "pg_dump", "-U", "postgres",
                     "no_such_database_here")  # fmt: skip

    assert result.returncode != 0
    assert "no_such_database_here" in result.stderr


def test_exec_passes_exit_status(running: Site) -> None:
    result = standin(running, "docker", "exec", "sample-redis", "sh", "-c", "exit 7")

    assert result.returncode == 7


def test_exec_psql_reads_stdin(running: Site) -> None:
    result = standin(
        running,
        "docker", "exec", "-i", "sample-postgres", "psql", "-U", "postgres", "-tA",
        input="SELECT count(*) FROM vvb_approval_request;\n",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"


def test_exec_redis_cli_reaches_site_database(running: Site, api: httpx.Client) -> None:
    api.post("/api/v11/approvals", json=APPROVAL)
    key = f"sample-api:{running.database}:approvals_created"

    ping = standin(running, "docker", "exec", "sample-redis", "redis-cli", "ping")
    counter = standin(running, "docker", "exec", "sample-redis", "redis-cli", "get", key)

    assert ping.stdout.strip() == "PONG"
    assert counter.stdout.strip() == "1"


def test_exec_sets_env_options(running: Site) -> None:
    result = standin(
        running,
        "docker", "exec", "-it", "-e", "GREETING=hello", "--env=TARGET=api", "sample-api",
        "sh", "-c", "echo $GREETING $TARGET $APP_VERSION",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello api v10.4.2"


def test_exec_unknown_container(running: Site) -> None:
    result = standin(running, "docker", "exec", "no-such-box", "true")

    assert result.returncode == 1
    assert "Error response from daemon: No such container: no-such-box" in result.stderr


def test_exec_api_only_while_running(site: Site) -> None:
    result = standin(site, "docker", "exec", "sample-api", "true")

    assert result.returncode == 1
    assert "No such container: sample-api" in result.stderr


def test_exec_missing_program(running: Site) -> None:
    result = standin(running, "docker", "exec", "sample-postgres", "no-such-program-here")

    assert result.returncode == 127
    assert "no-such-program-here" in result.stderr


# docker ps, images, stop, rm


def test_ps_lists_running_containers(running: Site) -> None:
    result = standin(running, "docker", "ps")

    lines = result.stdout.splitlines()
    assert lines[0].split() == ["CONTAINER", "ID", "IMAGE", "STATUS", "NAMES"]
    names = {line.split()[-1]: line for line in lines[1:]}
    assert set(names) == {"sample-api", "sample-postgres", "sample-redis"}
    assert "sample-api:v10.4.2" in names["sample-api"]


def test_ps_omits_stopped_api(site: Site) -> None:
    result = standin(site, "docker", "ps")

    assert result.returncode == 0
    assert "sample-api" not in result.stdout


def test_stop_then_rm_api(running: Site) -> None:
    stopped = standin(running, "docker", "stop", "sample-api")
    listed_all = standin(running, "docker", "ps", "-a")
    exec_stopped = standin(running, "docker", "exec", "sample-api", "true")
    removed = standin(running, "docker", "rm", "sample-api")
    listed_after = standin(running, "docker", "ps", "-a")

    assert stopped.stdout.strip() == "sample-api"
    assert not port_open(running.api_port)
    assert "Exited (0)" in listed_all.stdout
    assert exec_stopped.returncode == 1
    assert "is not running" in exec_stopped.stderr
    assert removed.returncode == 0
    assert "sample-api" not in listed_after.stdout


def test_rm_running_api_fails(running: Site) -> None:
    result = standin(running, "docker", "rm", "sample-api")

    assert result.returncode == 1
    assert "container is running" in result.stderr
    assert port_open(running.api_port)


def test_stop_machine_server_fails(running: Site) -> None:
    result = standin(running, "docker", "stop", "sample-postgres")

    assert result.returncode == 1
    assert "cannot stop" in result.stderr


def test_images_list_pulled_versions(running: Site) -> None:
    running.env_file.write_text("APP_VERSION=v11.0.0\n")
    compose(running, "pull")

    result = shell(running, "docker images | grep sample-api")

    tags = [line.split()[1] for line in result.stdout.splitlines()]
    assert sorted(tags) == ["v10.4.2", "v11.0.0"]


# docker-compose


def test_compose_up_switches_version(running: Site) -> None:
    old_pid = int((running.run_dir / "sample-api.pid").read_text().split()[0])
    running.env_file.write_text("APP_VERSION=v11.0.0\n")

    pulled = compose(running, "pull")
    started = compose(running, "up", "-d", "--no-deps", "sample-api")

    assert "Pulling sample-api ... done" in pulled.stdout
    assert started.returncode == 0, started.stderr
    assert "Recreating sample-api ... done" in started.stdout
    _, body = wait_for_health(running, lambda _, body: body.get("version") == "v11.0.0")
    assert body["status"] == "UP"
    assert not process_running(old_pid)
    assert "sample-api:v11.0.0" in standin(running, "docker", "ps").stdout


def test_compose_up_detaches_service(site: Site) -> None:
    result = compose(site, "up", "-d")

    assert result.returncode == 0, result.stderr
    assert "sample-postgres is up-to-date" in result.stdout
    pid = int((site.run_dir / "sample-api.pid").read_text().split()[0])
    assert os.getsid(pid) == pid
    assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull
    wait_for_health(site, lambda status, _: status == 200)


def test_compose_up_needs_detach(site: Site) -> None:
    result = compose(site, "up")

    assert result.returncode == 1
    assert "up -d" in result.stderr


def test_compose_ps_lists_services(running: Site) -> None:
    result = compose(running, "ps")

    assert result.returncode == 0
    assert f"127.0.0.1:{running.api_port}->{running.api_port}/tcp" in result.stdout


def test_compose_logs_tail(running: Site, api: httpx.Client) -> None:
    for _ in range(3):
        api.get("/q/health")

    equals_form = compose(running, "logs", "sample-api", "--tail=1")
    spaced_form = compose(running, "logs", "--tail", "2", "sample-api")

    assert equals_form.returncode == 0
    assert len(equals_form.stdout.splitlines()) == 1
    assert "GET /q/health 200" in equals_form.stdout
    assert len(spaced_form.stdout.splitlines()) == 2


def test_compose_down_stops_api(running: Site) -> None:
    result = compose(running, "down")

    assert result.returncode == 0, result.stderr
    assert "Stopping sample-api ... done" in result.stdout
    assert not port_open(running.api_port)
    assert "sample-api" not in standin(running, "docker", "ps", "-a").stdout


def test_compose_with_file_option(running: Site, tmp_path: Path) -> None:
    result = standin(running, "docker-compose", "-f", str(running.compose_file), "ps", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "sample-api" in result.stdout


def test_compose_outside_project_fails(site: Site, tmp_path: Path) -> None:
    result = standin(site, "docker-compose", "ps", cwd=tmp_path)

    assert result.returncode == 1
    assert "no configuration file provided" in result.stderr


def test_compose_unknown_command_fails(site: Site) -> None:
    result = compose(site, "frobnicate")

    assert result.returncode == 1
    assert "frobnicate" in result.stderr


def test_compose_unknown_service_fails(site: Site) -> None:
    result = compose(site, "up", "-d", "sample-worker")

    assert result.returncode == 1
    assert "no such service: sample-worker" in result.stderr


def test_docker_compose_subcommand(running: Site) -> None:
    result = standin(running, "docker", "compose", "ps", cwd=running.compose_dir)

    assert result.returncode == 0, result.stderr
    assert "sample-api" in result.stdout


def test_standins_need_site_variable(site: Site) -> None:
    env = site.standin_env()
    del env["GONOGO_SAMPLE_SITE"]

    for program in ("docker", "docker-compose"):
        result = subprocess.run(
            [program, "ps"], env=env, cwd=site.compose_dir, capture_output=True, text=True
        )
        assert result.returncode == 1
        assert "GONOGO_SAMPLE_SITE is not set" in result.stderr


def test_standins_run_without_site_packages(site: Site) -> None:
    # python -S leaves site-packages off sys.path, like a system python3 without the project's
    # packages, which is what `#!/usr/bin/env python3` may find in an SSH session.
    def run_bare(program: str, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-S", str(sample_site.BIN_DIR / program), *args]
        return standin(site, *command)

    started = run_bare("docker-compose", "up", "-d")
    ping = run_bare("docker", "exec", "sample-redis", "redis-cli", "ping")

    assert started.returncode == 0, started.stderr
    assert ping.stdout.strip() == "PONG"
    wait_for_health(site, lambda status, _: status == 200)


def test_standins_describe_themselves(site: Site) -> None:
    for program, text in (("docker", "docker CLI"), ("docker-compose", "docker-compose CLI")):
        result = standin(site, program, "--help")
        assert result.returncode == 0
        assert f"Stand-in for the {text}" in result.stdout


# Site layout


def test_prepare_writes_site_files(site: Site) -> None:
    settings = json.loads(site.site_file.read_text())

    assert settings["containers"]["sample-postgres"]["env"]["PGDATABASE"] == site.database
    assert settings["services"]["sample-api"]["port"] == site.api_port
    assert "image: sample-api:${APP_VERSION}" in site.compose_file.read_text()
    assert site.env_file.read_text() == "APP_VERSION=v10.4.2\n"
    assert site.config_file.is_file()
    assert site.backups_dir.is_dir()
    assert list(site.backups_dir.iterdir()) == []


def test_prepare_again_keeps_rows(site: Site) -> None:
    sample_site.prepare(
        site.root,
        database_url=site.database_url,
        redis_url=site.redis_url,
        api_port=site.api_port,
        token=TOKEN,
    )

    with psycopg.connect(site.database_url) as connection:
        count = connection.execute("SELECT count(*) FROM vvb_approval_request").fetchone()[0]
    assert count == 3


def test_load_returns_prepared_site(site: Site) -> None:
    assert sample_site.load(site.root) == site


def test_teardown_drops_database(site: Site) -> None:
    sample_site.start(site.root)

    sample_site.teardown(site.root)

    with psycopg.connect(f"{POSTGRES_URL}/postgres") as connection:
        row = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (site.database,)
        ).fetchone()
    assert row is None
    assert not port_open(site.api_port)


def test_git_tag_push(site: Site) -> None:
    tag = git(site.repo_dir, "tag", "-a", "v11.0.0", "-m", "VVB Approval System v11.0.0")
    push = git(site.repo_dir, "push", "origin", "v11.0.0")

    assert tag.returncode == 0, tag.stderr
    assert push.returncode == 0, push.stderr
    remote_tags = git(site.origin_dir, "tag", "--list").stdout.split()
    assert remote_tags == ["v11.0.0"]


# Helpers


@contextlib.contextmanager
def prepared_site(root: Path) -> Iterator[Site]:
    """Prepare a site with a scratch database at ``root``, yield it, then tear it down."""
    database = f"gonogo_sample_{uuid.uuid4().hex[:12]}"
    prepared = sample_site.prepare(
        root,
        database_url=f"{POSTGRES_URL}/{database}",
        redis_url=f"{REDIS_HOST_URL}/{REDIS_DB}",
        api_port=free_port(),
        token=TOKEN,
    )
    try:
        yield prepared
    finally:
        sample_site.teardown(prepared.root)


def api_client(target: Site) -> httpx.Client:
    return httpx.Client(
        base_url=target.api_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        trust_env=False,
        timeout=10,
    )


def standin(
    target: Site, *args: str, cwd: Path | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a stand-in command line with sample/bin first on PATH and the site set."""
    return subprocess.run(
        list(args),
        env=target.standin_env(),
        cwd=cwd or target.compose_dir,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


def compose(target: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return standin(target, "docker-compose", *args, cwd=target.compose_dir)


def shell(target: Site, command: str) -> subprocess.CompletedProcess[str]:
    return standin(target, "sh", "-c", command)


def git(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=60)


def wait_for_health(target: Site, condition: Callable[[int, dict], bool]) -> tuple[int, dict]:
    """Poll /q/health until ``condition(status, body)`` is true, failing after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    last: object = None
    with httpx.Client(base_url=target.api_url, trust_env=False, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get("/q/health")
            except httpx.TransportError as error:
                last = error
            else:
                last = (response.status_code, response.json())
                if condition(*last):
                    return last
            time.sleep(0.1)
    log = target.log_file.read_text() if target.log_file.exists() else "(no log)"
    pytest.fail(f"health condition not met in {WAIT_SECONDS} s, last {last!r}\nlog:\n{log}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def process_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


APPROVAL = {
    "versionId": "v11.0.0",
    "changeType": "MAJOR",
    "totalValidators": 5,
    "expiryDeadline": "2031-06-30T12:00:00Z",
}
