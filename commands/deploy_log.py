"""The deployment log, filled in from the stored deployment in the layout release teams use."""

from datetime import datetime

from commands import messages
from commands.context import Reply, Request, Services
from commands.lookup import READERS, current_deployment, environment_for
from engine.config import REJECTED_SLOT, SIGNOFF_SLOTS, Config
from storage import repository
from storage.models import (
    AuditEvent,
    ChecklistItemState,
    Deployment,
    SignOff,
    StepRun,
    StepStatus,
)

RESULT_WORDS = {
    StepStatus.PASSED: "PASS",
    StepStatus.FAILED: "FAIL",
    StepStatus.SKIPPED: "SKIPPED",
    StepStatus.NOT_RUN: "NOT RUN",
    StepStatus.WAITING: "WAITING",
    StepStatus.RUNNING: "RUNNING",
    StepStatus.PENDING: "NOT RUN",
}


def render_log(
    config: Config,
    deployment: Deployment,
    steps: list[StepRun],
    sign_offs: list[SignOff],
    item_states: list[ChecklistItemState] | None = None,
) -> str:
    if deployment.procedure.startswith("rollback:"):
        return _rollback_log(deployment, steps, sign_offs)
    if deployment.procedure.startswith("window:"):
        return _window_log(config, deployment, steps, item_states)
    fields = config.runbook.deployment_log
    environment = config.environments[deployment.environment]
    by_id = {step.step_id: step for step in steps}
    variables = deployment.variables or {}
    targets = environment.hosts.get(fields.target_role or "", [])
    gate_decisions = [
        s for s in sign_offs if by_id.get(s.step_id) and by_id[s.step_id].kind == "gate"
    ]

    lines = [
        f"DEPLOYMENT LOG - {deployment.version}",
        f"Date: {_time(deployment.created_at, date=True)}",
        f"Deployed By: {deployment.requested_by}",
        f"Environment: {deployment.environment}",
        f"Target Host: {', '.join(targets) or '-'}",
        f"Deployment: #{deployment.id}, runbook {deployment.runbook}, "
        f"status {deployment.status.value.upper()}",
        "",
        "PRE-DEPLOYMENT:",
        f"- Backups created: {variables.get('backup_location') or 'none recorded'}",
        f"- Previous version: {variables.get('previous_version') or 'unknown'}",
        f"- Maintenance window: {variables.get('notice.maintenance_window') or '-'}",
        f"- Rollback plan: {variables.get('notice.rollback_plan') or '-'}",
        f"- Health checks: {_overall([by_id.get(i) for i in fields.health_checks])}",
        "",
        "DEPLOYMENT EXECUTION:",
        f"- Start time: {_time(deployment.started_at)}",
        f"- Docker pull: {_success(by_id.get(fields.docker_pull or ''))}",
        f"- Services up: {_finished_time(by_id.get(fields.services_up or ''))}",
        f"- Health verified: {_finished_time(by_id.get(fields.health_verified or ''))}",
        f"- End time: {_time(deployment.finished_at)}",
        f"- Duration: {_minutes(deployment.started_at, deployment.finished_at)}",
        "",
        "VALIDATION:",
    ]
    for label, step_id in fields.validation.items():
        lines.append(f"- {label}: {_result(by_id.get(step_id))}")
    lines += ["", "ISSUES ENCOUNTERED:"]
    issues = _issues(deployment, steps)
    for state in item_states or []:
        if state.state == "waived":
            item = config.runbook.step(state.step_id).manual.items[state.item_index].text
            issues.append(f"{item} waived by {state.user_id}: {state.reason}")
    lines += [f"- {issue}" for issue in issues] or ["- None"]
    lines += ["", "SIGN-OFF:"]
    for sign_off in gate_decisions:
        title = by_id[sign_off.step_id].title
        lines.append(
            f"- {title}: {sign_off.decision} by {sign_off.user_id} at {_time(sign_off.decided_at)}"
        )
    ticks = [s for s in sign_offs if s.decision == "done"]
    if ticks:
        people = ", ".join(sorted({s.user_id for s in ticks}))
        lines.append(f"- Manual checks ticked: {len(ticks)}, by {people}")
    slots = {s.slot: s for s in sign_offs if s.slot}
    for slot, label, _ in SIGNOFF_SLOTS:
        signed = slots.get(slot)
        if signed is None:
            lines.append(f"- {label}: not signed")
        else:
            lines.append(f"- {label}: {signed.user_id} at {_time(signed.decided_at, date=True)}")
    rejected = slots.get(REJECTED_SLOT)
    if rejected is not None:
        lines.append(
            f"- Sign-off rejected by {rejected.user_id} at {_time(rejected.decided_at, date=True)}:"
            f" {rejected.comment}"
        )
    for rollback in variables.get("rollbacks", []):
        lines += [
            "",
            f"ROLLBACK #{rollback['id']} ({rollback['mode']}): {rollback['status'].upper()}",
            f"- Requested by: {rollback['requested_by']}",
            f"- Finished: {rollback['finished_at']}",
            f"- Backup restored from: {rollback.get('backup') or '-'}",
        ]
        lines += _verification(rollback)
        if rollback.get("error"):
            lines.append(f"- Halted: {rollback['error']}")
    return "\n".join(lines)


