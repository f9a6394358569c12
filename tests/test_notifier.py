"""Tests of the notifier against the loopback Slack stand-in and a SQLite database.

The notifier draws every message from the database, so each test changes rows there and
then lets the notifier catch up, either with run_once() or with its thread and wait_idle().
"""

import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from bot import views
from bot.notifier import Notifier
from bot.slack_port import WebApiPort, web_client
from commands.roles import StaticDirectory
from engine.config import Config, load_config
from engine.runner import plan_steps
from storage import repository
from storage.db import Database
from storage.models import Deployment, DeploymentStatus, OutboxMessage, StepRun, StepStatus
from tests.support.slack_standin import SlackStandIn

ROOT = Path(__file__).resolve().parent.parent
STARTED = datetime(2025, 3, 4, 10, 0, tzinfo=UTC)
CHANNEL = "C0000PRODUCTION"  # the checklist channel of the production environment
OPERATIONS = "C0000OPERATIONS"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # slack-sdk and urllib read proxy variables, which would send loopback traffic elsewhere.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(ROOT / "runbooks" / "vvb-v11.yml", ROOT / "config" / "environments.yml")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'gonogo.db'}")
    database.create_tables()
    yield database
    database.dispose()


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn() as server:
        yield server


@pytest.fixture
def make_notifier(db: Database, config: Config, standin: SlackStandIn):
    """Return a factory of notifiers on the shared database; their threads stop at teardown."""
    started: list[Notifier] = []

    def make(
        owner: str = "notifier-a",
        *,
        min_interval: float = 0.0,
        post_interval: float = 0.0,
        start: bool = False,
    ):
        port = RecordingPort(WebApiPort(web_client(standin.token, standin.base_url)))
        notifier = Notifier(
            db,
            config,
            port,
            owner=owner,
            min_interval=min_interval,
            post_interval=post_interval,
        )
        if start:
            notifier.start()
            started.append(notifier)
        return notifier

    yield make
    for notifier in started:
        notifier.stop()


# --- the checklist message -------------------------------------------------------------------


def test_first_change_posts_once(
    db: Database, config: Config, standin: SlackStandIn, make_notifier
):
    deployment_id = create_deployment(db, config)
    notifier = make_notifier()

    notifier.deployment_changed(deployment_id)
    notifier.run_once()
    notifier.run_once()

    posts = standin.calls("chat.postMessage")
    assert len(posts) == 1
    assert posts[0].ok
    assert posts[0].args["channel"] == CHANNEL
    with db.session() as session:
        row = repository.get_deployment(session, deployment_id)
    assert row.message_ts == posts[0].response["ts"]
    assert row.message_claimed_by == "notifier-a"
    assert standin.calls("chat.update") == []


def test_posted_message_matches_state(
    db: Database, config: Config, standin: SlackStandIn, make_notifier
):
    deployment_id = create_deployment(db, config)
    notifier = make_notifier()

    notifier.run_once()

    text, blocks = expected_message(db, config, deployment_id)
    posted = standin.messages(CHANNEL)
    assert len(posted) == 1
    assert posted[0].text == text
    assert posted[0].blocks == blocks


def test_unchanged_state_no_update(
    db: Database, config: Config, standin: SlackStandIn, make_notifier
):
    deployment_id = create_deployment(db, config)
    notifier = make_notifier()
    notifier.run_once()

    for _ in range(3):
        notifier.deployment_changed(deployment_id)
        notifier.run_once()

    assert standin.calls("chat.update") == []
    assert len(standin.calls("chat.postMessage")) == 1


def test_changed_state_updates(db: Database, config: Config, standin: SlackStandIn, make_notifier):
    deployment_id = create_deployment(db, config)
    notifier = make_notifier()
    notifier.run_once()

    finish_step(db, deployment_id, 0)
    notifier.deployment_changed(deployment_id)
    notifier.run_once()

    updates = standin.calls("chat.update")
    assert len(updates) == 1
    assert updates[0].ok
    text, blocks = expected_message(db, config, deployment_id)
    message = standin.messages(CHANNEL)[0]
    assert message.text == text
    assert message.blocks == blocks


