"""``/backups [environment]``: list the environment's recorded backups."""

from commands.context import Reply, Request, Services


def handle(services: Services, request: Request) -> Reply:
    return Reply("This command is not ready yet.")
