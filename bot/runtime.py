"""Settings from the process environment, and the objects one gonogo process runs on."""

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from bot.notifier import Notifier, SlackPort
from bot.scheduler import Worker
from commands.context import Directory, Services
from engine.config import Config, load_config
from engine.runner import Runner, secret_values
from engine.templates import Masker
from storage import repository
from storage.db import Database, default_url
from storage.models import DeploymentStatus

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[1]
OPEN_STATUSES = [status for status in DeploymentStatus if not status.finished]


@dataclass(frozen=True)
class Settings:
    bot_token: str | None
    signing_secret: str | None
    app_token: str | None
    api_url: str
    database_url: str
    port: int
    runbook_file: Path
    environments_file: Path
    home: Path
    update_interval: float
    post_interval: float

    @classmethod
    def from_environ(cls, environ: dict[str, str] | None = None) -> "Settings":
        environ = dict(os.environ if environ is None else environ)
        home = Path(environ.get("GONOGO_HOME") or ".gonogo").resolve()
        return cls(
            bot_token=environ.get("SLACK_BOT_TOKEN") or None,
            signing_secret=environ.get("SLACK_SIGNING_SECRET") or None,
            app_token=environ.get("SLACK_APP_TOKEN") or None,
            api_url=environ.get("SLACK_API_URL") or "https://slack.com/api/",
            database_url=environ.get("DATABASE_URL") or default_url(home),
            port=int(environ.get("PORT") or 3000),
            runbook_file=Path(
                environ.get("GONOGO_RUNBOOK") or PROJECT_DIR / "runbooks" / "vvb-v11.yml"
            ),
            environments_file=Path(
                environ.get("GONOGO_ENVIRONMENTS") or PROJECT_DIR / "config" / "environments.yml"
            ),
            home=home,
            update_interval=float(environ.get("GONOGO_UPDATE_INTERVAL") or 1.2),
            post_interval=float(environ.get("GONOGO_POST_INTERVAL") or 1.0),
        )

    def load_config(self) -> Config:
        return load_config(self.runbook_file, self.environments_file)


@dataclass
class Runtime:
    settings: Settings
    services: Services
    notifier: Notifier
    worker: Worker

    def start(self) -> None:
        self.notifier.start()
        self.worker.start()
        # Redraw what is still open, so buttons work again after a restart.
        with self.services.db.session() as session:
            open_ids = [
                deployment.id
                for deployment in repository.deployments_with_status(session, OPEN_STATUSES)
            ]
        for deployment_id in open_ids:
            self.notifier.deployment_changed(deployment_id)

    def stop(self) -> None:
        self.worker.stop()
        self.notifier.stop()
        self.services.db.dispose()


def process_owner() -> str:
    """Return a name for this process, unique across hosts and restarts, for leases and claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class SecretFilter(logging.Filter):
    """A logging filter that masks the configured secrets in every record it passes."""

    def __init__(self, masker: Masker):
        super().__init__()
        self.masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self.masker(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info:
            # Format the traceback here, so its text is masked before a handler prints it.
            record.exc_text = self.masker(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def mask_secrets_in_logs(config: Config) -> None:
    """Attach a SecretFilter for every environment's secrets to the root logger's handlers."""
    values = {
        f"{name}.{secret}": value
        for name, environment in config.environments.items()
        for secret, value in secret_values(environment).items()
    }
    secret_filter = SecretFilter(Masker(values))
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, SecretFilter)]:
            handler.removeFilter(old)
        handler.addFilter(secret_filter)


def build_runtime(settings: Settings, slack: SlackPort, directory: Directory) -> Runtime:
    config = settings.load_config()
    mask_secrets_in_logs(config)
    db = Database(settings.database_url)
    db.migrate()
    owner = process_owner()
    notifier = Notifier(
        db,
        config,
        slack,
        owner=owner,
        min_interval=settings.update_interval,
        post_interval=settings.post_interval,
        directory=directory,
    )
    runner = Runner(db, config, owner=owner, observer=notifier)
    worker = Worker(runner, db)
    services = Services(config=config, db=db, worker=worker, directory=directory, observer=notifier)
    return Runtime(settings=settings, services=services, notifier=notifier, worker=worker)
