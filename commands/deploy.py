"""``/deploy <version> <environment>``: check the request, record it and hand it to a worker."""

import logging

from commands import messages
from commands.context import Reply, Request, Services
from commands.roles import has_role
from engine.config import version_matches
from engine.runner import backup_location, missing_secrets, plan_steps
from storage import repository
from storage.models import Deployment

logger = logging.getLogger(__name__)


def handle(services: Services, request: Request) -> Reply:
    words = request.text.split()
    if len(words) != 2:
        return Reply(messages.deploy_usage(request.text))
    return start(services, request, *words)


def start(
    services: Services,
    request: Request,
    version: str,
    environment_name: str,
    target_position: int | None = None,
) -> Reply:
    """Check and store a new deployment, then hand it to the worker.

    ``target_position`` stops the run after that step, for a deployment driven phase by phase.
    """
    config = services.config
    environment = config.environments.get(environment_name)
    if environment is None:
        return Reply(messages.unknown_environment(environment_name, config))
    if not version_matches(config.runbook, version):
        return Reply(messages.invalid_version(version, config.runbook.version_pattern))
    if not has_role(services.directory, environment, "deployers", request.user_id):
        _audit_rejection(services, request, "deployers")
        return Reply(messages.role_needed("deployer", environment_name, "deploy"))
    missing = missing_secrets(config.runbook, environment)
    if missing:
        _audit_rejection(services, request, "secrets missing")
        return Reply(messages.secrets_missing(environment_name, missing))

    now = services.clock.now()
    deployment = Deployment(
        runbook=config.runbook.name,
        environment=environment_name,
        version=version,
        requested_by=request.user_id,
        request_channel=request.channel_id,
        channel=environment.channel,
        created_at=now,
        updated_at=now,
        target_position=target_position,
    )
    try:
        with services.db.session() as session:
            repository.create_deployment(
                session, deployment, plan_steps(config.runbook, environment), now
            )
            backup_dir = backup_location(environment, deployment.id, now)
            deployment.variables = {"backup_dir": backup_dir} if backup_dir else {}
            repository.audit(
                session,
                now=now,
                actor=request.user_id,
                action="command",
                deployment_id=deployment.id,
                command=request.command or "/deploy",
                text=request.text,
            )
    except repository.EnvironmentBusy as busy:
        _audit_rejection(services, request, "environment busy")
        return Reply(messages.environment_busy(busy.active))
    logger.info(
        "Deployment %s of %s to %s requested by %s",
        deployment.id,
        version,
        environment_name,
        request.user_id,
    )
    services.worker.submit(deployment.id)
    services.observer.deployment_changed(deployment.id)
    return Reply(messages.deployment_started(deployment))


def _audit_rejection(services: Services, request: Request, reason: str) -> None:
    with services.db.session() as session:
        repository.audit(
            session,
            now=services.clock.now(),
            actor=request.user_id,
            action="command.refused",
            command=request.command or "/deploy",
            text=request.text,
            reason=reason,
        )
