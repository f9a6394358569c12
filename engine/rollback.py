"""Rollback plans: what undoing a release would do, worked out from the database alone.

A rollback is a deployment of its own, whose procedure is ``rollback:quick`` or
``rollback:full`` and whose parent is the release it undoes. Its plan names the version to
return to, the recorded backup it restores from and every step it will run. Quick is offered
only within the quick window after the release's rollout phase ended; full restores the
database and so waits for a second approver.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from engine import backups
from engine.config import (
    QUICK_ROLLBACK_MINUTES,
    RELEASE,
    ROLLBACK,
    ROLLBACK_MODES,
    Config,
    Environment,
)
from storage import repository
from storage.models import Backup, Deployment, DeploymentStatus, StepRun, StepStatus

ROLLED_OUT_STEPS = (StepStatus.PASSED, StepStatus.FAILED, StepStatus.SKIPPED)


@dataclass
class Plan:
    """A rollback ready to confirm, or the reason there is none (``refusal``)."""

    release: Deployment
    mode: str | None = None  # quick or full
    refusal: str | None = None
    note: str | None = None  # why quick was not offered, when it was asked for
    previous_version: str | None = None
    rolled_out_at: datetime | None = None
    quick_until: datetime | None = None
    backup: Backup | None = None
    steps: list[str] = field(default_factory=list)  # titles, in order

    @property
    def procedure(self) -> str:
        return f"{ROLLBACK}:{self.mode}"


def quick_window(config: Config, environment: Environment) -> timedelta:
    runbook_minutes = (
        config.runbook.rollback.quick.within_minutes if config.runbook.rollback else None
    )
    minutes = environment.quick_rollback_minutes or runbook_minutes or QUICK_ROLLBACK_MINUTES
    return timedelta(minutes=minutes)


def rolled_out_at(config: Config, steps: list[StepRun]) -> datetime | None:
    """Return when the release's rollout phase ended, or None if it never began.

    A rollout that failed part-way counts: whatever it changed is what needs undoing.
    """
    phase_id = config.runbook.rollback.rollout_phase if config.runbook.rollback else None
    rollout = [step for step in steps if step.phase_id == phase_id]
    ended = [step.finished_at for step in rollout if step.status in ROLLED_OUT_STEPS]
    began = any(step.started_at is not None for step in rollout)
    if not began or not ended:
        return None
    return max(ended)


def undone_by(session, release: Deployment) -> Deployment | None:
    """Return the rollback that succeeded in undoing ``release``, if one did."""
    for child in repository.children_of(session, release.id):
        if (
            child.procedure.startswith(f"{ROLLBACK}:")
            and child.status == DeploymentStatus.SUCCEEDED
        ):
            return child
    return None


def rollback_target(config: Config, session, deployment: Deployment) -> int | None:
    """Return the release a Roll back button on ``deployment``'s messages would undo.

    That is the deployment itself for a release, and its release for a rollback or a window
    of checks; None when the release never reached its rollout.
    """
    if config.runbook.rollback is None:
        return None
    release_id = deployment.id if deployment.procedure == RELEASE else deployment.parent_id
    if release_id is None:
        return None
    if rolled_out_at(config, repository.steps_of(session, release_id)) is None:
        return None
    return release_id


def plan(
    config: Config, session, release: Deployment, requested: str | None, now: datetime
) -> Plan:
    """Return the plan of rolling back ``release`` in ``requested`` mode (None: the best one)."""
    result = Plan(release=release)
    rollback = config.runbook.rollback
    if rollback is None:
        result.refusal = f"Runbook `{config.runbook.name}` has no rollback section."
        return result
    if requested is not None and requested not in ROLLBACK_MODES:
        result.refusal = f"`{requested}` is not a kind of rollback; use `quick` or `full`."
        return result
    steps = repository.steps_of(session, release.id)
    result.rolled_out_at = rolled_out_at(config, steps)
    if result.rolled_out_at is None:
        result.refusal = (
            f"Deployment #{release.id} of `{release.version}` never reached its rollout, so "
            f"`{release.environment}` still runs what it ran before. There is nothing to roll back."
        )
        return result
    running = next((step for step in steps if step.status == StepStatus.RUNNING), None)
    if running is not None:
        result.refusal = (
            f"Deployment #{release.id} is running the step “{running.title}”. Wait for it to "
            "end, or stop the deployment with `/deploy-cancel`, then roll back."
        )
        return result
    for child in repository.children_of(session, release.id):
        if not child.procedure.startswith(f"{ROLLBACK}:"):
            continue
        if child.status == DeploymentStatus.SUCCEEDED:
            result.refusal = (
                f"`{release.version}` was already rolled back by deployment #{child.id} "
                f"({child.procedure.partition(':')[2]}), which succeeded."
            )
            return result
        if not child.status.finished:
            result.refusal = f"Rollback #{child.id} of `{release.version}` is still going."
            return result
    newer = _newer_rollout(config, session, release)
    if newer is not None:
        result.refusal = (
            f"Deployment #{newer.id} of `{newer.version}` has been rolled out to "
            f"`{release.environment}` since deployment #{release.id}, so rolling back "
            f"`{release.version}` would restore an older state over it. Roll back "
            f"deployment #{newer.id} first, with `/rollback {release.environment}`."
        )
        return result
    environment = config.environments[release.environment]
    result.quick_until = result.rolled_out_at + quick_window(config, environment)
    within = now <= result.quick_until
    mode = requested or ("quick" if within else "full")
    if not within and requested != "full":
        result.note = (
            f"Quick rollback is offered for {_minutes(quick_window(config, environment))} after "
            f"the rollout, which ended {backups.taken_at_text(result.rolled_out_at)}; that "
            f"window closed {backups.taken_at_text(result.quick_until)}. A full rollback, "
            "which also restores the database, is offered instead."
        )
        mode = "full"
    result.mode = mode
    result.previous_version = (release.variables or {}).get("previous_version")
    backup = repository.backup_of(session, release.id)
    problem = _backup_problem(backup, release)
    if problem:
        result.refusal = problem
        return result
    result.backup = backup
    result.steps = [step.title for _, step in config.runbook.procedure(result.procedure)]
    return result


def _newer_rollout(config: Config, session, release: Deployment) -> Deployment | None:
    """Return the newest later release of the environment that reached its rollout."""
    for later in repository.releases_after(session, release):
        if rolled_out_at(config, repository.steps_of(session, later.id)) is not None:
            return later
    return None


def variables(release: Deployment, backup: Backup) -> dict:
    """Return the rollback's variables: the release's, and the backup's from its record."""
    values = dict(release.variables or {})
    values.update(
        backup_dir=backup.location,
        backup_dump=backup.dump,
        backup_size=backup.size_bytes,
        backup_sha256=backup.sha256,
        backup_row_count=backup.row_count,
        backup_deployment_id=backup.deployment_id,
        backup_taken_at=backups.taken_at_text(backup.taken_at),
        rolled_back_version=release.version,
    )
    return {name: value for name, value in values.items() if value is not None}


def _backup_problem(backup: Backup | None, release: Deployment) -> str | None:
    if backup is None:
        return (
            f"Deployment #{release.id} has no recorded backup, so gonogo cannot roll it back. "
            "Restore by hand, following the runbook's rollback section."
        )
    if backup.removed_at is not None:
        return (
            f"The backup of deployment #{release.id} was removed "
            f"{backups.taken_at_text(backup.removed_at)} by the retention count. "
            "Restore by hand from another copy."
        )
    if backup.verified_at is None:
        return (
            f"The backup of deployment #{release.id} at `{backup.location}` failed its restore "
            f"check ({backup.verification}), so gonogo will not restore from it."
        )
    return None


def _minutes(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes} minute" + ("" if minutes == 1 else "s")  # one minute, two minutes
