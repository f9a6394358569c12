"""The final sign-off: three roles, a rejection with a reason, reminders, and the Slack form."""

import threading
import time
from datetime import timedelta
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot import views
from bot.app import build_app
from bot.scheduler import Worker
from bot.slack_port import web_client
from commands import FORM_HANDLERS, button_handlers, signoff, slash_commands
from commands.context import Request, Services
from commands.decisions import find_step, store_decision
from commands.deploy_log import render_log
from commands.roles import StaticDirectory
from engine.config import load_config
from engine.reminders import remind_pending_signoffs
from engine.runner import Runner
from storage import repository
from storage.db import Database
from storage.models import DeploymentStatus, StepStatus
from tests.support.block_kit import message_errors, view_errors
from tests.support.inline import InlineWorker, NoObserver
from tests.support.slack_requests import SlackRequester
from tests.support.slack_standin import SlackStandIn

DEPLOYER = "U0RELEASE"
VALIDATOR = "U0VALIDATOR"
APPROVER = "U0APPROVER"
BOTH = "U0BOTH"  # a deployer who is also an approver
VALUE = "1:final"

RUNBOOK = """\
name: signed
title: Signed release
phases:
  - id: release
    title: Release
    steps:
      - id: ship
        title: Ship
        run:
          hosts: app
          command: echo shipped
  - id: final
    title: Final sign-off
    command: /signoff
    steps:
      - id: final
        title: Final checklist
        signoff:
          items: [Backup verified, Team notified]
"""

ENVIRONMENTS = """\
environments:
  production:
    channel: C0PRODUCTION
    separate_authorizer: {separate}
    signoff_reminder_minutes: 20
    roles:
      deployers: [U0RELEASE, U0BOTH]
      validators: [U0VALIDATOR]
      approvers: [U0APPROVER, U0BOTH]
    hosts:
      app: [local]
"""


class FakeClock:
    def __init__(self, start):
        self.moment = start

    def now(self):
        return self.moment


def make_services(tmp_path, separate: bool = True) -> Services:
    (tmp_path / "runbook.yml").write_text(RUNBOOK)
    text = ENVIRONMENTS.format(separate="true" if separate else "false")
    (tmp_path / "environments.yml").write_text(text)
    config = load_config(tmp_path / "runbook.yml", tmp_path / "environments.yml")
    db = Database(f"sqlite:///{tmp_path / 'gonogo.db'}")
    db.migrate()
    return Services(
        config=config,
        db=db,
        worker=InlineWorker(Runner(db, config, owner="test")),
        directory=StaticDirectory(),
        observer=NoObserver(),
    )


@pytest.fixture
def services(tmp_path):
    services = make_services(tmp_path)
    request = Request(DEPLOYER, "C0PRODUCTION", "v3.0.0 production", command="/deploy")
    slash_commands(services.config)["/deploy"](services, request)
    yield services
    services.db.dispose()


def sign(services, slot: str, user: str) -> str:
    request = Request(user, "C0PRODUCTION", VALUE, action_id=signoff.sign_action(slot))
    return button_handlers()[request.action_id](services, request).text


def reject(services, user: str, reason: str):
    request = Request(user, "C0PRODUCTION", VALUE, action_id=signoff.REJECT)
    form = button_handlers()[signoff.REJECT](services, request).form
    submitted = Request(
        user, "", form.metadata, action_id=form.callback_id, values={signoff.REASON_FIELD: reason}
    )
    return form, FORM_HANDLERS[form.callback_id](services, submitted)


def state(services):
    with services.db.session() as session:
        deployment = repository.get_deployment(session, 1)
        steps = repository.steps_of(session, 1)
        sign_offs = repository.sign_offs_of(session, 1)
    return deployment, {step.step_id: step for step in steps}, steps, sign_offs


def test_run_waits_for_signoff(services):
    deployment, steps, _, _ = state(services)

    assert deployment.status == DeploymentStatus.WAITING
    assert steps["ship"].status == StepStatus.PASSED
    assert steps["final"].status == StepStatus.WAITING


def test_three_signatures_finish(services):
    replies = [
        sign(services, "deployed_by", DEPLOYER),
        sign(services, "validated_by", VALIDATOR),
        sign(services, "authorized_by", APPROVER),
    ]
    deployment, steps, step_list, sign_offs = state(services)
    log = render_log(services.config, deployment, step_list, sign_offs)

    assert all("signed" in reply for reply in replies)
    assert deployment.status == DeploymentStatus.SUCCEEDED
    assert steps["final"].status == StepStatus.PASSED
    assert f"- Deployed by: {DEPLOYER} at " in log
    assert f"- Validated by: {VALIDATOR} at " in log
    assert f"- Authorized by: {APPROVER} at " in log