def _verification(values: dict) -> list[str]:
    return [
        f"- Version after rollback: {values.get('version_after_rollback') or '-'}",
        f"- Approval rows after rollback: {values.get('approval_rows_after_rollback') or '-'}",
        f"- Approvals the API lists: {values.get('api_approvals_after_rollback') or '-'}",
    ]


def _window_log(
    config: Config,
    deployment: Deployment,
    steps: list[StepRun],
    item_states: list[ChecklistItemState] | None,
) -> str:
    """Return the log of a window of post-deployment checks: each step and who ticked what."""
    window = config.runbook.window(deployment.procedure.partition(":")[2])
    lines = [
        f"POST-DEPLOYMENT CHECKS - {deployment.version}",
        f"Window: {window.title if window else deployment.procedure}",
        f"Date: {_time(deployment.created_at, date=True)}",
        f"Requested by: {deployment.requested_by}",
        f"Environment: {deployment.environment}",
        f"Checks: #{deployment.id} of deployment #{deployment.parent_id}, "
        f"status {deployment.status.value.upper()}",
        "",
        "STEPS:",
    ]
    for step in steps:
        took = _seconds(step.started_at, step.finished_at)
        lines.append(f"- {step.title}: {_result(step)}{took}")
    ticked = [state for state in item_states or [] if state.user_id]
    if ticked:
        lines += ["", "ITEMS:"]
        for state in ticked:
            item = config.runbook.step(state.step_id).manual.items[state.item_index].text
            lines.append(f"- {item}: {state.state} by {state.user_id}")
    lines += ["", "ISSUES ENCOUNTERED:"]
    lines += [f"- {issue}" for issue in _issues(deployment, steps)] or ["- None"]
    return "\n".join(lines)


def _rollback_log(deployment: Deployment, steps: list[StepRun], sign_offs: list[SignOff]) -> str:
    """Return the log of a rollback: what it restored, who confirmed it, how it verified."""
    values = deployment.variables or {}
    mode = deployment.procedure.partition(":")[2]
    lines = [
        f"ROLLBACK LOG - {values.get('rolled_back_version', deployment.version)}",
        f"Date: {_time(deployment.created_at, date=True)}",
        f"Requested by: {deployment.requested_by}",
        f"Environment: {deployment.environment}",
        f"Rollback: #{deployment.id} ({mode}) of deployment #{deployment.parent_id}, "
        f"status {deployment.status.value.upper()}",
        f"Returning to: {values.get('previous_version') or 'unknown'}",
        "",
        "BACKUP:",
        f"- Deployment: #{values.get('backup_deployment_id', '-')}, taken "
        f"{values.get('backup_taken_at', '-')}",
        f"- Folder: {values.get('backup_dir', '-')}",
        f"- Dump: {values.get('backup_dump', '-')}, {values.get('backup_size', '-')} bytes, "
        f"SHA-256 {values.get('backup_sha256', '-')}",
        f"- Approval rows at backup time: {values.get('backup_row_count', '-')}",
        "",
        "STEPS:",
    ]
    for step in steps:
        lines.append(
            f"- {step.title}: {_result(step)}{_seconds(step.started_at, step.finished_at)}"
        )
    lines += ["", "VERIFICATION AFTER ROLLBACK:", *_verification(values), "", "ISSUES ENCOUNTERED:"]
    lines += [f"- {issue}" for issue in _issues(deployment, steps)] or ["- None"]
    lines += ["", "CONFIRMATION:"]
    lines.append(f"- Confirmed by {deployment.requested_by} in the rollback form")
    for sign_off in (s for s in sign_offs if not s.slot):
        lines.append(
            f"- Second approver: {sign_off.decision} by {sign_off.user_id} "
            f"at {_time(sign_off.decided_at)}"
        )
    return "\n".join(lines)


