"""``/postdeploy [environment] [window]``: run the post-deployment checks that are due."""

from commands.context import Reply, Request, Services


def handle(services: Services, request: Request) -> Reply:
    return Reply("This command is not ready yet.")
