"""Role membership: the configuration lists Slack user IDs and user-group handles."""

from commands.context import Directory
from engine.config import Environment

ROLE_NAMES = {"deployers": "deployer", "approvers": "approver"}


def has_role(directory: Directory, environment: Environment, role: str, user_id: str) -> bool:
    for member in getattr(environment.roles, role):
        if member.startswith("@"):
            if user_id in directory.group_members(member[1:]):
                return True
        elif member == user_id:
            return True
    return False


class StaticDirectory:
    """User groups from a mapping; used by the console and by tests."""

    def __init__(
        self, groups: dict[str, set[str]] | None = None, ids: dict[str, str] | None = None
    ):
        self.groups = groups or {}
        self.ids = ids or {}

    def group_members(self, handle: str) -> set[str]:
        return set(self.groups.get(handle, set()))

    def group_id(self, handle: str) -> str | None:
        return self.ids.get(handle)
