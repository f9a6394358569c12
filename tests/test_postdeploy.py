"""/postdeploy: post-deployment windows of a release, timed from the end of its rollout.

The runbook's windows are the shipped ones (immediate, extended, health-metrics). A two-phase
release runs for real through the phase commands, with the runner in-line, and a controllable
clock decides how many minutes have passed since the rollout. One module-scoped sample site
plays the target host for the tests whose window steps run to the end.
"""

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
import pytest
import yaml
from sqlmodel import select

from commands import button_handlers, checklist, slash_commands
from commands import postdeploy as postdeploy_module
from commands.context import Request, Services
from commands.deploy_log import render_log
from commands.roles import StaticDirectory
from engine.clock import Clock
from engine.config import load_config
from engine.runner import Runner
from sample import site as sample_site
from storage import repository
from storage.db import Database
from storage.models import AuditEvent, Deployment, DeploymentStatus, StepStatus
from tests.support.gonogo_server import PROJECT_DIR, free_port
from tests.support.inline import InlineWorker, NoObserver
from tests.support.postgres import scratch_database

DEPLOYER = "U0RELEASE"
APPROVER = "U0APPROVER"
VALIDATOR = "U0VALIDATOR"
STRANGER = "U0STRANGER"
CHANNEL = "C0PRODUCTION"
TOKEN_VARIABLE = "GONOGO_POSTDEPLOY_TEST_TOKEN"
ROLLOUT_END = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
WINDOW_IDS = ["immediate", "extended", "health-metrics"]


class ControlledClock(Clock):
    """Wall-clock time that the test sets. Sleeping stays real."""

    def __init__(self, moment: datetime):
        self.moment = moment

    def now(self) -> datetime:
        return self.moment

    def advance(self, minutes: float) -> None:
        self.moment += timedelta(minutes=minutes)


class PrometheusQueries(BaseHTTPRequestHandler):
    """Serves Prometheus's instant-query API, with an empty and successful result for any query."""

    def do_GET(self) -> None:  # noqa: N802  (the name http.server dispatches to)
        self.server.queries.append(self.path)
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format, *args):  # noqa: A002  (the stdlib's parameter name)
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A started sample site, shared by the tests whose window steps run to the end."""
    with scratch_database("gonogo_postdeploy") as database_url:
        prepared = sample_site.prepare(
            tmp_path_factory.mktemp("site") / "host",
            database_url=database_url,
            redis_url="redis://127.0.0.1:6379/0",
            api_port=free_port(),
        )
        sample_site.start(prepared.root)
        try:
            yield prepared
        finally:
            sample_site.stop(prepared.root)


@pytest.fixture(scope="module")
def prometheus():
    server = ThreadingHTTPServer(("127.0.0.1", 0), PrometheusQueries)
    server.queries = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def clock():
    return ControlledClock(ROLLOUT_END - timedelta(minutes=3))


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv(TOKEN_VARIABLE, "postdeploy-test-token")


def make_services(
    tmp_path, clock, *, site=None, prometheus=None, database_url: str | None = None
) -> Services:
    """Return services on ``database_url``, or else on a fresh SQLite database.

    Without ``site`` the host has no compose project, so the immediate window's log step fails.
    """
    (tmp_path / "runbook.yml").write_text(runbook_text())
    (tmp_path / "environments.yml").write_text(environments_text(tmp_path, site, prometheus))
    config = load_config(tmp_path / "runbook.yml", tmp_path / "environments.yml")
    db = Database(database_url or f"sqlite:///{tmp_path / 'gonogo.db'}")
    db.migrate()
    return Services(
        config=config,
        db=db,
        worker=InlineWorker(Runner(db, config, owner="test", clock=clock)),
        directory=StaticDirectory(),
        observer=NoObserver(),
        clock=clock,
    )


@pytest.fixture
def services(tmp_path, clock):
    services = make_services(tmp_path, clock)
    yield services
    services.db.dispose()


def command(services, name: str, text: str = "", user: str = DEPLOYER, channel: str = CHANNEL):
    request = Request(user_id=user, channel_id=channel, text=text, command=name)
    return slash_commands(services.config)[name](services, request).text


def postdeploy(services, text: str = "production", user: str = DEPLOYER, channel: str = CHANNEL):
    return command(services, "/postdeploy", text, user, channel)


def release(services, clock) -> None:
    """Run the release's two phases, the rollout ending at ROLLOUT_END."""
    command(services, "/prepare", "v11.0.0 production")
    clock.moment = ROLLOUT_END
    command(services, "/rollout")


