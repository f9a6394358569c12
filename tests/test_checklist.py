"""Checklist items: ticked one by one, checked by the bot with evidence, or waived."""

import contextlib
import ssl
from datetime import timedelta

import pytest

from commands import FORM_HANDLERS, button_handlers, checklist
from commands.context import Request
from commands.deploy import handle as deploy
from commands.deploy_log import render_log
from storage import repository
from storage.models import DeploymentStatus, StepStatus
from tests.support.inline import inline_services
from tests.test_evidence import NOW, Certificates, LoopbackServer, _TlsHandshake

DEPLOYER = "U0RELEASE"
APPROVER = "U0APPROVER"

RUNBOOK = """\
name: listed
title: Listed release
phases:
  - id: ready
    title: Ready
    steps:
      - id: infra
        title: Infrastructure ready
        manual:
          items:
            - Reverse proxy configured
            - text: Disk space free
              check:
                disk_space:
                  hosts: app
                  path: '{{ backup_root }}'
                  minimum_gb: '{{ minimum_gb }}'
            - text: Certificate valid
              check:
                requires: [tls_address]
                tls:
                  address: '{{ tls_address }}'
                  ca_file: '{{ ca_file }}'
      - id: ship
        title: Ship
        run:
          hosts: app
          command: echo shipped
"""

ENVIRONMENTS = """\
environments:
  production:
    channel: C0PRODUCTION
    roles:
      deployers: [U0RELEASE]
      approvers: [U0APPROVER]
    hosts:
      app: [local]
    settings:
      backup_root: {backup_root}
      minimum_gb: '{minimum_gb}'
      tls_address: {tls_address}
      ca_file: {ca_file}
"""


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    return Certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_ports(certificates):
    with contextlib.ExitStack() as servers:

        def serve(label, not_before, not_after) -> int:
            cert, key = certificates.issue(
                label, names=["localhost", "127.0.0.1"], not_before=not_before, not_after=not_after
            )
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            return servers.enter_context(LoopbackServer(_TlsHandshake, tls_context=context)).port

        yield {
            "valid": serve("valid", NOW - timedelta(days=1), NOW + timedelta(days=90)),
            "expired": serve("expired", NOW - timedelta(days=60), NOW - timedelta(days=5)),
        }


def start(tmp_path, certificates, *, tls_port, minimum_gb="0"):
    environments = ENVIRONMENTS.format(
        backup_root=tmp_path,
        minimum_gb=minimum_gb,
        tls_address=f"127.0.0.1:{tls_port}" if tls_port else "null",
        ca_file=certificates.ca_file,
    )
    services = inline_services(tmp_path, RUNBOOK, environments)
    deploy(services, Request(DEPLOYER, "C0PRODUCTION", "v1.0.0 production", command="/deploy"))
    return services


def press(services, action: str, index: int, user: str):
    value = checklist.item_value(1, "infra", index)
    request = Request(user, "C0PRODUCTION", value, action_id=f"{action}.{index}")
    return button_handlers()[request.action_id](services, request)


def waive(services, index: int, user: str, reason: str):
    reply = press(services, checklist.WAIVE, index, user)
    if reply.form is None:
        return reply
    submitted = Request(
        user, "", reply.form.metadata, reply.form.callback_id, values={"reason": reason}
    )
    return FORM_HANDLERS[reply.form.callback_id](services, submitted)


def state(services):
    with services.db.session() as session:
        deployment = repository.get_deployment(session, 1)
        steps = {step.step_id: step for step in repository.steps_of(session, 1)}
        items = {row.item_index: row for row in repository.all_item_states(session, 1)}
        sign_offs = repository.sign_offs_of(session, 1)
    return deployment, steps, items, sign_offs


def test_bot_checks_items_with_evidence(tmp_path, certificates, tls_ports):
    services = start(tmp_path, certificates, tls_port=tls_ports["valid"])
    _, steps, items, _ = state(services)

    assert steps["infra"].status == StepStatus.WAITING
    assert set(items) == {1, 2}  # the proxy item waits for a person
    assert items[1].state == "passed"
    assert "GB free on" in items[1].evidence
    assert items[2].state == "passed"
    assert "is valid and expires in 89 days" in items[2].evidence  # 90 days less the run


