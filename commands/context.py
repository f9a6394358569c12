"""The request every command handler receives and the reply it returns, from any entry point.

The Slack listeners in bot.app and the console session build a Request from what arrived and
show the Reply they get back, so one handler serves HTTP, Socket Mode and the console.
"""

from collections.abc import Callable
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
    # The slash command's text, the pressed button's value, or a submitted form's metadata.
    text: str = ""
    command: str = ""
    action_id: str = ""  # a button's action ID, or a form's callback ID
    values: dict[str, str] = field(default_factory=dict)  # a submitted form: field -> text


@dataclass(frozen=True)
class FormField:
    name: str
    label: str
    multiline: bool = False
    max_length: int = 2000


@dataclass(frozen=True)
class Form:
    """A form to show the user who acted (a Slack modal, or prompts in the console)."""

    callback_id: str
    title: str  # at most 24 characters, as Slack allows for a modal title
    submit: str  # empty for a form that only informs, which has no submit button
    fields: tuple[FormField, ...]
    metadata: str = ""  # comes back as Request.text when the form is submitted
    text: str = ""  # mrkdwn shown above the fields


@dataclass
class Reply:
    """A reply shown only to the user who acted, unless ``public`` is set.

    ``form`` requests input from the user instead. ``errors`` (field -> message) rejects a
    submitted form and keeps it open; a ``form`` in reply to a submission replaces it.
    ``follow_up`` is slow work, done off the request path once the form is open; the form it
    returns replaces the open one.
    """

    text: str
    blocks: list[dict[str, Any]] | None = None
    public: bool = False
    form: Form | None = None
    errors: dict[str, str] | None = None
    follow_up: Callable[[], Form] | None = None


class Worker(Protocol):
    def submit(self, deployment_id: int) -> None:
        """Run or continue the deployment off the request path."""

    def call(self, work: Callable[[], None]) -> None:
        """Run ``work`` off the request path."""


class Directory(Protocol):
    def group_members(self, handle: str) -> set[str]:
        """Return the user IDs in the user group ``handle`` (without its leading @)."""

    def group_id(self, handle: str) -> str | None:
        """Return the ID (S…) of the user group ``handle``, or None when it is unknown."""


@dataclass
class Services:
    config: Config
    db: Database
    worker: Worker
    directory: Directory
    observer: RunObserver
    clock: Clock = field(default_factory=Clock)
