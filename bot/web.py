"""`gonogo web`: run the WSGI app under gunicorn, as the Procfile's web process does."""

import os

from bot.runtime import Settings

MISSING_CREDENTIALS = (
    "The web process needs SLACK_BOT_TOKEN and SLACK_SIGNING_SECRET; "
    "without them run `gonogo` for a console session."
)


def run_web(settings: Settings) -> int:
    if not settings.bot_token or not settings.signing_secret:
        print(MISSING_CREDENTIALS)
        return 2
    argv = ["gunicorn", "--config", "python:bot.gunicorn_conf", "bot.wsgi:application"]
    os.environ.setdefault("PORT", str(settings.port))
    os.execvp("gunicorn", argv)
    return 0  # not reached: execvp replaces this process