def test_partial_signoff_keeps_waiting(services):
    sign(services, "deployed_by", DEPLOYER)
    deployment, steps, _, _ = state(services)

    assert deployment.status == DeploymentStatus.WAITING
    assert steps["final"].status == StepStatus.WAITING


@pytest.mark.parametrize(
    "slot, user, role",
    [
        ("deployed_by", VALIDATOR, "deployer"),
        ("validated_by", DEPLOYER, "validator"),
        ("authorized_by", VALIDATOR, "approver"),
    ],
)
def test_slot_needs_its_role(services, slot, user, role):
    reply = sign(services, slot, user)
    _, _, _, sign_offs = state(services)

    assert f"You need the {role} role in `production`" in reply
    assert sign_offs == []


def test_authorizer_may_not_be_deployer(services):
    sign(services, "deployed_by", BOTH)
    reply = sign(services, "authorized_by", BOTH)
    other_order = sign(services, "validated_by", VALIDATOR)

    assert "may not also sign *Authorized by*" in reply
    assert "signed" in other_order


def test_same_person_allowed_when_configured(tmp_path):
    services = make_services(tmp_path, separate=False)
    request = Request(DEPLOYER, "C0PRODUCTION", "v3.0.0 production", command="/deploy")
    slash_commands(services.config)["/deploy"](services, request)
    sign(services, "deployed_by", BOTH)
    reply = sign(services, "authorized_by", BOTH)
    services.db.dispose()

    assert "signed" in reply


def test_second_signature_changes_nothing(services):
    sign(services, "deployed_by", DEPLOYER)
    reply = sign(services, "deployed_by", BOTH)
    _, _, _, sign_offs = state(services)

    assert "already signed by <@U0RELEASE>" in reply
    assert [s.user_id for s in sign_offs] == [DEPLOYER]


def test_reject_needs_reason(services):
    form, reply = reject(services, APPROVER, "   ")
    deployment, _, _, _ = state(services)

    assert form.title == "Reject the sign-off"
    assert reply.errors == {signoff.REASON_FIELD: "Give the reason, so the team knows what to fix."}
    assert deployment.status == DeploymentStatus.WAITING


def test_reject_with_reason_fails(services):
    _, reply = reject(services, VALIDATOR, "Webhooks still fail for one validator")
    deployment, steps, step_list, sign_offs = state(services)
    log = render_log(services.config, deployment, step_list, sign_offs)

    assert "rejected" in reply.text
    assert deployment.status == DeploymentStatus.FAILED
    assert steps["final"].status == StepStatus.FAILED
    assert "Webhooks still fail for one validator" in steps["final"].error
    assert f"Sign-off rejected by {VALIDATOR}" in log


def test_reject_needs_a_signoff_role(services):
    request = Request("U0STRANGER", "C0PRODUCTION", VALUE, action_id=signoff.REJECT)
    reply = button_handlers()[signoff.REJECT](services, request)

    assert reply.form is None
    assert "deployer, validator or approver role" in reply.text


def test_signoff_blocks_within_limits(services):
    sign(services, "deployed_by", DEPLOYER)
    deployment, _, steps, sign_offs = state(services)
    text, blocks = views.checklist_message(services.config, deployment, steps, sign_offs)
    actions = [b for b in blocks if b["type"] == "actions"][0]["elements"]

    assert message_errors(blocks) == []
    assert text.endswith("waiting for Final checklist (1/2)")
    assert [button["text"]["text"] for button in actions] == [
        "Sign: Validated by",
        "Sign: Authorized by",
        "Reject",
    ]


def test_reason_form_within_limits(services):
    form, _ = reject(services, APPROVER, "")

    assert view_errors(views.form_view(form)) == []


def test_reminder_after_interval(services):
    _, steps, _, _ = state(services)
    started = steps["final"].started_at
    clock = FakeClock(started + timedelta(minutes=19))
    early = remind_pending_signoffs(services.db, services.config, clock)
    clock.moment = started + timedelta(minutes=21)
    due = remind_pending_signoffs(services.db, services.config, clock)
    again = remind_pending_signoffs(services.db, services.config, clock)
    clock.moment = started + timedelta(minutes=42)
    later = remind_pending_signoffs(services.db, services.config, clock)
    with services.db.session() as session:
        kinds = [row.kind for row in session.exec(repository.select(repository.OutboxMessage))]

    assert early == []
    assert due == [1]
    assert again == []
    assert later == [1]
    assert kinds.count("reminder") == 2


