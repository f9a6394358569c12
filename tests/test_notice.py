"""The stakeholder notice: a form a deployer fills in before the notice is sent."""

import pytest

from commands import FORM_HANDLERS, button_handlers, notice
from commands.context import Request
from commands.deploy import handle as deploy
from storage import repository
from storage.models import OutboxMessage, StepStatus
from tests.support.inline import inline_services

RUNBOOK = """\
name: noticed
title: Noticed release
phases:
  - id: notify
    title: Notify
    steps:
      - id: tell
        title: Tell operations
        notify:
          to: [operations]
          mention: [on_call]
          ask:
            - name: window
              label: Maintenance window
          text: 'Release {{ version }}; window: {{ notice.window }}'
"""

ENVIRONMENTS = """\
environments:
  production:
    channel: C0PRODUCTION
    notify_channels:
      operations: C0OPERATIONS
    contacts:
      on_call: U0ONCALL
    roles:
      deployers: [U0RELEASE]
    hosts:
      app: [local]
"""


@pytest.fixture
def services(tmp_path):
    services = inline_services(tmp_path, RUNBOOK, ENVIRONMENTS)
    deploy(services, Request("U0RELEASE", "C0PRODUCTION", "v1.0.0 production", command="/deploy"))
    yield services
    services.db.dispose()


def fill(services, user: str, window: str):
    request = Request(user, "C0PRODUCTION", "1:tell", action_id=notice.WRITE)
    reply = button_handlers()[notice.WRITE](services, request)
    if reply.form is None:
        return reply
    submitted = Request(
        user, "", reply.form.metadata, action_id=reply.form.callback_id, values={"window": window}
    )
    return FORM_HANDLERS[reply.form.callback_id](services, submitted)


def notices(services) -> list[OutboxMessage]:
    with services.db.session() as session:
        rows = session.exec(repository.select(OutboxMessage)).all()
    return [row for row in rows if row.kind == "notify"]


def test_notice_waits_for_form(services):
    with services.db.session() as session:
        step = repository.steps_of(session, 1)[0]

    assert step.status == StepStatus.WAITING
    assert notices(services) == []


def test_filled_notice_is_sent(services):
    fill(services, "U0RELEASE", "Sunday 10:00 UTC")
    sent = notices(services)

    assert [row.channel for row in sent] == ["C0OPERATIONS"]
    assert sent[0].text == "<@U0ONCALL> Release v1.0.0; window: Sunday 10:00 UTC"


def test_empty_field_keeps_form_open(services):
    reply = fill(services, "U0RELEASE", "  ")

    assert reply.errors == {"window": "Fill this in; the notice is sent with it."}
    assert notices(services) == []


def test_notice_needs_deployer(services):
    reply = fill(services, "U0STRANGER", "Sunday")

    assert "You need the deployer role in `production`" in reply.text
    assert notices(services) == []