def test_rapid_changes_coalesced(
    db: Database, config: Config, standin: SlackStandIn, make_notifier
):
    deployment_id = create_deployment(db, config)
    notifier = make_notifier(min_interval=0.3, start=True)
    notifier.deployment_changed(deployment_id)
    standin.wait_for(lambda: standin.calls("chat.postMessage"), description="the checklist")

    for position in range(30):
        finish_step(db, deployment_id, position)
        notifier.deployment_changed(deployment_id)
        if position in (10, 20):
            # Let an update land mid-way, so the changes span several intervals.
            seen = len(standin.calls("chat.update"))
            standin.wait_for(
                lambda seen=seen: len(standin.calls("chat.update")) > seen,
                description="an update after a pause",
            )
    assert notifier.wait_idle(timeout=30)

    updates = notifier.slack.update_times
    assert 1 <= len(updates) <= 8
    for earlier, later in zip(updates, updates[1:], strict=False):
        assert later - earlier >= 0.25, updates
    text, blocks = expected_message(db, config, deployment_id)
    message = standin.messages(CHANNEL)[0]
    assert message.text == text
    assert message.blocks == blocks
    assert "(30/34)" in message.text


def test_update_retried_after_429(
    db: Database, config: Config, standin: SlackStandIn, make_notifier
):
    deployment_id = create_deployment(db, config)
    notifier = make_notifier()
    notifier.run_once()
    finish_step(db, deployment_id, 0)
    standin.rate_limit("chat.update", 1, retry_after=1)

    notifier.deployment_changed(deployment_id)
    notifier.run_once()

    statuses = [call.status for call in standin.calls("chat.update")]
    assert statuses == [429, 200]
    text, blocks = expected_message(db, config, deployment_id)
    message = standin.messages(CHANNEL)[0]
    assert message.text == text
    assert message.blocks == blocks


def test_messages_within_block_kit(
    db: Database, config: Config, standin: SlackStandIn, make_notifier
):
    deployment_id = create_deployment(db, config)
    notifier = make_notifier()
    notifier.run_once()
    for position in range(5):
        finish_step(db, deployment_id, position)
        notifier.deployment_changed(deployment_id)
        notifier.run_once()

    assert standin.violations == []
    assert all(call.ok for call in standin.calls())


# --- the outbox ------------------------------------------------------------------------------


def test_outbox_joined_in_thread(
    db: Database, config: Config, standin: SlackStandIn, make_notifier
):
    deployment_id = create_deployment(db, config)
    notifier = make_notifier()
    notifier.run_once()
    for position in (4, 5, 6):
        finish_step(db, deployment_id, position, output=f"output of step {position}")
    enqueue_step_outputs(db, deployment_id, [4, 5, 6])

    notifier.run_once()
    notifier.run_once()

    ts = standin.messages(CHANNEL)[0].ts
    replies = standin.thread(CHANNEL, ts)
    assert len(replies) == 1  # queued step outputs share one post
    assert replies[0].text.split("```")[1::2] == [
        "output of step 4",
        "output of step 5",
        "output of step 6",
    ]
    assert replies[0].text.startswith(":white_check_mark: *Create and push the git tag* done")
    assert all(reply.blocks is None for reply in replies)


def test_outbox_rows_marked_sent(db: Database, config: Config, make_notifier):
    deployment_id = create_deployment(db, config)
    notifier = make_notifier()
    notifier.run_once()
    finish_step(db, deployment_id, 4, output="tagged")
    enqueue_step_outputs(db, deployment_id, [4])

    notifier.run_once()

    with db.session() as session:
        rows = list(session.exec(select(OutboxMessage)))
        pending = repository.pending_outbox_count(session)
    assert pending == 0
    assert [row.claimed_by for row in rows] == ["notifier-a"]
    assert rows[0].attempts == 0


def test_outbox_waits_for_checklist(
    db: Database, config: Config, standin: SlackStandIn, make_notifier
):
    deployment_id = create_deployment(db, config)
    finish_step(db, deployment_id, 4, output="tagged")
    enqueue_step_outputs(db, deployment_id, [4])
    notice(db, deployment_id, "Release v1.4.2 is starting")
    notifier = make_notifier()

    notifier.run_once()

    posts = standin.calls("chat.postMessage")
    assert posts[0].args.get("blocks") is not None
    assert [call.args.get("thread_ts") for call in posts[1:]] == [posts[0].response["ts"], None]


def test_notice_to_its_channel(db: Database, config: Config, standin: SlackStandIn, make_notifier):
    deployment_id = create_deployment(db, config)
    notifier = make_notifier()
    notifier.run_once()
    notice(db, deployment_id, "Release v1.4.2 of the VVB approval system is starting")

    notifier.run_once()

    posted = standin.messages(OPERATIONS)
    assert [message.text for message in posted] == [
        "Release v1.4.2 of the VVB approval system is starting"
    ]


