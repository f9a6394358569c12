"""The worker process: the same Bolt app over Socket Mode, with no public HTTP endpoint."""

import logging
import signal

from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk.errors import SlackApiError

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
    # Platforms stop processes with SIGTERM; turn it into the same clean exit as Ctrl-C.
    signal.signal(signal.SIGTERM, _stop_on_signal)
    try:
        SocketModeHandler(app, settings.app_token).start()
    except SlackApiError as error:
        print(
            f"Connecting to Slack over Socket Mode failed: {error.response.get('error')}. "
            "Check SLACK_APP_TOKEN: it must be an app-level token (xapp-…) with "
            "connections:write."
        )
        return 2
    except KeyboardInterrupt:
        logger.info("Socket Mode worker stopping")
    finally:
        runtime.stop()
    return 0


def _stop_on_signal(signum, frame) -> None:
    raise KeyboardInterrupt
