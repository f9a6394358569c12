"""Items of a manual step, settled one by one: ticked by a person, or waived with a reason.

Items the bot checks itself (disk space, reachability, TLS certificates, the health
endpoint) are settled by their evidence. One whose check fails can only be waived, by an
approver who gives a reason. Both show in the thread and in the deployment log.
"""

import logging

from commands import messages
from commands.context import Form, FormField, Reply, Request, Services
from commands.decisions import find_step
from commands.lookup import roles_text, tick_roles
from commands.roles import has_role
from engine.runner import checkable_items
from storage import repository
from storage.models import ChecklistItemState, StepStatus

logger = logging.getLogger(__name__)

TICK = "item.tick"  # action IDs carry the item's index, as Slack wants them unique
WAIVE = "item.waive"
MAX_ITEMS = 40
WAIVE_FORM = "item.waive_reason"
REASON_FIELD = "reason"


def item_value(deployment_id: int, step_id: str, index: int) -> str:
    return f"{deployment_id}:{step_id}:{index}"


def action_ids(action: str) -> list[str]:
    return [f"{action}.{index}" for index in range(MAX_ITEMS)]


def tick(services: Services, request: Request) -> Reply:
    rejection, deployment, step, index = _find(services, request.text)
    if rejection:
        return Reply(rejection)
    environment = services.config.environments[deployment.environment]
    definition = services.config.runbook.step(step.step_id)
    roles = tick_roles(deployment, definition.manual.role)
    if not any(has_role(services.directory, environment, r, request.user_id) for r in roles):
        action = f"tick *{definition.manual.items[index].text}*"
        return Reply(messages.role_needed(roles_text(roles), environment.name, action))
    if index in checkable_items(definition, environment):
        return Reply(messages.item_checked_by_bot(definition.manual.items[index].text))
    return _settle(services, request, deployment, step, index, "ticked", None, None)


def waive(services: Services, request: Request) -> Reply:
    """Open the form for an approver's reason to waive the item."""
    rejection, deployment, _, _ = _find(services, request.text)
    if rejection:
        return Reply(rejection)
    environment = services.config.environments[deployment.environment]
    if not has_role(services.directory, environment, "approvers", request.user_id):
        return Reply(messages.role_needed("approver", environment.name, "waive an item"))
    return Reply(
        "",
        form=Form(
            callback_id=WAIVE_FORM,
            title="Waive a checklist item",
            submit="Waive",
            fields=(FormField(REASON_FIELD, "Why may the release go on without it?", True),),
            metadata=request.text,
        ),
    )


def submit_waiver(services: Services, request: Request) -> Reply:
    reason = request.values.get(REASON_FIELD, "").strip()
    if not reason:
        return Reply("", errors={REASON_FIELD: messages.reason_required()})
    rejection, deployment, step, index = _find(services, request.text)
    if rejection is None:
        environment = services.config.environments[deployment.environment]
        if not has_role(services.directory, environment, "approvers", request.user_id):
            rejection = messages.role_needed("approver", environment.name, "waive an item")
    if rejection:
        return Reply(rejection, errors={REASON_FIELD: rejection})
    return _settle(services, request, deployment, step, index, "waived", "failed", reason)


def _settle(services, request, deployment, step, index, state, from_state, reason) -> Reply:
    now = services.clock.now()
    text = services.config.runbook.step(step.step_id).manual.items[index].text
    with services.db.session() as session:
        if not repository.lock_waiting_step(session, step.id):
            return Reply(messages.step_moved_on(step.title))
        current = repository.item_states(session, deployment.id, step.step_id).get(index)
        replaces = from_state if current is not None and current.state == from_state else None
        row = ChecklistItemState(
            deployment_id=deployment.id,
            step_id=step.step_id,
            item_index=index,
            state=state,
            user_id=request.user_id,
            decided_at=now,
            reason=reason,
        )
        if not repository.settle_item(session, row, replaces):
            return Reply(messages.item_already_settled(text))
        repository.audit(
            session,
            now=now,
            actor=request.user_id,
            action="item",
            deployment_id=deployment.id,
            step=step.step_id,
            item=index,
            state=state,
            reason=reason,
        )
        repository.queue_post(
            session,
            deployment_id=deployment.id,
            kind="item",
            step_id=step.step_id,
            text=str(index),
            created_at=now,
        )
        repository.wake(session, deployment.id)
        repository.mark_resuming(session, deployment.id, now)
    logger.info("Deployment %s: item %r %s by %s", deployment.id, text, state, request.user_id)
    services.worker.submit(deployment.id)
    services.observer.deployment_changed(deployment.id)
    return Reply(f"Recorded: *{text}* {state}.")


def _find(services: Services, value: str):
    deployment, step, rest = find_step(services, value)
    if deployment is None or step is None or step.kind != "manual" or not rest.isdigit():
        return messages.stale_button(), None, None, None
    items = services.config.runbook.step(step.step_id).manual.items
    index = int(rest)
    if index >= len(items):
        return messages.stale_button(), None, None, None
    if step.status != StepStatus.WAITING:
        return messages.not_waiting(step.title, step.status.value), None, None, None
    return None, deployment, step, index
