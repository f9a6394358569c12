"""``/deploy-cancel [environment]``: end the environment's active deployment, or else its
newest window of post-deployment checks that has not ended.

A step that is running finishes first, because a command cut off half-way can leave a host
in a worse state than either end. Every later step is marked as not run, the environment is
free for a new deployment, and the log is posted.
"""

import logging

from commands import messages
from commands.context import Reply, Request, Services
from commands.lookup import READERS, environment_for
from storage import repository

logger = logging.getLogger(__name__)


def handle(services: Services, request: Request) -> Reply:
    environment_name, error = environment_for(services, request, READERS, "cancel")
    if error:
        return Reply(error)
    now = services.clock.now()
    with services.db.session() as session:
        deployment = repository.active_deployment(
            session, environment_name
        ) or repository.latest_unfinished(session, environment_name)
        if deployment is None:
            return Reply(messages.nothing_to_cancel(environment_name))
        deployment.cancel_requested_by = request.user_id
        deployment.updated_at = now
        repository.audit(
            session,
            now=now,
            actor=request.user_id,
            action="command",
            deployment_id=deployment.id,
            command="/deploy-cancel",
        )
        repository.wake(session, deployment.id)
    logger.info("Deployment %s: cancel requested by %s", deployment.id, request.user_id)
    services.worker.submit(deployment.id)
    services.observer.deployment_changed(deployment.id)
    return Reply(messages.cancel_requested(deployment))
