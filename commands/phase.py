"""Phase commands (``/predeploy``, ``/tag``, ``/backup``, …): run one phase of a deployment.

The runbook names each phase's command. The first command may start a deployment that runs
phase by phase (``/predeploy v11.0.0 production``). Every command then runs its phases of the
environment's deployment, once the phases before it have passed. A phase that failed may be
run again: its failed and skipped-over steps start afresh, and the audit trail records it.
"""

import logging

from commands import deploy, messages
from commands.context import Reply, Request, Services
from commands.lookup import current_deployment, environment_of
from commands.roles import has_role
from engine import rollback as rollbacks
from engine.config import RELEASE
from storage import repository
from storage.models import Deployment, DeploymentStatus, StepRun, StepStatus

logger = logging.getLogger(__name__)

COMPLETED = (StepStatus.PASSED, StepStatus.SKIPPED)


def handle(services: Services, request: Request) -> Reply:
    groups = services.config.runbook.phase_commands()
    commands = list(groups)
    command = request.command
    first = command == commands[0]
    words = request.text.split()
    if len(words) > 2 or (len(words) == 2 and not first):
        return Reply(messages.phase_usage(command, first))
    phase_ids = {phase.id for phase in groups[command]}

    if len(words) == 2:
        version, environment_name = words
        return deploy.start(
            services, request, version, environment_name, _last_position(services, phase_ids)
        )
    environment_name, error = environment_of(services, request, words[0] if words else None)
    if error:
        return Reply(error)
    environment = services.config.environments[environment_name]
    if not has_role(services.directory, environment, "deployers", request.user_id):
        return Reply(messages.role_needed("deployer", environment_name, f"run `{command}`"))
    deployment = current_deployment(services, environment_name, RELEASE)
    if deployment is None:
        return Reply(messages.no_deployment(environment_name))

    with services.db.session() as session:
        steps = repository.steps_of(session, deployment.id)
    rejection = _rejection(services, command, deployment, steps, phase_ids)
    if rejection:
        return Reply(rejection)
    return _run_phase(services, request, deployment, steps, phase_ids)


def _rejection(services, command, deployment: Deployment, steps, phase_ids) -> str | None:
    ended = (DeploymentStatus.SUCCEEDED, DeploymentStatus.REJECTED, DeploymentStatus.CANCELLED)
    if deployment.status in ended:
        return messages.deployment_ended(deployment)
    with services.db.session() as session:
        rollback = rollbacks.undone_by(session, deployment)
    if rollback is not None:
        return messages.rolled_back(deployment, rollback)
    earlier = _unfinished_earlier_commands(services, steps, phase_ids)
    if earlier:
        return messages.phase_out_of_order(command, deployment, earlier)
    busy = next((s for s in steps if s.status in (StepStatus.RUNNING, StepStatus.WAITING)), None)
    if busy is not None or deployment.status in (
        DeploymentStatus.PENDING,
        DeploymentStatus.RUNNING,
    ):
        title = busy.title if busy else "its next step"
        return messages.deployment_busy(deployment, title)
    phase_steps = [step for step in steps if step.phase_id in phase_ids]
    if any(step.kind == "signoff" and step.status == StepStatus.FAILED for step in phase_steps):
        return messages.signoff_was_rejected(deployment)
    if all(step.status in COMPLETED for step in phase_steps):
        return messages.phase_already_passed(command, deployment, _following(services, command))
    return None


def _run_phase(services, request, deployment: Deployment, steps, phase_ids) -> Reply:
    now = services.clock.now()
    rerun = any(
        step.status in (StepStatus.FAILED, StepStatus.NOT_RUN)
        for step in steps
        if step.phase_id in phase_ids
    )
    last = _last_position(services, phase_ids)
    try:
        with services.db.session() as session:
            row = repository.get_deployment(session, deployment.id)
            if row.status == DeploymentStatus.FAILED:
                repository.take_environment(session, row, now)
            first_position = min(s.position for s in steps if s.phase_id in phase_ids)
            for step in repository.steps_of(session, deployment.id):
                if step.position >= first_position and step.status in (
                    StepStatus.FAILED,
                    StepStatus.NOT_RUN,
                ):
                    _reset(step)
            if row.target_position is not None:
                row.target_position = last
            row.status = DeploymentStatus.RUNNING
            row.finished_at = None
            row.error = None
            row.updated_at = now
            repository.audit(
                session,
                now=now,
                actor=request.user_id,
                action="phase.rerun" if rerun else "phase.start",
                deployment_id=row.id,
                command=request.command,
            )
            repository.wake(session, row.id)
    except repository.EnvironmentBusy as busy:
        return Reply(messages.environment_busy(busy.active))
    logger.info(
        "Deployment %s: %s %s by %s",
        deployment.id,
        request.command,
        "run again" if rerun else "started",
        request.user_id,
    )
    services.worker.submit(deployment.id)
    services.observer.deployment_changed(deployment.id)
    return Reply(messages.phase_started(request.command, deployment, rerun))


def _reset(step: StepRun) -> None:
    step.status = StepStatus.PENDING
    step.started_at = None
    step.finished_at = None
    step.exit_code = None
    step.output_tail = None
    step.error = None


def _unfinished_earlier_commands(services, steps: list[StepRun], phase_ids: set[str]) -> list[str]:
    """Return, in order, the commands of earlier phases that have not passed yet."""
    first_position = min(step.position for step in steps if step.phase_id in phase_ids)
    unfinished_phases = {
        step.phase_id
        for step in steps
        if step.position < first_position and step.status not in COMPLETED
    }
    names: list[str] = []
    for phase in services.config.runbook.phases:
        if phase.id in unfinished_phases:
            name = phase.command or phase.title
            if name not in names:
                names.append(name)
    return names


def _following(services: Services, command: str) -> str | None:
    commands = list(services.config.runbook.phase_commands())
    index = commands.index(command)
    return commands[index + 1] if index + 1 < len(commands) else None


def _last_position(services: Services, phase_ids: set[str]) -> int:
    positions = [
        position
        for position, (phase, _) in enumerate(services.config.runbook.steps())
        if phase.id in phase_ids
    ]
    return max(positions)
