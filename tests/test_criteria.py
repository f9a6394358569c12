"""Go/no-go: success criteria judged from the recorded steps, unit by unit and in a run."""

import pytest

from commands.context import Request
from commands.deploy import handle as deploy
from engine import criteria
from engine.config import Criterion, SuccessCriteria
from storage import repository
from storage.models import DeploymentStatus, StepRun, StepStatus
from tests.support.inline import inline_services


def step(step_id: str, status: StepStatus, output: str = "", manual_reason=None) -> StepRun:
    return StepRun(
        deployment_id=1,
        position=0,
        phase_id="p",
        phase_title="P",
        step_id=step_id,
        title=step_id.replace("-", " ").capitalize(),
        kind="probe",
        status=status,
        output_tail=output,
        manual_reason=manual_reason,
    )


CRITERIA = SuccessCriteria(
    must_have=[Criterion(text="Healthy", steps=["health"]), Criterion(text="Judged by people")],
    should_have=[Criterion(text="Metrics", steps=["metrics"])],
)


def test_all_met_is_go():
    verdict = criteria.evaluate(
        CRITERIA,
        [step("health", StepStatus.PASSED, "HTTP 200"), step("metrics", StepStatus.PASSED)],
    )

    assert verdict.go
    assert [r.outcome for r in verdict.results] == [
        criteria.MET,
        criteria.NOT_MEASURED,
        criteria.MET,
    ]
    assert verdict.results[0].evidence == ["Health: passed (HTTP 200)"]


def test_failed_must_have_is_no_go():
    verdict = criteria.evaluate(
        CRITERIA, [step("health", StepStatus.SKIPPED), step("metrics", StepStatus.PASSED)]
    )

    assert not verdict.go
    assert [r.text for r in verdict.failed_must_haves] == ["Healthy"]


def test_failed_should_have_is_warning():
    verdict = criteria.evaluate(
        CRITERIA, [step("health", StepStatus.PASSED), step("metrics", StepStatus.FAILED)]
    )

    assert verdict.go
    assert [r.text for r in verdict.warnings] == ["Metrics"]


def test_hand_checked_step_is_marked():
    verdict = criteria.evaluate(
        CRITERIA,
        [
            step("health", StepStatus.PASSED),
            step("metrics", StepStatus.PASSED, manual_reason="no Prometheus"),
        ],
    )

    assert verdict.results[2].outcome == criteria.MET_BY_HAND
    assert verdict.results[2].evidence == ["Metrics: passed (ticked by hand)"]


def test_report_lists_every_criterion():
    verdict = criteria.evaluate(CRITERIA, [step("health", StepStatus.FAILED)])
    text = criteria.report(verdict)

    assert text.splitlines()[0] == "NO-GO"
    assert "Must have:" in text
    assert "- [not met] Healthy" in text
    assert "- [not measured] Judged by people" in text
    assert "Should have:" in text


RUNBOOK = """\
name: judged
title: Judged release
phases:
  - id: release
    title: Release
    steps:
      - id: approval
        title: Approval
        gate: {}
      - id: ship
        title: Ship
        run:
          hosts: app
          command: echo shipped
      - id: judge
        title: Go/no-go criteria
        criteria: {}
success_criteria:
  must_have:
    - text: Shipped
      steps: [ship]
    - text: Approved by a person
      steps: [approval]
"""

ENVIRONMENTS = """\
environments:
  staging:
    channel: C0STAGING
    require_approval: false
    roles:
      deployers: [U0RELEASE]
      approvers: [U0APPROVER]
    hosts:
      app: [local]
"""


@pytest.fixture
def services(tmp_path):
    services = inline_services(tmp_path, RUNBOOK, ENVIRONMENTS)
    yield services
    services.db.dispose()


def test_unmet_must_have_halts_run(services):
    deploy(services, Request("U0RELEASE", "C0STAGING", "v1.0.0 staging", command="/deploy"))
    with services.db.session() as session:
        deployment = repository.get_deployment(session, 1)
        steps = {row.step_id: row for row in repository.steps_of(session, 1)}

    assert steps["approval"].status == StepStatus.SKIPPED
    assert steps["judge"].status == StepStatus.FAILED
    assert steps["judge"].error == "No-Go: must-have criteria not met: Approved by a person"
    assert steps["judge"].output_tail.startswith("NO-GO\nMust have:")
    assert deployment.status == DeploymentStatus.FAILED
