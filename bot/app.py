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

from bot import views
from commands import FORM_HANDLERS, button_handlers, slash_commands
from commands.context import Reply, Request, Services

logger = logging.getLogger(__name__)


def build_app(services: Services, client: WebClient, signing_secret: str) -> App:
    app = App(
        client=client,
        signing_secret=signing_secret,
        token_verification_enabled=False,
        raise_error_for_unhandled_request=False,
    )
    commands = slash_commands(services.config)
    buttons = button_handlers()

    @app.command(_exactly(commands))
    def on_command(ack: Ack, command: dict[str, Any]) -> None:
        request = Request(
            user_id=command["user_id"],
            channel_id=command.get("channel_id", ""),
            text=command.get("text", ""),
            command=command["command"],
        )
        ack(**ack_arguments(commands[command["command"]](services, request)))

    @app.action(_exactly(buttons))
    def on_button(ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond):
        ack()
        request = Request(
            user_id=body["user"]["id"],
            channel_id=(body.get("channel") or {}).get("id", ""),
            text=action.get("value", ""),
            action_id=action["action_id"],
        )
        reply = buttons[action["action_id"]](services, request)
        if reply.form is not None:
            # A trigger_id is valid for 3 seconds, so the form opens on the request path.
            client.views_open(trigger_id=body["trigger_id"], view=views.form_view(reply.form))
            return
        respond(text=reply.text, response_type="ephemeral", replace_original=False)

    @app.view(_exactly(FORM_HANDLERS))
    def on_form(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        request = Request(
            user_id=body["user"]["id"],
            channel_id="",
            text=view.get("private_metadata", ""),
            action_id=view["callback_id"],
            values=views.form_values(view),
        )
        reply = FORM_HANDLERS[view["callback_id"]](services, request)
        if reply.errors:
            ack(response_action="errors", errors=reply.errors)
        else:
            ack()

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


def _exactly(names) -> re.Pattern:
    return re.compile("^(" + "|".join(re.escape(name) for name in names) + ")$")
