"""Queries and atomic updates on the tables in storage.models.

Every guarantee that must hold across processes (one active deployment per environment, one
worker per run, the first button press wins, each Slack post sent once) is a constraint or a
conditional UPDATE here, never a lock in process memory.
"""

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from storage.models import (
    FINISHED_DEPLOYMENT,
    AuditEvent,
    Backup,
    ChecklistItemState,
    Deployment,
    DeploymentStatus,
    EnvironmentLock,
    OutboxMessage,
    SignOff,
    StepRun,
    StepStatus,
)


class EnvironmentBusy(Exception):
    """The environment already has an active deployment."""

    def __init__(self, active: Deployment):
        self.active = active
        super().__init__(f"environment {active.environment} is busy with deployment {active.id}")


class AlreadyDecided(Exception):
    """Another decision on this step was stored first."""

    def __init__(self, sign_off: SignOff):
        self.sign_off = sign_off
        super().__init__(f"step {sign_off.step_id} was already {sign_off.decision}")


# --- deployments -----------------------------------------------------------------------------


def create_deployment(
    session: Session,
    deployment: Deployment,
    steps: Iterable[StepRun],
    now: datetime,
    *,
    lock: bool = True,
) -> Deployment:
    """Insert ``deployment`` with its steps and take its environment's lock, unless ``lock``
    is false (checks that change nothing on the hosts).

    Raises EnvironmentBusy naming the active deployment. This must be the first write of a
    fresh session: on a conflict the session is rolled back.
    """
    session.add(deployment)
    session.flush()
    if lock:
        take_environment(session, deployment, now)
    for step in steps:
        step.deployment_id = deployment.id
        session.add(step)
    session.flush()
    return deployment


def active_deployment(session: Session, environment: str) -> Deployment | None:
    lock = session.get(EnvironmentLock, environment)
    return session.get(Deployment, lock.deployment_id) if lock else None


def latest_deployment(
    session: Session, environment: str, procedure: str | None = None
) -> Deployment | None:
    statement = select(Deployment).where(Deployment.environment == environment)
    if procedure is not None:
        statement = statement.where(Deployment.procedure == procedure)
    return session.exec(statement.order_by(col(Deployment.id).desc()).limit(1)).first()


def latest_unfinished(session: Session, environment: str) -> Deployment | None:
    """Return the environment's newest deployment that has not ended, with the lock or not
    (a window of post-deployment checks takes none)."""
    statement = (
        select(Deployment)
        .where(Deployment.environment == environment)
        .where(col(Deployment.status).not_in(list(FINISHED_DEPLOYMENT)))
        .order_by(col(Deployment.id).desc())
        .limit(1)
    )
    return session.exec(statement).first()


def releases_after(session: Session, release: Deployment) -> list[Deployment]:
    """Return the releases to the same environment that came after ``release``, newest first."""
    statement = (
        select(Deployment)
        .where(Deployment.environment == release.environment)
        .where(Deployment.procedure == release.procedure)
        .where(col(Deployment.id) > release.id)
        .order_by(col(Deployment.id).desc())
    )
    return list(session.exec(statement))


def forget_backup(session: Session, deployment_id: int) -> None:
    """Delete the record of a deployment's backup, whose files a new attempt replaces."""
    earlier = backup_of(session, deployment_id)
    if earlier is not None:
        session.delete(earlier)


def cancel_open_windows(session: Session, release_id: int, user_id: str) -> list[int]:
    """Ask the release's unfinished windows of checks to end as cancelled; return their ids."""
    windows = [
        child
        for child in children_of(session, release_id)
        if child.procedure.startswith("window:") and not child.status.finished
    ]
    for window in windows:
        window.cancel_requested_by = user_id
        wake(session, window.id)
    return [window.id for window in windows]


def children_of(session: Session, deployment_id: int) -> list[Deployment]:
    """Return the rollbacks and post-deployment checks of a release, oldest first."""
    statement = select(Deployment).where(Deployment.parent_id == deployment_id)
    return list(session.exec(statement.order_by(col(Deployment.id))))


