"""The Socket Mode worker, `gonogo socket`, against loopback stand-ins for Slack.

gonogo runs as a separate process, as in production. `SlackStandIn` plays Slack's Web API and
`SocketModeStandIn` plays Slack's side of the WebSocket. Every runbook step is a manual check,
so no command runs on a host.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from slack_sdk.errors import SlackApiError
from sqlmodel import select
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from storage import repository
from storage.db import Database
from storage.models import Deployment, StepStatus
from tests.support.gonogo_server import PROJECT_DIR
from tests.support.slack_standin import SlackStandIn
from tests.support.socket_mode_standin import ACK_DEADLINE_SECONDS, SocketModeStandIn

REQUESTER = "U0RELEASE"
APPROVER = "U0APPROVER"
CHANNEL = "C0PRODUCTION"
REQUEST_CHANNEL = "C0REQUEST"
APP_TOKEN = "xapp-1-A0GONOGO-socket-mode-test"
CONNECT_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0

RUNBOOK = """\
name: socket-mode
title: Socket Mode release
phases:
  - id: release
    title: Release
    steps:
      - id: freeze-window
        title: Change window is open
        manual:
          items: [The change freeze is announced]
      - id: smoke-test
        title: Smoke test passed
        manual:
          items: [The login page loads]
"""

ENVIRONMENTS = f"""\
environments:
  production:
    channel: {CHANNEL}
    roles:
      deployers: [{REQUESTER}]
      approvers: [{APPROVER}]
    hosts:
      app: [local]
