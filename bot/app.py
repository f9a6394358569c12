"""The Bolt app: Slack listeners that turn requests into calls of the command handlers.

Each listener builds a commands.context.Request, calls a handler that only validates, checks
roles and writes to the database, and acknowledges with the handler's reply. Slow work runs
in the worker, so Slack gets its acknowledgement well within 3 seconds.
"""

import logging
import re
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from commands import decisions, slash_commands
from commands.context import Reply, Request, Services

logger = logging.getLogger(__name__)

BUTTON_ACTIONS = re.compile(
    "^(" + "|".join(re.escape(action) for action in decisions.DECISIONS) + ")$"
)


def build_app(services: Services, client: WebClient, signing_secret: str) -> App:
    app = App(
        client=client,
        signing_secret=signing_secret,
        token_verification_enabled=False,
        raise_error_for_unhandled_request=False,
    )

    handlers = slash_commands(services.config)

    @app.command(re.compile("^(" + "|".join(map(re.escape, handlers)) + ")$"))
    def on_command(ack: Ack, command: dict[str, Any]) -> None:
        request = Request(
            user_id=command["user_id"],
            channel_id=command.get("channel_id", ""),
            text=command.get("text", ""),
            command=command["command"],
        )
        ack(**ack_arguments(handlers[command["command"]](services, request)))

    @app.action(BUTTON_ACTIONS)
    def on_decision(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond):
        ack()
        request = Request(
            user_id=body["user"]["id"],
            channel_id=(body.get("channel") or {}).get("id", ""),
            text=action.get("value", ""),
            action_id=action["action_id"],
        )
        reply = decisions.handle(services, request)
        respond(text=reply.text, response_type="ephemeral", replace_original=False)

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> None:
        logger.exception("Handling a Slack request failed: %s", error)

    return app


def ack_arguments(reply: Reply) -> dict[str, Any]:
    arguments: dict[str, Any] = {"text": reply.text}
    if reply.blocks:
        arguments["blocks"] = reply.blocks
    arguments["response_type"] = "in_channel" if reply.public else "ephemeral"
    return arguments
