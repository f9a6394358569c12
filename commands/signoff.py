"""The final sign-off: Deployed by, Validated by and Authorized by, or a rejection with a reason.

Each slot is signed by a user who has its role in the environment. Unless the environment
turns ``separate_authorizer`` off, one person may not sign both Deployed by and Authorized by.
Reject opens a form for the reason; the reason is required and goes into the log.
"""

from commands import messages
from commands.context import Form, FormField, Reply, Request, Services
from commands.decisions import find_step, store_decision
from commands.roles import has_role
from engine.config import REJECTED_SLOT, SIGNOFF_SLOTS
from storage import repository
from storage.models import StepStatus

SIGN_PREFIX = "signoff.sign."
REJECT = "signoff.reject"
REASON_FORM = "signoff.reason"
REASON_FIELD = "reason"
SLOTS = {slot: (label, role) for slot, label, role in SIGNOFF_SLOTS}
ROLE_NAMES = {"deployers": "deployer", "validators": "validator", "approvers": "approver"}


def sign_action(slot: str) -> str:
    return SIGN_PREFIX + slot


def sign(services: Services, request: Request) -> Reply:
    slot = request.action_id.removeprefix(SIGN_PREFIX)
    deployment, step, _ = find_step(services, request.text)
    if deployment is None or step is None or step.kind != "signoff" or slot not in SLOTS:
        return Reply(messages.stale_button())
    if step.status != StepStatus.WAITING:
        return Reply(messages.not_waiting(step.title, step.status.value))
    environment = services.config.environments[deployment.environment]
    label, role = SLOTS[slot]
    if not has_role(services.directory, environment, role, request.user_id):
        return Reply(messages.role_needed(ROLE_NAMES[role], environment.name, f"sign *{label}*"))
    if environment.separate_authorizer:
        other = {"deployed_by": "authorized_by", "authorized_by": "deployed_by"}.get(slot)
        signed = _signed_slots(services, deployment.id, step.step_id)
        if other and signed.get(other) == request.user_id:
            return Reply(messages.authorizer_is_deployer(environment.name))
    return store_decision(services, request, deployment, step, "signed", slot=slot)


def reject(services: Services, request: Request) -> Reply:
    """Open the form for the reason of a rejection."""
    rejection, _, _ = _check_rejection(services, request, request.text)
    if rejection is not None:
        return rejection
    return Reply(
        "",
        form=Form(
            callback_id=REASON_FORM,
            title="Reject the sign-off",
            submit="Reject",
            fields=(FormField(REASON_FIELD, "Why is the release not accepted?", multiline=True),),
            metadata=request.text,
        ),
    )


def submit_reason(services: Services, request: Request) -> Reply:
    reason = request.values.get(REASON_FIELD, "").strip()
    if not reason:
        return Reply("", errors={REASON_FIELD: messages.reason_required()})
    rejection, deployment, step = _check_rejection(services, request, request.text)
    if rejection is not None:
        # A form only shows field errors, so the refusal is shown on its field.
        return Reply(rejection.text, errors={REASON_FIELD: rejection.text})
    return store_decision(
        services, request, deployment, step, "rejected", slot=REJECTED_SLOT, comment=reason
    )


def _check_rejection(services: Services, request: Request, value: str):
    deployment, step, _ = find_step(services, value)
    if deployment is None or step is None or step.kind != "signoff":
        return Reply(messages.stale_button()), None, None
    if step.status != StepStatus.WAITING:
        return Reply(messages.not_waiting(step.title, step.status.value)), None, None
    environment = services.config.environments[deployment.environment]
    if not any(
        has_role(services.directory, environment, role, request.user_id)
        for _, _, role in SIGNOFF_SLOTS
    ):
        needed = "deployer, validator or approver"
        return Reply(messages.role_needed(needed, environment.name, "reject it")), None, None
    return None, deployment, step


def _signed_slots(services: Services, deployment_id: int, step_id: str) -> dict[str, str]:
    with services.db.session() as session:
        return {
            sign_off.slot: sign_off.user_id
            for sign_off in repository.sign_offs_of(session, deployment_id)
            if sign_off.step_id == step_id and sign_off.slot
        }
