"""Rollback through Slack's HTTP interface: `/rollback`, its confirmation modal and the Roll back
button, with gonogo under gunicorn as in production.

As in test_end_to_end, the target host is a real OpenSSH sshd on 127.0.0.1 serving the sample
site, the bot keeps its state in a scratch PostgreSQL database, and Slack is the loopback
stand-in in tests/support. The runbook is the shipped one cut down to the backup, the running
version, the rollout and the API health check, plus its rollback section, so a release runs
with no one pressing buttons.

One server and one history serve every test, because each release takes seconds: release #1
of v11.0.0 succeeds, rollback #2 undoes it, and release #3 of v11.0.1 halts at its health
check. Module fixtures build that history in this order, so any test can also run alone.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from engine import backups
from sample import site as sample_site
from storage import repository
from storage.db import Database
from storage.models import DeploymentStatus, StepStatus
from tests.support.gonogo_server import PROJECT_DIR, GonogoServer
from tests.support.postgres import scratch_database
from tests.support.slack_requests import SlackRequester
from tests.support.slack_standin import Call, Message, SlackStandIn
from tests.support.target import cut_down_runbook, served_site, write_environments

T = TypeVar("T")

SIGNING_SECRET = "rollback-slack-signing-secret"
TEST_TOKEN = "rollback-slack-token-9b2e"
REQUESTER, ON_CALL, APPROVER, OUTSIDER = "U0RELEASE", "U0ONCALL", "U0APPROVER", "U0OUTSIDER"
CHANNEL = "C0PRODUCTION"
RELEASED_VERSION = "v11.0.0"  # release #1, which succeeds and is rolled back
HALTED_VERSION = "v11.0.1"  # release #3, whose health check fails
PREVIOUS_VERSION = sample_site.DEFAULT_VERSION  # what the sample site runs before any release
OPEN_ACTION = "rollback.open"
CONFIRM_CALLBACK = "rollback.confirm"
SLACK_DEADLINE = 3.0  # seconds Slack waits for an acknowledgement, and a trigger_id lasts
RUN_TIMEOUT = 90.0
FINISHED_WORDS = ("Deployed", "Failed", "Rejected", "Cancelled", "Rolled back")


# --- the site, the bot and the history the tests share ---------------------------------------


@dataclass
class Bot:
    """gonogo under gunicorn, the Slack stand-in it talks to and a signed-request sender."""

    server: GonogoServer
    slack: SlackStandIn
    requester: SlackRequester
    db: Database  # the bot's database, read by the tests

    def wait_for(self, predicate: Callable[[], T], awaited: str, timeout: float = 10.0) -> T:
        """Wait as SlackStandIn.wait_for does, adding gonogo's log to a timeout's message."""
        try:
            return self.slack.wait_for(predicate, timeout, description=awaited)
        except AssertionError as error:
            raise AssertionError(f"{error}\ngonogo's log:\n{self.server.tail()}") from None


@dataclass
class Modal:
    """A modal gonogo opened for one request, and the views.update that filled in its plan."""

    response: httpx.Response
    trigger_id: str
    ack_seconds: float  # from sending the request to its HTTP response
    open_seconds: float  # from sending the request to the views.open call
    opening: dict[str, Any]  # the view sent with views.open
    opened: Call
    update: Call


@dataclass
class RolledBack:
    submission: httpx.Response
    message: Message  # the rollback's checklist message


@dataclass
class Halted:
    release_id: int
    message: Message  # the release's checklist message
    alert: Message


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rollback-slack")


@pytest.fixture(scope="module")
def target(workdir):
    with served_site(workdir, "gonogo_rollback_slack_site", TEST_TOKEN) as served:
        yield served


@pytest.fixture(scope="module")
def bot(workdir, target):
    site, sshd = target
    runbook = cut_down_runbook(workdir / "runbook.yml")
    roles = {"deployers": [REQUESTER], "approvers": [APPROVER], "on_call": [ON_CALL]}
    environments = write_environments(
        workdir / "environments.yml", site, sshd, roles, "GONOGO_ROLLBACK_SLACK_TEST_TOKEN"
    )
    with SlackStandIn() as slack, scratch_database("gonogo_rollback_slack_bot") as database_url:
        env = {
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.base_url,
            "DATABASE_URL": database_url,
            "GONOGO_ENVIRONMENTS": str(environments),
            "GONOGO_RUNBOOK": str(runbook),
            "GONOGO_UPDATE_INTERVAL": "0.2",
            "GONOGO_POST_INTERVAL": "0.2",
            "GONOGO_ROLLBACK_SLACK_TEST_TOKEN": TEST_TOKEN,
            "GONOGO_HOME": str(workdir / "home"),
        }
        db = Database(database_url)
        try:
            with GonogoServer(workdir, env) as server:
                with SlackRequester(server.url + "/slack/events", SIGNING_SECRET) as requester:
                    yield Bot(server, slack, requester, db)
        finally:
            db.dispose()


@pytest.fixture(scope="module")
def released(bot) -> Message:
    """Run release #1 of v11.0.0 to its end and return its checklist message."""
    response = bot.requester.command(
        "/deploy", f"{RELEASED_VERSION} production", user_id=REQUESTER, channel_id="C0REQUEST"
    )
    assert "Started deployment #1" in response.json()["text"]
    message = wait_until_finished(bot, f"{RELEASED_VERSION} → production")
    assert header(message) == f"{RELEASED_VERSION} → production: Deployed", bot.server.tail()
    return message


