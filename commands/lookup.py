"""Finding the deployment a command acts on: named by environment, or by the channel."""

from commands import messages
from commands.context import Request, Services
from commands.roles import has_role
from engine.config import RELEASE, join_words
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


def current_deployment(
    services: Services, environment: str, procedure: str | None = None
) -> Deployment | None:
    """Return the environment's active deployment (a release or a rollback), or else its
    latest release. With ``procedure``, the active one only if it runs that procedure."""
    with services.db.session() as session:
        active = repository.active_deployment(session, environment)
        if active is not None and procedure in (None, active.procedure):
            return active
        return repository.latest_deployment(session, environment, procedure or RELEASE)


READERS = ("deployers", "approvers")


def environment_for(
    services: Services, request: Request, roles: tuple[str, ...], action: str
) -> tuple[str | None, str | None]:
    """Resolve ``[environment]`` in the text and check the user has one of ``roles``.

    Returns (environment name, None), or (None, the reply that explains the refusal).
    """
    words = request.text.split()
    if len(words) > 1:
        return None, messages.phase_usage(request.command, first=False)
    environment_name, error = environment_of(services, request, words[0] if words else None)
    if error:
        return None, error
    environment = services.config.environments[environment_name]
    if not any(has_role(services.directory, environment, r, request.user_id) for r in roles):
        return None, messages.role_needed(roles_text(roles), environment_name, action)
    return environment_name, None


def tick_roles(deployment: Deployment, role: str) -> tuple[str, ...]:
    """Return the roles that may tick a manual item whose runbook names ``role``.

    Approvers may tick what deployers may, and validators may tick the items of the
    post-deployment checks they may start.
    """
    roles = (role,) if role == "approvers" else (role, "approvers")
    if deployment.procedure.startswith("window:"):
        roles += ("validators",)
    return roles


def roles_text(roles: tuple[str, ...]) -> str:
    """Return "deployer, approver or validator" for those roles."""
    return join_words([ROLE_WORDS[role] for role in roles], "or")


ROLE_WORDS = {
    "deployers": "deployer",
    "approvers": "approver",
    "validators": "validator",
    "on_call": "on-call engineer",
}
