"""Buttons on a waiting step: Approve and Reject on a gate, Done on a manual check.

Every press is checked against the roles of the deployment's environment and stored with who
and when. The first stored decision wins; a later or double press changes nothing.
"""

import logging
import re

from commands import messages
from commands.context import Reply, Request, Services
from commands.lookup import roles_text, tick_roles
from commands.roles import has_role
from storage import repository
from storage.models import SignOff, StepRun, StepStatus

logger = logging.getLogger(__name__)

APPROVE = "gate.approve"
REJECT = "gate.reject"
DONE = "check.done"
DECISIONS = {APPROVE: "approved", REJECT: "rejected", DONE: "done"}


def button_value(deployment_id: int, step_id: str) -> str:
    return f"{deployment_id}:{step_id}"


def handle(services: Services, request: Request) -> Reply:
    decision = DECISIONS.get(request.action_id)
    deployment, step, _ = find_step(services, request.text)
    if decision is None or deployment is None or step is None:
        return Reply(messages.stale_button())
    # A button only decides the kind of step it is drawn for: Approve never ticks a check.
    expected_kind = "check" if request.action_id == DONE else "gate"
    if _button_kind(step) != expected_kind:
        return Reply(messages.stale_button())
    environment = services.config.environments[deployment.environment]

    rejection = _rejection(services, request, deployment, step, environment)
    if rejection is None and step.status != StepStatus.WAITING:
        rejection = _status_rejection(services, deployment.id, step)
    if rejection is not None:
        _audit(services, request, deployment.id, step, decision, accepted=False)
        return Reply(rejection)

    return store_decision(services, request, deployment, step, decision)


def store_decision(
    services: Services,
    request: Request,
    deployment,
    step: StepRun,
    decision: str,
    *,
    slot: str = "",
    comment: str | None = None,
) -> Reply:
    """Store a decision on a waiting step, post it in the thread and let the run go on."""
    now = services.clock.now()
    try:
        with services.db.session() as session:
            if not repository.lock_waiting_step(session, step.id):
                return Reply(messages.step_moved_on(step.title))
            repository.record_sign_off(
                session,
                SignOff(
                    deployment_id=deployment.id,
                    step_id=step.step_id,
                    slot=slot,
                    decision=decision,
                    user_id=request.user_id,
                    decided_at=now,
                    comment=comment,
                ),
            )
            repository.audit(
                session,
                now=now,
                actor=request.user_id,
                action="button",
                deployment_id=deployment.id,
                step=step.step_id,
                slot=slot,
                decision=decision,
            )
            repository.queue_post(
                session,
                deployment_id=deployment.id,
                kind="decision",
                step_id=step.step_id,
                text=slot or None,
                created_at=now,
            )
            repository.wake(session, deployment.id)
            repository.mark_resuming(session, deployment.id, now)
    except repository.AlreadyDecided as decided:
        _audit(services, request, deployment.id, step, decision, accepted=False)
        return Reply(messages.already_decided(decided.sign_off, step.title))
    logger.info(
        "Deployment %s: step %s %s%s by %s",
        deployment.id,
        step.step_id,
        decision,
        f" ({slot})" if slot else "",
        request.user_id,
    )
    services.worker.submit(deployment.id)
    services.observer.deployment_changed(deployment.id)
    return Reply(messages.decision_recorded(decision, step.title))


def find_step(services: Services, value: str):
    """Return (deployment, step, rest) named by a button value ``id:step[:rest]``."""
    deployment_id, _, remainder = value.partition(":")
    step_id, _, rest = remainder.partition(":")
    if not re.fullmatch(r"[0-9]{1,18}", deployment_id) or not step_id:
        return None, None, ""
    with services.db.session() as session:
        deployment = repository.get_deployment(session, int(deployment_id))
        step = _step(session, int(deployment_id), step_id) if deployment else None
    return deployment, step, rest


def _button_kind(step: StepRun) -> str:
    if step.kind == "gate":
        return "gate"
    if step.kind == "manual" or step.manual_reason:
        return "check"
    return "none"


def _rejection(services: Services, request: Request, deployment, step: StepRun, environment):
    if step.kind == "gate":
        if not has_role(services.directory, environment, "approvers", request.user_id):
            return messages.role_needed("approver", environment.name, f"decide *{step.title}*")
        gate = _gate_spec(services, step.step_id)
        if request.user_id == deployment.requested_by and not gate.allow_self:
            return messages.self_approval(step.title)
        return None
    roles = tick_roles(deployment, _manual_role(services, step.step_id))
    if not any(has_role(services.directory, environment, r, request.user_id) for r in roles):
        return messages.role_needed(roles_text(roles), environment.name, f"tick *{step.title}*")
    return None


def _status_rejection(services: Services, deployment_id: int, step: StepRun) -> str:
    with services.db.session() as session:
        for sign_off in repository.sign_offs_of(session, deployment_id):
            if sign_off.step_id == step.step_id and not sign_off.slot:
                return messages.already_decided(sign_off, step.title)
    return messages.not_waiting(step.title, step.status.value)


def _audit(services, request, deployment_id, step, decision, *, accepted: bool) -> None:
    with services.db.session() as session:
        repository.audit(
            session,
            now=services.clock.now(),
            actor=request.user_id,
            action="button" if accepted else "button.refused",
            deployment_id=deployment_id,
            step=step.step_id,
            decision=decision,
        )


def _step(session, deployment_id: int, step_id: str) -> StepRun | None:
    for row in repository.steps_of(session, deployment_id):
        if row.step_id == step_id:
            return row
    return None


def _gate_spec(services: Services, step_id: str):
    return services.config.runbook.step(step_id).gate


def _manual_role(services: Services, step_id: str) -> str:
    step = services.config.runbook.step(step_id)
    return step.manual.role if step.manual else "deployers"