def test_reminder_names_open_slots(services):
    sign(services, "deployed_by", DEPLOYER)
    deployment, steps, _, sign_offs = state(services)
    text = views.reminder_message(services.config, deployment, steps["final"], sign_offs)

    assert "*Validated by* (<@U0VALIDATOR>)" in text
    assert "*Authorized by* (<@U0APPROVER>, <@U0BOTH>)" in text
    assert "Deployed by" not in text


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002  (the stdlib's parameter name)
        pass


def test_reject_form_through_slack(services):
    secret = "form-test-secret"
    with SlackStandIn() as slack:
        client = web_client(slack.token, slack.base_url)
        app = build_app(services, client, secret)
        server = make_server("127.0.0.1", 0, SlackRequestHandler(app), handler_class=QuietHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_port}/slack/events"
        try:
            with SlackRequester(url, secret) as requester:
                pressed = requester.action(
                    signoff.REJECT,
                    VALUE,
                    user_id=APPROVER,
                    channel_id="C0PRODUCTION",
                    message_ts="1.0",
                )
                opened = slack.wait_for(lambda: slack.calls("views.open"), timeout=10)
                view = opened[0].args["view"]
                empty = requester.view_submission(
                    view["callback_id"],
                    {signoff.REASON_FIELD: {"value": " "}},
                    user_id=APPROVER,
                    private_metadata=view["private_metadata"],
                )
                given = requester.view_submission(
                    view["callback_id"],
                    {signoff.REASON_FIELD: {"value": "Metrics are missing"}},
                    user_id=APPROVER,
                    private_metadata=view["private_metadata"],
                )
        finally:
            server.shutdown()
    deployment, steps, _, _ = state(services)

    assert pressed.status_code == 200
    assert view["callback_id"] == signoff.REASON_FORM
    assert empty.json()["response_action"] == "errors"
    assert signoff.REASON_FIELD in empty.json()["errors"]
    assert given.status_code == 200
    assert deployment.status == DeploymentStatus.FAILED
    assert "Metrics are missing" in steps["final"].error


def test_rejected_signoff_is_not_rerun(services):
    reject(services, APPROVER, "Smoke tests are red")
    reply = slash_commands(services.config)["/signoff"](
        services, Request(DEPLOYER, "C0PRODUCTION", "", command="/signoff")
    )

    assert "was rejected, and that decision stands" in reply.text


def test_same_signer_on_both_slots_fails(services):
    # Two presses at once can each pass the check alone; store both as that race would.
    for slot, user in (("deployed_by", BOTH), ("validated_by", VALIDATOR)):
        sign(services, slot, user)
    deployment, step, _ = find_step(services, VALUE)
    store_decision(
        services,
        Request(BOTH, "C0PRODUCTION", VALUE, action_id=signoff.sign_action("authorized_by")),
        deployment,
        step,
        "signed",
        slot="authorized_by",
    )
    deployment, steps, _, _ = state(services)

    assert deployment.status == DeploymentStatus.FAILED
    assert steps["final"].error == "U0BOTH signed both Deployed by and Authorized by"


def test_thread_message_names_slot_and_reason(services):
    sign(services, "deployed_by", DEPLOYER)
    reject(services, VALIDATOR, "Webhooks fail")
    _, steps, _, sign_offs = state(services)
    texts = [views.decision_message(s, steps["final"]) for s in sign_offs]

    assert texts[0].startswith(":white_check_mark: <@U0RELEASE> signed *Final checklist* as")
    assert "as Deployed by" in texts[0]
    assert texts[1].startswith(":no_entry: <@U0VALIDATOR> rejected *Final checklist*")
    assert texts[1].endswith(": Webhooks fail")


def test_scheduler_job_sends_reminder(services):
    _, steps, _, _ = state(services)
    clock = FakeClock(steps["final"].started_at + timedelta(minutes=21))
    clock.sleep = time.sleep
    clock.monotonic = time.monotonic
    worker = Worker(
        Runner(services.db, services.config, owner="test", clock=clock),
        services.db,
        sweep_seconds=3600,
        remind_seconds=0.2,
        clock=clock,
    )
    worker.start()
    try:
        deadline = time.monotonic() + 10
        kinds: list[str] = []
        while time.monotonic() < deadline and "reminder" not in kinds:
            time.sleep(0.1)
            with services.db.session() as session:
                rows = session.exec(repository.select(repository.OutboxMessage))
                kinds = [row.kind for row in rows]
    finally:
        worker.stop()

    assert kinds.count("reminder") == 1
