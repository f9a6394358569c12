"""A worker and an observer for tests that call the command handlers directly."""

from commands.context import Services
from commands.roles import StaticDirectory
from engine.config import load_config
from engine.runner import Runner
from storage.db import Database


class InlineWorker:
    """Runs a submitted deployment at once, in the caller's thread."""

    def __init__(self, runner: Runner | None = None):
        self.runner = runner

    def submit(self, deployment_id: int) -> None:
        self.runner.run(deployment_id)

    def call(self, work) -> None:
        work()


class NoObserver:
    def deployment_changed(self, deployment_id: int) -> None:
        pass


def inline_services(tmp_path, runbook: str, environments: str) -> Services:
    """Return handler services on a tmp SQLite database, whose worker runs in-line."""
    (tmp_path / "runbook.yml").write_text(runbook)
    (tmp_path / "environments.yml").write_text(environments)
    config = load_config(tmp_path / "runbook.yml", tmp_path / "environments.yml")
    db = Database(f"sqlite:///{tmp_path / 'gonogo.db'}")
    db.migrate()
    return Services(
        config=config,
        db=db,
        worker=InlineWorker(Runner(db, config, owner="test")),
        directory=StaticDirectory(),
        observer=NoObserver(),
    )