def window_runs(services) -> list[Deployment]:
    with services.db.session() as session:
        return repository.children_of(session, 1)


def steps(services, deployment_id: int) -> dict:
    with services.db.session() as session:
        return {step.step_id: step for step in repository.steps_of(session, deployment_id)}


def actions(services, deployment_id: int | None) -> list[tuple[str, dict]]:
    with services.db.session() as session:
        events = session.exec(select(AuditEvent)).all()
    return [(e.action, e.detail) for e in events if e.deployment_id == deployment_id]


def tick_all(services, deployment_id: int, step_id: str, user: str = DEPLOYER) -> list[str]:
    definition = services.config.runbook.step(step_id)
    replies = []
    for index in range(len(definition.manual.items)):
        value = checklist.item_value(deployment_id, step_id, index)
        action_id = f"{checklist.TICK}.{index}"
        reply = button_handlers()[action_id](
            services, Request(user, CHANNEL, value, action_id=action_id)
        )
        replies.append(reply.text)
    return replies


# --- rejections before anything runs -----------------------------------------------------------


def test_rejected_before_rollout(services, clock):
    command(services, "/prepare", "v11.0.0 production")
    reply = postdeploy(services)

    assert reply == (
        "Deployment #1 of `v11.0.0` to `production` has not been rolled out yet: *Rollout* has "
        "not finished. The post-deployment windows start when it has."
    )
    assert window_runs(services) == []
    assert actions(services, 1)[-1][0] == "command.refused"
    assert actions(services, 1)[-1][1]["reason"] == "not rolled out"


def test_rejected_without_release(services):
    reply = postdeploy(services)

    assert reply.startswith("`production` has no deployment.")


def test_user_without_role_rejected(services, clock):
    release(services, clock)
    reply = postdeploy(services, user=STRANGER)

    assert reply == (
        "You need the deployer, approver or validator role in `production` to run "
        "`/postdeploy`. Ask a release manager."
    )
    assert window_runs(services) == []
    assert (
        "command.refused",
        {"command": "/postdeploy", "text": "production", "reason": "role"},
    ) in (actions(services, None))


def test_validator_may_run(services, clock):
    release(services, clock)
    reply = postdeploy(services, user=VALIDATOR)

    assert reply.startswith("Running *Immediate validation (0-15 minutes)*")
    assert window_runs(services)[0].requested_by == VALIDATOR


def test_validator_may_tick_window_items(services, clock):
    release(services, clock)
    postdeploy(services, user=VALIDATOR)
    step_id = services.config.runbook.procedure("window:immediate")[0][1].id
    replies = tick_all(services, 2, step_id, user=VALIDATOR)
    with services.db.session() as session:
        window_run = repository.get_deployment(session, 2)
        log = render_log(
            services.config,
            window_run,
            repository.steps_of(session, 2),
            [],
            repository.all_item_states(session, 2),
        )

    assert replies
    assert not any("You need" in reply for reply in replies), replies
    assert log.startswith("POST-DEPLOYMENT CHECKS - v11.0.0\nWindow: Immediate validation")
    assert f"ticked by {VALIDATOR}" in log


def test_unknown_window_lists_ids(services, clock):
    release(services, clock)
    reply = postdeploy(services, "production nightly")

    assert reply == (
        "Window `nightly` is not in runbook `two-phase`. Choose one of: `immediate`, "
        "`extended`, `health-metrics`."
    )
    assert window_runs(services) == []


def test_unknown_word_outside_channel(services, clock):
    release(services, clock)
    reply = postdeploy(services, "prodution", channel="C0ELSEWHERE")

    assert reply.startswith("Environment `prodution` is not defined.")


def test_too_many_words(services):
    reply = postdeploy(services, "production immediate now")

    assert reply.startswith("Usage: `/postdeploy [environment] [window]`.")


# --- starting windows ------------------------------------------------------------------------


