"""The worker process: the same Bolt app over Socket Mode, with no public HTTP endpoint."""

import logging

from slack_bolt.adapter.socket_mode import SocketModeHandler

from bot.app import build_app
from bot.runtime import Settings, build_runtime
from bot.slack_port import SlackDirectory, WebApiPort, web_client

logger = logging.getLogger(__name__)


def run_socket_mode(settings: Settings) -> int:
    if not settings.bot_token or not settings.app_token:
        print("Socket Mode needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN (an xapp- token).")
        return 2
    client = web_client(settings.bot_token, settings.api_url)
    runtime = build_runtime(settings, WebApiPort(client), SlackDirectory(client))
    # Socket Mode requests are not signed; Bolt skips the signature check for them.
    app = build_app(runtime.services, client, settings.signing_secret or "unused-in-socket-mode")
    runtime.start()
    try:
        SocketModeHandler(app, settings.app_token).start()
    finally:
        runtime.stop()
    return 0
