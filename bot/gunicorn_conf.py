"""gunicorn settings of the web process (see Procfile)."""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '3000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GONOGO_THREADS", "8"))
timeout = 60
graceful_timeout = 30
accesslog = "-"


def on_starting(server) -> None:
    """Check the configuration and migrate the database once, before the workers fork."""
    from bot.runtime import Settings
    from storage.db import Database

    settings = Settings.from_environ()
    if not settings.bot_token or not settings.signing_secret:
        # Stop here: workers that cannot start would be restarted by gunicorn without end.
        from bot.web import MISSING_CREDENTIALS

        raise SystemExit(MISSING_CREDENTIALS)
    settings.load_config()
    Database(settings.database_url).migrate()
