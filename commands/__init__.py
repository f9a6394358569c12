"""Command handlers: each validates its input, checks roles, records intent, hands off work."""

from collections.abc import Callable

from commands import (
    backups,
    cancel,
    checklist,
    decisions,
    deploy,
    deploy_log,
    notice,
    phase,
    postdeploy,
    rollback,
    signoff,
    status,
)
from commands.context import Reply, Request, Services
from engine.config import SIGNOFF_SLOTS, Config

Handler = Callable[[Services, Request], Reply]


def slash_commands(config: Config) -> dict[str, Handler]:
    """Return every slash command with its handler: gonogo's own and the runbook's phases."""
    handlers: dict[str, Handler] = {
        "/deploy": deploy.handle,
        "/deploy-status": status.handle,
        "/deploy-log": deploy_log.handle,
        "/deploy-cancel": cancel.handle,
        "/postdeploy": postdeploy.handle,
        "/rollback": rollback.handle,
        "/backups": backups.handle,
    }
    for command in config.runbook.phase_commands():
        handlers[command] = phase.handle
    return handlers


def button_handlers() -> dict[str, Handler]:
    """Return every button's action ID with its handler."""
    handlers: dict[str, Handler] = {action: decisions.handle for action in decisions.DECISIONS}
    handlers[signoff.REJECT] = signoff.reject
    handlers[notice.WRITE] = notice.open_form
    handlers[rollback.OPEN] = rollback.open_form
    for action_id in checklist.action_ids(checklist.TICK):
        handlers[action_id] = checklist.tick
    for action_id in checklist.action_ids(checklist.WAIVE):
        handlers[action_id] = checklist.waive
    for slot, _, _ in SIGNOFF_SLOTS:
        handlers[signoff.sign_action(slot)] = signoff.sign
    return handlers


FORM_HANDLERS: dict[str, Handler] = {
    signoff.REASON_FORM: signoff.submit_reason,
    notice.FORM: notice.submit,
    checklist.WAIVE_FORM: checklist.submit_waiver,
    rollback.CONFIRM: rollback.submit,
}