def take_environment(session: Session, deployment: Deployment, now: datetime) -> None:
    """Take the environment's lock for ``deployment``, new or resuming after it ended.

    Raises EnvironmentBusy when another deployment has the lock. This must be the first write
    of a fresh session, after the deployment's own insert, because a conflict rolls it back.
    """
    lock = EnvironmentLock(
        environment=deployment.environment, deployment_id=deployment.id, acquired_at=now
    )
    try:
        session.add(lock)
        session.flush()
    except IntegrityError:
        session.rollback()
        active = active_deployment(session, deployment.environment)
        if active is None:  # finished between the insert and the lookup; ask again
            raise
        # Detached, so the caller's rollback leaves its loaded fields readable.
        session.expunge(active)
        raise EnvironmentBusy(active) from None


def release_environment(session: Session, deployment: Deployment) -> None:
    lock = session.get(EnvironmentLock, deployment.environment)
    if lock is not None and lock.deployment_id == deployment.id:
        session.delete(lock)


def hand_over_environment(
    session: Session, release: Deployment, rollback: Deployment, now: datetime
) -> bool:
    """Give ``rollback`` the environment's lock and return True.

    The lock moves from ``release`` if the release still has it, and the release is asked to
    end as cancelled. Otherwise a free lock is taken. Returns False, with the session rolled
    back, when another deployment has the lock.
    """
    moved = session.execute(
        update(EnvironmentLock)
        .where(
            col(EnvironmentLock.environment) == release.environment,
            col(EnvironmentLock.deployment_id) == release.id,
        )
        .values(deployment_id=rollback.id, acquired_at=now)
    )
    if moved.rowcount == 1:
        session.execute(
            update(Deployment)
            .where(col(Deployment.id) == release.id)
            .values(cancel_requested_by=rollback.requested_by, wake_seq=Deployment.wake_seq + 1)
        )
        mark_resuming(session, release.id, now)
        return True
    try:
        take_environment(session, rollback, now)
    except EnvironmentBusy:
        return False
    return True


def not_cancelled(session: Session, deployment_id: int) -> bool:
    """Return whether no cancel is requested, locking the row until the session ends.

    A step starts only in the transaction where this holds, so a cancel (or a rollback that
    takes over) committed at the same moment is seen either here or by its own check.
    """
    result = session.execute(
        update(Deployment)
        .where(col(Deployment.id) == deployment_id, col(Deployment.cancel_requested_by).is_(None))
        .values(wake_seq=Deployment.wake_seq)
    )
    return result.rowcount == 1


def hold_row(session: Session, deployment_id: int) -> None:
    """Lock the deployment's row until the session ends, so that requests which read its
    children and then add one run one after the other. The update changes no value."""
    session.execute(
        update(Deployment)
        .where(col(Deployment.id) == deployment_id)
        .values(wake_seq=Deployment.wake_seq)
    )


def get_deployment(session: Session, deployment_id: int) -> Deployment | None:
    return session.get(Deployment, deployment_id)


def steps_of(session: Session, deployment_id: int) -> list[StepRun]:
    statement = select(StepRun).where(StepRun.deployment_id == deployment_id)
    return list(session.exec(statement.order_by(col(StepRun.position))))


def sign_offs_of(session: Session, deployment_id: int) -> list[SignOff]:
    statement = select(SignOff).where(SignOff.deployment_id == deployment_id)
    return list(session.exec(statement.order_by(col(SignOff.decided_at))))


def unfinished_deployments(
    session: Session, now: datetime, grace: float = 60.0
) -> list[tuple[int, DeploymentStatus]]:
    """Return (id, status) of unfinished deployments without a worker's lease, as after a crash.

    Waiting deployments are included because a decision may have been stored just before
    its process stopped. The runner returns at once when the step is still waiting.
    """
    unfinished = [DeploymentStatus.PENDING, DeploymentStatus.RUNNING, DeploymentStatus.WAITING]
    statement = select(Deployment.id, Deployment.status).where(
        col(Deployment.status).in_(unfinished),
        or_(
            col(Deployment.lease_until) < now,
            # No lease yet: give the worker that was just handed the deployment time to start.
            and_(
                col(Deployment.lease_owner).is_(None),
                col(Deployment.updated_at) < now - timedelta(seconds=grace),
            ),
        ),
    )
    return [(row[0], row[1]) for row in session.exec(statement)]