def test_tick_records_who_and_finishes_step(tmp_path, certificates, tls_ports):
    services = start(tmp_path, certificates, tls_port=tls_ports["valid"])
    reply = press(services, checklist.TICK, 0, DEPLOYER)
    deployment, steps, items, _ = state(services)

    assert reply.text == "Recorded: *Reverse proxy configured* ticked."
    assert items[0].user_id == DEPLOYER
    assert items[0].decided_at is not None
    assert steps["infra"].status == StepStatus.PASSED
    assert deployment.status == DeploymentStatus.SUCCEEDED


def test_expired_certificate_needs_waiver(tmp_path, certificates, tls_ports):
    services = start(tmp_path, certificates, tls_port=tls_ports["expired"])
    press(services, checklist.TICK, 0, DEPLOYER)
    _, steps, items, _ = state(services)
    tick = press(services, checklist.TICK, 2, DEPLOYER)

    assert items[2].state == "failed"
    assert "expired 5 days ago" in items[2].evidence
    assert steps["infra"].status == StepStatus.WAITING
    assert "checks *Certificate valid* itself" in tick.text


def test_waiver_needs_approver_and_reason(tmp_path, certificates, tls_ports):
    services = start(tmp_path, certificates, tls_port=tls_ports["expired"])
    by_deployer = waive(services, 2, DEPLOYER, "renewal booked")
    empty = waive(services, 2, APPROVER, "  ")
    _, steps, items, _ = state(services)

    assert "You need the approver role in `production`" in by_deployer.text
    assert empty.errors == {"reason": "Give the reason, so the team knows what to fix."}
    assert items[2].state == "failed"
    assert steps["infra"].status == StepStatus.WAITING


def test_waiver_is_logged(tmp_path, certificates, tls_ports):
    services = start(tmp_path, certificates, tls_port=tls_ports["expired"])
    press(services, checklist.TICK, 0, DEPLOYER)
    reply = waive(services, 2, APPROVER, "Renewal is booked for tonight")
    deployment, steps, items, sign_offs = state(services)
    with services.db.session() as session:
        step_list = repository.steps_of(session, 1)
        all_items = repository.all_item_states(session, 1)
    log = render_log(services.config, deployment, step_list, sign_offs, all_items)

    assert reply.text == "Recorded: *Certificate valid* waived."
    assert items[2].user_id == APPROVER
    assert steps["infra"].status == StepStatus.PASSED
    assert "Certificate valid waived by U0APPROVER: Renewal is booked for tonight" in log


def test_low_disk_space_fails_item(tmp_path, certificates, tls_ports):
    services = start(tmp_path, certificates, tls_port=tls_ports["valid"], minimum_gb="1000000000")
    _, _, items, _ = state(services)

    assert items[1].state == "failed"
    assert "under the" in items[1].evidence


def test_item_without_configured_check_is_ticked(tmp_path, certificates):
    services = start(tmp_path, certificates, tls_port=None)
    _, _, items, _ = state(services)
    reply = press(services, checklist.TICK, 2, DEPLOYER)

    assert 2 not in items
    assert reply.text == "Recorded: *Certificate valid* ticked."


def test_tick_needs_role(tmp_path, certificates, tls_ports):
    services = start(tmp_path, certificates, tls_port=tls_ports["valid"])
    reply = press(services, checklist.TICK, 0, "U0STRANGER")

    assert "You need the deployer or approver role in `production`" in reply.text


def test_double_tick_changes_nothing(tmp_path, certificates, tls_ports):
    services = start(tmp_path, certificates, tls_port=tls_ports["expired"])
    press(services, checklist.TICK, 0, DEPLOYER)
    again = press(services, checklist.TICK, 0, APPROVER)
    _, _, items, _ = state(services)

    assert "was settled already" in again.text
    assert items[0].user_id == DEPLOYER
