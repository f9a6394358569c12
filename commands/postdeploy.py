"""``/postdeploy [environment] [window]``: run a post-deployment window of the latest release.

The runbook's ``post_deployment`` windows fall due a number of minutes after the release's
rollout phase finished. Each run of a window is a deployment of its own, with procedure
``window:ID`` and the release as its parent. It takes no environment lock because its checks
change nothing on the hosts. Without a window named, the command runs the earliest window that
is due and has not run. A window that passed stays passed, but one whose run failed may run
again.
"""

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from commands import messages
from commands.context import Reply, Request, Services
from commands.lookup import current_deployment, environment_of, roles_text
from commands.roles import has_role
from engine.config import (
    RELEASE,
    ROLLBACK,
    WINDOW,
    Environment,
    Runbook,
    Window,
)
from engine.runner import missing_secrets, plan_steps
from storage import repository
from storage.models import Deployment, DeploymentStatus, StepRun, StepStatus

logger = logging.getLogger(__name__)

COMMAND = "/postdeploy"
ROLES = ("deployers", "approvers", "validators")
COMPLETED = (StepStatus.PASSED, StepStatus.SKIPPED)
DEFAULT_ROLLOUT_PHASE = "rollout"  # when the runbook has no rollback section to name it


@dataclass(frozen=True)
class WindowPlan:
    """The window a request will run, and when it runs relative to the rollout."""

    window: Window
    rollout_end: datetime
    now: datetime
    rerun: bool  # an earlier run of this window failed or was cancelled


@dataclass(frozen=True)
class Rejection:
    text: str
    reason: str  # recorded in the audit trail


def handle(services: Services, request: Request) -> Reply:
    command = request.command or COMMAND
    config = services.config
    environment_name, window_id, error = _target(services, request)
    if error:
        return _reject(services, request, Rejection(error, "invalid request"))

    environment = config.environments[environment_name]
    if not any(has_role(services.directory, environment, role, request.user_id) for role in ROLES):
        roles = roles_text(ROLES)
        text = messages.role_needed(roles, environment_name, f"run `{command}`")
        return _reject(services, request, Rejection(text, "role"))
    runbook = config.runbook
    if not runbook.post_deployment:
        return _reject(services, request, Rejection(no_windows(runbook), "no windows"))
    if window_id is not None and runbook.window(window_id) is None:
        text = unknown_window(window_id, runbook)
        return _reject(services, request, Rejection(text, "unknown window"))
    release = current_deployment(services, environment_name, RELEASE)
    if release is None:
        text = messages.no_deployment(environment_name)
        return _reject(services, request, Rejection(text, "no release"))

    now = services.clock.now()
    with services.db.session() as session:
        repository.hold_row(session, release.id)
        plan = _plan(session, runbook, environment, release, window_id, now)
        if isinstance(plan, Rejection):
            _audit_rejection(session, request, plan, now, release.id)
            return Reply(plan.text)
        window_run = _record_window_run(session, services, request, release, plan)
    _log_start(release, window_run, plan, request.user_id)
    services.worker.submit(window_run.id)
    services.observer.deployment_changed(window_run.id)
    return Reply(window_started(release, window_run, plan))


# --- deciding what to run --------------------------------------------------------------------


def _target(services: Services, request: Request) -> tuple[str | None, str | None, str | None]:
    """Return (environment name, window id or None, error text) from the command's text.

    A single word is the environment when one has that name, and otherwise a window of the
    environment whose channel the command was typed in.
    """
    words = request.text.split()
    if len(words) > 2:
        return None, None, usage(request.command or COMMAND)
    named_environment = words[0] if words else None
    window_id = words[1] if len(words) == 2 else None
    if len(words) == 1 and words[0] not in services.config.environments:
        from_channel, _ = environment_of(services, request, None)
        if from_channel is None and services.config.runbook.window(words[0]) is None:
            # The word names neither an environment nor a window, so it is likely a misspelt
            # environment.
            return None, None, messages.unknown_environment(words[0], services.config)
        named_environment, window_id = None, words[0]
    environment_name, error = environment_of(services, request, named_environment)
    return environment_name, window_id, error


