"""``/rollback [environment] [quick|full]`` and the Roll back button: undo the latest release.

The command opens a confirmation form at once, since Slack's trigger for it lasts 3 seconds,
and fills in the plan off the request path: the version to return to, the recorded backup and
each step. Confirming records a rollback deployment, which takes the environment's lock, so
two confirmations at once start one rollback. A full rollback restores the database and
waits, as its first step, for a second approver.
"""

import logging
from dataclasses import dataclass

from commands import messages
from commands.context import Form, Reply, Request, Services
from commands.lookup import current_deployment, environment_of, roles_text
from commands.roles import has_role
from engine import backups
from engine import rollback as rollbacks
from engine.config import RELEASE, ROLLBACK_MODES
from engine.runner import plan_steps
from storage import repository
from storage.models import Deployment

logger = logging.getLogger(__name__)

OPEN = "rollback.open"  # the Roll back button; its value is the release's id
CONFIRM = "rollback.confirm"  # the confirmation form; its metadata is "release id:mode"
ROLES = ("deployers", "on_call")
USAGE = "Usage: `/rollback [environment] [quick|full]`, for example `/rollback production full`."


def handle(services: Services, request: Request) -> Reply:
    words = request.text.split()
    modes = [word for word in words if word in ROLLBACK_MODES]
    names = [word for word in words if word not in ROLLBACK_MODES]
    if len(modes) > 1 or len(names) > 1:
        return Reply(f"`/rollback` takes an environment and a kind; got `{request.text}`. {USAGE}")
    environment_name, error = environment_of(services, request, names[0] if names else None)
    if error:
        return Reply(error)
    refusal = _role_refusal(services, request, environment_name)
    if refusal:
        return Reply(refusal)
    release = current_deployment(services, environment_name, RELEASE)
    if release is None:
        return Reply(f"`{environment_name}` has had no release yet; there is nothing to roll back.")
    return _confirmation(services, request, release.id, modes[0] if modes else None)


def open_form(services: Services, request: Request) -> Reply:
    """Open the confirmation from the Roll back button of a halted release or a failed check."""
    release = _release(services, request.text)
    if release is None:
        return Reply(messages.stale_button())
    refusal = _role_refusal(services, request, release.environment)
    if refusal:
        return Reply(refusal)
    return _confirmation(services, request, release.id, None)


def submit(services: Services, request: Request) -> Reply:
    """Start the rollback the user confirmed, after checking everything again."""
    release_text, _, mode = request.text.partition(":")
    release = _release(services, release_text)
    if release is None or mode not in ROLLBACK_MODES:
        return Reply(messages.stale_button(), form=_notice("The rollback is gone", "Not found."))
    refusal = _role_refusal(services, request, release.environment)
    if refusal:
        return Reply(refusal, form=_notice("Not allowed", refusal))

    environment = services.config.environments[release.environment]
    with services.db.session() as session:
        # Another confirmation of this release waits here until this one has ended.
        repository.hold_row(session, release.id)
        plan = rollbacks.plan(services.config, session, release, mode, services.clock.now())
        text, rollback = plan.refusal or plan.note, None
        if plan.mode == mode and not plan.refusal:
            rollback = _record(services, session, request, release, plan)
        if rollback is None:
            active = repository.active_deployment(session, release.environment)
            text = text or (messages.environment_busy(active) if active else "Try again.")
        session.rollback()  # the row lock ends before the audit writes
        if rollback is None:
            _audit(services, request, release, mode, refused=text)
            return Reply(text, form=_notice("Cannot roll back", text))
    logger.info(
        "Rollback %s (%s) of deployment %s requested by %s",
        rollback.id,
        mode,
        release.id,
        request.user_id,
    )
    # A release that was waiting ends as cancelled, and so do its open windows of checks.
    for deployment_id in (release.id, *rollback.windows, rollback.id):
        services.worker.submit(deployment_id)
    services.observer.deployment_changed(release.id)
    services.observer.deployment_changed(rollback.id)
    text = (
        f"Started rollback #{rollback.id} of `{release.version}` ({mode}). "
        f"Follow it in <#{environment.channel}>."
    )
    return Reply(text, form=_notice("Rollback started", text))


@dataclass
class _Started:
    id: int
    windows: list[int]  # the release's windows of checks, asked to end


def _record(services, session, request, release: Deployment, plan) -> _Started | None:
    """Store the rollback with its steps and the environment's lock, and commit.

    Returns None, with nothing stored, when another deployment has the lock.
    """
    config = services.config
    environment = config.environments[release.environment]
    now = services.clock.now()
    rollback = Deployment(
        runbook=config.runbook.name,
        environment=release.environment,
        version=release.version,
        procedure=plan.procedure,
        parent_id=release.id,
        requested_by=request.user_id,
        request_channel=release.request_channel,
        channel=environment.channel,
        variables=rollbacks.variables(release, plan.backup),
        created_at=now,
        updated_at=now,
    )
    session.add(rollback)
    session.flush()
    if not repository.hand_over_environment(session, release, rollback, now):
        return None
    for step in plan_steps(config.runbook, environment, plan.procedure):
        step.deployment_id = rollback.id
        session.add(step)
    # The windows check a version that is going away.
    windows = repository.cancel_open_windows(session, release.id, request.user_id)
    repository.audit(
        session,
        now=now,
        actor=request.user_id,
        action="rollback.requested",
        deployment_id=rollback.id,
        release=release.id,
        mode=plan.mode,
        backup=plan.backup.id,
    )
    session.commit()
    return _Started(rollback.id, windows)


