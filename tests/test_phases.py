"""Phase commands, /deploy-status and /deploy-log through the handlers, with the runner in-line."""

import pytest
import yaml

from commands import slash_commands
from commands.context import Request, Services
from commands.roles import StaticDirectory
from engine.config import load_config
from engine.runner import Runner
from storage import repository
from storage.db import Database
from storage.models import DeploymentStatus, StepStatus
from tests.support.gonogo_server import PROJECT_DIR
from tests.support.inline import InlineWorker, NoObserver
from tests.support.postgres import scratch_database

REQUESTER = "U0RELEASE"
CHANNEL = "C0PRODUCTION"

RUNBOOK = """\
name: phased
title: Phased release
phases:
  - id: prepare
    title: Prepare
    command: /prepare
    steps:
      - id: say-hello
        title: Say hello
        run:
          hosts: app
          command: echo hello {{ version }}
  - id: ship
    title: Ship
    command: /ship
    steps:
      - id: ship-it
        title: Ship it
        run:
          hosts: app
          command: test -f {{ ready_file }}
  - id: check
    title: Check
    command: /check
    steps:
      - id: check-it
        title: Check it
        run:
          hosts: app
          command: echo checked
"""

ENVIRONMENTS = """\
environments:
  production:
    channel: C0PRODUCTION
    roles:
      deployers: [U0RELEASE]
      approvers: [U0APPROVER]
    hosts:
      app: [local]
    settings:
      ready_file: {ready_file}
"""


@pytest.fixture
def ready_file(tmp_path):
    return tmp_path / "ready"


@pytest.fixture
def services(tmp_path, ready_file):
    (tmp_path / "runbook.yml").write_text(RUNBOOK)
    (tmp_path / "environments.yml").write_text(ENVIRONMENTS.format(ready_file=ready_file))
    config = load_config(tmp_path / "runbook.yml", tmp_path / "environments.yml")
    db = Database(f"sqlite:///{tmp_path / 'gonogo.db'}")
    db.migrate()
    yield Services(
        config=config,
        db=db,
        worker=InlineWorker(Runner(db, config, owner="test")),
        directory=StaticDirectory(),
        observer=NoObserver(),
    )
    db.dispose()


def command(services, name: str, text: str = "", user: str = REQUESTER, channel: str = CHANNEL):
    request = Request(user_id=user, channel_id=channel, text=text, command=name)
    return slash_commands(services.config)[name](services, request).text


def state(services):
    with services.db.session() as session:
        deployment = repository.get_deployment(session, 1)
        steps = {step.step_id: step.status for step in repository.steps_of(session, 1)}
        actions = [event.action for event in repository.audit_trail(session, 1)]
    return deployment, steps, actions


def test_first_command_starts_and_pauses(services):
    reply = command(services, "/prepare", "v2.0.0 production")
    deployment, steps, _ = state(services)

    assert "Started deployment #1" in reply
    assert deployment.status == DeploymentStatus.PAUSED
    assert steps == {
        "say-hello": StepStatus.PASSED,
        "ship-it": StepStatus.PENDING,
        "check-it": StepStatus.PENDING,
    }


def test_out_of_order_lists_earlier(services):
    command(services, "/prepare", "v2.0.0 production")
    reply = command(services, "/check")
    _, steps, _ = state(services)

    assert (
        reply == "`/check` cannot start yet on deployment #1. Run these first, in order: `/ship`."
    )
    assert steps["check-it"] == StepStatus.PENDING


def test_phases_in_order_succeed(services, ready_file):
    ready_file.touch()
    command(services, "/prepare", "v2.0.0 production")
    ship = command(services, "/ship")
    after_ship, _, _ = state(services)
    check = command(services, "/check", "production", channel="C0ELSEWHERE")
    deployment, steps, _ = state(services)

    assert "Running `/ship` on deployment #1" in ship
    assert after_ship.status == DeploymentStatus.PAUSED
    assert "Running `/check`" in check
    assert deployment.status == DeploymentStatus.SUCCEEDED
    assert set(steps.values()) == {StepStatus.PASSED}


def test_passed_phase_names_next(services):
    command(services, "/prepare", "v2.0.0 production")
    reply = command(services, "/prepare")

    assert reply == "`/prepare` already passed on deployment #1. Next: `/ship`."


def test_failed_phase_runs_again(services, ready_file):
    command(services, "/prepare", "v2.0.0 production")
    command(services, "/ship")
    failed, failed_steps, _ = state(services)
    ready_file.touch()
    reply = command(services, "/ship")
    deployment, steps, actions = state(services)

    assert failed.status == DeploymentStatus.FAILED
    assert failed_steps["ship-it"] == StepStatus.FAILED
    assert failed_steps["check-it"] == StepStatus.NOT_RUN
    assert "Running again `/ship`" in reply
    assert deployment.status == DeploymentStatus.PAUSED
    assert steps["ship-it"] == StepStatus.PASSED
    assert steps["check-it"] == StepStatus.PENDING
    assert "phase.rerun" in actions


def test_phase_acts_on_active_deployment(services):
    command(services, "/prepare", "v2.0.0 production")
    command(services, "/ship")  # fails: the ready file is missing
    other = command(services, "/prepare", "v2.0.1 production")
    reply = command(services, "/ship")

    assert "Started deployment #2" in other
    assert "Running `/ship` on deployment #2" in reply