@pytest.fixture(scope="module")
def rollback_modal(bot, released) -> Modal:
    """Send `/rollback production` as the on-call engineer and return the modal it opened."""

    def send(trigger_id: str) -> httpx.Response:
        return bot.requester.command(
            "/rollback", "production", user_id=ON_CALL, channel_id=CHANNEL, trigger_id=trigger_id
        )

    return open_modal(bot, send)


@pytest.fixture(scope="module")
def rolled_back(bot, rollback_modal) -> RolledBack:
    """Submit the plan in rollback_modal and wait for the rollback to end."""
    view = rollback_modal.update.args["view"]
    submission = bot.requester.view_submission(
        view["callback_id"],
        {},
        user_id=ON_CALL,
        private_metadata=view["private_metadata"],
        view_id=rollback_modal.update.args["view_id"],
    )
    message = wait_until_finished(bot, f"Quick rollback of {RELEASED_VERSION} in production")
    return RolledBack(submission, message)


@pytest.fixture(scope="module")
def halted(bot, target, rolled_back) -> Halted:
    """Run release #3 of v11.0.1, whose new service reports DOWN, until it halts."""
    site, _ = target
    # The sample service reads this line at its next start, and pin-version keeps it in .env.
    with site.env_file.open("a") as env_file:
        env_file.write("SAMPLE_HEALTH=down\n")
    response = bot.requester.command(
        "/deploy", f"{HALTED_VERSION} production", user_id=REQUESTER, channel_id="C0REQUEST"
    )
    assert "Started deployment #3" in response.json()["text"]
    message = wait_until_finished(bot, f"{HALTED_VERSION} → production")
    alert = bot.wait_for(
        lambda: next((m for m in bot.slack.thread(CHANNEL, message.ts) if m.reply_broadcast), None),
        "the alert of release #3",
    )
    return Halted(release_id=3, message=message, alert=alert)


# --- tests -----------------------------------------------------------------------------------


def test_rollback_command_opens_the_plan(bot, rollback_modal):
    opening = rollback_modal.opening
    plan = rollback_modal.update.args["view"]
    text = view_text(plan)
    with bot.db.session() as session:
        backup = repository.backup_of(session, 1)

    # Acknowledged in time, with an empty body, and the trigger used within its lifetime.
    assert rollback_modal.response.status_code == 200
    assert rollback_modal.response.text == ""
    assert rollback_modal.ack_seconds < SLACK_DEADLINE
    assert rollback_modal.open_seconds < SLACK_DEADLINE
    assert rollback_modal.opened.ok
    assert rollback_modal.opened.args["trigger_id"] == rollback_modal.trigger_id

    # The modal opens at once with a placeholder that cannot be submitted.
    assert opening["callback_id"] == CONFIRM_CALLBACK
    assert "submit" not in opening
    assert opening["close"]["text"] == "Close"
    assert view_text(opening) == "Working out the plan…"

    # Then the same view is replaced by the plan.
    assert rollback_modal.update.ok
    assert rollback_modal.update.args["view_id"] == rollback_modal.opened.response["view"]["id"]
    assert plan["callback_id"] == CONFIRM_CALLBACK
    assert plan["private_metadata"] == "1:quick"
    assert plan["title"]["text"] == "Quick rollback"
    assert plan["submit"]["text"] == "Roll back"
    assert plan["close"]["text"] == "Cancel"
    assert f"of `{RELEASED_VERSION}` in `production`" in text
    assert f"back to `{PREVIOUS_VERSION}`" in text
    assert "by deployment #1" in text
    assert "Quick rollback is open until" in text

    # The backup as recorded in the database, which still matches the dump on the host.
    dump = Path(backup.location) / backup.dump
    assert f"SHA-256 `{backup.sha256}`" in text
    assert hashlib.sha256(dump.read_bytes()).hexdigest() == backup.sha256
    assert backups.describe(backup.size_bytes) in text
    assert f"Folder `{backup.location}`" in text
    assert f"{backup.row_count} approval rows" in text

    # Every step of a quick rollback and its verification, numbered in order.
    for number, title in enumerate(quick_rollback_titles(), 1):
        assert f"\n{number}. {title}" in text, title
    assert "restores the database" not in text  # that warning belongs to a full rollback

    view_id = rollback_modal.update.args["view_id"]
    stored_view = next(view for view in bot.slack.views() if view.id == view_id)
    assert stored_view.current == plan
    assert bot.slack.violations == []


