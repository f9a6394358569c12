"""/deploy and the gate buttons through the command handlers, with the runner run in-line."""

import pytest

from commands import decisions, deploy
from commands.context import Request, Services
from commands.roles import StaticDirectory
from engine.config import load_config
from engine.runner import Runner
from storage import repository
from storage.db import Database
from storage.models import DeploymentStatus, StepStatus
from tests.support.inline import InlineWorker, NoObserver

REQUESTER = "U0RELEASE"
APPROVER = "U0APPROVER"

RUNBOOK = """\
name: small
title: Small release
phases:
  - id: release
    title: Release
    steps:
      - id: go-no-go
        title: Go/no-go
        gate:
          prompt: Release {{ version }}?
      - id: say-version
        title: Print the version
        run:
          hosts: app
          command: echo released {{ version }}
"""

ENVIRONMENTS = """\
environments:
  production:
    channel: C0PRODUCTION
    roles:
      deployers: [U0RELEASE]
      approvers: ['@approvers']
    hosts:
      app: [local]
"""


@pytest.fixture
def services(tmp_path):
    (tmp_path / "runbook.yml").write_text(RUNBOOK)
    (tmp_path / "environments.yml").write_text(ENVIRONMENTS)
    config = load_config(tmp_path / "runbook.yml", tmp_path / "environments.yml")
    db = Database(f"sqlite:///{tmp_path / 'gonogo.db'}")
    db.migrate()
    worker = InlineWorker()
    worker.runner = Runner(db, config, owner="test")
    yield Services(
        config=config,
        db=db,
        worker=worker,
        directory=StaticDirectory({"approvers": {APPROVER, REQUESTER}}),
        observer=NoObserver(),
    )
    db.dispose()


def start(services: Services, text: str = "v1.2.3 production", user: str = REQUESTER):
    return deploy.handle(services, Request(user_id=user, channel_id="C0ASK", text=text))


def press(services: Services, action_id: str, user: str, value: str = "1:go-no-go"):
    request = Request(user_id=user, channel_id="C0PRODUCTION", text=value, action_id=action_id)
    return decisions.handle(services, request).text


def state(services: Services, deployment_id: int = 1):
    with services.db.session() as session:
        deployment = repository.get_deployment(session, deployment_id)
        steps = {step.step_id: step for step in repository.steps_of(session, deployment_id)}
    return deployment, steps


def test_run_waits_at_gate(services):
    reply = start(services)
    deployment, steps = state(services)

    assert "Started deployment #1" in reply.text
    assert deployment.status == DeploymentStatus.WAITING
    assert steps["go-no-go"].status == StepStatus.WAITING
    assert steps["say-version"].status == StepStatus.PENDING


def test_approval_continues_run(services):
    start(services)
    reply = press(services, decisions.APPROVE, APPROVER)
    deployment, steps = state(services)

    assert "approved" in reply
    assert deployment.status == DeploymentStatus.SUCCEEDED
    assert steps["say-version"].output_tail == "released v1.2.3"


def test_requester_cannot_approve(services):
    start(services)
    reply = press(services, decisions.APPROVE, REQUESTER)
    deployment, _ = state(services)

    assert "cannot approve" in reply
    assert deployment.status == DeploymentStatus.WAITING


def test_non_approver_is_rejected(services):
    start(services)
    reply = press(services, decisions.APPROVE, "U0STRANGER")

    assert "approver role in `production`" in reply


def test_reject_halts_and_frees_environment(services):
    start(services)
    press(services, decisions.REJECT, APPROVER)
    deployment, steps = state(services)
    second = start(services, "v1.2.4 production")

    assert deployment.status == DeploymentStatus.REJECTED
    assert steps["go-no-go"].status == StepStatus.FAILED
    assert steps["say-version"].status == StepStatus.NOT_RUN
    assert "Started deployment #2" in second.text


def test_second_press_changes_nothing(services):
    start(services)
    press(services, decisions.APPROVE, APPROVER)
    reply = press(services, decisions.REJECT, APPROVER)
    deployment, _ = state(services)

    assert "already approved" in reply
    assert deployment.status == DeploymentStatus.SUCCEEDED


def test_presses_are_audited(services):
    start(services)
    press(services, decisions.APPROVE, REQUESTER)
    press(services, decisions.APPROVE, APPROVER)
    with services.db.session() as session:
        actions = [(e.actor, e.action) for e in repository.audit_trail(session, 1)]

    assert (REQUESTER, "command") in actions
    assert (REQUESTER, "button.refused") in actions
    assert (APPROVER, "button") in actions