def test_phase_needs_deployer(services):
    command(services, "/prepare", "v2.0.0 production")
    reply = command(services, "/ship", user="U0APPROVER")

    assert "You need the deployer role in `production`" in reply


def test_phase_without_environment(services):
    reply = command(services, "/ship", channel="C0ELSEWHERE")

    assert "Name the environment" in reply


def test_phase_without_deployment(services):
    reply = command(services, "/ship")

    assert "`production` has no deployment" in reply


def test_later_command_cannot_start(services):
    reply = command(services, "/ship", "v2.0.0 production")

    assert reply.startswith("Usage: `/ship`")


def test_status_names_next_command(services):
    command(services, "/prepare", "v2.0.0 production")
    reply = command(services, "/deploy-status", user="U0APPROVER")

    assert "*paused*, 1 of 3 steps done" in reply
    assert "Next: `/ship` runs *Ship*." in reply


def test_status_shows_failure(services):
    command(services, "/prepare", "v2.0.0 production")
    command(services, "/ship")
    reply = command(services, "/deploy-status")

    assert "Failed: *Ship: Ship it*: exit code 1 on local" in reply


def test_status_needs_role(services):
    command(services, "/prepare", "v2.0.0 production")
    reply = command(services, "/deploy-status", user="U0STRANGER")

    assert "deployer or approver role" in reply


def test_log_command_queues_upload(services):
    command(services, "/prepare", "v2.0.0 production")
    reply = command(services, "/deploy-log", "production", channel="C0ASKED")
    with services.db.session() as session:
        rows = [
            (row.kind, row.channel)
            for row in session.exec(repository.select(repository.OutboxMessage))
        ]

    assert reply.startswith("Uploading the log of deployment #1")
    assert ("log_file", "C0ASKED") in rows


def test_manifests_list_every_command():
    config = load_config(
        PROJECT_DIR / "runbooks" / "vvb-v11.yml", PROJECT_DIR / "config" / "environments.yml"
    )
    expected = set(slash_commands(config))
    for name in ("manifest.yml", "manifest-http.yml"):
        manifest = yaml.safe_load((PROJECT_DIR / "slack" / name).read_text())
        listed = {entry["command"] for entry in manifest["features"]["slash_commands"]}
        assert listed == expected, name


def test_cancel_paused_deployment(services):
    command(services, "/prepare", "v2.0.0 production")
    reply = command(services, "/deploy-cancel", user="U0APPROVER")
    deployment, steps, actions = state(services)
    another = command(services, "/deploy", "v2.0.1 production")

    assert reply.startswith("Cancelling deployment #1")
    assert deployment.status == DeploymentStatus.CANCELLED
    assert deployment.error == "cancelled by U0APPROVER"
    assert steps["ship-it"] == StepStatus.NOT_RUN
    assert "deployment.finished" in actions
    assert "Started deployment #2" in another


def test_cancel_without_active_deployment(services):
    reply = command(services, "/deploy-cancel", "production")

    assert reply == "`production` has no active deployment, so there is nothing to cancel."


def test_cancel_needs_role(services):
    command(services, "/prepare", "v2.0.0 production")
    reply = command(services, "/deploy-cancel", user="U0STRANGER")
    deployment, _, _ = state(services)

    assert "deployer or approver role" in reply
    assert deployment.status == DeploymentStatus.PAUSED


def test_cancelled_deployment_takes_no_phase(services):
    command(services, "/prepare", "v2.0.0 production")
    command(services, "/deploy-cancel")
    reply = command(services, "/ship")

    assert "has ended (cancelled)" in reply


def test_cancel_during_step_start_runs_nothing(tmp_path, ready_file):
    """A cancel committed while the worker decides to start a step stops that step."""
    (tmp_path / "runbook.yml").write_text(RUNBOOK)
    (tmp_path / "environments.yml").write_text(ENVIRONMENTS.format(ready_file=ready_file))
    config = load_config(tmp_path / "runbook.yml", tmp_path / "environments.yml")
    with scratch_database("gonogo_cancel_race") as url:
        db = Database(url)
        db.migrate()

        class CancelledMeanwhile(Runner):
            def _next_action(self, session, deployment, step):
                # Another process's cancel, committed after this worker read the deployment.
                with db.session() as other:
                    row = repository.get_deployment(other, deployment.id)
                    row.cancel_requested_by = "U0APPROVER"
                    other.commit()
                return super()._next_action(session, deployment, step)

        services = Services(
            config=config,
            db=db,
            worker=InlineWorker(CancelledMeanwhile(db, config, owner="test")),
            directory=StaticDirectory(),
            observer=NoObserver(),
        )
        command(services, "/deploy", "v1.0.0 production")
        with db.session() as session:
            deployment = repository.get_deployment(session, 1)
            steps = repository.steps_of(session, 1)
        db.dispose()

    assert deployment.status == DeploymentStatus.CANCELLED
    assert [step.status for step in steps] == [StepStatus.NOT_RUN] * 3
    assert all(step.attempts == 0 for step in steps)