def _plan(
    session: Session,
    runbook: Runbook,
    environment: Environment,
    release: Deployment,
    window_id: str | None,
    now: datetime,
) -> WindowPlan | Rejection:
    """Choose the window to run for ``release``, or return why none may run."""
    children = repository.children_of(session, release.id)
    rollback = next(
        (
            child
            for child in children
            if child.procedure.startswith(f"{ROLLBACK}:")
            and (child.status == DeploymentStatus.SUCCEEDED or not child.status.finished)
        ),
        None,
    )
    if rollback is not None:
        return Rejection(rolled_back(release, rollback), "rolled back")

    phase_id = runbook.rollback.rollout_phase if runbook.rollback else DEFAULT_ROLLOUT_PHASE
    steps = repository.steps_of(session, release.id)
    rollout = [step for step in steps if step.phase_id == phase_id]
    if not rollout:
        return Rejection(no_rollout_phase(release, phase_id), "no rollout phase")
    if not _finished(rollout):
        return Rejection(not_rolled_out(release, rollout[0].phase_title), "not rolled out")
    rollout_end = max(step.finished_at for step in rollout)

    if window_id is None:
        chosen = _earliest_open_window(runbook, children, rollout_end, now, release)
        if isinstance(chosen, Rejection):
            return chosen
        window = chosen
    else:
        window = runbook.window(window_id)
        runs = _runs_of(children, window)
        passed = next((run for run in runs if run.status == DeploymentStatus.SUCCEEDED), None)
        if passed is not None:
            return Rejection(already_passed(window, release, passed), "window passed")
        under_way = next((run for run in runs if not run.status.finished), None)
        if under_way is not None:
            return Rejection(window_under_way(window, under_way), "window under way")
        if now < due_at(window, rollout_end):
            return Rejection(not_due(window, release, rollout_end, now), "window not due")

    missing = missing_secrets(runbook, environment, f"{WINDOW}:{window.id}")
    if missing:
        return Rejection(messages.secrets_missing(environment.name, missing), "secrets missing")
    rerun = bool(_runs_of(children, window))
    return WindowPlan(window=window, rollout_end=rollout_end, now=now, rerun=rerun)


def _earliest_open_window(
    runbook: Runbook,
    children: list[Deployment],
    rollout_end: datetime,
    now: datetime,
    release: Deployment,
) -> Window | Rejection:
    """Return the earliest due window without a passed or unfinished run, or why there is none.

    A window whose runs all failed or were cancelled counts as not run.
    """
    open_windows = [
        window
        for window in runbook.post_deployment
        if not any(
            run.status == DeploymentStatus.SUCCEEDED or not run.status.finished
            for run in _runs_of(children, window)
        )
    ]
    if not open_windows:
        return Rejection(all_windows_run(release), "every window run")
    due = [window for window in open_windows if due_at(window, rollout_end) <= now]
    if not due:
        following = min(open_windows, key=lambda window: window.from_minute)
        return Rejection(nothing_due(following, release, rollout_end, now), "no window due")
    return min(due, key=lambda window: window.from_minute)  # min keeps runbook order on ties


def due_at(window: Window, rollout_end: datetime) -> datetime:
    return rollout_end + timedelta(minutes=window.from_minute)


def closes_at(window: Window, rollout_end: datetime) -> datetime | None:
    if window.to_minute is None:
        return None
    return rollout_end + timedelta(minutes=window.to_minute)


def _finished(rollout: list[StepRun]) -> bool:
    return all(step.status in COMPLETED and step.finished_at is not None for step in rollout)


def _runs_of(children: list[Deployment], window: Window) -> list[Deployment]:
    return [child for child in children if child.procedure == f"{WINDOW}:{window.id}"]


# --- recording the run -----------------------------------------------------------------------


def _record_window_run(
    session: Session,
    services: Services,
    request: Request,
    release: Deployment,
    plan: WindowPlan,
) -> Deployment:
    environment = services.config.environments[release.environment]
    procedure = f"{WINDOW}:{plan.window.id}"
    window_run = Deployment(
        runbook=services.config.runbook.name,
        environment=release.environment,
        version=release.version,
        procedure=procedure,
        parent_id=release.id,
        requested_by=request.user_id,
        request_channel=request.channel_id,
        channel=environment.channel,
        variables=dict(release.variables or {}),
        created_at=plan.now,
        updated_at=plan.now,
    )
    steps = plan_steps(services.config.runbook, environment, procedure)
    repository.create_deployment(session, window_run, steps, plan.now, lock=False)
    repository.audit(
        session,
        now=plan.now,
        actor=request.user_id,
        action="command",
        deployment_id=window_run.id,
        command=request.command or COMMAND,
        text=request.text,
        release_id=release.id,
        window=plan.window.id,
        rerun=plan.rerun,
    )
    return window_run


def _log_start(release: Deployment, window_run: Deployment, plan: WindowPlan, user: str) -> None:
    logger.info(
        "Deployment %s: window %s of release %s in %s requested by %s",
        window_run.id,
        plan.window.id,
        release.id,
        release.environment,
        user,
    )
    closes = closes_at(plan.window, plan.rollout_end)
    if closes is not None and plan.now > closes:
        logger.warning(
            "Deployment %s: window %s started %s minutes after it closed",
            window_run.id,
            plan.window.id,
            _whole_minutes(plan.now - closes),
        )