def test_busy_environment_links_active(services):
    start(services)
    reply = start(services, "v1.2.4 production")

    assert "already has an active deployment" in reply.text
    assert "deployment #1" in reply.text


@pytest.mark.parametrize(
    "value",
    ["", "1", "x:go-no-go", "1:no-such-step", "99:go-no-go", "1:go-no-go; rm -rf /"],
)
def test_stale_button_values(services, value):
    start(services)
    reply = press(services, decisions.APPROVE, APPROVER, value=value)
    deployment, _ = state(services)

    assert "no longer exists" in reply
    assert deployment.status == DeploymentStatus.WAITING


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "needs a version and an environment"),
        ("v1.2.3", "needs a version and an environment"),
        ("v1.2.3 production extra", "needs a version and an environment"),
        ("1.2.3 production", "Version `1.2.3` does not match"),
        ("v1.2.3; rm -rf / production", "needs a version and an environment"),
        ("$(id) production", "Version `$(id)` does not match"),
        ("v1.2.3 moon", "Environment `moon` is not defined. Choose one of: `production`."),
    ],
)
def test_invalid_deploy_text(services, text, expected):
    reply = start(services, text)
    with services.db.session() as session:
        active = repository.active_deployment(session, "production")

    assert expected in reply.text
    assert active is None


def test_deploy_needs_deployer_role(services):
    reply = start(services, user=APPROVER)

    assert "You need the deployer role in `production` to deploy" in reply.text


def test_version_is_not_shell_evaluated(tmp_path, services):
    # The version pattern already rejects shell syntax; quoting is the second line of defence.
    marker = tmp_path / "injected"
    reply = start(services, f"v1.2.3-$(touch${{IFS}}{marker}) production")

    assert "does not match" in reply.text
    assert not marker.exists()


def test_done_button_cannot_approve_gate(services):
    start(services)
    reply = press(services, decisions.DONE, APPROVER)
    deployment, steps = state(services)

    assert "no longer exists" in reply
    assert steps["go-no-go"].status == StepStatus.WAITING
    assert deployment.status == DeploymentStatus.WAITING


SECRET_RUNBOOK = """\
name: secret
title: Uses a secret
phases:
  - id: smoke
    title: Smoke
    steps:
      - id: call-api
        title: Call the API
        probe:
          url: http://127.0.0.1:9/
          headers:
            Authorization: 'Bearer {{ secrets.token }}'
"""

SECRET_ENVIRONMENTS = """\
environments:
  production:
    channel: C0PRODUCTION
    roles:
      deployers: [U0RELEASE]
    hosts:
      app: [local]
    secrets:
      token: GONOGO_TEST_UNSET_TOKEN
"""


def test_deploy_needs_its_secrets(tmp_path, monkeypatch):
    monkeypatch.delenv("GONOGO_TEST_UNSET_TOKEN", raising=False)
    (tmp_path / "runbook.yml").write_text(SECRET_RUNBOOK)
    (tmp_path / "environments.yml").write_text(SECRET_ENVIRONMENTS)
    config = load_config(tmp_path / "runbook.yml", tmp_path / "environments.yml")
    db = Database(f"sqlite:///{tmp_path / 'gonogo.db'}")
    db.migrate()
    services = Services(
        config=config,
        db=db,
        worker=InlineWorker(Runner(db, config, owner="test")),
        directory=StaticDirectory(),
        observer=NoObserver(),
    )
    reply = start(services)
    with db.session() as session:
        active = repository.active_deployment(session, "production")
    db.dispose()

    assert "`token` (`GONOGO_TEST_UNSET_TOKEN`)" in reply.text
    assert "nothing was started" in reply.text
    assert active is None


def test_press_on_ended_step_changes_nothing(services):
    start(services)
    deployment, step, _ = decisions.find_step(services, "1:go-no-go")
    press(services, decisions.APPROVE, APPROVER)  # the step moves on
    late = decisions.store_decision(
        services, Request(APPROVER, "C0PRODUCTION", "1:go-no-go"), deployment, step, "rejected"
    )
    _, steps = state(services)

    assert late.text == "*Go/no-go* moved on before your press was stored, so it changed nothing."
    assert steps["go-no-go"].status == StepStatus.PASSED
