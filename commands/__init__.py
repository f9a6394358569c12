"""Command handlers: each validates its input, checks roles, records intent, hands off work."""

from collections.abc import Callable

from commands import deploy, deploy_log, phase, status
from commands.context import Reply, Request, Services
from engine.config import Config

Handler = Callable[[Services, Request], Reply]


def slash_commands(config: Config) -> dict[str, Handler]:
    """Return every slash command with its handler: gonogo's own and the runbook's phases."""
    handlers: dict[str, Handler] = {
        "/deploy": deploy.handle,
        "/deploy-status": status.handle,
        "/deploy-log": deploy_log.handle,
    }
    for command in config.runbook.phase_commands():
        handlers[command] = phase.handle
    return handlers