# --- worker leases ---------------------------------------------------------------------------


def claim_run(session: Session, deployment_id: int, owner: str, now: datetime, ttl: float):
    """Take the run of a deployment for ``owner``; return the wake count seen, or None."""
    result = session.execute(
        update(Deployment)
        .where(
            col(Deployment.id) == deployment_id,
            or_(col(Deployment.lease_owner).is_(None), col(Deployment.lease_until) < now),
        )
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=ttl))
    )
    if result.rowcount != 1:
        return None
    return session.exec(select(Deployment.wake_seq).where(Deployment.id == deployment_id)).one()


def extend_run(session: Session, deployment_id: int, owner: str, now: datetime, ttl: float):
    session.execute(
        update(Deployment)
        .where(col(Deployment.id) == deployment_id, col(Deployment.lease_owner) == owner)
        .values(lease_until=now + timedelta(seconds=ttl))
    )


def release_run(session: Session, deployment_id: int, owner: str, seen_wake_seq: int) -> bool:
    """Give up the run unless a wake arrived since ``seen_wake_seq``; True when released."""
    result = session.execute(
        update(Deployment)
        .where(
            col(Deployment.id) == deployment_id,
            col(Deployment.lease_owner) == owner,
            col(Deployment.wake_seq) == seen_wake_seq,
        )
        .values(lease_owner=None, lease_until=None)
    )
    return result.rowcount == 1


def wake(session: Session, deployment_id: int) -> None:
    """Count a request to continue, so a worker about to stop runs once more."""
    session.execute(
        update(Deployment)
        .where(col(Deployment.id) == deployment_id)
        .values(wake_seq=Deployment.wake_seq + 1)
    )


def mark_resuming(session: Session, deployment_id: int, now: datetime) -> None:
    """Show a waiting deployment as running again once its decision is stored."""
    session.execute(
        update(Deployment)
        .where(
            col(Deployment.id) == deployment_id,
            col(Deployment.status) == DeploymentStatus.WAITING,
        )
        .values(status=DeploymentStatus.RUNNING, updated_at=now)
    )


# --- sign-offs and audit ---------------------------------------------------------------------


def item_states(
    session: Session, deployment_id: int, step_id: str
) -> dict[int, ChecklistItemState]:
    statement = select(ChecklistItemState).where(
        ChecklistItemState.deployment_id == deployment_id, ChecklistItemState.step_id == step_id
    )
    return {row.item_index: row for row in session.exec(statement)}


def all_item_states(session: Session, deployment_id: int) -> list[ChecklistItemState]:
    statement = select(ChecklistItemState).where(ChecklistItemState.deployment_id == deployment_id)
    return list(session.exec(statement.order_by(col(ChecklistItemState.id))))


def replace_check_results(session: Session, rows: list[ChecklistItemState]) -> None:
    """Store the bot's check results, replacing earlier results (not a person's decision)."""
    for row in rows:
        existing = session.exec(
            select(ChecklistItemState).where(
                ChecklistItemState.deployment_id == row.deployment_id,
                ChecklistItemState.step_id == row.step_id,
                ChecklistItemState.item_index == row.item_index,
            )
        ).first()
        if existing is None:
            session.add(row)
        elif existing.state in ("passed", "failed"):
            existing.state, existing.evidence = row.state, row.evidence
            existing.decided_at = row.decided_at
            session.add(existing)