def test_confirming_rolls_back_to_previous_version(bot, target, rolled_back):
    site, _ = target
    with bot.db.session() as session:
        rollbacks = repository.children_of(session, 1)
        steps = repository.steps_of(session, rollbacks[0].id) if rollbacks else []
    context = rolled_back.message.blocks[1]["elements"][0]["text"]

    assert rolled_back.submission.status_code == 200
    answer = rolled_back.submission.json()
    assert answer["response_action"] == "update"  # the modal now shows where to follow it
    assert answer["view"]["title"]["text"] == "Rollback started"
    assert "Started rollback #2" in view_text(answer["view"])
    assert [(r.id, r.procedure, r.requested_by) for r in rollbacks] == [
        (2, "rollback:quick", ON_CALL)
    ]
    assert rollbacks[0].status == DeploymentStatus.SUCCEEDED, rollbacks[0].error
    assert {step.status for step in steps} == {StepStatus.PASSED}
    assert header(rolled_back.message) == (
        f"Quick rollback of {RELEASED_VERSION} in production: Rolled back"
    )
    assert "Rollback #2" in context
    assert "of deployment #1" in context
    assert f"<@{ON_CALL}>" in context
    assert buttons(rolled_back.message) == []
    assert health(site)["version"] == PREVIOUS_VERSION
    assert bot.slack.violations == []


def test_second_confirmation_rejected_in_modal(bot, rollback_modal, rolled_back):
    view = rollback_modal.update.args["view"]

    again = bot.requester.view_submission(
        view["callback_id"],
        {},
        user_id=ON_CALL,
        private_metadata=view["private_metadata"],
        view_id=rollback_modal.update.args["view_id"],
    )
    answer = again.json()
    with bot.db.session() as session:
        rollbacks = repository.children_of(session, 1)

    assert again.status_code == 200
    assert answer["response_action"] == "update"
    assert answer["view"]["title"]["text"] == "Cannot roll back"
    assert "submit" not in answer["view"]
    assert "already rolled back by deployment #2" in view_text(answer["view"])
    assert [r.id for r in rollbacks] == [2]


def test_rollback_needs_a_role(bot):
    trigger_id = bot.requester.new_trigger_id()

    response = bot.requester.command(
        "/rollback", "production", user_id=OUTSIDER, channel_id=CHANNEL, trigger_id=trigger_id
    )
    reply = response.json()

    assert response.status_code == 200
    assert reply["response_type"] == "ephemeral"
    assert "deployer or on-call engineer role" in reply["text"]
    assert "`production`" in reply["text"]
    # bot.app acknowledges a form with an empty body and a refusal with its text. So a refusal
    # in the body means the listener took the branch that never calls views.open.
    assert opened_with(bot.slack, trigger_id) == []


def test_halted_release_offers_rollback(bot, target, halted):
    site, _ = target
    with bot.db.session() as session:
        release = repository.get_deployment(session, halted.release_id)
        steps = repository.steps_of(session, halted.release_id)
    failed = [step.step_id for step in steps if step.status == StepStatus.FAILED]
    expected = [(OPEN_ACTION, str(halted.release_id))]

    assert release.version == HALTED_VERSION
    assert release.status == DeploymentStatus.FAILED
    assert failed == ["api-health"]
    assert health(site)["status"] == "DOWN"
    assert header(halted.message) == f"{HALTED_VERSION} → production: Failed"
    assert [(b["action_id"], b["value"]) for b in buttons(halted.message)] == expected
    assert "API server is healthy" in halted.alert.text
    assert [(b["action_id"], b["value"]) for b in buttons(halted.alert)] == expected
    assert bot.slack.violations == []