def test_immediate_window_starts_after_rollout(services, clock):
    release(services, clock)
    clock.advance(2)
    reply = postdeploy(services, "", channel=CHANNEL)
    runs = window_runs(services)
    window_steps = steps(services, runs[0].id)

    assert reply == (
        "Running *Immediate validation (0-15 minutes)* (`immediate`) for deployment #1 of "
        "`v11.0.0` to `production`, 2 minutes after the rollout, as deployment #2. "
        "The checklist is in <#C0PRODUCTION>."
    )
    assert [run.procedure for run in runs] == ["window:immediate"]
    assert runs[0].parent_id == 1
    assert runs[0].version == "v11.0.0"
    assert runs[0].channel == CHANNEL
    assert runs[0].variables == {"rolled_out": "v11.0.0"}
    assert runs[0].status == DeploymentStatus.WAITING
    assert window_steps["immediate-checks"].status == StepStatus.WAITING
    assert window_steps["recent-logs"].status == StepStatus.PENDING


def test_window_start_audited(services, clock):
    release(services, clock)
    postdeploy(services)
    events = actions(services, 2)

    assert events[0] == (
        "command",
        {
            "command": "/postdeploy",
            "text": "production",
            "release_id": 1,
            "window": "immediate",
            "rerun": False,
        },
    )


def test_release_takes_no_lock(services, clock):
    release(services, clock)
    postdeploy(services)
    with services.db.session() as session:
        active = repository.active_deployment(session, "production")

    assert active is None


def test_extended_due_at_fifteen_minutes(services, clock, token):
    release(services, clock)
    clock.advance(5)
    early = postdeploy(services, "production extended")
    runs_early = window_runs(services)
    clock.advance(15)
    on_time = postdeploy(services, "production extended")
    runs = window_runs(services)

    assert early == (
        "*Extended validation (15-60 minutes)* (`extended`) is due 15 minutes after the rollout "
        "of deployment #1: at 2024-05-01 12:15 UTC, in 10 minutes. Run it then."
    )
    assert runs_early == []
    assert on_time.startswith("Running *Extended validation (15-60 minutes)* (`extended`)")
    assert "20 minutes after the rollout" in on_time
    assert [run.procedure for run in runs] == ["window:extended"]


def test_window_id_alone_in_channel(services, clock, token):
    release(services, clock)
    clock.advance(16)
    reply = postdeploy(services, "extended")

    assert reply.startswith("Running *Extended validation (15-60 minutes)*")


def test_extended_needs_its_secret(services, clock, monkeypatch):
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    release(services, clock)
    clock.advance(16)
    reply = postdeploy(services, "production extended")

    assert "`test_token` (`GONOGO_POSTDEPLOY_TEST_TOKEN`)" in reply
    assert window_runs(services) == []


def test_next_window_named_when_none_due(services, clock):
    release(services, clock)
    clock.advance(1)
    postdeploy(services)
    clock.advance(2)
    reply = postdeploy(services)

    assert reply == (
        "No post-deployment window of deployment #1 is due now. Next: *Extended validation "
        "(15-60 minutes)* (`extended`) at 2024-05-01 12:15 UTC, in 12 minutes."
    )
    assert len(window_runs(services)) == 1


def test_window_under_way_rejected(services, clock):
    release(services, clock)
    postdeploy(services)
    reply = postdeploy(services, "production immediate")

    assert reply.startswith("*Immediate validation (0-15 minutes)* (`immediate`) is already under")
    assert "deployment #2 in <#C0PRODUCTION> (waiting)" in reply
    assert len(window_runs(services)) == 1


def test_late_window_runs_with_warning(services, clock):
    release(services, clock)
    clock.advance(70)
    reply = postdeploy(services)

    assert reply.startswith("Running *Immediate validation (0-15 minutes)*")
    assert reply.endswith(
        "This run is late: the window closed 15 minutes after the rollout, at 12:15 UTC."
    )


def test_windows_run_in_order(services, clock, token):
    release(services, clock)
    clock.advance(61)
    replies = [postdeploy(services) for _ in WINDOW_IDS]
    last = postdeploy(services)

    assert [run.procedure for run in window_runs(services)] == [
        f"window:{window_id}" for window_id in WINDOW_IDS
    ]
    assert [reply.split("(`")[1].split("`")[0] for reply in replies] == WINDOW_IDS
    assert last == (
        "Every post-deployment window of deployment #1 has passed or is under way, so there is "
        "nothing left to run."
    )