def settle_item(session: Session, row: ChecklistItemState, from_state: str | None) -> bool:
    """Record a person's tick or waiver; False when the item was settled differently first.

    ``from_state`` is the state a waiver replaces (a failed check), or None for a new row. On a
    conflict over a new row the whole session is rolled back.
    """
    if from_state is None:
        try:
            session.add(row)
            session.flush()
        except IntegrityError:
            session.rollback()
            return False
        return True
    result = session.execute(
        update(ChecklistItemState)
        .where(
            col(ChecklistItemState.deployment_id) == row.deployment_id,
            col(ChecklistItemState.step_id) == row.step_id,
            col(ChecklistItemState.item_index) == row.item_index,
            col(ChecklistItemState.state) == from_state,
        )
        .values(state=row.state, user_id=row.user_id, decided_at=row.decided_at, reason=row.reason)
    )
    return result.rowcount == 1


def lock_waiting_step(session: Session, step_run_id: int) -> bool:
    """Hold the row of a waiting step until the transaction ends; False if it is not waiting.

    The runner changes the same row when the step moves on, so a decision stored in this
    transaction cannot land on a step that a cancel or another decision has just ended.
    """
    result = session.execute(
        update(StepRun)
        .where(col(StepRun.id) == step_run_id, col(StepRun.status) == StepStatus.WAITING)
        .values(attempts=StepRun.attempts)
    )
    return result.rowcount == 1


def record_sign_off(session: Session, sign_off: SignOff) -> SignOff:
    """Store a decision, or raise AlreadyDecided with the one stored first.

    On a conflict the whole session is rolled back, so write nothing before it that must stay.
    """
    try:
        session.add(sign_off)
        session.flush()
    except IntegrityError:
        session.rollback()
        existing = session.exec(
            select(SignOff).where(
                SignOff.deployment_id == sign_off.deployment_id,
                SignOff.step_id == sign_off.step_id,
            )
        ).one()
        session.expunge(existing)  # as in create_deployment
        raise AlreadyDecided(existing) from None
    return sign_off


def audit(
    session: Session,
    *,
    now: datetime,
    actor: str,
    action: str,
    deployment_id: int | None = None,
    **detail: Any,
) -> None:
    session.add(
        AuditEvent(deployment_id=deployment_id, at=now, actor=actor, action=action, detail=detail)
    )


def audit_trail(session: Session, deployment_id: int) -> list[AuditEvent]:
    statement = select(AuditEvent).where(AuditEvent.deployment_id == deployment_id)
    return list(session.exec(statement.order_by(col(AuditEvent.id))))


# --- outbox ----------------------------------------------------------------------------------


def enqueue(session: Session, message: OutboxMessage) -> None:
    session.add(message)


def queue_post(session: Session, **fields: Any) -> None:
    """Queue a Slack post (an OutboxMessage with ``fields``) in the current transaction."""
    session.add(OutboxMessage(**fields))


def claim_outbox(
    session: Session, owner: str, now: datetime, ttl: float, limit: int = 20
) -> list[OutboxMessage]:
    """Claim unsent messages whose deployment has a checklist message, oldest first."""
    candidates = session.exec(
        select(OutboxMessage.id)
        .join(Deployment, col(Deployment.id) == col(OutboxMessage.deployment_id))
        .where(
            col(OutboxMessage.sent_at).is_(None),
            col(Deployment.message_ts).is_not(None),
            or_(
                col(OutboxMessage.claimed_until).is_(None),
                col(OutboxMessage.claimed_until) < now,
            ),
        )
        .order_by(col(OutboxMessage.id))
        .limit(limit)
    ).all()
    claimed = []
    for message_id in candidates:
        result = session.execute(
            update(OutboxMessage)
            .where(
                col(OutboxMessage.id) == message_id,
                col(OutboxMessage.sent_at).is_(None),
                or_(
                    col(OutboxMessage.claimed_until).is_(None),
                    col(OutboxMessage.claimed_until) < now,
                ),
            )
            .values(claimed_by=owner, claimed_until=now + timedelta(seconds=ttl))
        )
        if result.rowcount == 1:
            claimed.append(session.get(OutboxMessage, message_id))
    return claimed


