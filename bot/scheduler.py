"""The background scheduler: runs deployments off the request path and resumes stalled ones.

Each process has one APScheduler BackgroundScheduler with a thread pool. Submitting the same
deployment twice, or from two processes, is harmless: the runner's database lease lets one
worker through. A periodic sweep restarts deployments whose worker lease lapsed, which is
how a run continues after its process crashed.
"""

import logging

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from engine.clock import Clock
from engine.reminders import remind_pending_signoffs
from engine.runner import Runner
from storage import repository
from storage.db import Database
from storage.models import DeploymentStatus

logger = logging.getLogger(__name__)

REMINDER_CHECK_SECONDS = 60.0  # how often waiting sign-offs are checked for a due reminder


class Worker:
    def __init__(
        self,
        runner: Runner,
        db: Database,
        *,
        threads: int = 8,
        sweep_seconds: float = 30.0,
        remind_seconds: float = REMINDER_CHECK_SECONDS,
        clock: Clock | None = None,
    ):
        self.runner = runner
        self.db = db
        self.clock = clock or Clock()
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=threads)},
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
            timezone="UTC",
        )
        self.sweep_seconds = sweep_seconds
        self.remind_seconds = remind_seconds

    def start(self) -> None:
        self.scheduler.start()
        self.scheduler.add_job(
            self.resume_stalled,
            "interval",
            seconds=self.sweep_seconds,
            id="resume-stalled",
            next_run_time=self.clock.now(),
        )
        self.scheduler.add_job(
            self.remind,
            "interval",
            seconds=self.remind_seconds,
            id="remind-signoffs",
        )
        logger.info("Worker started with a sweep every %.0f s", self.sweep_seconds)

    def stop(self) -> None:
        self.scheduler.shutdown(wait=True)

    def submit(self, deployment_id: int) -> None:
        self.scheduler.add_job(
            self.runner.run,
            args=[deployment_id],
            name=f"deployment-{deployment_id}",
        )

    def call(self, work) -> None:
        self.scheduler.add_job(work, name=getattr(work, "__name__", "work"))

    def remind(self) -> None:
        for deployment_id in remind_pending_signoffs(self.db, self.runner.config, self.clock):
            self.runner.observer.deployment_changed(deployment_id)

    def resume_stalled(self) -> None:
        with self.db.session() as session:
            stalled = repository.unfinished_deployments(session, self.clock.now())
        for deployment_id, status in stalled:
            if status == DeploymentStatus.WAITING:
                # Usually someone has yet to press a button; this catches a lost decision.
                logger.debug("Deployment %s waits for a person; checking it", deployment_id)
            else:
                logger.warning("Deployment %s has no live worker; resuming it", deployment_id)
            self.submit(deployment_id)