def add_rollback(services, clock, status: DeploymentStatus) -> None:
    with services.db.session() as session:
        rollback = Deployment(
            runbook="two-phase",
            environment="production",
            version="v11.0.0",
            procedure="rollback:quick",
            parent_id=1,
            status=status,
            requested_by=DEPLOYER,
            request_channel=CHANNEL,
            channel=CHANNEL,
            created_at=clock.now(),
            updated_at=clock.now(),
        )
        repository.create_deployment(session, rollback, [], clock.now(), lock=False)


def test_rolled_back_release_rejected(services, clock):
    release(services, clock)
    add_rollback(services, clock, DeploymentStatus.SUCCEEDED)
    reply = postdeploy(services)

    assert reply == (
        "Deployment #1 of `v11.0.0` to `production` has a rollback, deployment #2 (succeeded), "
        "so its post-deployment windows no longer apply."
    )


def test_failed_rollback_leaves_windows_open(services, clock):
    release(services, clock)
    add_rollback(services, clock, DeploymentStatus.FAILED)
    reply = postdeploy(services)

    assert "has a rollback" not in reply
    assert len(window_runs(services)) == 2  # the failed rollback and the window run


# --- window steps that run to the end --------------------------------------------------------


def test_immediate_window_runs_on_site(tmp_path, clock, site, prometheus):
    services = make_services(tmp_path, clock, site=site, prometheus=prometheus)
    release(services, clock)
    queries_before = len(prometheus.queries)
    clock.advance(3)
    postdeploy(services)
    before_ticks = steps(services, 2)
    queries_before_ticks = len(prometheus.queries)
    tick_all(services, 2, "immediate-checks")
    window_steps = steps(services, 2)
    run = window_runs(services)[0]
    services.db.dispose()

    assert before_ticks["immediate-checks"].status == StepStatus.WAITING
    assert before_ticks["recent-logs"].status == StepStatus.PENDING
    assert queries_before_ticks == queries_before
    assert window_steps["immediate-checks"].status == StepStatus.PASSED
    assert window_steps["recent-logs"].status == StepStatus.PASSED
    assert "sample-api v10.4.2 listening on" in window_steps["recent-logs"].output_tail
    assert window_steps["error-rate"].status == StepStatus.PASSED
    assert len(prometheus.queries) == queries_before + 1
    assert prometheus.queries[-1].startswith("/api/v1/query?query=rate%28http_requests_total")
    assert run.status == DeploymentStatus.SUCCEEDED


def test_passed_window_not_rerun(tmp_path, clock, site, prometheus):
    services = make_services(tmp_path, clock, site=site, prometheus=prometheus)
    release(services, clock)
    postdeploy(services)
    tick_all(services, 2, "immediate-checks")
    named = postdeploy(services, "production immediate")
    unnamed = postdeploy(services)
    runs = window_runs(services)
    services.db.dispose()

    assert named == (
        "*Immediate validation (0-15 minutes)* (`immediate`) already passed for deployment #1 "
        "in deployment #2 in <#C0PRODUCTION>. Only a window whose run failed may run again."
    )
    assert unnamed.startswith("No post-deployment window of deployment #1 is due now.")
    assert [run.status for run in runs] == [DeploymentStatus.SUCCEEDED]


def test_failed_window_runs_again(services, clock):
    release(services, clock)
    postdeploy(services)
    tick_all(services, 2, "immediate-checks")
    failed = steps(services, 2)["recent-logs"]
    clock.advance(4)
    named = postdeploy(services, "production immediate")
    tick_all(services, 3, "immediate-checks")
    unnamed_rerun = postdeploy(services)
    runs = window_runs(services)

    assert failed.status == StepStatus.FAILED
    assert "No such file or directory" in failed.output_tail
    assert named.startswith("Running again *Immediate validation (0-15 minutes)*")
    assert "as deployment #3" in named
    assert unnamed_rerun.startswith("Running again *Immediate validation")
    assert [run.status for run in runs] == [
        DeploymentStatus.FAILED,
        DeploymentStatus.FAILED,
        DeploymentStatus.WAITING,
    ]
    assert actions(services, 3)[0][1]["rerun"] is True


# --- two requests at once ---------------------------------------------------------------------


