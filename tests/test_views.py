"""Tests of the Block Kit checklist message and the thread messages, drawn from in-memory rows.

Every rendering is checked against Slack's Block Kit limits with tests.support.block_kit.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import views
from commands import decisions, rollback
from commands.context import Form
from engine.config import MAX_PHASES, Config, load_config
from engine.runner import plan_steps
from storage.models import (
    ChecklistItemState,
    Deployment,
    DeploymentStatus,
    SignOff,
    StepRun,
    StepStatus,
)
from tests.support.block_kit import message_errors, view_errors

ROOT = Path(__file__).resolve().parent.parent
STARTED = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
DEPLOYMENT_ID = 42
REQUESTER = "U0RELEASE"
APPROVER = "U0APPROVER"


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(ROOT / "runbooks" / "vvb-v11.yml", ROOT / "config" / "environments.yml")


# --- the checklist message in each state -----------------------------------------------------


def test_fresh(config: Config):
    deployment = new_deployment()
    steps = planned(config)

    text, blocks = views.checklist_message(config, deployment, steps, [])

    assert message_errors(blocks) == []
    assert text == "v1.4.2 → production: queued (0/34)"
    assert blocks[0]["text"]["text"] == "v1.4.2 → production: Queued"
    assert actions_of(blocks) == []
    phase_lines = section_texts(blocks)
    assert len(phase_lines) == 11
    assert phase_lines[0] == ":white_circle: *Pre-deployment validation* · not started · 4 steps"
    assert all("not started" in line for line in phase_lines)


def test_header_context(config: Config):
    _, blocks = views.checklist_message(config, new_deployment(), planned(config), [])
    context = blocks[1]["elements"][0]["text"]

    assert "Deployment #42" in context
    assert f"<@{REQUESTER}>" in context
    assert "runbook `vvb-v11`" in context
    assert f"<!date^{int(STARTED.timestamp())}^" in context


def test_running_mid_phase(config: Config):
    deployment = new_deployment(status=DeploymentStatus.RUNNING, started_at=STARTED)
    steps = run_until(planned(config), "disk-space", StepStatus.RUNNING)

    text, blocks = views.checklist_message(config, deployment, steps, [])
    phases = section_texts(blocks)

    assert message_errors(blocks) == []
    verify = phase_section(blocks, "Pre-deployment 3: Environment checks")
    assert text == (
        "v1.4.2 → production: running Pre-deployment 3: Environment checks: Check disk space (6/34)"
    )
    assert blocks[0]["text"]["text"] == "v1.4.2 → production: Running"
    assert phases[0].startswith(":white_check_mark: *Pre-deployment validation* · 4/4 done · ")
    assert "\n" not in phases[0]
    backup = phase_section(blocks, "Pre-deployment 2: Backup")
    assert backup.startswith(":white_check_mark: *Pre-deployment 2: Backup* · 1/1 done")
    assert verify.startswith("*Pre-deployment 3: Environment checks*\n")
    assert ":hourglass_flowing_sand: running · Check disk space" in verify
    assert ":white_circle: not started · Check container status" in verify
    staging = phase_section(blocks, "Phase 1: Staging validation")
    assert staging.startswith(":white_circle: *Phase 1: Staging validation* · not started")
    assert actions_of(blocks) == []
    assert footer_of(blocks).startswith("Phase 4 of 11 · 6 of 34 steps · ")


def test_waiting_on_gate(config: Config):
    deployment = new_deployment(
        status=DeploymentStatus.WAITING,
        started_at=STARTED,
        variables={
            "backup_dir": "/backups/backup-20250304-100000-d42",
            "previous_version": "v1.4.1",
        },
    )
    steps = run_until(planned(config), "go-no-go", StepStatus.WAITING)

    text, blocks = views.checklist_message(config, deployment, steps, [])
    buttons = actions_of(blocks)

    assert message_errors(blocks) == []
    assert text == "v1.4.2 → production: waiting for Go/no-go for the rollout (18/34)"
    assert blocks[0]["text"]["text"] == "v1.4.2 → production: Waiting for approval"
    assert [button["text"]["text"] for button in buttons] == ["Approve", "Reject"]
    assert [button["action_id"] for button in buttons] == [decisions.APPROVE, decisions.REJECT]
    assert [button["value"] for button in buttons] == ["42:go-no-go", "42:go-no-go"]
    assert buttons[0]["style"] == "primary"
    assert buttons[1]["style"] == "danger"
    assert "confirm" in buttons[1]


def test_gate_prompt_rendered(config: Config):
    deployment = new_deployment(
        status=DeploymentStatus.WAITING,
        variables={"backup_dir": "/backups/backup-d42", "previous_version": "v1.4.1"},
    )
    steps = run_until(planned(config), "go-no-go", StepStatus.WAITING)

    _, blocks = views.checklist_message(config, deployment, steps, [])
    prompt = waiting_section(blocks)

    assert "Roll out v1.4.2 to production?" in prompt
    assert "The backup is at /backups/backup-d42" in prompt
    assert "the running version is v1.4.1." in prompt
    assert "{{" not in prompt


def test_gate_prompt_without_capture(config: Config):
    deployment = new_deployment(status=DeploymentStatus.WAITING)
    steps = run_until(planned(config), "go-no-go", StepStatus.WAITING)

    _, blocks = views.checklist_message(config, deployment, steps, [])

    assert "the running version is unknown." in waiting_section(blocks)


def test_gate_prompt_hides_secrets(config: Config, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GONOGO_PRODUCTION_TEST_TOKEN", "very-secret-token")
    deployment = new_deployment(status=DeploymentStatus.WAITING)
    steps = run_until(planned(config), "go-no-go", StepStatus.WAITING)

    _, blocks = views.checklist_message(config, deployment, steps, [])

    assert "very-secret-token" not in str(blocks)


def test_waiting_on_manual_check(config: Config):
    deployment = new_deployment(status=DeploymentStatus.WAITING, started_at=STARTED)
    steps = run_until(planned(config), "code-review", StepStatus.WAITING)

    text, blocks = views.checklist_message(config, deployment, steps, [])
    items = [block for block in blocks if "accessory" in block]

    assert message_errors(blocks) == []
    assert text == "v1.4.2 → production: waiting for Code review (0/34)"
    assert blocks[0]["text"]["text"] == "v1.4.2 → production: Waiting for a check"
    assert len(items) == 4  # one Tick button per item
    assert items[0]["accessory"]["action_id"] == "item.tick.0"
    assert items[0]["accessory"]["value"] == "42:code-review:0"
    assert "All commits reviewed and approved · open" in items[0]["text"]["text"]
    assert "Code coverage at least 80% · open" in items[3]["text"]["text"]


def test_checked_items_show_evidence(config: Config):
    deployment = new_deployment(status=DeploymentStatus.WAITING, started_at=STARTED)
    steps = run_until(planned(config), "infrastructure", StepStatus.WAITING)
    states = [
        ChecklistItemState(
            deployment_id=42,
            step_id="infrastructure",
            item_index=0,
            state="passed",
            decided_at=STARTED,
            evidence="the check: passed on prod-app.example.invalid",
        ),
        ChecklistItemState(
            deployment_id=42,
            step_id="infrastructure",
            item_index=5,
            state="failed",
            decided_at=STARTED,
            evidence="12 GB free on /backups, under the 50 GB minimum",
        ),
    ]

    _, blocks = views.checklist_message(config, deployment, steps, [], states)
    texts = [block["text"]["text"] for block in blocks if block["type"] == "section"]
    sections = [block for block in blocks if block["type"] == "section"]
    disk = next(block for block in sections if "Disk space free" in block["text"]["text"])

    assert message_errors(blocks) == []
    assert any("reachable · checked" in text and "passed on prod-app" in text for text in texts)
    assert "under the 50 GB minimum" in disk["text"]["text"]
    assert disk["accessory"]["action_id"] == "item.waive.5"


def test_manual_fallback_shows_reason(config: Config):
    deployment = new_deployment(environment="local", status=DeploymentStatus.WAITING)
    steps = run_until(planned(config, "local"), "staging-grafana", StepStatus.WAITING)

    _, blocks = views.checklist_message(config, deployment, steps, [])
    reason = "staging_grafana_url not configured for local; check by hand"

    assert message_errors(blocks) == []
    assert f"• Staging Grafana is healthy ({reason})" in waiting_section(blocks)
    assert f"_{reason}_" in phase_section(blocks, "Phase 1: Staging validation")
    assert [button["value"] for button in actions_of(blocks)] == ["42:staging-grafana"]


def test_failed(config: Config):
    error = "exit code 1 on prod-app.example.invalid"
    deployment = new_deployment(
        status=DeploymentStatus.FAILED,
        started_at=STARTED,
        finished_at=STARTED + timedelta(minutes=5),
        error=f"Pull the new image: {error}",
    )
    steps = run_until(planned(config), "pull-image", StepStatus.FAILED)
    halt(steps)
    steps[20].error = error

    text, blocks = views.checklist_message(config, deployment, steps, [])
    rollout = phase_section(blocks, "Phase 3: Rollout")
    shown = "\n".join(section_texts(blocks))

    assert message_errors(blocks) == []
    assert text.startswith("v1.4.2 → production: failed at Phase 3: Rollout: Pull the new image")
    assert blocks[0]["text"]["text"] == "v1.4.2 → production: Failed"
    assert ":white_check_mark: done · Pin the release in the compose environment file" in rollout
    assert ":x: failed · Pull the new image" in rollout
    assert "Start the new version" not in shown
    assert phase_section(blocks, "Phase 4: Health verification") == (
        ":heavy_minus_sign: *Phase 4: Health verification* · not run"
    )
    assert f":rotating_light: *Halted:* Pull the new image: {error}" in shown
    assert actions_of(blocks) == []
    assert footer_of(blocks).startswith("Phase 8 of 11 · 20 of 34 steps · ")


def test_failed_hides_later_steps(config: Config):
    deployment = new_deployment(status=DeploymentStatus.FAILED, error="Check disk space: boom")
    steps = run_until(planned(config), "disk-space", StepStatus.FAILED)
    halt(steps)

    _, blocks = views.checklist_message(config, deployment, steps, [])
    shown = "\n".join(section_texts(blocks))

    for step in steps[7:]:
        assert step.title not in shown, step.step_id


def test_rejected(config: Config):
    sign_off = signed("go-no-go", "rejected", APPROVER)
    deployment = new_deployment(
        status=DeploymentStatus.REJECTED,
        started_at=STARTED,
        finished_at=STARTED + timedelta(minutes=4),
        error=f"rejected by {APPROVER}",
    )
    steps = run_until(planned(config), "go-no-go", StepStatus.FAILED)
    halt(steps)

    text, blocks = views.checklist_message(config, deployment, steps, [sign_off])

    assert message_errors(blocks) == []
    assert text.startswith("v1.4.2 → production: rejected")
    assert blocks[0]["text"]["text"] == "v1.4.2 → production: Rejected"
    assert actions_of(blocks) == []
    assert f"rejected by <@{APPROVER}>" in footer_of(blocks)


def test_succeeded(config: Config):
    sign_off = signed("go-no-go", "approved", APPROVER)
    deployment = new_deployment(
        status=DeploymentStatus.SUCCEEDED,
        started_at=STARTED,
        finished_at=STARTED + timedelta(minutes=12, seconds=30),
    )
    steps = run_until(planned(config), None, StepStatus.PASSED)

    text, blocks = views.checklist_message(config, deployment, steps, [sign_off])
    phases = section_texts(blocks)

    assert message_errors(blocks) == []
    assert text == "v1.4.2 → production: deployed (34/34)"
    assert blocks[0]["text"]["text"] == "v1.4.2 → production: Deployed"
    assert actions_of(blocks) == []
    assert len(phases) == 11
    for phase in phases:
        assert phase.startswith(":white_check_mark: *"), phase
        assert "\n" not in phase, phase
    assert " · 5/5 done · " in phase_section(blocks, "Pre-deployment 3: Environment checks")
    assert footer_of(blocks) == (
        f"Phase 11 of 11 · 34 of 34 steps · 12 min 30 s elapsed · approved by <@{APPROVER}>"
    )


def test_succeeded_with_skipped_gate(config: Config):
    deployment = new_deployment(environment="staging", status=DeploymentStatus.SUCCEEDED)
    steps = run_until(planned(config, "staging"), None, StepStatus.PASSED)
    steps[18].status = StepStatus.SKIPPED

    _, blocks = views.checklist_message(config, deployment, steps, [])

    preparation = phase_section(blocks, "Phase 2: Backup and preparation")
    assert " · 3/4 done, 1 skipped · " in preparation


# --- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("waiting_step", ["go-no-go", "infrastructure", "staging-grafana"])
def test_stress_long_texts(config: Config, waiting_step: str):
    deployment = new_deployment(
        environment="local",
        status=DeploymentStatus.WAITING,
        started_at=STARTED,
        error="E" * 20_000,
        variables={"backup_dir": "/b" * 3000, "previous_version": "v" * 5000},
    )
    steps = run_until(planned(config, "local"), waiting_step, StepStatus.WAITING)
    for step in steps:
        step.title = f"{step.step_id} " + "T" * 1000
        step.phase_title = f"{step.phase_id} " + "P" * 500
        step.output_tail = "O" * 5000
        step.error = "X" * 5000
        step.manual_reason = "R" * 2000 if step.manual_reason else None
    sign_offs = [signed(f"s{index}", "approved", "U" * 40) for index in range(100)]

    text, blocks = views.checklist_message(config, deployment, steps, sign_offs)

    assert message_errors(blocks) == []
    assert len(text) <= 40_000


def test_stress_failed_long_error(config: Config):
    deployment = new_deployment(status=DeploymentStatus.FAILED, error="E" * 20_000)
    steps = run_until(planned(config), "api-health", StepStatus.FAILED)
    halt(steps)
    steps[23].error = "X" * 20_000

    text, blocks = views.checklist_message(config, deployment, steps, [])

    assert message_errors(blocks) == []
    assert section_texts(blocks)[-1].endswith("…")


def test_many_phases_within_block_limit(config: Config):
    steps = []
    for index in range(MAX_PHASES):
        step = StepRun(
            deployment_id=DEPLOYMENT_ID,
            position=index,
            phase_id=f"phase-{index}",
            phase_title=f"Phase {index}",
            step_id="code-review",
            title="Code review",
            kind="manual",
        )
        steps.append(step)
    steps[-1].status = StepStatus.WAITING
    deployment = new_deployment(status=DeploymentStatus.FAILED, error="halted")

    _, blocks = views.checklist_message(config, deployment, steps, [])

    assert message_errors(blocks) == []


# --- thread messages -------------------------------------------------------------------------


def test_step_output_keeps_tail():
    output = "\n".join(f"line {number}" for number in range(1, 10_001))
    step = finished_step(output_tail=output, exit_code=0, hosts="prod-app.example.invalid")

    text = views.step_output_message(step)

    assert len(text) < 4000
    assert text.endswith("line 9999\nline 10000```")
    assert "line 1\n" not in text
    assert text.startswith(":white_check_mark: *Pull the new image* done in 4.5 s (exit code 0)")
    assert "on prod-app.example.invalid" in text


def test_step_output_long_error():
    output = "\n".join(f"line {number}" for number in range(1, 10_001))
    step = finished_step(status=StepStatus.FAILED, output_tail=output, error="X" * 50_000)

    text = views.step_output_message(step)

    assert len(text) < 4000
    assert text.endswith("line 10000```")
    assert text.startswith(":x: *Pull the new image* failed")


def test_step_output_short():
    step = finished_step(output_tail="pulled sample-api\n", exit_code=0)

    text = views.step_output_message(step)

    assert text == (
        ":white_check_mark: *Pull the new image* done in 4.5 s (exit code 0)\n"
        "```pulled sample-api```"
    )


def test_step_output_empty():
    step = finished_step(status=StepStatus.FAILED, error="exit code 2 on local", exit_code=2)

    text = views.step_output_message(step)

    assert text == ":x: *Pull the new image* failed in 4.5 s (exit code 2)\nexit code 2 on local"


def test_alert_message(config: Config):
    deployment = new_deployment(status=DeploymentStatus.FAILED, error="boom")
    steps = run_until(planned(config), "pull-image", StepStatus.FAILED)
    halt(steps)
    steps[20].error = "exit code 1 on prod-app.example.invalid"

    text = views.alert_message(deployment, steps, "pull-image")

    assert f"<@{REQUESTER}>" in text
    assert "*Phase 3: Rollout: Pull the new image*" in text
    assert "exit code 1 on prod-app.example.invalid" in text
    assert "13 later step(s) were not run." in text


def test_alert_message_long_error(config: Config):
    deployment = new_deployment(status=DeploymentStatus.FAILED)
    steps = run_until(planned(config), "pull-image", StepStatus.FAILED)
    steps[20].error = "X" * 50_000

    assert len(views.alert_message(deployment, steps, "pull-image")) < 4000


def test_decision_message(config: Config):
    steps = planned(config)
    sign_off = signed("go-no-go", "approved", APPROVER)

    text = views.decision_message(sign_off, steps[18])

    assert text.startswith(
        f":white_check_mark: <@{APPROVER}> approved *Go/no-go for the rollout* at <!date^"
    )


def test_log_messages_fit(config: Config):
    deployment = new_deployment(status=DeploymentStatus.FAILED, error="E" * 10_000)
    steps = run_until(planned(config), "pull-image", StepStatus.FAILED)
    halt(steps)
    steps[20].error = "X" * 10_000

    texts = views.log_messages(config, deployment, steps, [])

    assert len(texts) > 1
    assert texts[0].startswith(f"Deployment log of #42 (1 of {len(texts)}):\n```DEPLOYMENT LOG")
    for text in texts:
        assert len(text) < 4000


# --- helpers ---------------------------------------------------------------------------------


def new_deployment(
    *,
    environment: str = "production",
    status: DeploymentStatus = DeploymentStatus.PENDING,
    **fields: Any,
) -> Deployment:
    return Deployment(
        id=DEPLOYMENT_ID,
        runbook="vvb-v11",
        environment=environment,
        version="v1.4.2",
        status=status,
        requested_by=REQUESTER,
        request_channel="C0REQUESTS",
        channel="C0DEPLOY",
        created_at=STARTED,
        updated_at=STARTED,
        **fields,
    )


def planned(config: Config, environment: str = "production") -> list[StepRun]:
    steps = plan_steps(config.runbook, config.environments[environment])
    for step in steps:
        step.id = step.position + 1
        step.deployment_id = DEPLOYMENT_ID
    return steps


def run_until(steps: list[StepRun], step_id: str | None, status: StepStatus) -> list[StepRun]:
    """Mark every step before ``step_id`` passed and give ``step_id`` ``status``.

    With ``step_id`` None, every step gets ``status``. Step n starts 10 n seconds after
    STARTED and takes 4.5 seconds.
    """
    for step in steps:
        step.started_at = STARTED + timedelta(seconds=10 * step.position)
        if step.step_id == step_id:
            step.status = status
            if status.finished:
                step.finished_at = step.started_at + timedelta(seconds=4.5)
            return steps
        step.status = status if step_id is None else StepStatus.PASSED
        step.finished_at = step.started_at + timedelta(seconds=4.5)
    return steps


def halt(steps: list[StepRun]) -> None:
    """Mark the steps a halted run never reached as not run, as the runner does."""
    for step in steps:
        if step.status == StepStatus.PENDING:
            step.status = StepStatus.NOT_RUN
            step.started_at = None


def signed(step_id: str, decision: str, user_id: str) -> SignOff:
    return SignOff(
        deployment_id=DEPLOYMENT_ID,
        step_id=step_id,
        decision=decision,
        user_id=user_id,
        decided_at=STARTED + timedelta(minutes=3),
    )


def finished_step(*, status: StepStatus = StepStatus.PASSED, **fields: Any) -> StepRun:
    return StepRun(
        id=21,
        deployment_id=DEPLOYMENT_ID,
        position=20,
        phase_id="rollout",
        phase_title="Phase 3: Rollout",
        step_id="pull-image",
        title="Pull the new image",
        kind="run",
        status=status,
        started_at=STARTED,
        finished_at=STARTED + timedelta(seconds=4.5),
        **fields,
    )


def phase_section(blocks: list[dict[str, Any]], title: str) -> str:
    """Return the section of the phase titled ``title``."""
    return next(text for text in section_texts(blocks) if f"*{title}*" in text)


def section_texts(blocks: list[dict[str, Any]]) -> list[str]:
    """Return the texts of the section blocks, leaving out the one that belongs to buttons."""
    texts = []
    for index, block in enumerate(blocks):
        above_buttons = index + 1 < len(blocks) and blocks[index + 1]["type"] == "actions"
        if block["type"] == "section" and not above_buttons:
            texts.append(block["text"]["text"])
    return texts


def waiting_section(blocks: list[dict[str, Any]]) -> str:
    """Return the text of the section just above the buttons."""
    for above, block in zip(blocks, blocks[1:], strict=False):
        if block["type"] == "actions":
            return above["text"]["text"]
    raise AssertionError("the message has no buttons")


def actions_of(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        element for block in blocks if block["type"] == "actions" for element in block["elements"]
    ]


def footer_of(blocks: list[dict[str, Any]]) -> str:
    assert blocks[-1]["type"] == "context"
    return blocks[-1]["elements"][0]["text"]


def test_decided_step_shows_no_buttons(config: Config):
    deployment = new_deployment(status=DeploymentStatus.RUNNING, started_at=STARTED)
    steps = run_until(planned(config), "go-no-go", StepStatus.WAITING)
    sign_off = SignOff(
        deployment_id=42,
        step_id="go-no-go",
        decision="approved",
        user_id=APPROVER,
        decided_at=STARTED + timedelta(minutes=3),
    )

    _, blocks = views.checklist_message(config, deployment, steps, [sign_off])

    assert actions_of(blocks) == []
    assert any(f"<@{APPROVER}> approved *Go/no-go for the rollout*" in t for t in texts_of(blocks))


def texts_of(blocks) -> list[str]:
    return [block["text"]["text"] for block in blocks if block["type"] == "section"]


# --- rollback, headlines and forms -----------------------------------------------------------

ROLLBACK_TARGET = 7


@pytest.mark.parametrize(
    ("procedure", "expected"),
    [
        ("release", "v1.4.2 → production"),
        ("rollback:quick", "Quick rollback of v1.4.2 in production"),
        ("rollback:full", "Full rollback of v1.4.2 in production"),
        ("window:immediate", "Checks after v1.4.2 in production (immediate)"),
    ],
)
def test_headline_per_procedure(procedure: str, expected: str):
    deployment = new_deployment(procedure=procedure)

    assert views.headline(deployment) == expected


def test_failed_shows_rollback_button(config: Config):
    deployment = new_deployment(status=DeploymentStatus.FAILED, error="API server is healthy")
    steps = run_until(planned(config), "api-health", StepStatus.FAILED)
    halt(steps)

    _, blocks = views.checklist_message(
        config, deployment, steps, [], rollback_target=ROLLBACK_TARGET
    )
    buttons = actions_of(blocks)

    assert message_errors(blocks) == []
    assert len(buttons) == 1
    assert buttons[0]["action_id"] == rollback.OPEN
    assert buttons[0]["value"] == str(ROLLBACK_TARGET)
    assert buttons[0]["text"]["text"] == "Roll back"
    assert buttons[0]["style"] == "danger"
    assert blocks[-1]["type"] == "context"  # the footer stays last


@pytest.mark.parametrize(
    ("status", "step_id", "step_status"),
    [
        (DeploymentStatus.SUCCEEDED, None, StepStatus.PASSED),
        (DeploymentStatus.RUNNING, "api-health", StepStatus.RUNNING),
        (DeploymentStatus.WAITING, "go-no-go", StepStatus.WAITING),
        (DeploymentStatus.REJECTED, "go-no-go", StepStatus.FAILED),
        (DeploymentStatus.CANCELLED, "pull-image", StepStatus.PASSED),
    ],
)
def test_no_rollback_button_unless_failed(
    config: Config, status: DeploymentStatus, step_id: str | None, step_status: StepStatus
):
    deployment = new_deployment(status=status)
    steps = run_until(planned(config), step_id, step_status)
    if status.finished:
        halt(steps)

    _, blocks = views.checklist_message(
        config, deployment, steps, [], rollback_target=ROLLBACK_TARGET
    )

    assert message_errors(blocks) == []
    assert [b for b in actions_of(blocks) if b["action_id"] == rollback.OPEN] == []


def test_alert_blocks_without_target():
    assert views.alert_blocks(":rotating_light: halted", None) is None


def test_alert_blocks_with_target():
    blocks = views.alert_blocks("A" * 5000, ROLLBACK_TARGET)

    assert message_errors(blocks) == []
    assert blocks[0]["type"] == "section"
    assert len(blocks[0]["text"]["text"]) == 3000
    assert [(b["action_id"], b["value"]) for b in actions_of(blocks)] == [
        (rollback.OPEN, str(ROLLBACK_TARGET))
    ]


def test_form_view_without_fields_or_submit():
    long_paragraph = "L" * 5000
    form = Form(
        callback_id=rollback.CONFIRM,
        title="Cannot roll back",
        submit="",
        fields=(),
        text=f"First paragraph.\n\n\n\n{long_paragraph}\n\nLast paragraph.",
    )

    view = views.form_view(form)
    sections = [block["text"]["text"] for block in view["blocks"]]

    assert view_errors(view) == []
    assert "submit" not in view
    assert view["close"]["text"] == "Close"
    assert view["callback_id"] == rollback.CONFIRM
    assert [block["type"] for block in view["blocks"]] == ["section"] * 3
    assert sections[0] == "First paragraph."
    assert len(sections[1]) == 3000
    assert sections[1].endswith("…")
    assert sections[2] == "Last paragraph."


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("cancelled by U0ONCALL", ":octagonal_sign: <@U0ONCALL> cancelled deployment #"),
        (None, ":octagonal_sign: Cancelled deployment #"),
    ],
)
def test_cancelled_message_names_canceller(error: str | None, expected: str):
    deployment = new_deployment(status=DeploymentStatus.CANCELLED, error=error)

    assert views.cancelled_message(deployment, []).startswith(expected)
