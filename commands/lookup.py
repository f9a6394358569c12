"""Finding the deployment a command acts on: named by environment, or by the channel."""

from commands import messages
from commands.context import Request, Services
from storage import repository
from storage.models import Deployment


def environment_of(
    services: Services, request: Request, named: str | None
) -> tuple[str | None, str | None]:
    """Return (environment name, error text) from a named environment or the request's channel."""
    config = services.config
    if named is not None:
        if named not in config.environments:
            return None, messages.unknown_environment(named, config)
        return named, None
    matching = [
        name
        for name, environment in config.environments.items()
        if environment.channel == request.channel_id
    ]
    if len(matching) != 1:
        return None, messages.name_the_environment(request.command)
    return matching[0], None


def current_deployment(services: Services, environment: str) -> Deployment | None:
    """Return the environment's active deployment, or else its most recent one."""
    with services.db.session() as session:
        return repository.active_deployment(session, environment) or repository.latest_deployment(
            session, environment
        )
