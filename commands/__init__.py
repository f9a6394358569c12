"""Command handlers: each validates its input, checks roles, records intent, hands off work."""

from collections.abc import Callable

from commands import deploy
from commands.context import Reply, Request, Services

SLASH_COMMANDS: dict[str, Callable[[Services, Request], Reply]] = {
    "/deploy": deploy.handle,
}