def _issues(deployment: Deployment, steps: list[StepRun]) -> list[str]:
    issues = []
    for step in steps:
        if step.status == StepStatus.FAILED:
            issues.append(f"{step.title} failed: {step.error}")
        elif step.manual_reason and step.status == StepStatus.PASSED:
            issues.append(f"{step.title} was checked by hand: {step.manual_reason}")
    not_run = sum(1 for step in steps if step.status == StepStatus.NOT_RUN)
    if not_run:
        issues.append(f"{not_run} step(s) not run after the halt")
    return issues


def _result(step: StepRun | None) -> str:
    if step is None:
        return "-"
    if step.manual_reason and step.status == StepStatus.PASSED:
        return "PASS (checked by hand)"
    return RESULT_WORDS[step.status]


def _overall(steps: list[StepRun | None]) -> str:
    known = [step for step in steps if step is not None]
    if not known:
        return "-"
    if any(step.status == StepStatus.FAILED for step in known):
        return "FAILED"
    if all(step.status == StepStatus.PASSED for step in known):
        return "PASSED"
    return "INCOMPLETE"


def _success(step: StepRun | None) -> str:
    if step is None:
        return "-"
    return {StepStatus.PASSED: "SUCCESS", StepStatus.FAILED: "FAILED"}.get(step.status, "NOT RUN")


def _finished_time(step: StepRun | None) -> str:
    if step is None or step.status != StepStatus.PASSED:
        return "-"
    return _time(step.finished_at)


def _time(moment: datetime | None, *, date: bool = False) -> str:
    if moment is None:
        return "-"
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if date else f"{moment:%H:%M:%S} UTC"


def _minutes(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "-"
    return f"{(end - start).total_seconds() / 60:.1f} minutes"


def _seconds(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return ""
    return f" ({(end - start).total_seconds():.1f} s)"


def handle(services: Services, request: Request) -> Reply:
    """``/deploy-log [environment]``: upload the log of the environment's deployment here."""
    environment_name, error = environment_for(services, request, READERS, "read logs")
    if error:
        return Reply(error)
    deployment = current_deployment(services, environment_name)
    if deployment is None:
        return Reply(messages.no_deployment(environment_name))
    now = services.clock.now()
    with services.db.session() as session:
        repository.queue_post(
            session,
            deployment_id=deployment.id,
            kind="log_file",
            channel=request.channel_id,
            created_at=now,
        )
        repository.audit(
            session,
            now=now,
            actor=request.user_id,
            action="command",
            deployment_id=deployment.id,
            command="/deploy-log",
        )
    services.observer.deployment_changed(deployment.id)
    return Reply(f"Uploading the log of {messages.deployment_link(deployment)} here.")


def render_markdown(
    config: Config,
    deployment: Deployment,
    steps: list[StepRun],
    sign_offs: list[SignOff],
    audit_trail: list[AuditEvent],
    item_states: list[ChecklistItemState] | None = None,
) -> str:
    """Return the log as a Markdown document: the template, every step, and the audit trail."""
    lines = [
        f"# Deployment log: {deployment.version} to {deployment.environment}",
        "",
        "```",
        render_log(config, deployment, steps, sign_offs, item_states),
        "```",
        "",
        "## Steps",
        "",
        "| # | Phase | Step | Result | Started | Duration | Exit code |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for step in steps:
        duration = _seconds(step.started_at, step.finished_at).strip(" ()") or "-"
        exit_code = "-" if step.exit_code is None else str(step.exit_code)
        lines.append(
            f"| {step.position + 1} | {_cell(step.phase_title)} | {_cell(step.title)} | "
            f"{RESULT_WORDS[step.status]} | {_time(step.started_at)} | {duration} | {exit_code} |"
        )
    lines += [
        "",
        "## Audit trail",
        "",
        "| Time | Who | What | Details |",
        "| --- | --- | --- | --- |",
    ]
    for event in audit_trail:
        details = ", ".join(f"{key}={value}" for key, value in (event.detail or {}).items())
        lines.append(
            f"| {_time(event.at, date=True)} | {event.actor} | {event.action} | {_cell(details)} |"
        )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
