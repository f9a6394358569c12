"""Reminders about final sign-offs that wait for people, queued in the outbox.

The worker calls remind_pending_signoffs on a schedule. Each reminder is claimed with a
conditional update, so two processes sharing the database send it once.
"""

import logging
from datetime import timedelta

from engine.clock import Clock
from engine.config import Config
from storage import repository
from storage.db import Database

logger = logging.getLogger(__name__)


def remind_pending_signoffs(db: Database, config: Config, clock: Clock) -> list[int]:
    """Queue a reminder for each sign-off waiting longer than its environment's interval.

    Returns the ids of the deployments reminded about.
    """
    now = clock.now()
    queued: list[int] = []
    with db.session() as session:
        for deployment, step in repository.waiting_steps(session, "signoff"):
            environment = config.environments.get(deployment.environment)
            if environment is None:
                continue
            interval = timedelta(minutes=environment.signoff_reminder_minutes)
            if (step.reminded_at or step.started_at) + interval > now:
                continue
            if not repository.claim_reminder(session, step.id, now, interval):
                continue
            repository.queue_post(
                session,
                deployment_id=deployment.id,
                kind="reminder",
                step_id=step.step_id,
                created_at=now,
            )
            logger.info("Deployment %s: reminder about %s queued", deployment.id, step.step_id)
            queued.append(deployment.id)
    return queued
