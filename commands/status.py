"""``/deploy-status [environment]``: the state of the environment's deployment."""

from commands import messages
from commands.context import Reply, Request, Services
from commands.lookup import READERS, current_deployment, environment_for
from storage import repository
from storage.models import DeploymentStatus, StepStatus

COMPLETED = (StepStatus.PASSED, StepStatus.SKIPPED)


def handle(services: Services, request: Request) -> Reply:
    environment_name, error = environment_for(services, request, READERS, "see it")
    if error:
        return Reply(error)
    deployment = current_deployment(services, environment_name)
    if deployment is None:
        return Reply(messages.no_deployment(environment_name))
    with services.db.session() as session:
        steps = repository.steps_of(session, deployment.id)
    done = sum(1 for step in steps if step.status in COMPLETED)
    lines = [
        f"{messages.deployment_link(deployment)}: `{deployment.version}` to "
        f"`{deployment.environment}`, requested by <@{deployment.requested_by}>, "
        f"*{deployment.status.value}*, {done} of {len(steps)} steps done."
    ]
    current = next(
        (step for step in steps if step.status in (StepStatus.RUNNING, StepStatus.WAITING)), None
    )
    if current is not None:
        lines.append(f"Now: *{current.phase_title}: {current.title}* ({current.status.value}).")
    failed = next((step for step in steps if step.status == StepStatus.FAILED), None)
    if failed is not None:
        lines.append(f"Failed: *{failed.phase_title}: {failed.title}*: {failed.error}")
    if deployment.status == DeploymentStatus.PAUSED:
        following = next(step for step in steps if step.status == StepStatus.PENDING)
        phase = next(p for p in services.config.runbook.phases if p.id == following.phase_id)
        lines.append(f"Next: `{phase.command}` runs *{phase.title}*.")
    for rollback in (deployment.variables or {}).get("rollbacks", []):
        lines.append(
            f"Rollback #{rollback['id']} ({rollback['mode']}) by <@{rollback['requested_by']}>: "
            f"*{rollback['status']}* at {rollback['finished_at']}."
        )
    return Reply("\n".join(lines))
