"""`gonogo web`: run the WSGI app under gunicorn, as the Procfile's web process does."""

import os

from bot.runtime import Settings


def run_web(settings: Settings) -> int:
    argv = ["gunicorn", "--config", "python:bot.gunicorn_conf", "bot.wsgi:application"]
    os.environ.setdefault("PORT", str(settings.port))
    os.execvp("gunicorn", argv)
    return 0  # not reached: execvp replaces this process