# --- the confirmation ------------------------------------------------------------------------


def _confirmation(
    services: Services, request: Request, release_id: int, requested: str | None
) -> Reply:
    def fill() -> Form:
        return confirmation_form(services, release_id, requested)

    title = "Roll back"
    opening = Form(
        callback_id=CONFIRM, title=title, submit="", fields=(), text="Working out the plan…"
    )
    return Reply("Opening the rollback plan.", form=opening, follow_up=fill)


def confirmation_form(services: Services, release_id: int, requested: str | None) -> Form:
    """Return the form that shows the plan of rolling back ``release_id``, or why not."""
    with services.db.session() as session:
        release = repository.get_deployment(session, release_id)
        plan = rollbacks.plan(services.config, session, release, requested, services.clock.now())
    if plan.refusal:
        return _notice("Cannot roll back", plan.refusal)
    # Over SSH, so only in the follow-up: the rollback checks the dump again before it restores.
    environment = services.config.environments[release.environment]
    changed = backups.compare(environment, plan.backup) if plan.mode == "full" else None
    if changed:
        return _notice("Cannot roll back", f"The backup cannot be used: {changed}.")
    return Form(
        callback_id=CONFIRM,
        title=f"{plan.mode.capitalize()} rollback",
        submit="Roll back" if plan.mode == "quick" else "Ask for approval",
        fields=(),
        metadata=f"{release.id}:{plan.mode}",
        text=plan_text(plan),
    )


def plan_text(plan: rollbacks.Plan) -> str:
    release = plan.release
    backup = plan.backup
    lines = []
    if plan.note:
        lines += [f":warning: {plan.note}", ""]
    returning = f"`{plan.previous_version}`" if plan.previous_version else "the version before it"
    lines.append(
        f"*{plan.mode.capitalize()} rollback of `{release.version}` in `{release.environment}`*, "
        f"back to {returning}."
    )
    lines.append(
        f"Rolled out {backups.taken_at_text(plan.rolled_out_at)} by deployment #{release.id}."
    )
    if plan.mode == "quick":
        lines.append(f"Quick rollback is open until {backups.taken_at_text(plan.quick_until)}.")
    rows = f", {backup.row_count} approval rows" if backup.row_count is not None else ""
    lines += [
        "",
        f"*Backup* of deployment #{backup.deployment_id}, taken "
        f"{backups.taken_at_text(backup.taken_at)} on `{backup.host}`: "
        f"{backups.describe(backup.size_bytes)}{rows}",
        f"SHA-256 `{backup.sha256}`"
        + (", checked on the host just now" if plan.mode == "full" else ""),
        f"Folder `{backup.location}`",
        "",
        "*Steps*",
    ]
    lines += [f"{number}. {title}" for number, title in enumerate(plan.steps, 1)]
    if plan.mode == "full":
        lines += [
            "",
            ":rotating_light: A full rollback restores the database: everything written since "
            f"{backups.taken_at_text(backup.taken_at)} is lost. A second person with the "
            "approver role must confirm it in the channel before anything runs.",
        ]
    return "\n".join(lines)


# --- helpers ---------------------------------------------------------------------------------


def _notice(title: str, text: str) -> Form:
    return Form(callback_id=CONFIRM, title=title, submit="", fields=(), text=text)


def _release(services: Services, text: str) -> Deployment | None:
    if not text.isdigit() or len(text) > 18:
        return None
    with services.db.session() as session:
        deployment = repository.get_deployment(session, int(text))
    if deployment is None or deployment.procedure != RELEASE:
        return None
    return deployment


def _role_refusal(services: Services, request: Request, environment_name: str) -> str | None:
    environment = services.config.environments[environment_name]
    if any(has_role(services.directory, environment, r, request.user_id) for r in ROLES):
        return None
    _audit_refusal(services, request, environment_name)
    return messages.role_needed(roles_text(ROLES), environment_name, "roll back")


def _audit_refusal(services: Services, request: Request, environment_name: str) -> None:
    with services.db.session() as session:
        repository.audit(
            session,
            now=services.clock.now(),
            actor=request.user_id,
            action="command.refused",
            command=request.command or request.action_id,
            text=request.text,
            environment=environment_name,
            reason="role",
        )


def _audit(services, request, release: Deployment, mode: str, *, refused: str) -> None:
    with services.db.session() as session:
        repository.audit(
            session,
            now=services.clock.now(),
            actor=request.user_id,
            action="rollback.refused",
            deployment_id=release.id,
            mode=mode,
            reason=refused,
        )