def test_alert_broadcast_in_thread(
    db: Database, config: Config, standin: SlackStandIn, make_notifier
):
    deployment_id = create_deployment(db, config)
    notifier = make_notifier()
    notifier.run_once()
    finish_step(db, deployment_id, 4, status=StepStatus.FAILED, output="fatal: tag exists")
    with db.session() as session:
        repository.enqueue(
            session,
            OutboxMessage(
                deployment_id=deployment_id, kind="alert", step_id="git-tag", created_at=STARTED
            ),
        )

    notifier.run_once()

    ts = standin.messages(CHANNEL)[0].ts
    replies = standin.thread(CHANNEL, ts)
    assert len(replies) == 1
    assert replies[0].reply_broadcast
    assert "halted at *Pre-deployment 1: Git tag: Create and push the git tag*" in replies[0].text


# --- two processes on one database -----------------------------------------------------------


def test_two_notifiers_post_once(
    db: Database, config: Config, standin: SlackStandIn, make_notifier
):
    deployment_id = create_deployment(db, config)
    first = make_notifier("notifier-a", start=True)
    second = make_notifier("notifier-b", start=True)

    first.deployment_changed(deployment_id)
    second.deployment_changed(deployment_id)
    assert first.wait_idle(timeout=30)
    assert second.wait_idle(timeout=30)

    checklists = [call for call in standin.calls("chat.postMessage") if call.args.get("blocks")]
    assert len(checklists) == 1
    with db.session() as session:
        row = repository.get_deployment(session, deployment_id)
    assert row.message_claimed_by in ("notifier-a", "notifier-b")
    assert row.message_ts == checklists[0].response["ts"]


def test_change_during_other_post_kept(
    db: Database, config: Config, standin: SlackStandIn, make_notifier
):
    deployment_id = create_deployment(db, config)
    first = make_notifier("notifier-a")
    second = make_notifier("notifier-b")
    posting = threading.Event()
    release = threading.Event()

    def hold_post() -> None:
        posting.set()
        release.wait(timeout=30)

    first.slack.before_post = hold_post
    poster = threading.Thread(target=first.run_once)
    poster.start()
    assert posting.wait(timeout=30)

    # The first notifier has the claim and has drawn the old state, but not posted it.
    finish_step(db, deployment_id, 0)
    second.deployment_changed(deployment_id)
    second.run_once()
    release.set()
    poster.join(timeout=30)
    second.run_once()

    text, blocks = expected_message(db, config, deployment_id)
    message = standin.messages(CHANNEL)[0]
    assert message.text == text
    assert message.blocks == blocks


def test_two_notifiers_send_each_row_once(
    db: Database, config: Config, standin: SlackStandIn, make_notifier
):
    deployment_id = create_deployment(db, config)
    make_notifier("notifier-a").run_once()
    positions = list(range(4, 12))
    for position in positions:
        finish_step(db, deployment_id, position, output=f"output of step {position}")
    enqueue_step_outputs(db, deployment_id, positions)
    first = make_notifier("notifier-b", start=True)
    second = make_notifier("notifier-c", start=True)

    first.deployment_changed(deployment_id)
    second.deployment_changed(deployment_id)
    assert first.wait_idle(timeout=30)
    assert second.wait_idle(timeout=30)

    ts = standin.messages(CHANNEL)[0].ts
    replies = standin.thread(CHANNEL, ts)
    outputs = [output for reply in replies for output in reply.text.split("```")[1::2]]
    assert sorted(outputs) == sorted(f"output of step {position}" for position in positions)
    assert len(outputs) == len(positions)
    with db.session() as session:
        claimers = {row.claimed_by for row in session.exec(select(OutboxMessage))}
    assert claimers <= {"notifier-b", "notifier-c"}


def test_posts_to_one_channel_are_paced(db: Database, config: Config, make_notifier):
    deployment_id = create_deployment(db, config)
    notifier = make_notifier(post_interval=0.3)
    notifier.run_once()
    for index in range(3):
        notice(db, deployment_id, f"notice {index}")

    notifier.run_once()

    notice_times = notifier.slack.post_times[1:]
    gaps = [later - earlier for earlier, later in itertools.pairwise(notice_times)]
    assert len(notifier.slack.post_times) == 4  # the checklist message, then three notices
    assert min(gaps) >= 0.29


def test_log_file_uploaded(db: Database, config: Config, standin: SlackStandIn, make_notifier):
    deployment_id = create_deployment(db, config)
    finish_step(db, deployment_id, 0)
    notifier = make_notifier()
    notifier.run_once()
    with db.session() as session:
        repository.enqueue(
            session,
            OutboxMessage(
                deployment_id=deployment_id, kind="log_file", channel="C0ASKED", created_at=STARTED
            ),
        )

    notifier.run_once()

    files = standin.files()
    assert [upload.filename for upload in files] == [
        f"deployment-{deployment_id}-production-v1.4.2.md"
    ]
    assert files[0].channel_id == "C0ASKED"
    content = files[0].content.decode() if isinstance(files[0].content, bytes) else files[0].content
    assert content.startswith("# Deployment log: v1.4.2 to production\n")
    assert "DEPLOYMENT LOG - v1.4.2" in content
    assert "| 1 | Pre-deployment validation | Code review | PASS |" in content
    assert "## Audit trail" in content