"""


class SocketWorker:
    """Runs `python -m bot.main socket` with its output in a log file, and stops it."""

    def __init__(self, tmp_path: Path, slack: SlackStandIn):
        self.log = tmp_path / "gonogo-socket.log"
        self.database_url = f"sqlite:///{tmp_path / 'gonogo.db'}"
        (tmp_path / "runbook.yml").write_text(RUNBOOK)
        (tmp_path / "environments.yml").write_text(ENVIRONMENTS)
        self.env = {
            **os.environ,
            "SLACK_BOT_TOKEN": slack.token,
            "SLACK_APP_TOKEN": APP_TOKEN,
            "SLACK_API_URL": slack.base_url,
            "DATABASE_URL": self.database_url,
            "GONOGO_RUNBOOK": str(tmp_path / "runbook.yml"),
            "GONOGO_ENVIRONMENTS": str(tmp_path / "environments.yml"),
            "GONOGO_HOME": str(tmp_path / "home"),
            "GONOGO_UPDATE_INTERVAL": "0.2",
            "GONOGO_POST_INTERVAL": "0.2",
            "PYTHONUNBUFFERED": "1",
        }
        for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            self.env.pop(variable, None)
        for variable in ("SLACK_SIGNING_SECRET", "SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET"):
            self.env.pop(variable, None)
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "bot.main", "socket"],
                cwd=PROJECT_DIR,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def tail(self, lines: int = 60) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def slack():
    with SlackStandIn() as standin:
        yield standin


@pytest.fixture
def socket_mode(slack):
    with SocketModeStandIn(slack, APP_TOKEN) as standin:
        yield standin


@pytest.fixture
def worker(tmp_path, slack, socket_mode):
    worker = SocketWorker(tmp_path, slack)
    worker.start()
    try:
        try:
            socket_mode.wait_connected(CONNECT_TIMEOUT, alive=worker.running)
        except AssertionError as error:
            raise AssertionError(f"{error}\ngonogo's log:\n{worker.tail()}") from error
        yield worker
    finally:
        worker.stop()


def test_deploy_acked_and_posted(worker, slack, socket_mode):
    envelope_id = socket_mode.send_slash_command(
        "/deploy", "v11.0.0 production", user_id=REQUESTER, channel_id=REQUEST_CHANNEL
    )
    ack = socket_mode.wait_for_ack(envelope_id, timeout=ACK_DEADLINE_SECONDS)
    message = slack.wait_for(lambda: checklist(slack), description="the checklist message")
    post = next(call for call in slack.calls("chat.postMessage") if call.ok)

    assert ack.delay < ACK_DEADLINE_SECONDS
    assert "Started deployment #1" in ack.payload["text"]
    assert "`v11.0.0` to `production`" in ack.payload["text"]
    assert post.args["channel"] == CHANNEL
    assert header(message).startswith("v11.0.0 → production")
    assert post.response["ts"] == message.ts
    assert slack.violations == []
    assert socket_mode.problems == []
    assert APP_TOKEN not in worker.log.read_text()
    assert slack.token not in worker.log.read_text()


def test_deploy_to_unknown_environment(worker, slack, socket_mode):
    envelope_id = socket_mode.send_slash_command(
        "/deploy", "v11.0.0 moon", user_id=REQUESTER, channel_id=REQUEST_CHANNEL
    )
    ack = socket_mode.wait_for_ack(envelope_id, timeout=ACK_DEADLINE_SECONDS)
    deployments = stored_deployment_ids(worker.database_url)

    assert ack.delay < ACK_DEADLINE_SECONDS
    assert "Environment `moon` is not defined" in ack.payload["text"]
    assert "`production`" in ack.payload["text"]
    assert deployments == []
    assert slack.calls("chat.postMessage") == []
    assert socket_mode.problems == []


def test_button_press_records_step(worker, slack, socket_mode):
    socket_mode.wait_for_ack(
        socket_mode.send_slash_command(
            "/deploy", "v11.0.0 production", user_id=REQUESTER, channel_id=REQUEST_CHANNEL
        )
    )
    message = slack.wait_for(
        lambda: waiting_message(slack, "1:freeze-window:0"), description="the first item's button"
    )
    block_id, button = button_block(message)
    envelope_id = socket_mode.send_block_actions(
        action_id=button["action_id"],
        value=button["value"],
        block_id=block_id,
        user_id=REQUESTER,
        channel_id=CHANNEL,
        message_ts=message.ts,
        response_url=slack.response_url("press"),
    )
    ack = socket_mode.wait_for_ack(envelope_id, timeout=ACK_DEADLINE_SECONDS)
    replies = slack.wait_for(lambda: slack.responses("press"), description="the press's reply")
    updated = slack.wait_for(
        lambda: waiting_message(slack, "1:smoke-test:0"), description="the second step's button"
    )
    steps, sign_offs = stored_steps(worker.database_url, 1)

    assert ack.delay < ACK_DEADLINE_SECONDS
    assert ack.payload is None
    assert replies[-1]["text"] == "Recorded: *The change freeze is announced* ticked."
    assert updated.ts == message.ts
    assert steps["freeze-window"] == StepStatus.PASSED
    assert steps["smoke-test"] == StepStatus.WAITING
    assert sign_offs == [("freeze-window", "ticked", REQUESTER)]
    assert slack.violations == []
    assert socket_mode.problems == []


def test_standin_checks_token_and_ticket(slack, socket_mode):
    """The Socket Mode stand-in accepts only the app token, and each URL only once."""
    client = slack.client()
    with pytest.raises(SlackApiError) as bot_token:
        client.apps_connections_open(app_token=slack.token)
    url = client.apps_connections_open(app_token=APP_TOKEN)["url"]
    with connect(url) as connection:
        hello = json.loads(connection.recv(timeout=5))
    with pytest.raises(InvalidStatus) as reused:
        connect(url)

    assert bot_token.value.response["error"] == "not_allowed_token_type"
    assert url.startswith(f"ws://127.0.0.1:{socket_mode.port}/link?ticket=")
    assert hello["type"] == "hello"
    assert hello["connection_info"]["app_id"] == slack.app_id
    assert reused.value.response.status_code == 401
    assert len(socket_mode.problems) == 1


def checklist(slack: SlackStandIn):
    messages = [m for m in slack.messages(CHANNEL) if m.blocks and m.blocks[0]["type"] == "header"]
    return messages[0] if messages else None


def waiting_message(slack: SlackStandIn, value: str):
    """Return the checklist message if its buttons carry `value`, else None."""
    message = checklist(slack)
    if message is None or value not in [button["value"] for button in buttons(message)]:
        return None
    return message


def header(message) -> str:
    return message.blocks[0]["text"]["text"]


def buttons(message) -> list[dict]:
    found = []
    for block in message.blocks or []:
        if block["type"] == "actions":
            found += block["elements"]
        elif block.get("accessory", {}).get("type") == "button":
            found.append(block["accessory"])
    return found


def button_block(message) -> tuple[str, dict]:
    """Return the block ID and the first button of the message."""
    for block in message.blocks or []:
        if block["type"] == "actions":
            return block["block_id"], block["elements"][0]
        if block.get("accessory", {}).get("type") == "button":
            return block.get("block_id", ""), block["accessory"]
    raise AssertionError("the message has no button")


def stored_deployment_ids(database_url: str) -> list[int]:
    db = Database(database_url)
    try:
        with db.session() as session:
            return [deployment.id for deployment in session.exec(select(Deployment))]
    finally:
        db.dispose()


def stored_steps(database_url: str, deployment_id: int):
    db = Database(database_url)
    try:
        with db.session() as session:
            steps = {s.step_id: s.status for s in repository.steps_of(session, deployment_id)}
            sign_offs = [
                (s.step_id, s.state, s.user_id)
                for s in repository.all_item_states(session, deployment_id)
            ]
    finally:
        db.dispose()
    return steps, sign_offs


def test_wrong_app_token_explained(tmp_path, slack, socket_mode):
    worker = SocketWorker(tmp_path, slack)
    worker.env["SLACK_APP_TOKEN"] = "xapp-wrong"
    completed = subprocess.run(
        [sys.executable, "-m", "bot.main", "socket"],
        cwd=PROJECT_DIR,
        env=worker.env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert completed.returncode == 2
    assert "invalid_auth" in completed.stdout
    assert "Check SLACK_APP_TOKEN" in completed.stdout
    assert "Traceback" not in completed.stdout + completed.stderr


def test_sigterm_stops_cleanly(worker):
    worker._process.send_signal(signal.SIGTERM)
    returncode = worker._process.wait(timeout=STOP_TIMEOUT)

    assert returncode == 0
    assert "Socket Mode worker stopping" in worker.tail()