def pending_outbox_count(session: Session) -> int:
    statement = select(func.count()).select_from(OutboxMessage)
    return session.exec(statement.where(col(OutboxMessage.sent_at).is_(None))).one()


def claim_message_post(
    session: Session, deployment_id: int, owner: str, now: datetime, ttl: float
) -> bool:
    """Let one process at a time post a deployment's checklist message.

    A claim lapses after ``ttl`` seconds without a stored ts, so a process that died while
    posting does not leave the deployment without a message.
    """
    result = session.execute(
        update(Deployment)
        .where(
            col(Deployment.id) == deployment_id,
            col(Deployment.message_ts).is_(None),
            _message_unclaimed(now),
        )
        .values(message_claimed_by=owner, message_claimed_until=now + timedelta(seconds=ttl))
    )
    return result.rowcount == 1


def deployments_without_message(session: Session, now: datetime) -> list[int]:
    statement = select(Deployment.id).where(
        col(Deployment.message_ts).is_(None), _message_unclaimed(now)
    )
    return list(session.exec(statement))


def _message_unclaimed(now: datetime):
    return or_(
        col(Deployment.message_claimed_by).is_(None),
        col(Deployment.message_claimed_until) < now,
    )


def deployments_with_status(
    session: Session, statuses: Iterable[DeploymentStatus]
) -> list[Deployment]:
    statement = select(Deployment).where(col(Deployment.status).in_(list(statuses)))
    return list(session.exec(statement))


def update_step(session: Session, step: StepRun, **values: Any) -> StepRun:
    for key, value in values.items():
        setattr(step, key, value)
    session.add(step)
    return step


def waiting_steps(session: Session, kind: str) -> list[tuple[Deployment, StepRun]]:
    statement = (
        select(Deployment, StepRun)
        .join(StepRun, col(StepRun.deployment_id) == col(Deployment.id))
        .where(col(StepRun.kind) == kind, col(StepRun.status) == StepStatus.WAITING)
    )
    return list(session.exec(statement))


def claim_reminder(session: Session, step_run_id: int, now: datetime, interval: timedelta) -> bool:
    """Record a reminder for a waiting step unless one was recorded within ``interval``."""
    result = session.execute(
        update(StepRun)
        .where(
            col(StepRun.id) == step_run_id,
            or_(col(StepRun.reminded_at).is_(None), col(StepRun.reminded_at) <= now - interval),
        )
        .values(reminded_at=now)
    )
    return result.rowcount == 1


def mark_not_run(session: Session, deployment_id: int) -> None:
    session.execute(
        update(StepRun)
        .where(
            col(StepRun.deployment_id) == deployment_id,
            col(StepRun.status).in_([StepStatus.PENDING, StepStatus.WAITING]),
        )
        .values(status=StepStatus.NOT_RUN)
    )


# --- backups ---------------------------------------------------------------------------------


def backup_of(session: Session, deployment_id: int) -> Backup | None:
    return session.exec(select(Backup).where(Backup.deployment_id == deployment_id)).first()


def backups_in(session: Session, environment: str, limit: int = 50) -> list[Backup]:
    """Return the environment's backups, newest first, removed ones included."""
    statement = select(Backup).where(Backup.environment == environment)
    return list(session.exec(statement.order_by(col(Backup.taken_at).desc()).limit(limit)))


def save_backup(session: Session, backup: Backup) -> Backup:
    """Store ``backup``, replacing the record of an earlier attempt of the same deployment."""
    earlier = backup_of(session, backup.deployment_id)
    if earlier is not None:
        session.delete(earlier)
        session.flush()
    session.add(backup)
    session.flush()
    return backup


def backups_beyond(session: Session, environment: str, keep: int) -> list[Backup]:
    """Return the verified backups still on the hosts beyond the newest ``keep``."""
    statement = (
        select(Backup)
        .where(Backup.environment == environment)
        .where(col(Backup.removed_at).is_(None))
        .where(col(Backup.verified_at).is_not(None))
        .order_by(col(Backup.taken_at).desc(), col(Backup.id).desc())
    )
    return list(session.exec(statement))[keep:]