def _reject(services: Services, request: Request, rejection: Rejection) -> Reply:
    with services.db.session() as session:
        _audit_rejection(session, request, rejection, services.clock.now(), None)
    return Reply(rejection.text)


def _audit_rejection(
    session: Session, request: Request, rejection: Rejection, now: datetime, release_id: int | None
) -> None:
    repository.audit(
        session,
        now=now,
        actor=request.user_id,
        action="command.refused",
        deployment_id=release_id,
        command=request.command or COMMAND,
        text=request.text,
        reason=rejection.reason,
    )


def _whole_minutes(span: timedelta) -> int:
    return int(span.total_seconds() // 60)


def _minutes_until(moment: datetime, now: datetime) -> int:
    """Return the minutes from ``now`` to ``moment``, rounded up so "in 0 minutes" never shows."""
    return max(1, math.ceil((moment - now).total_seconds() / 60))


# --- messages --------------------------------------------------------------------------------


def usage(command: str) -> str:
    return (
        f"Usage: `{command} [environment] [window]`. `{command} production` runs the window "
        f"that is due; `{command} production extended` runs the window `extended`."
    )


def no_windows(runbook: Runbook) -> str:
    return (
        f"Runbook `{runbook.name}` defines no post-deployment windows, so there is nothing "
        "to run. Add them under `post_deployment`."
    )


def unknown_window(window_id: str, runbook: Runbook) -> str:
    choices = ", ".join(f"`{window.id}`" for window in runbook.post_deployment)
    return f"Window `{window_id}` is not in runbook `{runbook.name}`. Choose one of: {choices}."


def rolled_back(release: Deployment, rollback: Deployment) -> str:
    return (
        f"Deployment #{release.id} of `{release.version}` to `{release.environment}` has a "
        f"rollback, deployment #{rollback.id} ({rollback.status.value}), so its "
        "post-deployment windows no longer apply."
    )


def no_rollout_phase(release: Deployment, phase_id: str) -> str:
    return (
        f"Deployment #{release.id} has no phase `{phase_id}`, whose end starts the "
        "post-deployment windows. Set `rollback.rollout_phase` in the runbook to the phase "
        "that rolls the release out."
    )


def not_rolled_out(release: Deployment, phase_title: str) -> str:
    return (
        f"Deployment #{release.id} of `{release.version}` to `{release.environment}` has not "
        f"been rolled out yet: *{phase_title}* has not finished. The post-deployment windows "
        "start when it has."
    )


def already_passed(window: Window, release: Deployment, run: Deployment) -> str:
    return (
        f"*{window.title}* (`{window.id}`) already passed for deployment #{release.id} in "
        f"{messages.deployment_link(run)}. Only a window whose run failed may run again."
    )


def window_under_way(window: Window, run: Deployment) -> str:
    return (
        f"*{window.title}* (`{window.id}`) is already under way in "
        f"{messages.deployment_link(run)} ({run.status.value}). Finish that run first."
    )


def not_due(window: Window, release: Deployment, rollout_end: datetime, now: datetime) -> str:
    due = due_at(window, rollout_end)
    return (
        f"*{window.title}* (`{window.id}`) is due {window.from_minute} minutes after the "
        f"rollout of deployment #{release.id}: at {due:%Y-%m-%d %H:%M} UTC, in "
        f"{_minutes_until(due, now)} minutes. Run it then."
    )


def nothing_due(window: Window, release: Deployment, rollout_end: datetime, now: datetime) -> str:
    due = due_at(window, rollout_end)
    return (
        f"No post-deployment window of deployment #{release.id} is due now. Next: "
        f"*{window.title}* (`{window.id}`) at {due:%Y-%m-%d %H:%M} UTC, in "
        f"{_minutes_until(due, now)} minutes."
    )


def all_windows_run(release: Deployment) -> str:
    return (
        f"Every post-deployment window of deployment #{release.id} has passed or is under "
        "way, so there is nothing left to run."
    )


def window_started(release: Deployment, window_run: Deployment, plan: WindowPlan) -> str:
    verb = "Running again" if plan.rerun else "Running"
    minute = _whole_minutes(plan.now - plan.rollout_end)
    text = (
        f"{verb} *{plan.window.title}* (`{plan.window.id}`) for deployment #{release.id} of "
        f"`{release.version}` to `{release.environment}`, {minute} minutes after the rollout, "
        f"as deployment #{window_run.id}. The checklist is in <#{window_run.channel}>."
    )
    closes = closes_at(plan.window, plan.rollout_end)
    if closes is not None and plan.now > closes:
        text += (
            f" This run is late: the window closed {plan.window.to_minute} minutes after the "
            f"rollout, at {closes:%H:%M} UTC."
        )
    return text