def test_concurrent_requests_start_once(tmp_path, clock, monkeypatch):
    """Start one window run for two requests that arrive together.

    The second request waits for the first to commit and then finds its run. The test polls
    pg_stat_activity for that wait, so it needs no fixed sleep.
    """
    with scratch_database("gonogo_postdeploy_race") as database_url:
        services = make_services(tmp_path, clock, database_url=database_url)
        release(services, clock)
        first_inside, first_may_go = threading.Event(), threading.Event()
        record = postdeploy_module._record_window_run

        def record_after_go(*args, **kwargs):
            if not first_inside.is_set():
                first_inside.set()
                first_may_go.wait(timeout=30)
            return record(*args, **kwargs)

        monkeypatch.setattr(postdeploy_module, "_record_window_run", record_after_go)
        replies = {}
        first = threading.Thread(target=lambda: replies.update(first=postdeploy(services)))
        second = threading.Thread(
            target=lambda: replies.update(second=postdeploy(services, "production immediate"))
        )
        first.start()
        first_inside.wait(timeout=30)
        second.start()
        second_waited = wait_for_lock_wait(database_url, deadline_seconds=10)
        first_may_go.set()
        first.join(timeout=30)
        second.join(timeout=30)
        runs = window_runs(services)
        services.db.dispose()

    assert second_waited
    assert replies["first"].startswith("Running *Immediate validation (0-15 minutes)*")
    assert "is already under way" in replies["second"]
    assert [run.procedure for run in runs] == ["window:immediate"]


def wait_for_lock_wait(database_url: str, deadline_seconds: float) -> bool:
    """Return True once a session of the database waits for a lock, or False at the deadline."""
    deadline = time.monotonic() + deadline_seconds
    with psycopg.connect(database_url, autocommit=True) as connection:
        while time.monotonic() < deadline:
            waiting = connection.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()[0]
            if waiting:
                return True
            time.sleep(0.02)
    return False


# --- the runbook and environments of these tests ---------------------------------------------

PHASES = """\
name: two-phase
title: Two-phase release
phases:
  - id: prepare
    title: Prepare
    command: /prepare
    steps:
      - id: say-ready
        title: Say ready
        run:
          hosts: app
          command: echo ready for {{ version }}
  - id: rollout
    title: Rollout
    command: /rollout
    steps:
      - id: roll-out
        title: Roll out
        run:
          hosts: app
          command: echo rolled out {{ version }}
          capture:
            rolled_out: 'rolled out (\\S+)'
"""


def runbook_text() -> str:
    """Return the two phases above with the shipped runbook's post-deployment windows."""
    shipped = yaml.safe_load((PROJECT_DIR / "runbooks" / "vvb-v11.yml").read_text())
    windows = yaml.safe_dump({"post_deployment": shipped["post_deployment"]}, sort_keys=False)
    return PHASES + windows


def environments_text(tmp_path, site, prometheus) -> str:
    compose_dir = site.compose_dir if site else tmp_path / "no-compose-project"
    api_url = f"{site.api_url}/api/v11" if site else "http://127.0.0.1:9/api/v11"
    prometheus_url = f"http://127.0.0.1:{prometheus.server_port}" if prometheus else None
    document = {
        "environments": {
            "production": {
                "channel": CHANNEL,
                "roles": {
                    "deployers": [DEPLOYER],
                    "approvers": [APPROVER],
                    "validators": [VALIDATOR],
                },
                "hosts": {"app": ["local"]},
                "path_prepend": [str(sample_site.BIN_DIR)],
                "command_env": {"GONOGO_SAMPLE_SITE": str(site.root if site else tmp_path)},
                "settings": {
                    "compose_dir": str(compose_dir),
                    "api_service": "sample-api",
                    "api_url": api_url,
                    "prometheus_url": prometheus_url,
                    "grafana_url": None,
                },
                "secrets": {"test_token": TOKEN_VARIABLE},
            }
        }
    }
    return yaml.safe_dump(document, sort_keys=False)


def test_waiting_window_can_be_cancelled(services, clock):
    release(services, clock)
    postdeploy(services)
    reply = command(services, "/deploy-cancel", "production")
    with services.db.session() as session:
        release_run = repository.get_deployment(session, 1)
        window_run = repository.get_deployment(session, 2)

    assert release_run.status == DeploymentStatus.SUCCEEDED
    assert "Cancelling deployment #2" in reply
    assert window_run.status == DeploymentStatus.CANCELLED
    assert "already under way" not in postdeploy(services, "production immediate")
