"""A worker and an observer for tests that call the command handlers directly."""

from engine.runner import Runner


class InlineWorker:
    """Runs a submitted deployment at once, in the caller's thread."""

    def __init__(self, runner: Runner | None = None):
        self.runner = runner

    def submit(self, deployment_id: int) -> None:
        self.runner.run(deployment_id)


class NoObserver:
    def deployment_changed(self, deployment_id: int) -> None:
        pass
