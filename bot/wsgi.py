"""The WSGI application of the web process: Slack requests at POST /slack/events.

Served by gunicorn (see Procfile). Each gunicorn worker process builds its own runtime, with
its own worker threads and notifier; the database keeps them from doing anything twice.
"""

import json
import logging
import os

from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.app import build_app
from bot.runtime import Settings, build_runtime
from bot.slack_port import SlackDirectory, WebApiPort, web_client
from bot.web import MISSING_CREDENTIALS

logger = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"


def create_application(settings: Settings | None = None):
    settings = settings or Settings.from_environ()
    if not settings.bot_token or not settings.signing_secret:
        raise SystemExit(MISSING_CREDENTIALS)
    client = web_client(settings.bot_token, settings.api_url)
    runtime = build_runtime(settings, WebApiPort(client), SlackDirectory(client))
    slack_handler = SlackRequestHandler(
        build_app(runtime.services, client, settings.signing_secret)
    )
    runtime.start()

    def application(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == EVENTS_PATH:
            return slack_handler(environ, start_response)
        if path == "/healthz" and environ.get("REQUEST_METHOD") == "GET":
            body = json.dumps({"status": "ok", "pid": os.getpid()}).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not found. Slack requests go to POST /slack/events.\n"]

    application.runtime = runtime
    return application


def __getattr__(name: str):
    # `gunicorn bot.wsgi:application` builds the app on first access, in each worker process.
    if name == "application":
        global application
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        application = create_application()
        return application
    raise AttributeError(name)