def test_roll_back_button_opens_the_plan(bot, halted):
    def press(message: Message) -> Callable[[str], httpx.Response]:
        def send(trigger_id: str) -> httpx.Response:
            return bot.requester.action(
                OPEN_ACTION,
                str(halted.release_id),
                user_id=ON_CALL,
                channel_id=CHANNEL,
                message_ts=message.ts,
                trigger_id=trigger_id,
            )

        return send

    for message in (halted.alert, halted.message):
        modal = open_modal(bot, press(message))
        plan = modal.update.args["view"]
        text = view_text(plan)

        assert modal.response.status_code == 200
        assert modal.open_seconds < SLACK_DEADLINE
        assert modal.opening["callback_id"] == CONFIRM_CALLBACK
        assert view_text(modal.opening) == "Working out the plan…"
        assert modal.update.ok
        assert plan["private_metadata"] == f"{halted.release_id}:quick"
        assert plan["submit"]["text"] == "Roll back"
        assert f"of `{HALTED_VERSION}` in `production`" in text
        assert f"back to `{PREVIOUS_VERSION}`" in text
        assert f"by deployment #{halted.release_id}" in text
    assert bot.slack.violations == []


def test_roll_back_button_needs_a_role(bot, halted):
    trigger_id = bot.requester.new_trigger_id()
    name = f"outsider-rollback-{trigger_id}"

    response = bot.requester.action(
        OPEN_ACTION,
        str(halted.release_id),
        user_id=OUTSIDER,
        channel_id=CHANNEL,
        message_ts=halted.message.ts,
        trigger_id=trigger_id,
        response_url=bot.slack.response_url(name),
    )
    replies = bot.wait_for(lambda: bot.slack.responses(name), "the refusal at the response_url")

    assert response.status_code == 200
    assert len(replies) == 1
    assert replies[0]["response_type"] == "ephemeral"
    assert replies[0]["replace_original"] is False
    assert "deployer or on-call engineer role" in replies[0]["text"]
    # bot.app sends a button's reply either to views.open or to the response_url, not both.
    assert opened_with(bot.slack, trigger_id) == []


# --- the runbook and the environments --------------------------------------------------------


def quick_rollback_titles() -> list[str]:
    rollback = yaml.safe_load((PROJECT_DIR / "runbooks" / "vvb-v11.yml").read_text())["rollback"]
    return [step["title"] for step in rollback["quick"]["steps"] + rollback["verify"]["steps"]]


# --- helpers ---------------------------------------------------------------------------------


def open_modal(bot: Bot, send: Callable[[str], httpx.Response]) -> Modal:
    """Send a request with a fresh trigger_id and wait for the modal and its filled-in plan."""
    trigger_id = bot.requester.new_trigger_id()
    started = time.monotonic()
    response = send(trigger_id)
    ack_seconds = time.monotonic() - started
    opened = bot.wait_for(
        lambda: opened_with(bot.slack, trigger_id), f"views.open with trigger_id {trigger_id}"
    )[0]
    open_seconds = time.monotonic() - started
    view_id = opened.response["view"]["id"]
    update = bot.wait_for(
        lambda: [c for c in bot.slack.calls("views.update") if c.args.get("view_id") == view_id],
        f"views.update of {view_id}",
    )[0]
    return Modal(
        response=response,
        trigger_id=trigger_id,
        ack_seconds=ack_seconds,
        open_seconds=open_seconds,
        opening=opened.args["view"],
        opened=opened,
        update=update,
    )


def opened_with(slack: SlackStandIn, trigger_id: str) -> list[Call]:
    return [call for call in slack.calls("views.open") if call.args["trigger_id"] == trigger_id]


def wait_until_finished(bot: Bot, headline: str) -> Message:
    """Wait for the checklist message whose header begins with ``headline`` to show an end."""

    def finished() -> Message | None:
        message = checklist(bot.slack, headline)
        if message is not None and header(message).split(": ")[-1] in FINISHED_WORDS:
            return message
        return None

    return bot.wait_for(finished, f"the checklist of “{headline}” to end", RUN_TIMEOUT)


def checklist(slack: SlackStandIn, headline: str) -> Message | None:
    for message in slack.messages(CHANNEL):
        blocks = message.blocks or []
        if blocks and blocks[0]["type"] == "header" and header(message).startswith(headline):
            return message
    return None


def header(message: Message) -> str:
    return message.blocks[0]["text"]["text"]


def buttons(message: Message) -> list[dict[str, Any]]:
    return [
        element
        for block in message.blocks or []
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def view_text(view: dict[str, Any]) -> str:
    """Return the texts of a view's section blocks, joined as form_view split them."""
    return "\n\n".join(
        block["text"]["text"] for block in view["blocks"] if block["type"] == "section"
    )


def health(site) -> dict[str, Any]:
    return httpx.get(f"{site.api_url}/q/health", timeout=5).json()
