"""The stakeholder notice: a deployer fills in the fields the runbook lists, then it is sent.

The runbook's notify step lists the fields (the maintenance window and the rollback plan in
the shipped runbook). The step waits until a deployer submits them in a form. The values are
stored with the deployment, so the notice, the log and any later process can use them.
"""

from commands import messages
from commands.context import Form, FormField, Reply, Request, Services
from commands.decisions import find_step, store_decision
from commands.roles import has_role
from storage import repository
from storage.models import StepStatus

WRITE = "notice.write"
FORM = "notice.submit"


def open_form(services: Services, request: Request) -> Reply:
    rejection, _, step = _check(services, request, request.text)
    if rejection is not None:
        return rejection
    ask = services.config.runbook.step(step.step_id).notify.ask
    return Reply(
        "",
        form=Form(
            callback_id=FORM,
            title="Stakeholder notice",
            submit="Send",
            fields=tuple(FormField(field.name, field.label, multiline=True) for field in ask),
            metadata=request.text,
        ),
    )


def submit(services: Services, request: Request) -> Reply:
    rejection, deployment, step = _check(services, request, request.text)
    ask = services.config.runbook.step(step.step_id).notify.ask if step else []
    if rejection is not None:
        # A form only shows field errors, so the refusal is shown on its first field.
        field = ask[0].name if ask else "notice"
        return Reply(rejection.text, errors={field: rejection.text})
    values = {field.name: request.values.get(field.name, "").strip() for field in ask}
    empty = {name: messages.field_required() for name, value in values.items() if not value}
    if empty:
        return Reply("", errors=empty)
    with services.db.session() as session:
        decided = [
            s for s in repository.sign_offs_of(session, deployment.id) if s.step_id == step.step_id
        ]
        if decided:  # someone sent the notice first; keep their text
            text = messages.already_decided(decided[0], step.title)
            return Reply(text, errors={ask[0].name: text})
        row = repository.get_deployment(session, deployment.id)
        notice = {f"notice.{name}": value for name, value in values.items()}
        row.variables = {**(row.variables or {}), **notice}
    return store_decision(services, request, deployment, step, "done")


def _check(services: Services, request: Request, value: str):
    deployment, step, _ = find_step(services, value)
    if deployment is None or step is None or step.kind != "notify":
        return Reply(messages.stale_button()), None, None
    if step.status != StepStatus.WAITING:
        return Reply(messages.not_waiting(step.title, step.status.value)), None, None
    environment = services.config.environments[deployment.environment]
    if not has_role(services.directory, environment, "deployers", request.user_id):
        action = "write the stakeholder notice"
        return Reply(messages.role_needed("deployer", environment.name, action)), None, None
    return None, deployment, step
