"""``/rollback [environment] [quick|full]``: undo the environment's latest release."""

from commands.context import Reply, Request, Services


def handle(services: Services, request: Request) -> Reply:
    return Reply("This command is not ready yet.")
