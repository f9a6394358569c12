"""What every command handler receives and returns, whichever entry point called it.

The Slack listeners in bot.app and the console session build a Request from what arrived and
show the Reply they get back, so one handler serves HTTP, Socket Mode and the console.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.clock import Clock
from engine.config import Config
from engine.runner import RunObserver
from storage.db import Database


@dataclass
class Request:
    user_id: str
    channel_id: str
    text: str = ""  # the slash command's text, or the pressed button's value
    command: str = ""
    action_id: str = ""


@dataclass
class Reply:
    """An answer shown only to the user who acted, unless ``public`` is set."""

    text: str
    blocks: list[dict[str, Any]] | None = None
    public: bool = False


class Worker(Protocol):
    def submit(self, deployment_id: int) -> None:
        """Run or continue the deployment off the request path."""


class Directory(Protocol):
    def group_members(self, handle: str) -> set[str]:
        """Return the user IDs in the user group ``handle`` (without its leading @)."""


@dataclass
class Services:
    config: Config
    db: Database
    worker: Worker
    directory: Directory
    observer: RunObserver
    clock: Clock = field(default_factory=Clock)