def test_paused_message_names_command(
    db: Database, config: Config, standin: SlackStandIn, make_notifier
):
    deployment_id = create_deployment(db, config)
    notifier = make_notifier()
    notifier.run_once()
    with db.session() as session:
        repository.enqueue(
            session,
            OutboxMessage(
                deployment_id=deployment_id, kind="paused", step_id="git-tag", created_at=STARTED
            ),
        )

    notifier.run_once()

    replies = standin.thread(CHANNEL, standin.messages(CHANNEL)[0].ts)
    assert replies[-1].text == (
        ":pause_button: Paused before *Pre-deployment 1: Git tag*. Type `/tag` to run it."
    )


# --- helpers ---------------------------------------------------------------------------------


class RecordingPort:
    """A SlackPort that records when it forwards each update and can hold a post back."""

    def __init__(self, port: WebApiPort):
        self.port = port
        self.update_times: list[float] = []
        self.post_times: list[float] = []
        self.before_post = lambda: None
        self._lock = threading.Lock()

    def post_message(self, channel, text, blocks=None, thread_ts=None, broadcast=False) -> str:
        self.before_post()
        with self._lock:
            self.post_times.append(time.monotonic())
        return self.port.post_message(channel, text, blocks, thread_ts, broadcast)

    def update_message(self, channel, ts, text, blocks) -> None:
        with self._lock:
            self.update_times.append(time.monotonic())
        self.port.update_message(channel, ts, text, blocks)

    def upload_file(self, channel, filename, content, title) -> None:
        self.port.upload_file(channel, filename, content, title)


def create_deployment(db: Database, config: Config) -> int:
    environment = config.environments["production"]
    deployment = Deployment(
        runbook="vvb-v11",
        environment="production",
        version="v1.4.2",
        status=DeploymentStatus.RUNNING,
        requested_by="U0RELEASE",
        request_channel="C0REQUESTS",
        channel=environment.channel,
        created_at=STARTED,
        started_at=STARTED,
        updated_at=STARTED,
    )
    with db.session() as session:
        repository.create_deployment(
            session, deployment, plan_steps(config.runbook, environment), STARTED
        )
        return deployment.id


def finish_step(
    db: Database,
    deployment_id: int,
    position: int,
    *,
    status: StepStatus = StepStatus.PASSED,
    output: str | None = None,
) -> None:
    with db.session() as session:
        step = session.exec(
            select(StepRun).where(
                StepRun.deployment_id == deployment_id, StepRun.position == position
            )
        ).one()
        step.status = status
        step.started_at = STARTED + timedelta(seconds=10 * position)
        step.finished_at = step.started_at + timedelta(seconds=4.5)
        step.output_tail = output
        session.add(step)


def enqueue_step_outputs(db: Database, deployment_id: int, positions: list[int]) -> None:
    with db.session() as session:
        steps = repository.steps_of(session, deployment_id)
        for position in positions:
            message = OutboxMessage(
                deployment_id=deployment_id,
                kind="step_output",
                step_id=steps[position].step_id,
                created_at=STARTED,
            )
            repository.enqueue(session, message)


def notice(db: Database, deployment_id: int, text: str) -> None:
    with db.session() as session:
        message = OutboxMessage(
            deployment_id=deployment_id,
            kind="notify",
            channel=OPERATIONS,
            text=text,
            created_at=STARTED,
        )
        repository.enqueue(session, message)


def expected_message(db: Database, config: Config, deployment_id: int) -> tuple[str, Any]:
    with db.session() as session:
        deployment = repository.get_deployment(session, deployment_id)
        steps = repository.steps_of(session, deployment_id)
        sign_offs = repository.sign_offs_of(session, deployment_id)
    return views.checklist_message(config, deployment, steps, sign_offs)


def test_notice_mentions_user_groups(db: Database, config: Config, standin: SlackStandIn):
    deployment_id = create_deployment(db, config)
    port = WebApiPort(web_client(standin.token, standin.base_url))
    directory = StaticDirectory(ids={"ops-team": "S0OPS"})
    notifier = Notifier(
        db, config, port, owner="notifier-a", min_interval=0, post_interval=0, directory=directory
    )
    notifier.run_once()
    notice(db, deployment_id, "@ops-team @unknown-team release starts; mail ops@example.invalid")

    notifier.run_once()

    assert standin.messages(OPERATIONS)[0].text == (
        "<!subteam^S0OPS> @unknown-team release starts; mail ops@example.invalid"
    )
