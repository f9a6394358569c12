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
        reply = commands[command["command"]](services, request)
        if reply.form is not None:
            ack()
            open_form(services, client, command["trigger_id"], reply)
            return
        ack(**ack_arguments(reply))

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
            open_form(services, client, body["trigger_id"], reply)
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
        elif reply.form is not None:
            ack(response_action="update", view=views.form_view(reply.form))
        else:
            ack()

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> None:
        logger.exception("Handling a Slack request failed: %s", error)

    return app


def open_form(services: Services, client: WebClient, trigger_id: str, reply: Reply) -> None:
    """Open the reply's form; a trigger_id lasts 3 seconds, so this is on the request path.

    The reply's slow follow-up, if any, runs in the worker and then replaces the form.
    """
    opened = client.views_open(trigger_id=trigger_id, view=views.form_view(reply.form))
    if reply.follow_up is None:
        return
    view = opened["view"]
    follow_up = reply.follow_up

    def fill() -> None:
        try:
            form = follow_up()
            client.views_update(
                view_id=view["id"], hash=view.get("hash"), view=views.form_view(form)
            )
        except Exception:
            logger.exception("Filling in the form %s failed", view.get("callback_id"))

    services.worker.call(fill)


def ack_arguments(reply: Reply) -> dict[str, Any]:
    arguments: dict[str, Any] = {"text": reply.text}
    if reply.blocks:
        arguments["blocks"] = reply.blocks
    arguments["response_type"] = "in_channel" if reply.public else "ephemeral"
    return arguments


def _exactly(names) -> re.Pattern:
    return re.compile("^(" + "|".join(re.escape(name) for name in names) + ")$")
